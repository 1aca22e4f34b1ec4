import { safeJsonParse } from '../util/json.js'

/**
 * The gap-repair protocol between channel layers (see repair.ts), on two kinds of topics:
 * the layer's control topic, which every process of the layer subscribes, and each process'
 * own topic (`p:<process id>`). Topics inside these messages are given without the layer's
 * key base (`g:room`, `p:abc`, `c:name`).
 *
 * - `hello`   (control topic) a process re-subscribed after an interruption: every process
 *             answers with its `heads`, to the sender's own topic.
 * - `heads`   (control topic after a recovery, or to one process in answer to `hello`) the
 *             newest message kept per topic — [topic, stream, seq, oldest seq kept] — so a
 *             receiver learns what it missed even when nothing else is sent afterwards.
 * - `resend`  (to the publisher's own topic) ranges a receiver is missing:
 *             [topic, stream (0: any), after, before, since]: messages with after < seq <
 *             before, sent at or after `since` (Redis time; 0: any).
 * - the messages themselves come back as repair frames (`encodeRepair`) on the receiver's own
 *   topic, followed by one `resent` per range, which closes it: whatever did not come is not
 *   kept any more (lost, counted by the receiver).
 */
export type Control =
  | { readonly k: 'hello'; readonly o: string }
  | { readonly k: 'heads'; readonly o: string; readonly h: ReadonlyArray<HeadTuple> }
  | { readonly k: 'resend'; readonly o: string; readonly r: ReadonlyArray<RangeTuple> }
  | { readonly k: 'resent'; readonly o: string; readonly r: ReadonlyArray<RangeTuple> }

/** [topic, stream, seq, first] */
export type HeadTuple = readonly [string, number, number, number]
/** [topic, stream, after, before, since] */
export type RangeTuple = readonly [string, number, number, number, number]

const CONTROL = 'f1c|'
const REPAIR = 'f1r|'

/** Entries per control message: a large set of topics is announced in several messages. */
export const CONTROL_CHUNK = 256

export function encodeControl(message: Control): string {
  return CONTROL + JSON.stringify(message)
}

export function isControl(payload: string): boolean {
  return payload.startsWith(CONTROL)
}

/** Parse a control message; null when malformed (never throws). */
export function decodeControl(payload: string): Control | null {
  let value: unknown
  try {
    value = safeJsonParse(payload.slice(CONTROL.length))
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const m = value as { k?: unknown; o?: unknown; h?: unknown; r?: unknown }
  if (typeof m.o !== 'string' || m.o.length === 0 || m.o.length > 64) return null
  switch (m.k) {
    case 'hello':
      return { k: 'hello', o: m.o }
    case 'heads':
      return Array.isArray(m.h) && m.h.every(isHead) ? { k: 'heads', o: m.o, h: m.h } : null
    case 'resend':
    case 'resent':
      return Array.isArray(m.r) && m.r.every(isRange) ? { k: m.k, o: m.o, r: m.r } : null
    default:
      return null
  }
}

/** A kept message sent again to one receiver: the topic it was published on, then its payload. */
export function encodeRepair(topic: string, payload: string): string {
  return `${REPAIR}${topic.length}|${topic}${payload}`
}

export function isRepair(payload: string): boolean {
  return payload.startsWith(REPAIR)
}

export function decodeRepair(payload: string): { topic: string; payload: string } | null {
  const bar = payload.indexOf('|', REPAIR.length)
  if (bar < 0) return null
  const length = Number(payload.slice(REPAIR.length, bar))
  if (!Number.isSafeInteger(length) || length <= 0 || bar + 1 + length > payload.length) return null
  return {
    topic: payload.slice(bar + 1, bar + 1 + length),
    payload: payload.slice(bar + 1 + length),
  }
}

function isInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function isTopic(value: unknown): value is string {
  return typeof value === 'string' && value.length > 2 && value.length <= 256
}

function isHead(value: unknown): value is HeadTuple {
  return (
    Array.isArray(value) &&
    value.length === 4 &&
    isTopic(value[0]) &&
    isInt(value[1]) &&
    isInt(value[2]) &&
    isInt(value[3])
  )
}

function isRange(value: unknown): value is RangeTuple {
  return (
    Array.isArray(value) &&
    value.length === 5 &&
    isTopic(value[0]) &&
    isInt(value[1]) &&
    isInt(value[2]) &&
    isInt(value[3]) &&
    isInt(value[4])
  )
}
