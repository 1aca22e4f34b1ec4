import type { Redis } from 'ioredis'
import { RedisTimeoutError } from '../errors.js'
import { isConnectivityError } from '../redis/connection.js'
import { asError } from '../util/async.js'
import type { RedisClock } from './clock.js'
import type { RttEstimator } from './rtt.js'
import { WATERMARK_TTL_MS, type Watermark } from './watermark.js'

export interface HeartbeatDeps {
  readonly epochKey: string
  /** Lost-write detection: `INCR` when writes were stamped since the last one, else `GET`. */
  readonly watermark: Watermark
  readonly rtt: RttEstimator
  readonly clock: RedisClock
  /** The heartbeat's deadline now (adaptive, see RttEstimator). */
  readonly deadlineMs: () => number
  /** No reply within the deadline, or a connectivity error: Redis is unavailable. */
  readonly onFailure: (error: Error) => void
  /** The epoch key's value, on every reply; true when it starts a reset (Redis lost its data). */
  readonly onEpoch: (epoch: string | null) => boolean
  /** The write counter went backwards: Redis forgot acknowledged writes. */
  readonly onWatermarkBehind: () => void
}

/** Every this many beats, the heartbeat also reads Redis' clock. */
const CLOCK_EVERY = 20

/**
 * The idle signal: while Redis is up, one pipeline every interval on the health connection (its
 * own, so it is never queued behind a large pipeline), with its own deadline: `GET <epoch key>`
 * and the write counter (`INCR` when this process stamped writes since the last one, which
 * confirms them; `GET` otherwise — see Watermark). A frozen Redis with no traffic is noticed
 * after at most interval + deadline. Each reply is also a round-trip sample for the adaptive
 * deadlines, and now and then a clock sample.
 */
export class Heartbeat {
  readonly #deps: HeartbeatDeps
  #pending = false
  #beats = 0

  constructor(deps: HeartbeatDeps) {
    this.#deps = deps
  }

  /** One beat on `connection`; `stillCurrent` says whether its outcome still matters. */
  beat(connection: Redis, stillCurrent: () => boolean): void {
    if (this.#pending) return
    this.#pending = true
    const deps = this.#deps
    const limit = deps.deadlineMs()
    let answered = false
    const deadline = setTimeout(() => {
      // A timer can fire late because the event loop was busy; the reply may already be in
      // the socket. setImmediate runs after the poll phase has read it.
      setImmediate(() => {
        if (!answered && stillCurrent()) {
          deps.onFailure(new RedisTimeoutError(limit, { details: { source: 'heartbeat' } }))
        }
      })
    }, limit)
    const withClock = ++this.#beats % CLOCK_EVERY === 1
    const watermark = deps.watermark
    const confirming = watermark.dirty ? watermark.incrSent() : null
    const sentAt = Date.now()
    const started = performance.now()
    const pipeline = connection.pipeline().get(deps.epochKey)
    if (confirming !== null) pipeline.incr(watermark.key)
    else pipeline.get(watermark.key)
    if (withClock) pipeline.time()
    // The counter is this process's own key: it expires a day after this process stops.
    if (confirming !== null || withClock) pipeline.pexpire(watermark.key, WATERMARK_TTL_MS)
    pipeline
      .exec()
      .then((results) => {
        if (!stillCurrent()) return
        const [epochError, epoch] = results?.[0] ?? [null, null]
        if (epochError) throw epochError
        deps.rtt.sample(performance.now() - started)
        const [markError, mark] = results?.[1] ?? [null, null]
        if (withClock) deps.clock.sample(results?.[2]?.[1], sentAt, Date.now())
        if (deps.onEpoch(typeof epoch === 'string' ? epoch : null)) {
          // Redis lost everything (FLUSHALL, a restart empty unnoticed): the reset re-asserts
          // it all; the counter starts a new history rather than reading as a rollback.
          watermark.forget()
          return
        }
        // A refused INCR (OOM at maxmemory) confirms nothing: the writes stay unconfirmed.
        if (markError) {
          if (isConnectivityError(markError)) throw markError
          return
        }
        const value = mark === null || mark === undefined ? null : Number(mark)
        if (value !== null && !Number.isSafeInteger(value)) return // not ours: ignored
        const ahead =
          confirming !== null
            ? value !== null && watermark.confirmed(confirming, value)
            : watermark.observed(value)
        if (!ahead) deps.onWatermarkBehind()
      })
      .catch((error: unknown) => {
        if (stillCurrent() && isConnectivityError(error)) deps.onFailure(asError(error))
      })
      .finally(() => {
        answered = true
        clearTimeout(deadline)
        this.#pending = false
      })
  }
}
