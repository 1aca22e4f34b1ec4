import type { ScheduleStatus } from './scheduler.js'
import type { SpoolStatus } from './spool.js'
import type { WorkerStatus } from './worker.js'

/** Counts since the queue was created, by what became of each dispatch. */
export interface TaskCounts {
  queued: number
  /** Queued with `waitForReplicas`, on fewer replicas than asked when WAIT returned. */
  underReplicated: number
  inlineOk: number
  inlineFailed: number
  spooled: number
  replayed: number
  deferred: number
  dropped: number
  duplicate: number
  rejected: number
  /**
   * Inline or local runs refused at the queue's `rateLimit` (Redis unavailable): rejected, or
   * spooled with `inline.whenBusy: 'spool'`, or a local periodic run skipped.
   */
  rateLimited: number
  /** Flows added whole (`tasks.flow()`). */
  flowsQueued: number
  /** Flows not added: Redis unavailable or refusing (`rejected`, FAILSOFT_FLOW_UNAVAILABLE). */
  flowsRejected: number
  /** Flows sent and not answered: landed whole, or not at all. */
  flowsUnconfirmed: number
  /** Enqueues sent without an answer (then spooled under the same id). */
  ambiguous: number
  /**
   * Spooled jobs Redis refused for good on replay (an error about that job, not about Redis:
   * logged at ERROR with their id, not retried).
   */
  replayRefused: number
  /**
   * Enqueues sent without an answer that the spool could not keep a copy of either
   * (`mode: 'unconfirmed'`): each runs at most once — once if its first add landed.
   */
  unconfirmed: number
  /**
   * Keyed inline runs that Redis, once it answered, said another run completed or held
   * (both ran while this process was cut off from it).
   */
  keyedConflicts: number
  /**
   * Rounds of recovery writes (markers, schedulers, spool replay) stopped because Redis
   * refused writes for now (OOM at maxmemory…): nothing is skipped, they are retried.
   */
  writesDeferred: number
  localPeriodicRuns: number
  /**
   * Jobs added to the queue again after a rollback (Redis forgot writes it acknowledged): the
   * jobs this process had handed to it in the window it may have lost (see docs/high-availability.md).
   */
  rollbackReadded: number
  /** Rollbacks that reached further back than the jobs remembered here: older jobs may be lost. */
  rollbackIncomplete: number
}

/** `tasks.status()` / the component's entry in `failsoft.status()`. */
export interface TaskQueueStatus {
  queue: string
  mode: 'redis' | 'memory-only'
  tasks: string[]
  counts: TaskCounts
  inline: { running: number; waiting: number; concurrency: number; maxWaiting: number }
  spool: SpoolStatus | null
  /** Jobs in this process's spool, waiting for Redis. */
  spoolDepth: number
  /** "Done" markers of inline runs waiting to be written to Redis. */
  markersPending: number
  /** Markers forgotten because more than 100000 keyed inline runs waited for Redis. */
  markersLost: number
  producer: string
  workers: WorkerStatus[]
  schedules: ScheduleStatus[]
  errors: number
}
