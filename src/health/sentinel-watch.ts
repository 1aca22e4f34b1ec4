import { Redis, type RedisOptions } from 'ioredis'

/** Sentinels subscribed to at most: one announcement is enough, a few survive a dead Sentinel. */
const MAX_WATCHED = 3

export interface SentinelWatchDeps {
  /** The target's options (a Sentinel set: `sentinels`, `name`, Sentinel credentials, TLS). */
  readonly options: RedisOptions
  readonly connectTimeoutMs: number
  readonly connectionName: string
  /** Sentinel announced that the primary of `name` moved from `from` to `to` (host:port). */
  readonly onSwitch: (from: string, to: string) => void
  /** A Sentinel connection failed (it is retried): for a debug log. */
  readonly onError: (error: unknown) => void
}

/** host:port as the monitor writes it (IPv6 in brackets). */
export function hostPort(host: string, port: string | number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}

/**
 * Follows `+switch-master` on the Sentinels. A planned failover (`SENTINEL FAILOVER`, a
 * managed service's maintenance) promotes a replica while the old primary keeps answering —
 * and keeps accepting writes — until Sentinel reconfigures it, seconds later: nothing looks
 * down, so without this a process would keep writing to a node about to throw its writes
 * away. Only announcements for this target's primary name count (one Sentinel set often
 * watches many primaries). The subscriber connections reconnect on their own (ioredis'
 * default retry): they carry no commands of failsoft's, only the announcements.
 */
export class SentinelWatch {
  readonly #subscribers: Redis[] = []
  #closed = false

  constructor(deps: SentinelWatchDeps) {
    const { options } = deps
    const name = options.name
    const sentinels = (options.sentinels ?? []).slice(0, MAX_WATCHED)
    for (const sentinel of sentinels) {
      const subscriber = new Redis({
        host: sentinel.host ?? '127.0.0.1',
        port: sentinel.port ?? 26379,
        ...(options.sentinelUsername !== undefined && { username: options.sentinelUsername }),
        ...(options.sentinelPassword !== undefined && { password: options.sentinelPassword }),
        ...(options.enableTLSForSentinelMode === true && { tls: options.sentinelTLS ?? {} }),
        connectionName: deps.connectionName,
        connectTimeout: deps.connectTimeoutMs,
        lazyConnect: true,
        enableOfflineQueue: true,
        maxRetriesPerRequest: null,
        retryStrategy: (times) => Math.min(100 * times, 2000),
      })
      // Contained: a Sentinel that is down is retried; the data path does not depend on it.
      subscriber.on('error', (error: unknown) => deps.onError(error))
      subscriber.on('message', (channel: string, message: string) => {
        if (this.#closed || channel !== '+switch-master') return
        // "<name> <old ip> <old port> <new ip> <new port>"
        const parts = message.split(' ')
        if (parts.length !== 5 || parts[0] !== name) return
        const [, oldHost = '', oldPort = '', newHost = '', newPort = ''] = parts
        deps.onSwitch(hostPort(oldHost, oldPort), hostPort(newHost, newPort))
      })
      subscriber.subscribe('+switch-master').catch((error: unknown) => {
        if (!this.#closed) deps.onError(error)
      })
      this.#subscribers.push(subscriber)
    }
  }

  close(): void {
    this.#closed = true
    for (const subscriber of this.#subscribers.splice(0)) subscriber.disconnect()
  }
}
