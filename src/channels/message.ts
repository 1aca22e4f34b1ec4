import { InvalidMessageError, MessageTooLargeError } from '../errors.js'
import { safeJsonParse } from '../util/json.js'

/** What travels on a channel layer: a plain JSON object with a string `type`. */
export interface ChannelMessage {
  type: string
  [key: string]: unknown
}

/**
 * A message as it sits in a receive buffer: serialized once by the sender (that is also the
 * size check), parsed by each receiver, so every receiver gets its own copy (Channels deep-copies
 * for the same reason) and a WebSocket consumer can forward the JSON text without parsing it.
 */
export interface Entry {
  readonly type: string
  readonly json: string
  /**
   * When it was sent, ms since the epoch on Redis' clock as the sender estimated it (its own
   * clock plus the offset it measured; see RedisClock), so that hosts whose clocks disagree
   * still agree on a message's age. Messages older than `expirySeconds` are dropped.
   */
  readonly sentAt: number
  /**
   * The JSON as UTF-8, encoded once by the first WebSocket that forwards the message and
   * reused by the others (a group send to 50 sockets encodes it once, not 50 times).
   */
  bytes?: Buffer
  /**
   * A message from another process is parsed once on arrival, to check it; that object is
   * handed to the first receiver that parses the entry instead of parsing it again (the ones
   * after it parse their own copy).
   */
  parsed?: ChannelMessage | undefined
}

/**
 * Serialize and check a message sent at `now` (the layer's clock); throws InvalidMessageError /
 * MessageTooLargeError.
 */
export function serializeMessage(message: unknown, maxBytes: number, now: number): Entry {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new InvalidMessageError('a message must be a plain object with a string `type`')
  }
  const proto: unknown = Object.getPrototypeOf(message)
  if (proto !== Object.prototype && proto !== null) {
    throw new InvalidMessageError('a message must be a plain object (not a class instance)')
  }
  const type = (message as { type?: unknown }).type
  if (typeof type !== 'string' || type.length === 0) {
    throw new InvalidMessageError('a message needs a non-empty string `type`')
  }
  let json: string
  try {
    json = JSON.stringify(message)
  } catch (error) {
    throw new InvalidMessageError('the message is not JSON-serializable', { cause: error })
  }
  // A UTF-16 code unit is at most 3 UTF-8 bytes: the exact count is only needed near the limit.
  if (json.length * 3 > maxBytes) {
    const bytes = Buffer.byteLength(json)
    if (bytes > maxBytes) throw new MessageTooLargeError(bytes, maxBytes)
  }
  return { type, json, sentAt: now }
}

/** Parse an entry for a receiver: each call returns a fresh object. */
export function parseEntry(entry: Entry): ChannelMessage {
  const parsed = entry.parsed
  if (parsed !== undefined) {
    entry.parsed = undefined
    return parsed
  }
  return safeJsonParse(entry.json) as ChannelMessage
}

/**
 * Wire format of a pub/sub payload:
 * `f1|<origin>|<stream>|<seq>|<sentAt>|<target>|<typeLength>|<type><json>`.
 * A text header instead of a JSON envelope: the message JSON is never re-serialized or parsed
 * in transit, and a receiver can route (and a WebSocket consumer can forward) without parsing.
 * origin: the publishing layer's process id; stream + seq: per publisher and topic (see
 * sequence.ts); target: the group or channel name inside the topic.
 */
export interface WireMessage {
  readonly origin: string
  readonly stream: number
  readonly seq: number
  readonly target: string
  readonly entry: Entry
}

const VERSION = 'f1|'

export function encodeWire(
  origin: string,
  { stream, seq }: { stream: number; seq: number },
  target: string,
  entry: Entry,
): string {
  return `${VERSION}${origin}|${stream}|${seq}|${entry.sentAt}|${target}|${entry.type.length}|${entry.type}${entry.json}`
}

/** The numbering of a payload only (no copy of its body); null if it is not one of ours. */
export function decodeHeader(text: string): { origin: string; stream: number; seq: number } | null {
  if (!text.startsWith(VERSION)) return null
  const b = text.indexOf('|', VERSION.length)
  const c = b < 0 ? -1 : text.indexOf('|', b + 1)
  const d = c < 0 ? -1 : text.indexOf('|', c + 1)
  if (d < 0) return null
  const origin = text.slice(VERSION.length, b)
  const stream = Number(text.slice(b + 1, c))
  const seq = Number(text.slice(c + 1, d))
  if (origin.length === 0 || !Number.isSafeInteger(stream) || !Number.isSafeInteger(seq))
    return null
  return { origin, stream, seq }
}

/** Decode a payload; null if it is not one of ours or is malformed (never throws). */
export function decodeWire(text: string): WireMessage | null {
  if (!text.startsWith(VERSION)) return null
  // Seven '|'-separated header fields; the type is length-prefixed (it may contain '|').
  const bars: number[] = [VERSION.length - 1]
  for (let at = VERSION.length - 1; bars.length < 7;) {
    at = text.indexOf('|', at + 1)
    if (at < 0) return null
    bars.push(at)
  }
  const [a, b, c, d, e, f, g] = bars as [number, number, number, number, number, number, number]
  const origin = text.slice(a + 1, b)
  const stream = Number(text.slice(b + 1, c))
  const seq = Number(text.slice(c + 1, d))
  const sentAt = Number(text.slice(d + 1, e))
  const target = text.slice(e + 1, f)
  const typeLength = Number(text.slice(f + 1, g))
  if (
    origin.length === 0 ||
    !Number.isSafeInteger(stream) ||
    !Number.isSafeInteger(seq) ||
    !Number.isFinite(sentAt) ||
    !Number.isSafeInteger(typeLength) ||
    typeLength <= 0 ||
    g + 1 + typeLength >= text.length
  ) {
    return null
  }
  const type = text.slice(g + 1, g + 1 + typeLength)
  const json = text.slice(g + 1 + typeLength)
  if (json.charCodeAt(0) !== 123 /* { */) return null
  return { origin, stream, seq, target, entry: { type, json, sentAt } }
}
