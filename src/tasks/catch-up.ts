import type { HealthMonitor } from '../health/monitor.js'
import type { RecoveryContext, Runner } from '../health/types.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError, isRefusedForNow, isReplyError } from '../redis/replies.js'
import { asError } from '../util/async.js'
import type { LogLimiter } from '../util/log-limiter.js'
import { sleep } from '../util/sleep.js'
import { LeaseKeeper, type TaskClaims } from './claims.js'
import type { KeyedRuns } from './keyed.js'
import type { RecentDispatches } from './recent-dispatches.js'
import type { TaskQueueOptions } from './options.js'
import type { Producer } from './producer.js'
import { repeatOptions, type ScheduleEntry, type Schedules } from './scheduler.js'
import type { JobJournal, SpooledJob } from './spool.js'
import type { TaskCounts } from './status.js'
import type { OutgoingJob, TaskDefinition } from './task.js'
import type { TaskWorker } from './worker.js'
import { REPLAY_BUDGET_MS, ROLLBACK_REPLAY_DELAY_MS, ROLLBACK_WINDOW_MS } from '../tunables.js'

/** Retry of recovery writes Redis refused for now (OOM…): first delay, doubling up to the cap. */
const REFUSED_RETRY_MS = 250
const REFUSED_RETRY_MAX_MS = 2000

export interface CatchUpDeps {
  readonly monitor: HealthMonitor
  readonly producer: Producer
  readonly journal: JobJournal
  readonly schedules: Schedules
  readonly keyed: KeyedRuns
  readonly recent: RecentDispatches
  readonly claims: TaskClaims | null
  readonly definitions: ReadonlyMap<string, TaskDefinition>
  readonly options: Readonly<TaskQueueOptions>
  readonly counts: TaskCounts
  readonly logger: Logger
  readonly logLimiter: LogLimiter
  readonly workers: () => Iterable<TaskWorker>
  readonly closed: () => boolean
  readonly closeSignal: AbortSignal
  readonly onError: (error: unknown, what: string) => void
  /** Spooled task ids handed to Redis (or refused by it for good): no longer in the spool. */
  readonly handedOver?: (ids: readonly string[]) => void
}

/**
 * What a task queue owes Redis after it could not reach it: in this order, the "done" markers
 * and leases of keyed inline runs, the schedulers, then the spool in order. It runs as the
 * queue's recovery step (before 'up') and in the background while up (a spool written while up
 * after an ambiguous enqueue, journals of dead processes, writes Redis refused for now).
 *
 * A refusal for now (OOM at `maxmemory`…) stops the writes where they are — nothing is skipped,
 * the spool's cursor stays on the refused job — and they are retried while Redis is up, with a
 * backoff up to REFUSED_RETRY_MAX_MS, without keeping the other components off Redis.
 */
export class CatchUp {
  readonly #deps: CatchUpDeps
  #refusal: { readonly since: number; attempt: number; error: Error } | null = null
  #draining: Promise<void> | null = null

  constructor(deps: CatchUpDeps) {
    this.#deps = deps
  }

  get draining(): Promise<void> | null {
    return this.#draining
  }

  /** The recovery step: workers reconnecting, the producer connected, then everything owed. */
  async recover(ctx: RecoveryContext): Promise<void> {
    if (this.#deps.closed()) return
    // First, so the workers are fetching again while the rest of the recovery runs.
    for (const worker of this.#deps.workers()) worker.revive()
    const deadline = Date.now() + REPLAY_BUDGET_MS
    if (ctx.reset || ctx.rollback !== null) this.#deps.producer.settingsLost()
    await this.#deps.producer.prepare(REPLAY_BUDGET_MS)
    if (ctx.reset || ctx.rollback !== null) {
      // Redis lost everything, or writes it acknowledged: the leases of runs still going and
      // the markers of tasks done here, first — before a replay or a re-add can hand their
      // jobs out again. Once, when a recovery sees both.
      for (const worker of this.#deps.workers()) await worker.reassertMarkers(ctx.run)
    }
    if (ctx.reset) this.#deps.schedules.invalidate()
    if (ctx.rollback !== null) await this.#afterRollback(ctx.rollback.after, ctx.run)
    await this.#catchUp(ctx.run, deadline, ctx.signal)
  }

  /**
   * Redis may have forgotten writes it acknowledged after stamp `after` (see Watermark): done
   * markers, leases, schedulers, jobs. In this order — so that no job added again can run a
   * second time — the workers write again the markers of the tasks they completed (done by
   * recover() before this), keyed inline
   * runs theirs, the schedulers are re-asserted (by #catchUp), and the jobs this process handed
   * to Redis since are added again under the same ids, ROLLBACK_REPLAY_DELAY_MS late: the
   * workers of other processes write their markers again in their own recovery meanwhile.
   * Idempotent: a failure here fails the recovery step, and the next round does it again.
   */
  async #afterRollback(after: number, run: Runner): Promise<void> {
    const { producer, counts, logger, recent, keyed, schedules } = this.#deps
    keyed.rollback()
    schedules.invalidate()
    const { jobs, complete } = recent.since(after)
    if (!complete) {
      counts.rollbackIncomplete++
      logger.error(
        { windowMs: ROLLBACK_WINDOW_MS, readded: jobs.length },
        'Redis forgot writes older than the jobs this process remembers: jobs dispatched before may be lost',
      )
    }
    if (jobs.length === 0) return
    const now = Date.now()
    const outgoing = jobs.map(({ job, due }) => ({
      ...job,
      idIsJobId: true,
      delayMs: Math.max(ROLLBACK_REPLAY_DELAY_MS, due - now),
    }))
    for (let i = 0; i < outgoing.length; i += 500) {
      await producer.addBatch(outgoing.slice(i, i + 500), run, this.#timeoutMs())
    }
    counts.rollbackReadded += outgoing.length
    logger.warn(
      { readded: outgoing.length, delayMs: ROLLBACK_REPLAY_DELAY_MS },
      'Redis may have forgotten jobs it had acknowledged: added them again under the same ids',
    )
  }

  needsRecovery(): boolean {
    if (this.#deps.closed()) return false
    // Redis refuses writes for now (OOM…): that is no reason to keep every component on its
    // fallback; the writes left are retried while up.
    if (this.#refusal !== null) return false
    return this.hasWork()
  }

  hasWork(): boolean {
    const { claims, keyed, schedules, journal } = this.#deps
    // Keyed inline runs: markers to write, leases to take. journal.hasWork(): this process'
    // spool, or journals of dead processes not yet looked at.
    return (
      (claims !== null && keyed.needsRedis) ||
      schedules.needsSync() ||
      journal.hasWork() ||
      this.#deps.producer.settingsOwed
    )
  }

  /** Back up: writes Redis refused before are tried again after the backoff. */
  up(): void {
    if (this.#refusal !== null) this.drainSoon(this.#refusalDelay())
  }

  /**
   * Catch up in the background while Redis is up, after `delayMs` (a burst of ambiguous
   * enqueues lands in the spool first).
   */
  drainSoon(delayMs = 50): void {
    if (this.#draining !== null || this.#deps.closed()) return
    const { monitor, producer } = this.#deps
    this.#draining = (async () => {
      await sleep(delayMs, this.#deps.closeSignal, true)
      const run: Runner = (fn) => monitor.run(fn)
      if (!this.hasWork()) this.#refusal = null
      while (!this.#deps.closed() && monitor.available && this.hasWork()) {
        await producer.prepare(REPLAY_BUDGET_MS)
        await this.#catchUp(run, Date.now() + REPLAY_BUDGET_MS, undefined)
        if (this.#refusal !== null) break
      }
    })()
      .catch((error: unknown) => this.#deps.onError(error, 'spool drain'))
      .finally(() => {
        this.#draining = null
        if (this.#refusal !== null && !this.#deps.closed() && monitor.available) {
          this.drainSoon(this.#refusalDelay())
        }
      })
  }

  /** The markers of keyed inline runs now (a run that succeeded while up). */
  async writeMarkers(run: Runner): Promise<void> {
    const claims = this.#deps.claims
    if (claims === null) return
    await this.#deps.keyed.writeMarkers(run, claims, this.#deps.options.doneTtlMs)
  }

  /** Leases for keyed inline runs that hold none yet (see KeyedRuns.takeLeases). */
  async takeLeases(run: Runner): Promise<void> {
    const { claims, keyed, monitor, counts, logLimiter } = this.#deps
    if (claims === null) return
    await keyed.takeLeases(
      run,
      claims,
      (id, token) =>
        new LeaseKeeper({
          claims,
          id,
          token,
          run: (fn) => monitor.run(fn),
          // Inline runs are not stopped when Redis is away: nobody else may take the key then.
          abortAfterMs: null,
          onLost: (reason) =>
            logLimiter.log(
              'lease-lost',
              'warn',
              { id, reason },
              'an inline keyed task lost its lease',
            ),
          onError: (error) => this.#deps.onError(error, 'lease'),
        }),
      (id, redis) => {
        counts.keyedConflicts++
        logLimiter.log(
          'keyed-conflict',
          'warn',
          { id, redis },
          'a keyed task ran inline while Redis says another run of it completed or runs elsewhere',
        )
      },
    )
  }

  async upsertSchedule(entry: ScheduleEntry, run: Runner): Promise<void> {
    await this.#deps.producer.upsertScheduler(
      entry.id,
      entry.name,
      repeatOptions(entry.timing),
      entry.args,
      entry.definition,
      run,
      this.#timeoutMs(),
    )
  }

  async removeSchedule(id: string, run: Runner): Promise<void> {
    await this.#deps.producer.removeScheduler(id, run, this.#timeoutMs())
  }

  #timeoutMs(): number {
    return Math.max(this.#deps.options.enqueueTimeoutMs, 1000)
  }

  async #catchUp(run: Runner, deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const { monitor, counts, logger, logLimiter, journal, keyed, schedules } = this.#deps
    try {
      await this.writeMarkers(run)
      await this.takeLeases(run)
      await this.#deps.producer.applySettings(run, this.#timeoutMs())
      await schedules.sync(
        (entry) => this.upsertSchedule(entry, run),
        (id) => this.removeSchedule(id, run),
      )
      await this.#replay(run, deadline, signal)
    } catch (error) {
      // LOADING, BUSY, READONLY…: Redis cannot serve at all — the monitor must know (the
      // recovery step fails and is retried; while up, the state goes down).
      if (isConnectivityError(error)) monitor.reportFailure(error)
      if (!isRefusedForNow(error) || isConnectivityError(error)) throw error
      // OOM: Redis serves reads, and keeps refusing writes until memory is freed.
      counts.writesDeferred++
      if (this.#refusal === null)
        this.#refusal = { since: Date.now(), attempt: 0, error: asError(error) }
      else this.#refusal.error = asError(error)
      logLimiter.log(
        'refused',
        'warn',
        {
          err: loggableError(error),
          spooled: journal.pending,
          markers: keyed.pendingCount,
          retryMaxMs: REFUSED_RETRY_MAX_MS,
        },
        'Redis refuses writes for now: spooled tasks stay in the spool and are retried',
      )
      return
    }
    if (this.#refusal !== null) {
      logger.info(
        { refusedForMs: Date.now() - this.#refusal.since, retries: this.#refusal.attempt },
        'Redis accepts writes again: spooled tasks handed over',
      )
      this.#refusal = null
    }
  }

  #refusalDelay(): number {
    const attempt = this.#refusal === null ? 0 : this.#refusal.attempt++
    return Math.min(REFUSED_RETRY_MAX_MS, REFUSED_RETRY_MS * 2 ** Math.min(attempt, 10))
  }

  async #replay(run: Runner, deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const { journal, logger } = this.#deps
    if (!journal.hasWork()) return
    const outcome = await journal.replay((batch) => this.#handOver(batch, run), {
      deadline,
      signal,
    })
    if (outcome.corrupt > 0) {
      logger.error({ corrupt: outcome.corrupt }, 'spool lines could not be read and were skipped')
    }
    if (outcome.replayed > 0) {
      logger.info(
        { replayed: outcome.replayed, remaining: journal.pending, done: outcome.done },
        'spooled tasks handed to the queue',
      )
    }
  }

  /**
   * One replay batch, in order. Any failure about Redis — the connection, or a refusal for
   * now such as OOM — rejects, which leaves the batch in the spool (its cursor does not move)
   * for a later try. Only a job Redis refuses for a reason of its own is logged at ERROR and
   * skipped, so that one bad record cannot keep the spool stuck for ever.
   */
  async #handOver(batch: readonly SpooledJob[], run: Runner): Promise<void> {
    const { producer, counts, logger } = this.#deps
    const jobs = batch.map((job) => this.#replayJob(job))
    try {
      await producer.addBatch(jobs, run, this.#timeoutMs())
      counts.replayed += jobs.length
      this.#acknowledged(jobs)
      return
    } catch (error) {
      if (!refusedForGood(error)) throw error
    }
    // Some job of the batch is refused: find it, one by one (re-adding the ones before it
    // is harmless, BullMQ ignores a job id it already has).
    for (const job of jobs) {
      try {
        await producer.addBatch([job], run, this.#timeoutMs())
        counts.replayed++
        this.#acknowledged([job])
      } catch (error) {
        if (!refusedForGood(error)) throw error
        counts.replayRefused++
        this.#deps.handedOver?.([job.id])
        logger.error(
          { err: loggableError(error), id: job.id, task: job.name },
          'a spooled task was refused by Redis and skipped',
        )
      }
    }
  }

  /** Spooled jobs Redis took: remembered in case it forgets them (see #afterRollback). */
  #acknowledged(jobs: readonly OutgoingJob[]): void {
    const { recent, monitor } = this.#deps
    this.#deps.handedOver?.(jobs.map((job) => job.id))
    const now = Date.now()
    for (const job of jobs) {
      recent.record({
        job,
        due: job.delayMs > 0 ? now + job.delayMs : 0,
        bytes: approximateBytes(job.args),
        stamp: monitor.watermark.stamp(),
        at: now,
      })
    }
  }

  #replayJob(job: SpooledJob): OutgoingJob {
    return {
      id: job.id,
      // A replay may re-send a job whose first add landed: BullMQ ignores it while it exists.
      idIsJobId: true,
      name: job.name,
      args: job.args,
      delayMs: job.due > 0 ? Math.max(0, job.due - Date.now()) : 0,
      ...(job.priority !== undefined && { priority: job.priority }),
      ...(job.lifo !== undefined && { lifo: job.lifo }),
      ...(job.bullmq !== undefined && { bullmq: job.bullmq }),
      definition: this.#deps.definitions.get(job.name),
    }
  }
}

/** True for an error about this job; about Redis (reported to the monitor if it must know), false. */
function refusedForGood(error: unknown): boolean {
  if (isRefusedForNow(error)) return false
  if (isReplyError(error)) return true
  // A BullMQ script status (negative code): Redis ran the script and it refused the job.
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'number' && code < 0
}

/** The arguments' JSON size, for the bound of RecentDispatches (0 if they do not serialize). */
function approximateBytes(args: unknown): number {
  try {
    return JSON.stringify(args)?.length ?? 0
  } catch {
    return 0
  }
}
