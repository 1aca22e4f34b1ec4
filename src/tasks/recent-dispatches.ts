import { ROLLBACK_WINDOW_MS } from '../tunables.js'
import type { OutgoingJob } from './task.js'

/** One job Redis acknowledged: enough to add it again under the same task id. */
export interface AcknowledgedJob {
  readonly job: OutgoingJob
  /** When it is due (ms since the epoch): its delay is kept when it is added again. */
  readonly due: number
  /** Its arguments' JSON size, counted against the byte bound. */
  readonly bytes: number
  /** The health monitor's stamp for the acknowledgement (see Watermark). */
  readonly stamp: number
  readonly at: number
}

/** Jobs remembered at most, and their arguments' bytes at most; older ones are forgotten. */
const MAX_JOBS = 10_000
const MAX_BYTES = 16 * 1024 * 1024

/**
 * The jobs this process handed to Redis lately (dispatches answered `queued`, spool replays),
 * so that a rollback — Redis forgetting writes it acknowledged — can add them again under the
 * same task id: BullMQ ignores a job id it still has, and the done marker (or the worker's
 * memory of it) stops a job that already ran. Bounded by count (10 000), bytes (16 MiB of
 * arguments, which are referenced, not copied) and age (ROLLBACK_WINDOW_MS); a rollback that
 * reaches past what is remembered is reported incomplete.
 */
export class RecentDispatches {
  #jobs: AcknowledgedJob[] = []
  #head = 0
  #bytes = 0
  /** The newest stamp forgotten here (0: none): a rollback reaching past it is incomplete. */
  #forgotten = 0

  record(entry: AcknowledgedJob): void {
    this.#jobs.push(entry)
    this.#bytes += entry.bytes
    let head = this.#head
    while (
      this.#jobs.length - head > MAX_JOBS ||
      (this.#bytes > MAX_BYTES && head < this.#jobs.length - 1)
    )
      head++
    if (head > this.#head) this.#forget(head)
  }

  get size(): number {
    return this.#jobs.length - this.#head
  }

  /** Forget what is older than the window. */
  prune(now = Date.now()): void {
    let i = this.#head
    while (i < this.#jobs.length && now - this.#jobs[i]!.at > ROLLBACK_WINDOW_MS) i++
    if (i > this.#head) this.#forget(i)
  }

  /**
   * The jobs acknowledged after stamp `after` (those Redis may have forgotten), oldest first,
   * and whether every such job is still remembered here.
   */
  since(after: number): { jobs: AcknowledgedJob[]; complete: boolean } {
    this.prune()
    const jobs: AcknowledgedJob[] = []
    for (let i = this.#head; i < this.#jobs.length; i++) {
      const entry = this.#jobs[i]!
      if (entry.stamp > after) jobs.push(entry)
    }
    return { jobs, complete: this.#forgotten <= after }
  }

  #forget(until: number): void {
    for (let i = this.#head; i < until; i++) {
      const entry = this.#jobs[i]!
      this.#forgotten = Math.max(this.#forgotten, entry.stamp)
      this.#bytes -= entry.bytes
    }
    this.#head = until
    // Keep the array compact without an O(n) shift per record.
    if (this.#head > 1024 && this.#head * 2 > this.#jobs.length) {
      this.#jobs = this.#jobs.slice(this.#head)
      this.#head = 0
    }
  }
}
