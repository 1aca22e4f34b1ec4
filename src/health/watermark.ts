/**
 * Lost-write detection: did Redis forget writes it acknowledged? A restart from an older RDB
 * or AOF `everysec` snapshot, a failover to a replica that had not received them yet, a
 * `FLUSHALL`: all keep serving, and nothing in Redis says what was lost.
 *
 * The signal is a counter that only this process writes, `<prefix>:failsoft:wm:<id>` (one
 * per process: a shared counter could be pushed past the value a rollback lost by the other
 * processes' increments, and the rollback would go unseen), and the order Redis executes
 * commands in. Snapshots, AOF and replication all keep a prefix of that order, so an `INCR`
 * that survived proves every command executed before it survived too. Every write a component
 * cares about is *stamped* (a number local to this process) when it is acknowledged; the
 * heartbeat sends `INCR wm` when writes were stamped since the last one (a `GET wm` otherwise),
 * and the reply *confirms* those writes at the value it returned: they survive exactly as long
 * as Redis' counter is not below that value.
 *
 * - The counter found below the highest value this process saw (or gone): writes were
 *   forgotten — a **deep** rollback. Writes confirmed at a value above the one found, and every
 *   write not confirmed yet, may be lost. Others' writes may be lost too (each process that
 *   wrote in the lost window sees its own counter behind): components take a global measure
 *   (the cache moves its generation).
 * - The counter not behind, but a different Redis process (`run_id`) or none at all answered
 *   since: only the writes acknowledged after the last confirmation are uncertain (the
 *   heartbeat's interval of them, at most), and only to this process.
 * - Neither: nothing can have been lost (the same process kept its memory).
 *
 * The cost is one `INCR` per heartbeat interval while this process writes (a `GET` otherwise)
 * and a counter increment per stamped write. Nothing is added to a write's round trip.
 */

/** What a recovery must reconcile after Redis may have forgotten acknowledged writes. */
export interface Rollback {
  /**
   * Writes stamped after this may be lost (`stamp > after`): re-apply or invalidate them.
   * 0: every write this process still remembers.
   */
  readonly after: number
  /** Redis' counter went backwards: writes this process saw acknowledged were forgotten. */
  readonly deep: boolean
  /** The highest counter value seen before, and the value found (null: the key was gone). */
  readonly seen: number
  readonly found: number | null
}

interface Confirmation {
  /** Writes stamped up to this one were acknowledged before the INCR was sent. */
  readonly upTo: number
  /** What that INCR returned. */
  readonly value: number
}

/**
 * The counter key's time to live (ms), refreshed by every confirming heartbeat and every 20th
 * other one: the key of a process that stopped goes away a day later. A process cut off from a
 * Redis that stays up for longer than that finds its key gone and takes it for a rollback —
 * the safe side (the cache moves its generation).
 */
export const WATERMARK_TTL_MS = 24 * 3600_000

/** Confirmations kept (about a minute of heartbeats while writing); older ones are merged. */
const MAX_CONFIRMATIONS = 600

export class Watermark {
  readonly key: string
  #stamp = 0
  /** `#stamp` when the last INCR was sent (writes up to it are, or will be, confirmed). */
  #sentUpTo = 0
  readonly #confirmations: Confirmation[] = []
  /** Highest counter value seen on the current history; null before the first. */
  #seen: number | null = null
  /** Counted for status(). */
  rollbacks = 0

  constructor(key: string) {
    this.key = key
  }

  /** Stamp a write that Redis just acknowledged. Cheap: a counter increment. */
  stamp(): number {
    return ++this.#stamp
  }

  /** The last stamp handed out. */
  get current(): number {
    return this.#stamp
  }

  /** Writes were stamped since the last INCR was sent: the heartbeat should INCR. */
  get dirty(): boolean {
    return this.#stamp > this.#sentUpTo
  }

  /** The heartbeat sends an INCR now: returns the stamp it confirms up to. */
  incrSent(): number {
    this.#sentUpTo = this.#stamp
    return this.#sentUpTo
  }

  /**
   * An INCR sent at `upTo` returned `value`. False when the counter was below what this
   * process had seen: Redis forgot writes (a deep rollback, assessed at the next probe).
   */
  confirmed(upTo: number, value: number): boolean {
    const ahead = this.#seen === null || value > this.#seen
    if (!ahead) return false
    this.#seen = value
    const confirmations = this.#confirmations
    confirmations.push({ upTo, value })
    if (confirmations.length > MAX_CONFIRMATIONS) confirmations.splice(0, confirmations.length / 2)
    return true
  }

  /** A GET of the counter returned `value` (null: missing). False when it went backwards. */
  observed(value: number | null): boolean {
    if (this.#seen === null) {
      if (value !== null) this.#seen = value
      return true
    }
    if (value === null || value < this.#seen) return false
    this.#seen = value
    return true
  }

  /**
   * Redis answers again (a probe): what may it have forgotten? `found` is the counter now (null
   * if missing), `replaced` whether another Redis process (or none) answered in between.
   * Returns null when nothing can be lost; otherwise the rollback, and this process adopts the
   * history it found.
   */
  assess(found: number | null, replaced: boolean): Rollback | null {
    const seen = this.#seen
    if (seen === null) {
      // Nothing was ever seen: nothing this process knows of can be lost, except writes made
      // before its first look (a process that wrote while Redis was never read).
      this.#seen = found
      if (!replaced || this.#stamp === 0) return null
      return this.#adopt({ after: 0, deep: false, seen: 0, found })
    }
    if (found === null || found < seen) {
      this.rollbacks++
      // The last confirmation Redis still holds: everything stamped after it may be lost.
      let after = 0
      for (let i = this.#confirmations.length - 1; i >= 0; i--) {
        const c = this.#confirmations[i]!
        if (found !== null && c.value <= found) {
          after = c.upTo
          break
        }
      }
      return this.#adopt({ after, deep: true, seen, found })
    }
    this.#seen = found
    const last = this.#confirmations[this.#confirmations.length - 1]
    const after = last?.upTo ?? 0
    if (after >= this.#stamp) return null // every write is confirmed, and Redis kept them
    if (!replaced) {
      // The same Redis process, its memory intact: nothing lost. An INCR lost with the
      // connection confirmed nothing; the next heartbeat confirms those writes.
      this.#sentUpTo = Math.min(this.#sentUpTo, after)
      return null
    }
    return this.#adopt({ after, deep: false, seen, found })
  }

  /** Redis lost all its data (a reset, handled as such): start a new history. */
  forget(): void {
    this.#seen = null
    this.#confirmations.length = 0
    this.#sentUpTo = 0
  }

  #adopt(rollback: Rollback): Rollback {
    this.#seen = rollback.found
    // Those values belong to a history Redis no longer has.
    this.#confirmations.length = 0
    this.#sentUpTo = Math.min(this.#sentUpTo, rollback.after)
    return rollback
  }
}
