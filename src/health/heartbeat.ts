import type { Redis } from 'ioredis'
import { RedisTimeoutError } from '../errors.js'
import { isConnectivityError } from '../redis/connection.js'
import { asError } from '../util/async.js'
import type { RedisClock } from './clock.js'
import type { RttEstimator } from './rtt.js'

export interface HeartbeatDeps {
  readonly epochKey: string
  readonly rtt: RttEstimator
  readonly clock: RedisClock
  /** The heartbeat's deadline now (adaptive, see RttEstimator). */
  readonly deadlineMs: () => number
  /** No reply within the deadline, or a connectivity error: Redis is unavailable. */
  readonly onFailure: (error: Error) => void
  /** The epoch key's value, on every reply. */
  readonly onEpoch: (epoch: string | null) => void
}

/** Every this many beats, the heartbeat also reads Redis' clock. */
const CLOCK_EVERY = 20

/**
 * The idle signal: while Redis is up, one `GET <epoch key>` every interval on the health
 * connection (its own, so it is never queued behind a large pipeline), with its own deadline.
 * A frozen Redis with no traffic is noticed after at most interval + deadline. Each reply is
 * also a round-trip sample for the adaptive deadlines, and now and then a clock sample.
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
    const sentAt = Date.now()
    const started = performance.now()
    const reply: Promise<{ epoch: unknown; time: unknown }> = withClock
      ? connection
          .pipeline()
          .get(deps.epochKey)
          .time()
          .exec()
          .then((results) => {
            const [epochError, epoch] = results?.[0] ?? [null, null]
            if (epochError) throw epochError
            return { epoch, time: results?.[1]?.[1] }
          })
      : connection.get(deps.epochKey).then((epoch) => ({ epoch, time: undefined }))
    reply
      .then(
        ({ epoch, time }) => {
          if (!stillCurrent()) return
          deps.rtt.sample(performance.now() - started)
          if (time !== undefined) deps.clock.sample(time, sentAt, Date.now())
          deps.onEpoch(typeof epoch === 'string' ? epoch : null)
        },
        (error: unknown) => {
          if (stillCurrent() && isConnectivityError(error)) deps.onFailure(asError(error))
        },
      )
      .finally(() => {
        answered = true
        clearTimeout(deadline)
        this.#pending = false
      })
  }
}
