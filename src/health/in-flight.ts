import type { Redis } from 'ioredis'
import type { Disposable } from './events.js'

interface Token {
  readonly start: number
}

const now = (): number => performance.now()

/**
 * Commands sent and not yet answered, oldest first: the signal of a frozen Redis under
 * traffic (a frozen server sends nothing — no error, no close — so the age of the oldest
 * command still waiting is what tells). Components that track their own commands (a hot path
 * that avoids a wrapper per command) register their oldest age with `watch`.
 */
export class InFlightCommands {
  /** Commands sent since the last outage began: the only ones the watchdog looks at. */
  #tokens = new Set<Token>()
  /**
   * Commands sent before it, still unsettled. Dropping the connections rejects what waited on
   * them, but a promise built on top of a command (a BullMQ call waiting for its connection to
   * be ready again) may never settle: were it counted, every return of Redis would be taken
   * down again by the watchdog within one tick, for ever.
   */
  #stale = new Set<Token>()
  readonly #watched = new Set<(since: number) => number>()
  /** performance.now() when the current outage began (see `newEpoch`). */
  #since = -Infinity

  /**
   * Run `fn` on `connection`, tracked until it settles; a rejection goes through `onFailure`
   * first (which decides whether Redis is down). Not an async function: on the hot path of
   * every component, one promise per command.
   */
  track<T>(
    connection: Redis,
    fn: (redis: Redis) => Promise<T>,
    onFailure: (error: unknown) => void,
  ): Promise<T> {
    const token: Token = { start: now() }
    this.#tokens.add(token)
    let pending: Promise<T>
    try {
      pending = fn(connection)
    } catch (error) {
      this.#tokens.delete(token)
      onFailure(error)
      return Promise.reject(error)
    }
    return pending.then(
      (value) => {
        if (!this.#tokens.delete(token)) this.#stale.delete(token)
        return value
      },
      (error: unknown) => {
        if (!this.#tokens.delete(token)) this.#stale.delete(token)
        onFailure(error)
        return Promise.reject(error)
      },
    )
  }

  /**
   * Let the watchdog see commands a component sends without `track`: `oldestMs(since)` returns
   * how long the oldest of them sent at or after `since` (performance.now() time) has been
   * waiting (0 when none is).
   */
  watch(oldestMs: (since: number) => number): Disposable {
    this.#watched.add(oldestMs)
    return { dispose: () => void this.#watched.delete(oldestMs) }
  }

  /** Redis went down: what was sent before no longer counts (see `#stale`). */
  newEpoch(): void {
    for (const token of this.#tokens) this.#stale.add(token)
    this.#tokens = new Set()
    this.#since = now()
  }

  /** How long the oldest command still waiting has waited, in ms (0 when none is). */
  oldestMs(): number {
    const first = this.#tokens.values().next().value
    let oldest = first === undefined ? 0 : now() - first.start
    for (const age of this.#watched) oldest = Math.max(oldest, age(this.#since))
    return oldest
  }

  /** Commands still unsettled from before the current epoch (for diagnostics). */
  get stale(): number {
    return this.#stale.size
  }
}
