/** A `clear()` (or a generation bump) among the recent writes. */
export const CLEARED = Symbol('cleared')

/** Writes remembered for a rollback; older ones are forgotten (and the loss then widens). */
const CAPACITY = 10_000

/**
 * The keys this cache wrote on Redis lately, each with the health monitor's stamp for the
 * write (see Watermark). If Redis may have forgotten the writes stamped after some point, these
 * are the keys whose old value could come back: the recovery deletes them (or moves the
 * generation when a `clear()` is among them, or when older writes were already forgotten
 * here). A ring: recording is an array store, nothing is looked up on the write path.
 */
export class RecentWrites {
  readonly #stamps = new Float64Array(CAPACITY)
  readonly #keys: Array<string | typeof CLEARED | undefined> = new Array(CAPACITY)
  #next = 0
  #count = 0

  record(key: string | typeof CLEARED, stamp: number): void {
    this.#stamps[this.#next] = stamp
    this.#keys[this.#next] = key
    this.#next = (this.#next + 1) % CAPACITY
    if (this.#count < CAPACITY) this.#count++
  }

  /**
   * What to reconcile if the writes stamped after `after` may be lost: their keys, whether a
   * clear is among them, and whether every such write is still remembered here.
   */
  since(after: number): { keys: Set<string>; cleared: boolean; complete: boolean } {
    const keys = new Set<string>()
    let cleared = false
    let oldest = Infinity
    for (let i = 0; i < this.#count; i++) {
      const at = (this.#next - 1 - i + CAPACITY) % CAPACITY
      const stamp = this.#stamps[at]!
      oldest = Math.min(oldest, stamp)
      if (stamp <= after) continue
      const key = this.#keys[at]
      if (key === CLEARED) cleared = true
      else if (key !== undefined) keys.add(key)
    }
    // Full, and even its oldest write is uncertain: older ones, forgotten here, may be too.
    const complete = this.#count < CAPACITY || oldest <= after
    return { keys, cleared, complete }
  }
}
