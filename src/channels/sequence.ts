/**
 * Per-publisher, per-topic sequence numbers. A publisher numbers its messages on each topic
 * from 1; a receiver remembers the last number seen per (topic, publisher) and so can
 * - skip a duplicate (a publish that timed out, may have landed, and was re-sent from the
 *   outbox after recovery: at-least-once on the wire, exactly-once at the receiver), and
 * - count gaps: messages a publisher sent while this process was not subscribed (the honest
 *   loss figure of pub/sub, reported as `crossProcessGaps`).
 * Both sides forget idle entries so the maps stay bounded; a publisher that forgot a topic
 * starts a new numbered stream on it, which a receiver tells apart from duplicates.
 */
export class PublisherSequences {
  readonly #topics = new Map<string, { stream: number; seq: number; used: number }>()
  #streams = 0

  /**
   * The next number on a topic. `stream` identifies this counter: a counter forgotten (idle)
   * and created again gets a new stream, so receivers start over instead of taking its low
   * numbers for duplicates.
   */
  next(topic: string, now: number): { stream: number; seq: number } {
    const entry = this.#topics.get(topic)
    if (entry === undefined) {
      const created = { stream: ++this.#streams, seq: 1, used: now }
      this.#topics.set(topic, created)
      return created
    }
    entry.used = now
    entry.seq++
    return entry
  }

  prune(idleBefore: number): void {
    for (const [topic, entry] of this.#topics) {
      if (entry.used < idleBefore) this.#topics.delete(topic)
    }
  }

  get size(): number {
    return this.#topics.size
  }
}

export type Observation = 'new' | 'duplicate'

export class ReceiverSequences {
  readonly #topics = new Map<string, Map<string, { stream: number; seq: number; seen: number }>>()
  /** Messages known to be missing (sequence jumps), per publisher and topic, summed. */
  gaps = 0
  duplicates = 0

  observe(topic: string, origin: string, stream: number, seq: number, now: number): Observation {
    let origins = this.#topics.get(topic)
    if (origins === undefined) {
      origins = new Map()
      this.#topics.set(topic, origins)
    }
    const last = origins.get(origin)
    if (last === undefined || last.stream !== stream) {
      // First message heard from this publisher on this topic (or it started a new stream):
      // nothing to compare with.
      origins.set(origin, { stream, seq, seen: now })
      return 'new'
    }
    last.seen = now
    if (seq <= last.seq) {
      this.duplicates++
      return 'duplicate'
    }
    this.gaps += seq - last.seq - 1
    last.seq = seq
    return 'new'
  }

  /** Stop tracking a topic (unsubscribed: later jumps are not losses). */
  forget(topic: string): void {
    this.#topics.delete(topic)
  }

  prune(idleBefore: number): void {
    for (const [topic, origins] of this.#topics) {
      for (const [origin, entry] of origins) if (entry.seen < idleBefore) origins.delete(origin)
      if (origins.size === 0) this.#topics.delete(topic)
    }
  }
}
