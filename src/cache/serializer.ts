import { safeJsonParse } from '../util/json.js'

/**
 * Turns values into the text stored in Redis and in the memory tier, and back. Both stores
 * keep text, so every read returns a fresh copy: a caller that mutates what `get` returned
 * never changes what the next caller reads.
 */
export interface Serializer {
  /**
   * Value → text. Throw (any error) or return something other than a string when the value
   * cannot be represented: the cache reports it as `FAILSOFT_INVALID_VALUE`.
   */
  serialize(value: unknown): string
  /** Text → value. A throw is treated as a miss (the stored text is corrupt), never surfaced. */
  deserialize(text: string): unknown
}

/**
 * The default: JSON. `JSON.stringify` returns undefined for `undefined`, functions and
 * symbols (rejected as invalid values) and throws on BigInt and cycles. Parsing drops any
 * `__proto__` key (see safeJsonParse), so a value crafted by whoever can write to Redis cannot
 * pollute a prototype in this process.
 */
export const jsonSerializer: Serializer = Object.freeze({
  serialize(value: unknown): string {
    return JSON.stringify(value)
  },
  deserialize(text: string): unknown {
    return safeJsonParse(text)
  },
})
