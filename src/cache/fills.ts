import type { CacheCodec } from './codec.js'

/**
 * One `getOrSet` load in flight for a key in this process (single-flight: later callers join
 * it). `lease` is the token Redis gave its miss (null: none, the miss was served by memory);
 * `invalidated` is set when this process deletes, sets or clears the key meanwhile.
 */
export interface Flight {
  promise: Promise<FlightResult>
  lease: string | null
  invalidated: boolean
}

/**
 * What a load produced: the stored form, and the loader's own value for the caller that
 * started it (`undefined` when the value was found in Redis instead). `current` is false when
 * the load was superseded (its value was not stored).
 */
export interface FlightResult {
  readonly text: string
  readonly value: unknown
  readonly current: boolean
}

/** What a write did: stored, failed (refused by Redis or the memory bound), or superseded. */
export type WriteOutcome = 'stored' | 'failed' | 'superseded'

/** Placeholder of a flight's promise until its load starts (synchronously after). */
const NO_RESULT: FlightResult = { text: '', value: undefined, current: false }

export interface FillsDeps {
  readonly codec: CacheCodec
  /** A read through the cache's one degradation path. */
  readonly read: (key: string) => Promise<string | undefined>
  /**
   * A miss: take the key's lease in Redis (recorded on the flight), or return the value stored
   * meanwhile; on memory (or if Redis fails now) no lease, and the fill stores in memory only.
   */
  readonly acquire: (key: string, flight: Flight) => Promise<string | undefined>
  /** A conditional write (see Cache#write): stores only while the flight's lease is intact. */
  readonly write: (
    key: string,
    text: string,
    ttlMs: number | null,
    fill: Flight,
  ) => Promise<WriteOutcome>
  readonly onSuperseded: () => void
}

/**
 * `getOrSet`'s single flight: per key, at most one loader runs at a time in this process and
 * concurrent callers share its result. Each load holds a lease on its key in Redis (the key's
 * own value is a lease marker until the load stores), so a delete or set of the key anywhere
 * while the loader runs wins: the loaded value is returned to its caller but not stored, and
 * callers that joined the load load again — nobody is handed a value older than an
 * acknowledged delete.
 */
export class Fills {
  readonly #deps: FillsDeps
  readonly #flights = new Map<string, Flight>()

  constructor(deps: FillsDeps) {
    this.#deps = deps
  }

  async getOrSet<T>(key: string, loader: () => T | Promise<T>, ttlMs: number | null): Promise<T> {
    const inFlight = this.#flights.get(key)
    if (inFlight) return this.#join<T>(key, inFlight, loader, ttlMs)
    const text = await this.#deps.read(key)
    if (text !== undefined) {
      const value = this.#deps.codec.decode<T>(text, undefined)
      if (value !== undefined) return value
    }
    const joined = this.#flights.get(key)
    if (joined) return this.#join<T>(key, joined, loader, ttlMs)
    return this.#own<T>(await this.#load(key, loader, ttlMs).promise)
  }

  /** The result for the caller that started the load: the loader's value itself, no copy. */
  #own<T>(result: FlightResult): T {
    if (result.value !== undefined) return result.value as T
    return this.#deps.codec.decode<T>(result.text, undefined) as T
  }

  /**
   * Share a load already running. If it was superseded (the key was deleted or set while it
   * ran), the value may predate a change acknowledged before this call: load again, once —
   * whatever load serves the retry started after this call did.
   */
  async #join<T>(
    key: string,
    flight: Flight,
    loader: () => T | Promise<T>,
    ttlMs: number | null,
  ): Promise<T> {
    const result = await flight.promise
    if (result.current) return this.#deps.codec.decode<T>(result.text, undefined) as T
    const again = this.#flights.get(key)
    if (again !== undefined)
      return this.#deps.codec.decode<T>((await again.promise).text, undefined) as T
    return this.#own<T>(await this.#load(key, loader, ttlMs).promise)
  }

  /**
   * Start a load: take the key's lease in Redis (atomically with a last look at the value),
   * run the loader, then store its result only if the lease is intact — no delete or set of
   * the key anywhere since. The flight is in the map until it settles.
   */
  #load<T>(key: string, loader: () => T | Promise<T>, ttlMs: number | null): Flight {
    const flight: Flight = { promise: Promise.resolve(NO_RESULT), lease: null, invalidated: false }
    const run = async (): Promise<FlightResult> => {
      const found = await this.#deps.acquire(key, flight)
      if (found !== undefined) return { text: found, value: undefined, current: true }
      const value = await loader()
      const encoded = this.#deps.codec.encode(key, value)
      const outcome = await this.#deps.write(key, encoded, ttlMs, flight)
      if (outcome === 'superseded') this.#deps.onSuperseded()
      return { text: encoded, value, current: outcome !== 'superseded' }
    }
    flight.promise = run()
    this.#flights.set(key, flight)
    const done = (): void => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key)
    }
    flight.promise.then(done, done)
    return flight
  }

  /** A delete, set or clear in this process: loads in flight for the key must not store. */
  supersede(key: string): void {
    const flight = this.#flights.get(key)
    if (flight === undefined) return
    flight.invalidated = true
    this.#flights.delete(key)
  }

  supersedeAll(): void {
    for (const flight of this.#flights.values()) flight.invalidated = true
    this.#flights.clear()
  }
}
