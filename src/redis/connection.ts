import { Redis, type RedisOptions } from 'ioredis'
import { withDeadline } from '../util/async.js'

/**
 * The connections failsoft opens, each with the settings its job needs:
 *
 * - `command`:   the shared connection for cache / channel / task commands.
 * - `health`:    the heartbeat and recovery probe. Separate from `command` so a heartbeat is
 *                never queued behind a large pipeline: its round trip measures Redis, not us.
 * - `subscriber`: pub/sub (a subscribed connection cannot run other commands).
 * - `blocking`:  BullMQ workers (blocking BZPOPMIN/XREAD; BullMQ requires
 *                `maxRetriesPerRequest: null` there).
 *
 * For `command`, `health` and `subscriber` ioredis never reconnects by itself and never
 * queues: the health monitor decides when Redis is worth trying again, and while it is down
 * nothing waits in an offline queue (ioredis' defaults queue without bound and retry 20 times
 * per command — the root of the hangs users hit with BullMQ and cache wrappers).
 */
export type ConnectionRole = 'command' | 'health' | 'subscriber' | 'blocking'

export interface ConnectionSettings {
  connectTimeoutMs: number
  /** Name shown by CLIENT LIST, e.g. `failsoft:myapp:command`. */
  connectionName: string
}

/** Reconnect delay for connections that reconnect by themselves: capped near 1 s, jittered. */
export function cappedBackoff(attempt: number): number {
  const base = Math.min(1000, 50 * 2 ** Math.min(attempt, 5))
  return Math.round(base * (0.8 + Math.random() * 0.4))
}

export function connectionOptions(
  base: RedisOptions,
  role: ConnectionRole,
  settings: ConnectionSettings,
): RedisOptions {
  const common: RedisOptions = {
    ...base,
    connectionName: settings.connectionName,
    connectTimeout: settings.connectTimeoutMs,
    lazyConnect: true,
    enableReadyCheck: true,
    // ioredis' keyPrefix would also prefix the keys of Lua scripts written elsewhere; failsoft
    // prefixes its own keys explicitly instead.
    keyPrefix: '',
    // ioredis ends a socket gracefully and waits this long for the server's FIN before
    // destroying it; a frozen server never sends one, and until then no waiting command is
    // rejected (2 s by default).
    disconnectTimeout: 100,
    // A Redis loading its data set answers the ready check with loading:1 and an ETA; ioredis
    // waits up to this long before asking again (10 s by default): recovery would lag the
    // end of the load by up to that much.
    maxLoadingRetryTime: 100,
    // A Sentinel set: ioredis asks the Sentinels in turn for the primary and, by default, waits
    // for a Sentinel's reply without a bound — one frozen Sentinel held every connection off
    // Redis for as long as it stayed frozen (outside review 5). Bounded, the next one is asked.
    ...(base.sentinels !== undefined &&
      base.sentinelCommandTimeout === undefined && {
        sentinelCommandTimeout: settings.connectTimeoutMs,
      }),
  }
  if (role === 'blocking') {
    return {
      ...common,
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
      retryStrategy: cappedBackoff,
    }
  }
  return {
    ...common,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    autoResubscribe: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  }
}

export function createConnection(
  base: RedisOptions,
  role: ConnectionRole,
  settings: ConnectionSettings,
): Redis {
  // ioredis 6 types `replyMapping` as non-optional-undefined, which exactOptionalPropertyTypes
  // rejects for a spread options object; failsoft never sets it (legacy reply mapping).
  const options = connectionOptions(base, role, settings) as RedisOptions & {
    replyMapping?: 'legacy'
  }
  return new Redis(options)
}

export { isConnectivityError } from './replies.js'

/**
 * Close a connection now: pending commands are rejected at once ("Connection is closed") and
 * no late reply from a frozen server can ever be read on this socket. ioredis' own
 * `disconnect()` half-closes and waits for the server, which a frozen server never answers.
 */
export function dropConnection(connection: Redis): void {
  const stream = (connection as { stream?: { destroy(): void } }).stream
  // ioredis' connector keeps the socket of its last successful connect; a Sentinel connector
  // whose later attempts fail (the Sentinels unreachable) would add a 'close' listener and a
  // timer to that dead socket at every disconnect() — one per failed probe for as long as the
  // partition lasts (MaxListenersExceededWarning). A destroyed one is forgotten first.
  const connector = (
    connection as unknown as { connector?: { stream?: { destroyed?: boolean } | undefined } }
  ).connector
  if (connector?.stream?.destroyed === true) connector.stream = undefined
  connection.disconnect()
  stream?.destroy()
}

/**
 * Connect a lazy (or closed) connection within `deadlineMs`; a connection already ready is
 * left as is. A blackholed connect never settles by itself: past the deadline the attempt is
 * dropped, so the next one starts on a fresh socket.
 */
export async function connectWithin(connection: Redis, deadlineMs: number): Promise<void> {
  if (connection.status === 'ready') return
  if (
    connection.status !== 'wait' &&
    connection.status !== 'end' &&
    connection.status !== 'close'
  ) {
    dropConnection(connection)
  }
  const attempt = connection.connect()
  try {
    await withDeadline(attempt, deadlineMs, 'connect')
  } catch (error) {
    // The attempt's own rejection is expected and already handled by this catch.
    attempt.catch(() => undefined)
    dropConnection(connection)
    throw error
  }
}
