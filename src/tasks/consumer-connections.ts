import type { Redis, RedisOptions } from 'ioredis'
import type { HealthMonitor } from '../health/monitor.js'

/** What ConsumerConnections did to its sockets (counted into the worker's status). */
export interface ConsumerConnectionStats {
  /** Sockets broken: after a silent partition, or a handshake that never completed. */
  socketsDropped: number
  /** Reconnections started at once (at 'up') rather than at ioredis' next backoff tick. */
  reconnectKicks: number
}

/**
 * The connections one BullMQ consumer (a Worker, a QueueEvents) runs on: the connection it is
 * given and the copies BullMQ makes of it (a blocking consumer never blocks its caller's
 * client: BullMQ duplicates it). Each is tracked, so that failsoft can
 * - break their sockets after a silent partition (they look open and are dead),
 * - bound the ready check of a socket opened into a partition (ioredis bounds only the TCP
 *   connect),
 * - reconnect them at once when Redis is back, and restart one whose handshake hung,
 * - keep them on the current primary of a Sentinel set,
 * - end them at close: BullMQ's own close waits for a connection that is ready, which one
 *   reconnecting to a Redis that is down never is.
 *
 * The connection and its copies connect at once, not lazily: BullMQ waits for a connection
 * that is (re)connecting, but calls connect() itself on a lazy one and gives up for good if
 * that first attempt fails. ioredis keeps retrying (capped backoff) after a failed attempt.
 */
export class ConsumerConnections {
  /** The connection to hand to BullMQ. */
  readonly template: Redis
  readonly #all = new Set<Redis>()
  readonly #monitor: HealthMonitor
  readonly #onError: (error: unknown) => void
  readonly #stats: ConsumerConnectionStats
  #closing = false

  constructor(
    monitor: HealthMonitor,
    connectionName: string,
    onError: (error: unknown) => void,
    stats: ConsumerConnectionStats = { socketsDropped: 0, reconnectKicks: 0 },
  ) {
    this.#monitor = monitor
    this.#onError = onError
    this.#stats = stats
    const template = monitor.createConnection('blocking', connectionName)
    template.options.lazyConnect = false
    const duplicate = template.duplicate.bind(template)
    template.duplicate = (override?: Partial<RedisOptions>): Redis => {
      const copy = duplicate(override)
      this.#track(copy)
      // (the template, from createConnection, is followed already)
      monitor.followPrimary(copy)
      return copy
    }
    this.#track(template)
    this.template = template
  }

  /** Connect the template itself (a Worker runs its commands on it; QueueEvents only copies it). */
  connectTemplate(): void {
    this.template.connect().catch((error: unknown) => this.#onError(error))
  }

  /** ioredis' status of each connection. */
  statuses(): string[] {
    return [...this.#all].map((c) => c.status)
  }

  #track(connection: Redis): void {
    this.#all.add(connection)
    connection.on('error', (error: unknown) => this.#onError(error))
    connection.once('end', () => this.#all.delete(connection))
    const readyTimeoutMs = connection.options.connectTimeout ?? 10_000
    connection.on('connect', () => {
      setTimeout(() => {
        if (connection.status !== 'connect' || this.#closing) return
        // While Redis is down, ioredis' reconnect backoff paces the next try.
        if (this.#monitor.available) this.#restart(connection)
        else {
          this.#stats.socketsDropped++
          breakSocket(connection)
        }
      }, readyTimeoutMs).unref()
    })
  }

  /** Break every open socket; the connections reconnect (ioredis backoff, then `revive`). */
  dropSockets(): void {
    for (const connection of this.#all) {
      if (connection.status !== 'ready' && connection.status !== 'connect') continue
      this.#stats.socketsDropped++
      breakSocket(connection)
    }
  }

  /**
   * Redis answers again: every connection not ready now connects at once. One still waiting
   * for its ready check was opened during the outage — its handshake may have been swallowed
   * by the partition — so it starts over.
   */
  revive(): void {
    if (this.#closing) return
    for (const connection of this.#all) {
      if (connection.status === 'connect') this.#restart(connection)
    }
    this.kick()
  }

  /** Every connection waiting for its next reconnect attempt tries now. */
  kick(): void {
    if (this.#closing) return
    for (const connection of this.#all) {
      if (connection.status !== 'reconnecting') continue
      this.#stats.reconnectKicks++
      connection.connect().catch((error: unknown) => this.#onError(error))
    }
  }

  /** No more restarts or kicks: the consumer is closing. */
  markClosing(): void {
    this.#closing = true
  }

  /**
   * End every connection now (no reconnection), and reject what is still queued on them.
   * ioredis leaves a connection disconnected while it waits to reconnect in that state, and
   * BullMQ marks the connections it closes 'end' itself: either way a queued command — BullMQ's
   * blocking read, raced by a watchdog timer that holds the process up to 11 s — would stay
   * pending.
   */
  disconnectAll(): void {
    this.#closing = true
    for (const connection of this.#all) {
      connection.disconnect()
      rejectQueued(connection)
    }
  }

  /** Close this socket and connect again at once (not after the reconnect backoff). */
  #restart(connection: Redis): void {
    this.#stats.socketsDropped++
    connection.once('reconnecting', () => {
      if (this.#closing || connection.status !== 'reconnecting') return
      this.#stats.reconnectKicks++
      connection.connect().catch((error: unknown) => this.#onError(error))
    })
    breakSocket(connection)
  }
}

/**
 * Destroy the socket under a connection, leaving the connection to reconnect by itself:
 * pending commands are re-sent on the new socket. (`dropConnection` also ends the connection;
 * ioredis' `disconnect(true)` half-closes and waits for the server's FIN, which a partitioned
 * server never sends.)
 */
export function breakSocket(connection: Redis | null): void {
  const stream = (connection as { stream?: { destroy(): void } } | null)?.stream
  stream?.destroy()
}

/**
 * Reject a connection's queued and unanswered commands: ioredis' own flush (not public) of its
 * offline and command queues, and the commands it kept to re-send after a reconnection
 * (`prevCommandQueue`: those in flight when the socket closed — BullMQ's blocking read).
 */
function rejectQueued(connection: Redis): void {
  const internals = connection as unknown as {
    flushQueue?: (error: Error) => void
    prevCommandQueue?: {
      length: number
      shift(): { command?: { reject?: (e: Error) => void } }
    } | null
  }
  const error = new Error('Connection is closed.')
  if (typeof internals.flushQueue === 'function') internals.flushQueue.call(connection, error)
  const kept = internals.prevCommandQueue
  if (kept !== null && kept !== undefined && typeof kept.shift === 'function') {
    while (kept.length > 0) kept.shift().command?.reject?.(error)
    internals.prevCommandQueue = null
  }
}
