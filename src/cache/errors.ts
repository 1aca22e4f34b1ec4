import { FailsoftError, describeValue } from '../errors.js'

/**
 * The cache's programmer errors. Each has a stable `code`; none is ever thrown because of
 * Redis (an unavailable or failing Redis is handled by the fallback, not reported to callers).
 */

/** A key that is not a string, is empty, or is longer than `maxKeyLength`. */
export class InvalidKeyError extends FailsoftError {
  constructor(key: unknown, reason: string) {
    super('FAILSOFT_INVALID_KEY', `Invalid cache key ${describeValue(key)}: ${reason}`, {
      details: { key: typeof key === 'string' ? key.slice(0, 120) : describeValue(key) },
    })
  }
}

/** A value the serializer cannot turn into text (undefined, a function, a BigInt, a cycle …). */
export class InvalidValueError extends FailsoftError {
  constructor(key: string, value: unknown, reason: string, cause?: unknown) {
    super(
      'FAILSOFT_INVALID_VALUE',
      `Cannot cache ${describeValue(value)} under "${key.slice(0, 120)}": ${reason}`,
      { cause, details: { key: key.slice(0, 120), value: describeValue(value) } },
    )
  }
}

/** A serialized value larger than `maxValueBytes`. */
export class ValueTooLargeError extends FailsoftError {
  constructor(key: string, bytes: number, limit: number) {
    super(
      'FAILSOFT_VALUE_TOO_LARGE',
      `Cached value for "${key.slice(0, 120)}" is ${bytes} bytes serialized; the limit (maxValueBytes) is ${limit}`,
      { details: { key: key.slice(0, 120), bytes, limit } },
    )
  }
}

/** A TTL that is not a positive, finite number of seconds (or `null` for no expiry). */
export class InvalidTtlError extends FailsoftError {
  constructor(ttl: unknown, reason: string) {
    super('FAILSOFT_INVALID_TTL', `Invalid cache TTL ${describeValue(ttl)}: ${reason}`, {
      details: { ttl: describeValue(ttl) },
    })
  }
}
