/** A cross-process publish waiting for Redis. */
export interface OutboxItem {
  readonly topic: string
  readonly payload: string
  /** Publish order in this process: items are flushed in this order. */
  readonly order: number
  /** When the message was first handed to the transport (ms, Redis' clock): for the age bound. */
  readonly at: number
  /** Its publisher stream and sequence number (kept for repair once published). */
  readonly stream: number
  readonly seq: number
}

export interface OutboxLimits {
  maxMessages: number
  maxBytes: number
  maxAgeMs: number
}

export interface OutboxCounters {
  /** Messages ever put in the outbox. */
  buffered: number
  /** Messages sent from the outbox once Redis was back. */
  flushed: number
  /** Messages dropped, by the bound that dropped them (oldest first each time). */
  droppedCount: number
  droppedBytes: number
  droppedAge: number
  /** Still here when the layer closed without Redis: never sent (see ChannelLayer.close). */
  droppedAtClose: number
}

/**
 * Cross-process messages published while Redis is unavailable (or while a recovery settles),
 * bounded by count, size and age. At a bound the OLDEST message is dropped: during a long
 * outage the most recent state (the latest poll counts, the latest chat lines) is what a
 * reconnecting peer needs. Publish order is preserved, including for publishes that were in
 * flight when Redis failed and come back here after newer ones (they are inserted by order).
 */
export class Outbox {
  #items: OutboxItem[] = []
  #head = 0
  #bytes = 0
  readonly #limits: OutboxLimits
  readonly counters: OutboxCounters = {
    buffered: 0,
    flushed: 0,
    droppedCount: 0,
    droppedBytes: 0,
    droppedAge: 0,
    droppedAtClose: 0,
  }

  constructor(limits: OutboxLimits) {
    this.#limits = limits
  }

  get size(): number {
    return this.#items.length - this.#head
  }

  get bytes(): number {
    return this.#bytes
  }

  get dropped(): number {
    const c = this.counters
    return c.droppedCount + c.droppedBytes + c.droppedAge
  }

  /** Age of the oldest item in ms (0 when empty). */
  oldestAgeMs(now = Date.now()): number {
    const first = this.#items[this.#head]
    return first === undefined ? 0 : now - first.at
  }

  push(item: OutboxItem): void {
    this.counters.buffered++
    const size = item.payload.length
    if (this.#limits.maxMessages === 0 || size > this.#limits.maxBytes) {
      this.counters[this.#limits.maxMessages === 0 ? 'droppedCount' : 'droppedBytes']++
      return
    }
    // Almost always an append; a publish that failed in flight may be older than the tail.
    let index = this.#items.length
    while (index > this.#head && this.#items[index - 1]!.order > item.order) index--
    if (index === this.#items.length) this.#items.push(item)
    else this.#items.splice(index, 0, item)
    this.#bytes += size
    while (this.size > this.#limits.maxMessages) this.#dropOldest('droppedCount')
    while (this.#bytes > this.#limits.maxBytes) this.#dropOldest('droppedBytes')
  }

  /** Drop items older than maxAgeMs; then return up to `max` items from the head (not removed). */
  peek(max: number, now = Date.now()): OutboxItem[] {
    const before = now - this.#limits.maxAgeMs
    while (this.size > 0 && this.#items[this.#head]!.at < before) this.#dropOldest('droppedAge')
    return this.#items.slice(this.#head, this.#head + max)
  }

  /** Remove `count` items from the head after they were published. */
  commit(count: number): void {
    for (let i = 0; i < count && this.size > 0; i++) {
      this.#bytes -= this.#items[this.#head]!.payload.length
      this.#head++
      this.counters.flushed++
    }
    this.#compact()
  }

  /** Empty it; `atClose`: the layer closed with these unsent (counted). */
  clear(atClose = false): number {
    const dropped = this.size
    if (atClose) this.counters.droppedAtClose += dropped
    this.#items = []
    this.#head = 0
    this.#bytes = 0
    return dropped
  }

  #dropOldest(reason: 'droppedCount' | 'droppedBytes' | 'droppedAge'): void {
    const item = this.#items[this.#head]
    if (item === undefined) return
    this.#bytes -= item.payload.length
    this.#head++
    this.counters[reason]++
    this.#compact()
  }

  #compact(): void {
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
  }
}
