import type { Redis } from 'ioredis'
import { isConnectivityError } from '../redis/replies.js'
import { withDeadline } from '../util/async.js'
import { safeJsonParse } from '../util/json.js'
import type { BusMessage } from './redis-store.js'

/** A bus (re)connection attempt that takes longer than this is abandoned (retried later). */
const BUS_CONNECT_TIMEOUT_MS = 1000

export interface CacheBusDeps {
  /** The pub/sub connection (the monitor's 'subscriber' role: no offline queue, no reconnect). */
  readonly subscriber: Redis
  readonly channel: string
  /** This cache instance's id: its own notices are ignored. */
  readonly instanceId: string
  /** Subscribed now, or lost: memory copies made while not subscribed cannot be trusted. */
  readonly onLinkChange: (ready: boolean) => void
  /** Other processes changed these keys: drop their memory copies. */
  readonly onKeys: (keys: readonly string[]) => void
  /** Another process moved the generation. */
  readonly onGeneration: (generation: string) => void
  /** A failure worth reporting (not the outage itself, which the monitor reports). */
  readonly onProblem: (message: string, error: unknown) => void
}

/**
 * The 'l1' mode's invalidation bus: every write, delete and generation change in Redis is
 * announced on `<base>:bus` (keys, never values) in the same round trip, and every process
 * with a memory tier drops its copies when it hears it. While the bus is not subscribed the
 * cache must not serve reads from its memory tier (it might have missed invalidations):
 * `ready` says whether it is.
 */
export class CacheBus {
  readonly #deps: CacheBusDeps
  #ready = false
  #connecting = false
  errors = 0

  constructor(deps: CacheBusDeps) {
    this.#deps = deps
    const subscriber = deps.subscriber
    subscriber.on('error', () => {
      // Acted on through 'close'; counted for status.
      this.errors++
    })
    subscriber.on('close', () => {
      const was = this.#ready
      this.#ready = false
      if (was) deps.onLinkChange(false)
    })
    subscriber.on('message', (_channel: string, message: string) => this.#onMessage(message))
  }

  get ready(): boolean {
    return this.#ready
  }

  /** (Re)connect and subscribe, within a deadline; failures are counted and retried later. */
  async connect(): Promise<void> {
    const subscriber = this.#deps.subscriber
    if (this.#ready || this.#connecting) return
    this.#connecting = true
    try {
      const attempt = (async () => {
        if (subscriber.status !== 'ready') {
          if (subscriber.status !== 'wait' && subscriber.status !== 'end') subscriber.disconnect()
          await subscriber.connect()
        }
        await subscriber.subscribe(this.#deps.channel)
      })()
      await withDeadline(attempt, BUS_CONNECT_TIMEOUT_MS, 'cache bus subscription')
      this.#ready = true
      this.#deps.onLinkChange(true)
    } catch (error) {
      this.errors++
      subscriber.disconnect()
      if (!isConnectivityError(error)) this.#deps.onProblem('cache bus subscription failed', error)
    } finally {
      this.#connecting = false
    }
  }

  #onMessage(raw: string): void {
    let message: BusMessage
    try {
      message = safeJsonParse(raw) as BusMessage
    } catch (error) {
      this.errors++
      this.#deps.onProblem('unreadable cache bus message', error)
      return
    }
    if (message === null || typeof message !== 'object' || message.i === this.#deps.instanceId)
      return
    if (typeof message.g === 'string') this.#deps.onGeneration(message.g)
    if (Array.isArray(message.k)) {
      this.#deps.onKeys(message.k.filter((key): key is string => typeof key === 'string'))
    }
  }
}
