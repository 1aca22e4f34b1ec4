import type { Serializer } from '../cache/serializer.js'

/**
 * How a value Keyv hands to the store becomes the text a failsoft cache stores, and back.
 *
 * Keyv v5 gives a store one of two things:
 * - a string: its own serialization of `{ value, expires }` (the default, `@keyv/serialize`,
 *   or the `serialize` option). It is stored as is, behind the tag `s`, and handed back as
 *   the same string for Keyv to deserialize.
 * - anything else, when the Keyv was created with `serialize: undefined` (cache-manager does
 *   this for its own in-memory Keyv): normally the object `{ value, expires }` itself. It is
 *   stored as JSON behind the tag `j`, with Buffers kept (see below), and handed back as an
 *   object, which Keyv uses without deserializing.
 *
 * The tag makes the two cases unambiguous whatever a custom Keyv serializer produces, and no
 * stored text ever starts with the NUL character that marks a failsoft `getOrSet` lease.
 *
 * Buffers inside a `j` value: JSON would turn a Buffer into `{ type: 'Buffer', data: [...] }`
 * and give back a plain object. Here a Buffer is written as the string `~b:` + base64, and
 * every string of the value that itself starts with `~` is written with one more `~` in
 * front, so decoding can tell the two apart. Reading drops `__proto__` keys, as failsoft's own
 * JSON does. Other types follow JSON (a Date comes back as its ISO string, as with Keyv's
 * default serializer); a BigInt or a cycle is refused (`FAILSOFT_INVALID_VALUE`).
 */

const STRING_TAG = 's'
const JSON_TAG = 'j'
const ESCAPE = '~'
const BUFFER_MARK = '~b:'

/** Thrown by `encodeValue` for a value with no stored form; the store reports it. */
export class UnencodableValueError extends TypeError {}

/** Keyv's value → the text stored in the cache. Throws UnencodableValueError. */
export function encodeValue(value: unknown): string {
  if (typeof value === 'string') return STRING_TAG + value
  let json: string | undefined
  try {
    json = JSON.stringify(value, replacer)
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw new UnencodableValueError(`JSON cannot represent it: ${reason}`, { cause: error })
  }
  if (json === undefined) {
    throw new UnencodableValueError('it has no serialized form (undefined, a function or a symbol)')
  }
  return JSON_TAG + json
}

/**
 * Stored text → Keyv's value; `undefined` when the text was not written by `encodeValue` (a
 * decoded value is never `undefined` otherwise).
 */
export function decodeValue(text: string): unknown {
  const tag = text.charAt(0)
  if (tag === STRING_TAG) return text.slice(1)
  if (tag !== JSON_TAG) return undefined
  try {
    return JSON.parse(text.slice(1), reviver) as unknown
  } catch {
    return undefined
  }
}

function replacer(this: unknown, key: string, value: unknown): unknown {
  // JSON.stringify has already applied Buffer#toJSON to `value`: the holder has the original.
  const original = (this as Record<string, unknown>)[key]
  if (Buffer.isBuffer(original)) return BUFFER_MARK + original.toString('base64')
  if (typeof value === 'string' && value.startsWith(ESCAPE)) return ESCAPE + value
  return value
}

function reviver(key: string, value: unknown): unknown {
  if (key === '__proto__') return undefined
  if (typeof value !== 'string' || !value.startsWith(ESCAPE)) return value
  if (value.startsWith(BUFFER_MARK)) return Buffer.from(value.slice(BUFFER_MARK.length), 'base64')
  return value.slice(1)
}

/**
 * The serializer of the caches the store creates: the text from `encodeValue` is stored as it
 * is (no second JSON pass). Pass it to `failsoft.cache({ serializer: textSerializer })` when
 * you give the store a cache of your own and want the same.
 */
export const textSerializer: Serializer = Object.freeze({
  serialize(value: unknown): string {
    if (typeof value !== 'string') throw new TypeError('textSerializer stores strings only')
    return value
  },
  deserialize(text: string): unknown {
    return text
  },
})
