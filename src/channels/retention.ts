/** A message this process published (or will publish), kept for receivers that missed it. */
export interface Retained {
  readonly topic: string
  readonly stream: number
  readonly seq: number
  /** The wire payload, exactly as published. */
  readonly payload: string
  /** When it was sent, on Redis' clock (ms). */
  readonly at: number
}

interface TopicList {
  items: Retained[]
  head: number
}

export interface RetentionLimits {
  maxMessages: number
  maxBytes: number
  maxAgeMs: number
}

/** The newest message kept per topic, and the oldest: what a `heads` notice announces. */
export interface Head {
  readonly topic: string
  readonly stream: number
  readonly seq: number
  /** Oldest sequence number still kept on this topic and stream. */
  readonly first: number
}

/**
 * The sender's side of gap repair: every cross-process message this process sends is kept,
 * oldest dropped first at the same bounds as the outbox (count, bytes, age), so that a
 * receiver that was not subscribed when it went out — it was cut off, or came back after this
 * process flushed its outbox — can ask for it again instead of losing it (see repair.ts).
 * Per topic, messages are kept in sequence order; one global FIFO decides what goes first.
 */
export class Retention {
  readonly #limits: RetentionLimits
  /** Global FIFO, oldest first (`#head` is its start). */
  #all: Retained[] = []
  #head = 0
  #bytes = 0
  /** Per topic, in sequence order; entries evicted from `#all` leave from the front. */
  readonly #byTopic = new Map<string, TopicList>()
  /** Messages dropped from retention by each bound. */
  readonly evicted = { count: 0, bytes: 0, age: 0 }

  constructor(limits: RetentionLimits) {
    this.#limits = limits
  }

  get size(): number {
    return this.#all.length - this.#head
  }

  get bytes(): number {
    return this.#bytes
  }

  get topics(): number {
    return this.#byTopic.size
  }

  keep(message: Retained): void {
    if (this.#limits.maxMessages === 0 || message.payload.length > this.#limits.maxBytes) return
    this.#all.push(message)
    this.#bytes += message.payload.length
    let list = this.#byTopic.get(message.topic)
    if (list === undefined) {
      list = { items: [], head: 0 }
      this.#byTopic.set(message.topic, list)
    }
    list.items.push(message)
    while (this.size > this.#limits.maxMessages) this.#evict('count')
    while (this.#bytes > this.#limits.maxBytes) this.#evict('bytes')
  }

  /** Drop what is older than the age bound (call now and then, and before answering). */
  expire(now: number): void {
    const before = now - this.#limits.maxAgeMs
    while (this.size > 0 && this.#all[this.#head]!.at < before) this.#evict('age')
  }

  /**
   * Messages kept on `topic` with sequence numbers in (after, before) on `stream` (stream 0:
   * any stream), sent at or after `since` (Redis time), oldest first.
   */
  range(topic: string, stream: number, after: number, before: number, since: number): Retained[] {
    const list = this.#byTopic.get(topic)
    if (list === undefined) return []
    const out: Retained[] = []
    for (let i = list.head; i < list.items.length; i++) {
      const m = list.items[i]!
      if (stream !== 0 && m.stream !== stream) continue
      if (m.at < since) continue
      if (stream !== 0 && (m.seq <= after || m.seq >= before)) continue
      out.push(m)
    }
    return out
  }

  /** Every message kept, oldest first (in the order they were kept). */
  entries(): Retained[] {
    return this.#all.slice(this.#head)
  }

  /** The oldest sequence number kept on a topic's stream (null: none kept). */
  firstSeq(topic: string, stream: number): number | null {
    const list = this.#byTopic.get(topic)
    if (list === undefined) return null
    for (let i = list.head; i < list.items.length; i++) {
      if (list.items[i]!.stream === stream) return list.items[i]!.seq
    }
    return null
  }

  /** The newest kept message of every topic (its stream, seq, and the oldest seq kept). */
  heads(): Head[] {
    const out: Head[] = []
    for (const [topic, list] of this.#byTopic) {
      const last = list.items[list.items.length - 1]
      if (last === undefined || list.head >= list.items.length) continue
      let first = last.seq
      for (
        let i = list.items.length - 1;
        i >= list.head && list.items[i]!.stream === last.stream;
        i--
      ) {
        first = list.items[i]!.seq
      }
      out.push({ topic, stream: last.stream, seq: last.seq, first })
    }
    return out
  }

  clear(): void {
    this.#all = []
    this.#head = 0
    this.#bytes = 0
    this.#byTopic.clear()
  }

  #evict(reason: 'count' | 'bytes' | 'age'): void {
    const oldest = this.#all[this.#head]
    if (oldest === undefined) return
    this.#head++
    this.#bytes -= oldest.payload.length
    this.evicted[reason]++
    const list = this.#byTopic.get(oldest.topic)
    if (list !== undefined) {
      // The global FIFO and each topic's list are in the same order: it is the topic's first.
      list.head++
      if (list.head >= list.items.length) this.#byTopic.delete(oldest.topic)
      else if (list.head >= 64 && list.head * 2 >= list.items.length) {
        list.items = list.items.slice(list.head)
        list.head = 0
      }
    }
    if (this.#head === this.#all.length) {
      this.#all = []
      this.#head = 0
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#all.length) {
      this.#all = this.#all.slice(this.#head)
      this.#head = 0
    }
  }
}
