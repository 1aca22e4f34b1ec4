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
  readonly #tokens = new Set<Token>()
  readonly #watched = new Set<() => number>()

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
        this.#tokens.delete(token)
        return value
      },
      (error: unknown) => {
        this.#tokens.delete(token)
        onFailure(error)
        return Promise.reject(error)
      },
    )
  }

  /**
   * Let the watchdog see commands a component sends without `track`: `oldestMs()` returns how
   * long the oldest of them has been waiting (0 when none is).
   */
  watch(oldestMs: () => number): Disposable {
    this.#watched.add(oldestMs)
    return { dispose: () => void this.#watched.delete(oldestMs) }
  }

  /** How long the oldest command still waiting has waited, in ms (0 when none is). */
  oldestMs(): number {
    const first = this.#tokens.values().next().value
    let oldest = first === undefined ? 0 : now() - first.start
    for (const age of this.#watched) oldest = Math.max(oldest, age())
    return oldest
  }
}
