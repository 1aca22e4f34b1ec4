/**
 * Socket.IO's cluster messages carry packets, acknowledgement arguments and `socket.data`, any
 * of which may hold binary (a Buffer, an ArrayBuffer, a typed array). The channel layer carries
 * JSON, where a Buffer would arrive as `{ type: 'Buffer', data: [...] }`. So before a message
 * is handed to the layer, every binary value in it is replaced by `{ "~b": "<base64>" }`, and
 * the receiver turns those back into Buffers (what Socket.IO's own parser hands a Node server
 * for binary received from a client).
 *
 * A value of the application's that is itself an object with the one key `~b` or `~o` is
 * written as `{ "~o": <it> }`, so decoding can tell it from a marker. Everything else follows
 * JSON, as Socket.IO's parser does for what it sends to clients: a Date becomes its ISO string,
 * Maps and Sets lose their entries, `undefined` properties vanish.
 *
 * Encoding copies only the objects on the path to a replaced value (the packet Socket.IO goes
 * on to send to this server's own clients is never modified), and says whether it replaced
 * anything, so the receiver walks a message only when there is something to restore.
 */

const BINARY = '~b'
const ESCAPED = '~o'
/** Deeper than any real payload; also stops a cyclic one (JSON would refuse it anyway). */
const MAX_DEPTH = 200

/** A payload that cannot be encoded (too deep, or cyclic). */
export class UnencodablePayloadError extends TypeError {}

export interface Encoded {
  readonly value: unknown
  /** True when a marker was written: the receiver must `decodeBinary` the value. */
  readonly marked: boolean
}

/** Replace binary values by markers (copy-on-write). Throws UnencodablePayloadError. */
export function encodeBinary(value: unknown): Encoded {
  const state = { marked: false }
  const out = encode(value, 0, state)
  return { value: out, marked: state.marked }
}

function encode(value: unknown, depth: number, state: { marked: boolean }): unknown {
  if (typeof value !== 'object' || value === null) return value
  if (depth > MAX_DEPTH) {
    throw new UnencodablePayloadError(
      `the payload is nested more than ${MAX_DEPTH} levels deep (or is cyclic)`,
    )
  }
  if (value instanceof ArrayBuffer) {
    state.marked = true
    return { [BINARY]: Buffer.from(value).toString('base64') }
  }
  if (ArrayBuffer.isView(value)) {
    state.marked = true
    return {
      [BINARY]: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64'),
    }
  }
  if (Array.isArray(value)) {
    let copy: unknown[] | null = null
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      const encoded = encode(item, depth + 1, state)
      if (encoded !== item && copy === null) copy = value.slice(0, i)
      if (copy !== null) copy.push(encoded)
    }
    return copy ?? value
  }
  // An object with toJSON (a Date …) is left to JSON.stringify, as Socket.IO's parser does.
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return value
  const source = value as Record<string, unknown>
  const keys = Object.keys(source)
  let copy: Record<string, unknown> | null = null
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string
    const item = source[key]
    const encoded = encode(item, depth + 1, state)
    if (encoded !== item && copy === null) {
      copy = {}
      for (let j = 0; j < i; j++) copy[keys[j] as string] = source[keys[j] as string]
    }
    if (copy !== null) copy[key] = encoded
  }
  const result = copy ?? source
  if (keys.length === 1 && (keys[0] === BINARY || keys[0] === ESCAPED)) {
    state.marked = true
    return { [ESCAPED]: result }
  }
  return result
}

/**
 * Restore the binary values of a value that `encodeBinary` marked. The value is a fresh parse
 * of the layer's JSON (this receiver's own copy), so it is restored in place.
 */
export function decodeBinary(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null || depth > MAX_DEPTH) return value
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = decodeBinary(value[i], depth + 1)
    return value
  }
  const object = value as Record<string, unknown>
  const keys = Object.keys(object)
  if (keys.length === 1) {
    const only = object[keys[0] as string]
    if (keys[0] === BINARY && typeof only === 'string') return Buffer.from(only, 'base64')
    if (keys[0] === ESCAPED && typeof only === 'object' && only !== null) {
      decodeChildren(only as Record<string, unknown>, depth)
      return only
    }
  }
  decodeChildren(object, depth)
  return object
}

function decodeChildren(object: Record<string, unknown>, depth: number): void {
  for (const key of Object.keys(object)) object[key] = decodeBinary(object[key], depth + 1)
}
