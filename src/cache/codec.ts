import {
  InvalidKeyError,
  InvalidTtlError,
  InvalidValueError,
  ValueTooLargeError,
} from './errors.js'
import { MAX_TTL_SECONDS, type ResolvedCacheOptions } from './options.js'
import type { SetOptions } from './status.js'

/**
 * What the cache accepts from its callers and how values become text: key and TTL checks
 * (programmer errors, thrown with the offending value named), the serializer with the size
 * bound, and reading stored text back (a value that cannot be read is a miss, reported).
 */
export class CacheCodec {
  readonly #options: ResolvedCacheOptions
  readonly #defaultTtlMs: number | null
  readonly #onDecodeError: (error: unknown) => void

  constructor(options: ResolvedCacheOptions, onDecodeError: (error: unknown) => void) {
    this.#options = options
    this.#defaultTtlMs =
      options.defaultTtlSeconds === null ? null : options.defaultTtlSeconds * 1000
    this.#onDecodeError = onDecodeError
  }

  checkKey(key: unknown): asserts key is string {
    if (typeof key !== 'string') throw new InvalidKeyError(key, 'keys are strings')
    if (key.length === 0) throw new InvalidKeyError(key, 'keys are not empty')
    if (key.length > this.#options.maxKeyLength) {
      throw new InvalidKeyError(
        key,
        `longer than maxKeyLength (${this.#options.maxKeyLength} characters)`,
      )
    }
  }

  /** The TTL of one write in ms (null: no expiry), from its options or the cache's default. */
  ttl(options: SetOptions | undefined): number | null {
    if (options === undefined) return this.#defaultTtlMs
    if (typeof options !== 'object' || options === null) {
      throw new InvalidTtlError(options, 'options must be an object such as { ttlSeconds: 60 }')
    }
    const ttl = options.ttlSeconds
    if (ttl === undefined) return this.#defaultTtlMs
    if (ttl === null) return null
    if (typeof ttl !== 'number' || !Number.isFinite(ttl)) {
      throw new InvalidTtlError(ttl, 'ttlSeconds must be a finite number of seconds or null')
    }
    if (ttl <= 0 || ttl > MAX_TTL_SECONDS) {
      throw new InvalidTtlError(ttl, `ttlSeconds must be > 0 and <= ${MAX_TTL_SECONDS}`)
    }
    return ttl * 1000
  }

  encode(key: string, value: unknown): string {
    let text: unknown
    try {
      text = this.#options.serializer.serialize(value)
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error)
      throw new InvalidValueError(key, value, `the serializer threw: ${reason}`, error)
    }
    if (typeof text !== 'string') {
      throw new InvalidValueError(
        key,
        value,
        'it has no serialized form (undefined, a function or a symbol)',
      )
    }
    const limit = this.#options.maxValueBytes
    if (text.length * 3 > limit) {
      const bytes = Buffer.byteLength(text, 'utf8')
      if (bytes > limit) throw new ValueTooLargeError(key, bytes, limit)
    }
    return text
  }

  /** Stored text back to a value; `fallback` (a miss) when the serializer cannot read it. */
  decode<T>(text: string, fallback: T | undefined): T | undefined {
    try {
      return this.#options.serializer.deserialize(text) as T
    } catch (error) {
      this.#onDecodeError(error)
      return fallback
    }
  }
}
