/**
 * The one contract both cache backends implement: the Redis store (the shared store while
 * Redis is up) and the memory store (the bounded in-process LRU that serves while it is
 * down). Both hold serialized text; the cache above them validates keys, serializes values,
 * and decides which store an operation goes to. One conformance suite
 * (test/cache/store-conformance.test.ts) runs against both.
 *
 * The memory store answers synchronously and the Redis store with promises: `MaybePromise`
 * keeps the memory path free of promise allocations; callers `await` either.
 */
export type MaybePromise<T> = T | Promise<T>

export interface CacheStore {
  readonly kind: 'redis' | 'memory'
  /** The stored text, or undefined when absent or expired. */
  get(key: string): MaybePromise<string | undefined>
  /**
   * Store text under key for ttlMs milliseconds (null: no expiry). Resolves true when stored;
   * false when the store declined it (the memory store refuses an entry larger than its byte
   * bound; the Redis store never resolves false — it throws).
   */
  set(key: string, text: string, ttlMs: number | null): MaybePromise<boolean>
  /** Remove key; true when it existed. */
  delete(key: string): MaybePromise<boolean>
  has(key: string): MaybePromise<boolean>
  /** Remove every key of this store's namespace, and nothing else. */
  clear(): MaybePromise<void>
}
