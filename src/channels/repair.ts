import type { HeadTuple, RangeTuple } from './control.js'
import type { WireMessage } from './message.js'
import { RANGE_TIMEOUT_MS, RANGE_TRIES, REASK_MIN_AGE_MS } from '../tunables.js'

/** What the receiver side needs from the layer. */
export interface ReassemblyDeps {
  /** Hand a message on to the local members, in publisher order. */
  deliver(topic: string, wire: WireMessage): void
  /** Ask `origin` for a range it may still keep (the caller batches and sends). */
  request(origin: string, range: RangeTuple): void
  /**
   * For a topic this process listens on: when it started listening (Redis time, ms), and
   * whether its subscription has been unbroken since then (`clean`). Null: not listening.
   */
  topicInfo(topic: string): { joinedAt: number; clean: boolean } | null
  /** Whether requests can reach anyone now (this process is on Redis). */
  canAsk(): boolean
  /**
   * A gap still unanswered after this long (ms) is given up whatever happened: the publisher
   * keeps nothing older (its retention's age bound).
   */
  readonly giveUpMs: number
}

interface Pending {
  readonly range: RangeTuple
  /** When the gap was first asked about. */
  readonly since: number
  /** When it was last asked about. */
  at: number
  /** Asks made while this process could reach Redis and the publisher was heard from since. */
  tries: number
}

interface StreamState {
  stream: number
  /** Next sequence number to deliver; null until the base is known (a first contact being repaired). */
  next: number | null
  readonly held: Map<number, WireMessage>
  pending: Pending | null
  seen: number
}

/** Messages held behind one gap before it is given up (the rest delivered, the gap counted lost). */
const MAX_HELD = 1000

const now = (): number => performance.now()

/**
 * The receiver's side of cross-process delivery: per topic and publisher, messages are handed
 * on once and in the publisher's order. A message that arrives after a gap waits while the
 * missing ones are asked for from the publisher's retention (retention.ts) — a gap seen in the
 * numbers, a publisher's `heads` notice saying it sent more than arrived, or a first message
 * from a publisher after this process' subscription was interrupted. What the publisher no
 * longer keeps, or does not answer for, is counted as lost and skipped.
 */
export class Reassembly {
  readonly #deps: ReassemblyDeps
  readonly #topics = new Map<string, Map<string, StreamState>>()
  /** When each publisher was last heard from (any message, data or control). */
  readonly #heard = new Map<string, number>()
  /**
   * When each publisher last showed that it receives requests (it answered a range, or said
   * `hello` after re-subscribing). Being heard from is not enough: on a flapping link its
   * publishes get through while its subscriber is still reconnecting and the asks are lost.
   */
  readonly #listening = new Map<string, number>()
  readonly counters = { duplicates: 0, lost: 0, repaired: 0, requested: 0 }

  constructor(deps: ReassemblyDeps) {
    this.#deps = deps
  }

  /** Messages waiting behind a gap now. */
  get held(): number {
    let n = 0
    for (const origins of this.#topics.values())
      for (const st of origins.values()) n += st.held.size
    return n
  }

  /** A data message from `wire.origin` on `topic`; `repaired`: sent again at our request. */
  accept(topic: string, wire: WireMessage, repaired: boolean): void {
    this.#heard.set(wire.origin, now())
    const info = this.#deps.topicInfo(topic)
    // Not listening (any more): one still on its way when this process unsubscribed. It is for
    // nobody here, and tracking it would start a state that, if the topic is listened to again,
    // shows what was sent in between as a gap to repair (outside review 4).
    if (info === null) return
    let origins = this.#topics.get(topic)
    if (origins === undefined) {
      origins = new Map()
      this.#topics.set(topic, origins)
    }
    const origin = wire.origin
    let st = origins.get(origin)
    if (st === undefined || st.stream !== wire.stream) {
      if (repaired) {
        // An answer nobody waits for any more (the range was given up, or the stream moved on).
        this.counters.duplicates++
        return
      }
      if (st !== undefined) this.#flush(topic, origin, st)
      if (wire.seq === 1 || info.clean) {
        // Nothing owed before it: the first number of a stream, or a subscription unbroken
        // since this process joined (anything earlier was sent before it listened).
        origins.set(origin, this.#state(wire.stream, wire.seq + 1))
        this.#deps.deliver(topic, wire)
        return
      }
      st = this.#state(wire.stream, null)
      st.held.set(wire.seq, wire)
      origins.set(origin, st)
      this.#ask(origin, st, [topic, wire.stream, 0, wire.seq, info.joinedAt])
      return
    }
    st.seen = now()
    if (st.next === null) {
      if (st.held.has(wire.seq)) this.counters.duplicates++
      else st.held.set(wire.seq, wire)
      return
    }
    if (wire.seq < st.next || st.held.has(wire.seq)) {
      this.counters.duplicates++
      return
    }
    if (repaired) this.counters.repaired++
    if (wire.seq === st.next) {
      this.#deps.deliver(topic, wire)
      st.next++
      this.#drain(topic, st)
      return
    }
    st.held.set(wire.seq, wire)
    if (st.held.size > MAX_HELD) {
      this.#resolve(topic, origin, st, Infinity)
      return
    }
    if (st.pending === null) this.#ask(origin, st, [topic, st.stream, st.next - 1, wire.seq, 0])
  }

  /** A publisher's newest messages: ask for what did not arrive here. */
  heads(origin: string, heads: readonly HeadTuple[]): void {
    this.#heard.set(origin, now())
    // The publisher is there: whatever is still pending from it, ask again now.
    this.#reask((o) => o === origin)
    for (const [topic, stream, seq] of heads) {
      const info = this.#deps.topicInfo(topic)
      if (info === null) continue
      let origins = this.#topics.get(topic)
      if (origins === undefined) {
        origins = new Map()
        this.#topics.set(topic, origins)
      }
      const st = origins.get(origin)
      if (st !== undefined && st.stream === stream) {
        if (st.pending !== null || st.next === null || st.next > seq) continue
        this.#ask(origin, st, [topic, stream, st.next - 1, seq + 1, 0])
        continue
      }
      if (st !== undefined) this.#flush(topic, origin, st)
      const fresh = this.#state(stream, null)
      origins.set(origin, fresh)
      this.#ask(origin, fresh, [topic, stream, 0, seq + 1, info.joinedAt])
    }
  }

  /** `origin` re-subscribed after an interruption (its `hello`): it receives asks again. */
  hello(origin: string): void {
    this.#heard.set(origin, now())
    this.#listening.set(origin, now())
  }

  /** The publisher answered these ranges in full: whatever of them did not come is lost. */
  resent(origin: string, ranges: readonly RangeTuple[]): void {
    this.#heard.set(origin, now())
    this.#listening.set(origin, now())
    for (const range of ranges) {
      const [topic, stream, after, before] = range
      const st = this.#topics.get(topic)?.get(origin)
      if (st === undefined || st.stream !== stream || st.pending === null) continue
      const [, , pAfter, pBefore] = st.pending.range
      if (pAfter !== after || pBefore !== before) continue
      st.pending = null
      this.#resolve(topic, origin, st, before)
    }
  }

  /**
   * Ranges unanswered: ask again every RANGE_TIMEOUT_MS while this process can reach Redis; give
   * a range up after RANGE_TRIES asks the publisher should have answered (it showed since that
   * it receives asks: it answered another range, or said hello), or after `giveUpMs` whatever
   * happened. Never while this process is cut off: its asks
   * could not have been answered. Call periodically.
   */
  tick(): void {
    const t = now()
    const canAsk = this.#deps.canAsk()
    for (const [topic, origins] of this.#topics) {
      for (const [origin, st] of origins) {
        const pending = st.pending
        if (pending === null) continue
        const expired = t - pending.since >= this.#deps.giveUpMs
        const ignored =
          pending.tries >= RANGE_TRIES && (this.#listening.get(origin) ?? 0) > pending.at
        if (expired || (canAsk && ignored && t - pending.at >= RANGE_TIMEOUT_MS)) {
          st.pending = null
          this.#resolve(topic, origin, st, pending.range[3])
          continue
        }
        if (!canAsk || t - pending.at < RANGE_TIMEOUT_MS) continue
        pending.tries++
        pending.at = t
        this.counters.requested++
        this.#deps.request(origin, pending.range)
      }
    }
  }

  /** This process is back on Redis: ask again for everything still pending. */
  resubscribed(): void {
    this.#reask(() => true)
  }

  #reask(match: (origin: string) => boolean): void {
    const t = now()
    for (const origins of this.#topics.values()) {
      for (const [origin, st] of origins) {
        const pending = st.pending
        if (pending === null || !match(origin)) continue
        if (t - pending.at < REASK_MIN_AGE_MS) continue // that ask is still on its way
        pending.tries = 1
        pending.at = t
        this.counters.requested++
        this.#deps.request(origin, pending.range)
      }
    }
  }

  /** Stop tracking a topic (no longer listened to: later jumps are not losses). */
  forget(topic: string): void {
    this.#topics.delete(topic)
  }

  /** Forget publishers silent since before `idleBefore` (performance.now() time). */
  prune(idleBefore: number): void {
    for (const [origin, at] of this.#heard) if (at < idleBefore) this.#heard.delete(origin)
    for (const [origin, at] of this.#listening) {
      if (at < idleBefore) this.#listening.delete(origin)
    }
    for (const [topic, origins] of this.#topics) {
      for (const [origin, st] of origins) {
        if (st.seen < idleBefore && st.pending === null && st.held.size === 0)
          origins.delete(origin)
      }
      if (origins.size === 0) this.#topics.delete(topic)
    }
  }

  #state(stream: number, next: number | null): StreamState {
    return { stream, next, held: new Map(), pending: null, seen: now() }
  }

  #ask(origin: string, st: StreamState, range: RangeTuple): void {
    const t = now()
    st.pending = { range, since: t, at: t, tries: 1 }
    this.counters.requested++
    this.#deps.request(origin, range)
  }

  #drain(topic: string, st: StreamState): void {
    if (st.next === null) return
    for (let wire = st.held.get(st.next); wire !== undefined; wire = st.held.get(st.next)) {
      st.held.delete(st.next)
      this.#deps.deliver(topic, wire)
      st.next++
    }
  }

  /**
   * A range is settled (answered, or given up): deliver what is held up to `upTo` in order,
   * counting what is missing in it as lost; ask for the next gap beyond it, if any.
   */
  #resolve(topic: string, origin: string, st: StreamState, upTo: number): void {
    const seqs = [...st.held.keys()].sort((a, b) => a - b)
    if (st.next === null) {
      const first = seqs[0]
      if (first === undefined) {
        // Nothing owed and nothing waiting: the next message numbers the stream afresh.
        this.#topics.get(topic)?.delete(origin)
        return
      }
      st.next = first
    }
    for (const seq of seqs) {
      if (seq < st.next) {
        st.held.delete(seq)
        continue
      }
      if (seq > st.next) {
        if (seq > upTo) break
        this.counters.lost += seq - st.next
        st.next = seq
      }
      const wire = st.held.get(seq)
      st.held.delete(seq)
      if (wire !== undefined) this.#deps.deliver(topic, wire)
      st.next = seq + 1
    }
    // What the range owed up to its end and did not come (the publisher keeps it no more).
    if (Number.isFinite(upTo) && st.next < upTo) {
      this.counters.lost += upTo - st.next
      st.next = upTo
    }
    if (st.held.size > 0 && st.pending === null) {
      const nextHeld = Math.min(...st.held.keys())
      this.#ask(origin, st, [topic, st.stream, st.next - 1, nextHeld, 0])
    }
  }

  /** A publisher started a new stream on the topic: hand on what the old one still held. */
  #flush(topic: string, origin: string, st: StreamState): void {
    if (st.held.size === 0) return
    st.pending = null
    this.#resolve(topic, origin, st, Infinity)
  }
}
