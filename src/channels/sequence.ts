/**
 * Per-publisher, per-topic sequence numbers. A publisher numbers its messages on each topic
 * from 1, so that a receiver (repair.ts) can skip a duplicate — a publish that timed out, may
 * have landed, and was re-sent from the outbox after recovery: at-least-once on the wire,
 * exactly-once at the receiver — and see a gap, which it asks the publisher to fill. Idle
 * topics are forgotten so the map stays bounded; a publisher that forgot a topic starts a new
 * numbered stream on it, which a receiver tells apart from duplicates.
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

  /** The newest number sent on each topic still tracked (what a `heads` notice announces). */
  *heads(): IterableIterator<{ topic: string; stream: number; seq: number }> {
    for (const [topic, { stream, seq }] of this.#topics) yield { topic, stream, seq }
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
