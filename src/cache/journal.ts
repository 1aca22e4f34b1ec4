/**
 * The keys this process changed (or may have changed) without Redis knowing: written or
 * deleted while Redis was unavailable, and writes whose outcome is unknown because the
 * connection failed or timed out before the reply ("may have landed"). On recovery each key
 * is deleted in Redis — DEL, never SET, so a newer value written meanwhile by another process
 * is never overwritten; at worst the next read is a miss.
 *
 * Bounded: past `maxKeys` the key list is dropped and the journal only remembers that it
 * overflowed; recovery then bumps the namespace generation instead, which makes everything
 * written before unreachable in O(1). A `clear()` while degraded is recorded the same way.
 */
export class Journal {
  readonly maxKeys: number
  readonly #keys = new Set<string>()
  #overflowed = false
  #cleared = false
  #bumpRequired = false
  #unsure = false
  #overflows = 0

  constructor(maxKeys: number) {
    this.maxKeys = maxKeys
  }

  get size(): number {
    return this.#keys.size
  }

  get overflowed(): boolean {
    return this.#overflowed
  }

  /** Times the journal overflowed since the cache was created. */
  get overflows(): number {
    return this.#overflows
  }

  /** True when recovery must bump the generation (overflow, or a clear while degraded). */
  get needsGenerationBump(): boolean {
    return this.#overflowed || this.#cleared || this.#bumpRequired
  }

  /**
   * A SET was in flight when the connection failed: it may still land later than the
   * reconciliation (unless the monitor closed the old connection in Redis first).
   */
  get unsure(): boolean {
    return this.#unsure
  }

  /** Nothing left to reconcile. */
  get empty(): boolean {
    return this.#keys.size === 0 && !this.needsGenerationBump
  }

  add(key: string): void {
    // After an overflow (or a clear) the generation bump covers every key: stop listing them.
    if (this.needsGenerationBump || this.#keys.has(key)) return
    if (this.#keys.size >= this.maxKeys) {
      this.#overflowed = true
      this.#overflows++
      this.#keys.clear()
      return
    }
    this.#keys.add(key)
  }

  /** `key`'s SET was in flight when the connection failed: it may have landed, or land later. */
  addUnsure(key: string): void {
    this.#unsure = true
    this.add(key)
  }

  /** Recovery cannot rule out late writes (see `unsure`): bump the generation instead. */
  requireGenerationBump(): void {
    this.#bumpRequired = true
    this.#keys.clear()
  }

  /** Every listed key was deleted in Redis, and no late write can follow. */
  reconciled(): void {
    if (this.#keys.size === 0) this.#unsure = false
  }

  /** A clear() while degraded: the generation is bumped on recovery. */
  markCleared(): void {
    this.#cleared = true
    this.#keys.clear()
  }

  /** Remove and return up to `count` keys to reconcile. */
  take(count: number): string[] {
    const out: string[] = []
    for (const key of this.#keys) {
      if (out.length >= count) break
      out.push(key)
    }
    for (const key of out) this.#keys.delete(key)
    return out
  }

  /** Put back keys whose reconciliation failed. */
  restore(keys: readonly string[]): void {
    for (const key of keys) this.add(key)
  }

  /** The generation was bumped: every key written before it is unreachable. */
  generationBumped(): void {
    this.#overflowed = false
    this.#cleared = false
    this.#bumpRequired = false
    this.#unsure = false
    this.#keys.clear()
  }
}
