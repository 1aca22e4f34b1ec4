import { LogLimiter } from '../util/log-limiter.js'
import { ClosedError, InlineBusyError, UnknownTaskError, invalidOption } from '../errors.js'
import type { Redis } from 'ioredis'
import type { FailsoftContext } from '../context.js'
import type { Disposable } from '../health/events.js'
import type { ComponentHandle, HealthMonitor, RecoveryContext, Runner } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError, isRefusedForNow, isReplyError } from '../redis/replies.js'
import { safeJsonParse } from '../util/json.js'
import { asError } from '../util/async.js'
import { sleep } from '../util/sleep.js'
import { DONE, LeaseKeeper, runToken, TaskClaims } from './claims.js'
import { InlineLimiter, runWithRetries, type RunOutcome } from './inline.js'
import { KeyedRuns } from './keyed.js'
import {
  NAME,
  resolveTaskOptions,
  resolveTaskQueueOptions,
  type TaskOptionsInput,
  type TaskQueueInput,
  type TaskQueueOptions,
} from './options.js'
import { Producer, type OutgoingJob } from './producer.js'
import {
  Schedules,
  type ScheduleEntry,
  type ScheduleOptions,
  type ScheduleResult,
} from './scheduler.js'
import { FileSpool, MemorySpool, type JobJournal, type SpooledJob } from './spool.js'
import {
  Task,
  prepareJob,
  type DispatchOptions,
  type DispatchResult,
  type PreparedJob,
  type TaskDefinition,
  type TaskHandler,
} from './task.js'
import { TaskWorker, type WorkOptions, type WorkerHandle } from './worker.js'

/** Counts since the queue was created, by what became of each dispatch. */
export interface TaskCounts {
  queued: number
  inlineOk: number
  inlineFailed: number
  spooled: number
  replayed: number
  deferred: number
  dropped: number
  duplicate: number
  rejected: number
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
}

/** Replay budget per recovery round: the monitor runs another round while work remains. */
const REPLAY_BUDGET_MS = 1500
/** Retry of recovery writes Redis refused for now (OOM…): first delay, doubling up to the cap. */
const REFUSED_RETRY_MS = 250
const REFUSED_RETRY_MAX_MS = 2000
/** How often journals left by dead processes are looked for while Redis is up. */
const ORPHAN_RESCAN_MS = 10_000
/** Idempotency keys run inline during one outage, remembered to skip repeats. */
const MAX_KEYED = 100_000
const LOG_EVERY_MS = 10_000

const registry = new WeakMap<FailsoftContext, Map<string, TaskQueue>>()

/**
 * `failsoft.tasks(options)`: one per queue name and instance — a second call with the same
 * queue returns the same object.
 */
export function taskQueue(context: FailsoftContext, input?: TaskQueueInput): TaskQueue {
  context.assertOpen()
  let byName = registry.get(context)
  if (byName === undefined) {
    byName = new Map()
    registry.set(context, byName)
  }
  const name = input?.queue ?? 'default'
  const existing = byName.get(name)
  if (existing !== undefined && !existing.closed) {
    const extra = Object.keys(input ?? {}).filter((k) => k !== 'queue')
    if (extra.length > 0) {
      throw invalidOption(
        extra[0] ?? 'options',
        `unset: queue "${name}" already exists on this instance (options apply when it is created)`,
        input,
        'range',
      )
    }
    return existing
  }
  const queue = new TaskQueue(context, input)
  byName.set(name, queue)
  return queue
}

/**
 * Background tasks on BullMQ that still run when Redis is down. `define` tasks, `dispatch`
 * them, run `work()` in worker processes, `schedule` periodic ones. While Redis is
 * unavailable each task follows its fallback: 'inline' (run here, now), 'spool' (durable
 * journal, handed to the queue when Redis is back) or 'drop'.
 */
export class TaskQueue {
  readonly name: string
  readonly options: Readonly<TaskQueueOptions>
  readonly #context: FailsoftContext
  readonly #monitor: HealthMonitor
  readonly #handle: ComponentHandle
  readonly #logger: Logger
  readonly #memoryOnly: boolean
  readonly #definitions = new Map<string, TaskDefinition>()
  readonly #tasks = new Map<string, Task<never, unknown>>()
  readonly #limiter: InlineLimiter
  readonly #journal: JobJournal | null
  readonly #producer: Producer | null
  readonly #schedules: Schedules
  readonly #workers = new Set<TaskWorker>()
  readonly #listeners: Disposable[] = []
  readonly #closeController = new AbortController()
  readonly #bullPrefix: string
  readonly #donePrefix: string
  /** Idempotency keys run (or running) inline here: see KeyedRuns. */
  readonly #keyed = new KeyedRuns(MAX_KEYED)
  /** Task markers and leases in Redis (null when doneTtlMs is 0, or memory-only). */
  readonly #claims: TaskClaims | null
  readonly #deferred = new Set<NodeJS.Timeout>()
  readonly #logLimiter: LogLimiter
  readonly #counts: TaskCounts = {
    queued: 0,
    inlineOk: 0,
    inlineFailed: 0,
    spooled: 0,
    replayed: 0,
    deferred: 0,
    dropped: 0,
    duplicate: 0,
    rejected: 0,
    ambiguous: 0,
    replayRefused: 0,
    unconfirmed: 0,
    keyedConflicts: 0,
    writesDeferred: 0,
    localPeriodicRuns: 0,
  }
  /** Redis refuses writes for now (OOM…): the recovery writes left wait for a retry while up. */
  #refusal: { readonly since: number; attempt: number; error: Error } | null = null
  #errors = 0
  #draining: Promise<void> | null = null
  #rescanTimer: NodeJS.Timeout | null = null
  #closed = false

  /** @internal Use `failsoft.tasks(options)`. */
  constructor(context: FailsoftContext, input?: TaskQueueInput) {
    this.options = resolveTaskQueueOptions(input, context.prefix)
    this.name = this.options.queue
    this.#context = context
    this.#monitor = context.monitor
    this.#memoryOnly = context.monitor.memoryOnly
    this.#bullPrefix = `${context.prefix}:tasks`
    this.#donePrefix = `${context.prefix}:tasks:${this.name}:done:`
    this.#claims =
      this.#memoryOnly || this.options.doneTtlMs === 0
        ? null
        : new TaskClaims({
            doneKey: (id) => this.#donePrefix + id,
            doneTtlMs: this.options.doneTtlMs,
            leaseMs: this.options.leaseMs,
          })
    this.#limiter = new InlineLimiter(
      this.options.inline.concurrency,
      this.options.inline.maxWaiting,
    )
    const spool = this.options.spool
    const onError = (error: unknown, what: string): void => this.#onError(error, what)
    this.#journal = this.#memoryOnly
      ? null
      : spool.path === false
        ? new MemorySpool(spool)
        : new FileSpool({
            path: spool.path,
            maxRecords: spool.maxRecords,
            maxBytes: spool.maxBytes,
            onError,
          })
    this.#producer = this.#memoryOnly
      ? null
      : new Producer({
          monitor: this.#monitor,
          queue: this.name,
          bullPrefix: this.#bullPrefix,
          options: this.options,
          connectionName: `tasks:${this.name}:producer`,
          onError,
        })
    this.#handle = this.#monitor.register({
      name: `tasks:${this.name}`,
      fallback: this.#memoryOnly
        ? 'in-process runs (memory-only)'
        : 'inline runs, the spool or drops, per task',
      recover: (ctx) => this.#recover(ctx),
      needsRecovery: () => this.#needsRecovery(),
      status: () => this.status() as unknown as Record<string, unknown>,
      close: () => this.close(),
    })
    this.#logger = this.#handle.logger
    this.#logLimiter = new LogLimiter(this.#logger, LOG_EVERY_MS)
    this.#schedules = new Schedules({
      logger: this.#logger,
      runLocal: (entry) => this.#runLocalPeriodic(entry),
    })
    if (this.#memoryOnly) {
      this.#schedules.setMemoryOnly()
      this.#schedules.startLocal()
    } else {
      this.#listeners.push(
        this.#monitor.on('down', () => {
          // Every add still waiting is rejected now (and becomes ambiguous → spooled).
          this.#producer?.disconnect()
          this.#schedules.startLocal()
        }),
        this.#monitor.on('up', () => {
          this.#schedules.stopLocal()
          // The recovery step left writes Redis refused for now: retry them while up.
          if (this.#refusal !== null) this.#drainSoon(this.#refusalDelay())
        }),
      )
      if (this.#monitor.state === 'down') this.#schedules.startLocal()
      // Created after Redis came up: recovery steps already ran without us.
      if (this.#monitor.available) this.#drainSoon()
      // A process sharing the spool directory may die at any time: its journal is looked for
      // again now and then, not only at a recovery or start-up.
      this.#rescanTimer = setInterval(() => {
        this.#journal?.rescan()
        if (this.#monitor.available) this.#drainSoon(0)
      }, ORPHAN_RESCAN_MS)
      this.#rescanTimer.unref()
    }
  }

  get closed(): boolean {
    return this.#closed
  }

  // ── public API ─────────────────────────────────────────────────────────────────────────────

  /**
   * Define a task. The handler runs on a worker (Redis up), or in the dispatching process
   * (fallback 'inline'), with the task's timeout, attempts and backoff.
   */
  define<A = unknown, R = unknown>(
    name: string,
    handler: TaskHandler<A, R>,
    options?: TaskOptionsInput,
  ): Task<A, R> {
    this.#assertOpen()
    if (typeof name !== 'string' || !NAME.test(name)) {
      throw invalidOption('name', '1 to 64 letters, digits, "-", "_" or "."', name, 'range')
    }
    if (typeof handler !== 'function') throw invalidOption('handler', 'a function', handler)
    if (this.#definitions.has(name)) {
      throw invalidOption('name', `a task not yet defined on queue "${this.name}"`, name, 'range')
    }
    const definition: TaskDefinition = {
      name,
      handler: handler as TaskHandler<never, unknown>,
      options: Object.freeze(resolveTaskOptions(options)),
    }
    this.#definitions.set(name, definition)
    const task = new Task<A, R>(this.name, definition, (d, a, o) => this.#dispatch(d, a, o))
    this.#tasks.set(name, task as Task<never, unknown>)
    return task
  }

  /** The task defined under this name, if any. */
  task<A = unknown, R = unknown>(name: string): Task<A, R> | undefined {
    return this.#tasks.get(name) as Task<A, R> | undefined
  }

  /** Dispatch by name (throws UnknownTaskError for a name not defined on this queue). */
  dispatch<R = unknown>(
    name: string,
    args: unknown,
    options?: DispatchOptions,
  ): Promise<DispatchResult<R>> {
    const definition = this.#definitions.get(name)
    if (definition === undefined) return Promise.reject(new UnknownTaskError(name, this.name))
    return this.#dispatch(definition, args, options) as Promise<DispatchResult<R>>
  }

  /**
   * Start a BullMQ worker running every task defined on this queue (define them before jobs
   * arrive). In a memory-only instance there is no queue: the handle does nothing.
   */
  work(options: WorkOptions = {}): WorkerHandle {
    this.#assertOpen()
    const concurrency = workOption(options.concurrency, 1, 'concurrency', 1, 10_000)
    const lockDurationMs = workOption(
      options.lockDurationMs,
      10_000,
      'lockDurationMs',
      100,
      86_400_000,
    )
    const stalledIntervalMs = workOption(
      options.stalledIntervalMs,
      5_000,
      'stalledIntervalMs',
      100,
      86_400_000,
    )
    if (this.#memoryOnly) return idleWorker
    const worker = new TaskWorker({
      monitor: this.#monitor,
      queue: this.name,
      bullPrefix: this.#bullPrefix,
      connectionName: `tasks:${this.name}:worker`,
      definitions: this.#definitions,
      claims: this.#claims,
      concurrency,
      lockDurationMs,
      stalledIntervalMs,
      removeOnComplete: this.options.removeOnComplete,
      removeOnFail: this.options.removeOnFail,
      logger: this.#logger.child({ role: 'worker' }),
      onClosed: (w) => this.#workers.delete(w),
    })
    this.#workers.add(worker)
    return worker
  }

  /**
   * Run a defined task every `everyMs` through a BullMQ job scheduler (one run per period
   * across all replicas). Never rejects because of Redis: while it is unavailable the
   * scheduler is created once it is back ('pending'), and it is re-created whenever Redis
   * comes back empty. While Redis is unavailable periodic runs are skipped, unless the task
   * was defined with `whileDown: 'local'`.
   */
  async schedule(name: string, options: ScheduleOptions): Promise<ScheduleResult> {
    this.#assertOpen()
    const definition = this.#definitions.get(name)
    if (definition === undefined) throw new UnknownTaskError(name, this.name)
    const { id, everyMs } = Schedules.validate(name, options)
    const args = options.args === undefined ? {} : options.args
    // Same validation as a dispatch: JSON, size-limited.
    prepareJob(this.name, definition, args, undefined, this.options.maxArgsBytes)
    const entry = this.#schedules.add({ id, name, everyMs, args, definition })
    if (!this.#monitor.available) return { id, state: 'pending' }
    try {
      await this.#upsertSchedule(entry, (fn) => this.#monitor.run(fn))
      entry.synced = true
      return { id, state: 'scheduled' }
    } catch (error) {
      this.#onError(error, 'schedule')
      return { id, state: 'pending' }
    }
  }

  /** Remove a periodic task (from Redis now, or once Redis is back). */
  async unschedule(id: string): Promise<boolean> {
    this.#assertOpen()
    if (!this.#schedules.delete(id)) return false
    if (this.#monitor.available) {
      try {
        await this.#removeSchedule(id, (fn) => this.#monitor.run(fn))
        this.#schedules.removed(id)
      } catch (error) {
        this.#onError(error, 'unschedule')
      }
    }
    return true
  }

  status(): TaskQueueStatus {
    return {
      queue: this.name,
      mode: this.#memoryOnly ? 'memory-only' : 'redis',
      tasks: [...this.#definitions.keys()],
      counts: { ...this.#counts },
      inline: {
        running: this.#limiter.running,
        waiting: this.#limiter.waiting,
        concurrency: this.#limiter.concurrency,
        maxWaiting: this.#limiter.maxWaiting,
      },
      spool: this.#journal?.status() ?? null,
      spoolDepth: this.#journal?.pending ?? 0,
      markersPending: this.#keyed.pendingCount,
      markersLost: this.#keyed.markersLost,
      producer: this.#producer?.connectionStatus ?? 'none',
      workers: [...this.#workers].map((w) => w.status()),
      schedules: this.#schedules.status(),
      errors: this.#errors,
    }
  }

  /** Stop workers and local timers, flush the spool file, release its lock. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#closeController.abort(new ClosedError('task queue'))
    if (this.#rescanTimer !== null) clearInterval(this.#rescanTimer)
    for (const listener of this.#listeners) listener.dispose()
    this.#schedules.close()
    for (const timer of this.#deferred) clearTimeout(timer)
    if (this.#deferred.size > 0) {
      this.#logger.warn(
        { lost: this.#deferred.size },
        'delayed in-memory tasks not run before close (memory-only mode)',
      )
      this.#deferred.clear()
    }
    this.#keyed.close()
    await Promise.all([...this.#workers].map((w) => w.close()))
    if (this.#draining) await this.#draining.catch(() => undefined)
    await this.#producer?.close()
    await this.#journal?.close().catch((error: unknown) => this.#onError(error, 'spool close'))
    this.#handle.dispose()
  }

  // ── the one degradation path ───────────────────────────────────────────────────────────────

  #dispatch(
    definition: TaskDefinition,
    args: unknown,
    options: DispatchOptions | undefined,
  ): Promise<DispatchResult<unknown>> {
    try {
      this.#assertOpen()
      const job = prepareJob(this.name, definition, args, options, this.options.maxArgsBytes)
      return this.#route(job)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /**
   * Redis or fallback, for every dispatch: the queue when the monitor says Redis is up (a
   * property read: a known-down Redis costs nothing); otherwise, or when Redis certainly did
   * not take the job, the task's fallback. An enqueue that was sent but not answered is
   * never run inline — it may still land — it goes to the spool under the same id.
   */
  #route(job: PreparedJob): Promise<DispatchResult<unknown>> {
    // A key this process ran (or runs) inline: a duplicate, Redis up or down — its marker may
    // not be in Redis yet, and a queued copy must not run beside or after it.
    if (job.keyed && this.#keyed.has(job.id)) {
      this.#counts.duplicate++
      return Promise.resolve({ mode: 'duplicate', id: job.id })
    }
    const producer = this.#producer
    if (producer === null || !this.#monitor.available) return Promise.resolve(this.#fallback(job))
    // Not an async function: the hot path, one promise less per dispatch.
    return producer.enqueue(job).then((outcome) => {
      if (outcome.kind === 'queued') {
        this.#counts.queued++
        return { mode: 'queued', id: job.id, jobId: outcome.jobId }
      }
      if (outcome.kind === 'ambiguous') return this.#ambiguous(job, outcome.error)
      this.#logLimiter.log(
        'not-sent',
        'warn',
        { err: loggableError(outcome.error) },
        'enqueue refused; using the fallback',
      )
      return this.#fallback(job)
    })
  }

  #fallback(job: PreparedJob): Promise<DispatchResult<unknown>> | DispatchResult<unknown> {
    this.#handle.recordFallback()
    // Memory-only: no queue will ever take the job, whatever the task's fallback.
    const policy = this.#memoryOnly ? 'inline' : job.definition.options.fallback
    if (policy === 'drop') return this.#drop(job)
    if (job.delayMs > 0) return this.#memoryOnly ? this.#defer(job) : this.#spool(job)
    return policy === 'spool' ? this.#spool(job) : this.#inline(job)
  }

  #ambiguous(
    job: PreparedJob,
    error: Error,
  ): Promise<DispatchResult<unknown>> | DispatchResult<unknown> {
    this.#counts.ambiguous++
    this.#handle.recordFallback()
    this.#logLimiter.log(
      'ambiguous',
      'warn',
      { err: loggableError(error), id: job.id },
      'enqueue unanswered (it may still land): spooled under the same id, not run inline',
    )
    // Every policy, 'drop' included: the add may have landed, so the job must run exactly
    // once rather than maybe — the spool's replay under the same id, which a worker skips if
    // the first add ran. Answering 'dropped' here would be a promise that it never runs.
    return this.#spool(job, true)
  }

  #drop(job: PreparedJob): DispatchResult<unknown> {
    this.#counts.dropped++
    this.#logLimiter.log(
      'drop',
      'warn',
      { task: job.definition.name, dropped: this.#counts.dropped },
      'task dropped: Redis is unavailable',
    )
    return { mode: 'dropped', id: job.id }
  }

  /** `ambiguous`: the job's add was sent and not answered (it may have landed). */
  async #spool(job: PreparedJob, ambiguous = false): Promise<DispatchResult<unknown>> {
    const journal = this.#journal
    if (journal === null) return this.#inline(job)
    try {
      await journal.append({
        id: job.id,
        name: job.definition.name,
        payload: job.payload,
        at: Date.now(),
        due: job.delayMs > 0 ? Date.now() + job.delayMs : 0,
      })
    } catch (error) {
      this.#logLimiter.log(
        'spool',
        'error',
        { err: loggableError(error), ambiguous },
        'task not accepted by the spool',
      )
      if (ambiguous) {
        // Not 'rejected': its first add may still run. It runs at most once.
        this.#counts.unconfirmed++
        return { mode: 'unconfirmed', id: job.id, error: asError(error) }
      }
      this.#counts.rejected++
      return { mode: 'rejected', id: job.id, error: asError(error) }
    }
    this.#counts.spooled++
    // Spooled while Redis is up (an ambiguous enqueue): hand it over without waiting for an outage.
    if (this.#monitor.available) this.#drainSoon()
    return { mode: 'spooled', id: job.id }
  }

  async #inline(job: PreparedJob): Promise<DispatchResult<unknown>> {
    if (job.keyed && this.#keyed.has(job.id)) {
      this.#counts.duplicate++
      return { mode: 'duplicate', id: job.id }
    }
    const slot = this.#limiter.acquire()
    if (slot === null) {
      if (this.options.inline.whenBusy === 'spool' && this.#journal !== null)
        return this.#spool(job)
      this.#counts.rejected++
      return {
        mode: 'rejected',
        id: job.id,
        error: new InlineBusyError(this.#limiter.concurrency, this.#limiter.maxWaiting),
      }
    }
    if (job.keyed) {
      this.#keyed.start(job.id)
      // Inline while Redis is up (an enqueue it refused): take the key's lease now.
      if (this.#monitor.available) await this.#leaseKeyed((fn) => this.#monitor.run(fn))
    }
    const release = await slot
    let outcome: RunOutcome & { settled: Promise<RunOutcome> }
    try {
      outcome = await this.#run(job.definition, job.id, parseArgs(job.payload), 'inline')
    } finally {
      release()
    }
    if (job.keyed) void outcome.settled.then((ended) => this.#keyedEnded(job.id, ended))
    if (outcome.ok) {
      this.#counts.inlineOk++
      if (job.keyed) await outcome.settled.then(() => this.#keyedWritten(job.id))
      return { mode: 'inline', id: job.id, ok: true, value: outcome.value }
    }
    this.#counts.inlineFailed++
    this.#logLimiter.log(
      `failed:${job.definition.name}`,
      'warn',
      { err: loggableError(outcome.error), task: job.definition.name, id: job.id },
      'task failed inline',
    )
    return { mode: 'inline', id: job.id, ok: false, error: outcome.error }
  }

  /**
   * A keyed inline run's handler returned (after its timeout too, if it ignored its signal):
   * success makes the key done — its marker is written now if Redis is up, else by the next
   * recovery step, before 'up' — and a failure frees the key (and its lease) for a new dispatch.
   */
  #keyedEnded(id: string, outcome: RunOutcome): void {
    const run = this.#keyed.get(id)
    if (run === undefined || run.state !== 'running') return
    const keeper = run.keeper
    if (!outcome.ok) {
      this.#keyed.failed(id)
      if (keeper !== null && this.#claims !== null && this.#monitor.available) {
        const claims = this.#claims
        this.#monitor
          .run((redis) => claims.release(redis, id, keeper.token))
          .catch((error: unknown) => this.#onError(error, 'lease release'))
      }
      return
    }
    if (this.options.doneTtlMs === 0) {
      this.#keyed.failed(id) // no markers (at-least-once only): nothing to remember
      return
    }
    // Memory-only: no marker to write, the key is remembered here for doneTtlMs.
    this.#keyed.succeeded(id, this.options.doneTtlMs, this.#claims !== null)
    if (this.#claims !== null && this.#monitor.available) this.#drainSoon(0)
  }

  /** Resolves once a succeeded key's marker is written, or at once when it cannot be now. */
  async #keyedWritten(id: string): Promise<void> {
    if (!this.#monitor.available || this.#claims === null) return
    if (this.#keyed.get(id)?.markerPending !== true) return
    try {
      await this.#writeMarkers((fn) => this.#monitor.run(fn))
    } catch (error) {
      this.#onError(error, 'marker')
    }
  }

  /**
   * Give every keyed inline run that holds no lease yet its lease in Redis (a recovery step,
   * or a run started while up), so a worker anywhere defers a queued copy of the key until the
   * run ends. A key Redis says is done or held already ran elsewhere while this process could
   * not see it (both were cut off from each other): counted and logged, nothing else to do.
   */
  async #leaseKeyed(run: Runner): Promise<void> {
    const claims = this.#claims
    if (claims === null) return
    for (const [id, entry] of this.#keyed.unleased()) {
      const token = runToken()
      const outcome = await run((redis) => claims.claim(redis, id, token))
      if (entry.state !== 'running' || entry.keeper !== null) continue
      if (outcome.kind !== 'claimed') {
        this.#counts.keyedConflicts++
        this.#logLimiter.log(
          'keyed-conflict',
          'warn',
          { id, redis: outcome.kind },
          'a keyed task ran inline while Redis says another run of it completed or runs elsewhere',
        )
      }
      entry.keeper = new LeaseKeeper({
        claims,
        id,
        token,
        run: (fn) => this.#monitor.run(fn),
        // Inline runs are not stopped when Redis is away: nobody else may take the key then.
        abortAfterMs: null,
        onLost: (reason) =>
          this.#logLimiter.log(
            'lease-lost',
            'warn',
            { id, reason },
            'an inline keyed task lost its lease',
          ),
        onError: (error) => this.#onError(error, 'lease'),
      })
    }
  }

  #run(
    definition: TaskDefinition,
    id: string,
    args: unknown,
    mode: 'inline' | 'local',
  ): Promise<RunOutcome & { settled: Promise<RunOutcome> }> {
    return runWithRetries(
      definition,
      args,
      { id, name: definition.name, queue: this.name, mode },
      (late) =>
        this.#logLimiter.log(
          'late',
          'warn',
          { err: loggableError(late), task: definition.name },
          'task settled after its timeout',
        ),
      this.#closeController.signal,
    )
  }

  /** Memory-only, delayed: a local timer, then the inline runner. */
  #defer(job: PreparedJob): DispatchResult<unknown> {
    this.#counts.deferred++
    const timer = setTimeout(() => {
      this.#deferred.delete(timer)
      const runJob: PreparedJob = { ...job, delayMs: 0 }
      this.#inline(runJob).then(
        (result) => {
          if (result.mode === 'rejected') this.#onError(result.error, 'deferred task')
        },
        (error: unknown) => this.#onError(error, 'deferred task'),
      )
    }, job.delayMs)
    this.#deferred.add(timer)
    return { mode: 'deferred', id: job.id }
  }

  async #runLocalPeriodic(entry: ScheduleEntry): Promise<'ran' | 'busy'> {
    const slot = this.#limiter.acquire()
    if (slot === null) return 'busy'
    const release = await slot
    try {
      const slotId = `local-${entry.id}-${Math.floor(Date.now() / entry.everyMs)}`
      const outcome = await this.#run(entry.definition, slotId, entry.args, 'local')
      this.#counts.localPeriodicRuns++
      if (!outcome.ok) {
        this.#logLimiter.log(
          `failed:${entry.name}`,
          'warn',
          { err: loggableError(outcome.error), task: entry.name, schedule: entry.id },
          'periodic task failed (local run)',
        )
      }
      return 'ran'
    } finally {
      release()
    }
  }

  // ── recovery ───────────────────────────────────────────────────────────────────────────────

  /**
   * Before the state flips to 'up': the workers reconnecting, the producer connected, the "done" markers of inline runs
   * written (before any replay, so a replayed copy of the same id is skipped), schedulers
   * re-created if Redis lost them, then the spool handed over in order.
   */
  async #recover(ctx: RecoveryContext): Promise<void> {
    const producer = this.#producer
    if (this.#closed || producer === null) return
    // First, so the workers are fetching again while the rest of the recovery runs.
    for (const worker of this.#workers) worker.revive()
    const deadline = Date.now() + REPLAY_BUDGET_MS
    await producer.prepare(REPLAY_BUDGET_MS)
    if (ctx.reset) this.#schedules.invalidate()
    await this.#catchUp(ctx.run, deadline, ctx.signal)
  }

  #needsRecovery(): boolean {
    if (this.#closed || this.#producer === null) return false
    // Redis refuses writes for now (OOM…): that is no reason to keep every component on its
    // fallback; the writes left are retried while up.
    if (this.#refusal !== null) return false
    return this.#hasWork()
  }

  #hasWork(): boolean {
    return (
      // Keyed inline runs: markers to write, leases to take. hasWork(): this process's spool,
      // or journals of dead processes not yet looked at.
      (this.#claims !== null && this.#keyed.needsRedis) ||
      this.#schedules.needsSync() ||
      (this.#journal?.hasWork() ?? false)
    )
  }

  /**
   * The writes Redis must get back, in this order: "done" markers, schedulers, the spool.
   * A refusal for now (OOM…) stops them where they are — nothing is skipped, the spool's
   * cursor stays on the refused job — and they are retried while Redis is up.
   */
  async #catchUp(
    run: <T>(fn: (redis: import('ioredis').Redis) => Promise<T>) => Promise<T>,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    try {
      await this.#writeMarkers(run)
      await this.#leaseKeyed(run)
      await this.#schedules.sync(
        (entry) => this.#upsertSchedule(entry, run),
        (id) => this.#removeSchedule(id, run),
      )
      await this.#replay(run, deadline, signal)
    } catch (error) {
      // LOADING, BUSY, READONLY…: Redis cannot serve at all — the monitor must know (the
      // recovery step fails and is retried; while up, the state goes down).
      if (isConnectivityError(error)) this.#monitor.reportFailure(error)
      if (!isRefusedForNow(error) || isConnectivityError(error)) throw error
      // OOM: Redis serves reads, and keeps refusing writes until memory is freed.
      this.#counts.writesDeferred++
      const first = this.#refusal === null
      if (first) this.#refusal = { since: Date.now(), attempt: 0, error: asError(error) }
      else if (this.#refusal !== null) this.#refusal.error = asError(error)
      this.#logLimiter.log(
        'refused',
        'warn',
        {
          err: loggableError(error),
          spooled: this.#journal?.pending ?? 0,
          markers: this.#keyed.pendingCount,
          retryMaxMs: REFUSED_RETRY_MAX_MS,
        },
        'Redis refuses writes for now: spooled tasks stay in the spool and are retried',
      )
      return
    }
    if (this.#refusal !== null) {
      this.#logger.info(
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

  /**
   * DONE markers of keyed inline runs that succeeded while Redis could not take them — before
   * any replay, so a replayed or queued copy of the key is skipped.
   */
  async #writeMarkers(run: Runner): Promise<void> {
    const claims = this.#claims
    const ids = this.#keyed.pendingMarkers()
    if (claims === null || ids.length === 0) return
    const ttl = this.options.doneTtlMs
    const results = await run((redis) => {
      const pipeline = redis.pipeline()
      for (const id of ids) pipeline.set(claims.key(id), DONE, 'PX', ttl)
      return pipeline.exec()
    })
    // A pipeline resolves with one [error, reply] per command: a marker refused (OOM…) stays
    // to be written, and the replay waits for it.
    let refused: unknown = null
    ids.forEach((id, i) => {
      const error = results?.[i]?.[0]
      if (error === null || error === undefined) this.#keyed.markerWritten(id)
      else refused ??= error
    })
    if (refused !== null) throw refused
  }

  async #replay(
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const journal = this.#journal
    const producer = this.#producer
    if (journal === null || producer === null || !journal.hasWork()) return
    const timeoutMs = Math.max(this.options.enqueueTimeoutMs, 1000)
    const outcome = await journal.replay((batch) => this.#handOver(batch, run, timeoutMs), {
      deadline,
      signal,
    })
    if (outcome.corrupt > 0) {
      this.#logger.error(
        { corrupt: outcome.corrupt },
        'spool lines could not be read and were skipped',
      )
    }
    if (outcome.replayed > 0) {
      this.#logger.info(
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
  async #handOver(
    batch: readonly SpooledJob[],
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    timeoutMs: number,
  ): Promise<void> {
    const producer = this.#producer
    if (producer === null) return
    const jobs = batch.map((job) => this.#replayJob(job))
    try {
      await producer.addBatch(jobs, run, timeoutMs)
      this.#counts.replayed += jobs.length
      return
    } catch (error) {
      if (!this.#refusedForGood(error)) throw error
    }
    // Some job of the batch is refused: find it, one by one (re-adding the ones before it
    // is harmless, BullMQ ignores a job id it already has).
    for (const job of jobs) {
      try {
        await producer.addBatch([job], run, timeoutMs)
        this.#counts.replayed++
      } catch (error) {
        if (!this.#refusedForGood(error)) throw error
        this.#counts.replayRefused++
        this.#logger.error(
          { err: loggableError(error), id: job.id, task: job.name },
          'a spooled task was refused by Redis and skipped',
        )
      }
    }
  }

  /** True for an error about this job; about Redis (reported to the monitor if it must know), false. */
  #refusedForGood(error: unknown): boolean {
    if (isRefusedForNow(error)) return false
    if (isReplyError(error)) return true
    // A BullMQ script status (negative code): Redis ran the script and it refused the job.
    const code = (error as { code?: unknown } | null)?.code
    if (typeof code === 'number' && code < 0) return true
    return false
  }

  #replayJob(job: SpooledJob): OutgoingJob {
    return {
      id: job.id,
      // A replay may re-send a job whose first add landed: BullMQ ignores it while it exists.
      idIsJobId: true,
      name: job.name,
      args: job.args,
      delayMs: job.due > 0 ? Math.max(0, job.due - Date.now()) : 0,
      definition: this.#definitions.get(job.name),
    }
  }

  /**
   * Hand the spool over in the background while Redis is up (ambiguous enqueues, a late
   * start, tasks spooled because Redis refused them), and retry the recovery writes Redis
   * refused for now (OOM…) with a backoff of at most REFUSED_RETRY_MAX_MS.
   */
  #drainSoon(delayMs = 50): void {
    if (this.#draining !== null || this.#closed || this.#journal === null) return
    this.#draining = (async () => {
      // Let a burst of ambiguous enqueues land in the spool first.
      await sleep(delayMs, this.#closeController.signal, true)
      const run = <T>(fn: (redis: import('ioredis').Redis) => Promise<T>): Promise<T> =>
        this.#monitor.run(fn)
      if (!this.#hasWork()) this.#refusal = null
      while (!this.#closed && this.#monitor.available && this.#hasWork()) {
        await this.#producer?.prepare(REPLAY_BUDGET_MS)
        await this.#catchUp(run, Date.now() + REPLAY_BUDGET_MS, undefined)
        if (this.#refusal !== null) break
      }
    })()
      .catch((error: unknown) => this.#onError(error, 'spool drain'))
      .finally(() => {
        this.#draining = null
        if (this.#refusal !== null && !this.#closed && this.#monitor.available) {
          this.#drainSoon(this.#refusalDelay())
        }
      })
  }

  async #upsertSchedule(
    entry: ScheduleEntry,
    run: <T>(fn: () => Promise<T>) => Promise<T>,
  ): Promise<void> {
    const producer = this.#producer
    if (producer === null) return
    await producer.upsertScheduler(
      entry.id,
      entry.name,
      entry.everyMs,
      entry.args,
      entry.definition,
      run,
      Math.max(this.options.enqueueTimeoutMs, 1000),
    )
  }

  async #removeSchedule(id: string, run: <T>(fn: () => Promise<T>) => Promise<T>): Promise<void> {
    await this.#producer?.removeScheduler(id, run, Math.max(this.options.enqueueTimeoutMs, 1000))
  }

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  #assertOpen(): void {
    this.#context.assertOpen()
    if (this.#closed) throw new ClosedError(`task queue "${this.name}"`)
  }

  #onError(error: unknown, what: string): void {
    this.#errors++
    if (isConnectivityError(error) && !isReplyError(error)) {
      this.#logger.debug({ err: loggableError(error), what }, 'task queue connection error')
      return
    }
    this.#logLimiter.log(
      `error:${what}`,
      'warn',
      { err: loggableError(error), what },
      `task queue error (${what})`,
    )
  }
}

/** `tasks.status()` / the component's entry in `failsoft.status()`. */
export interface TaskQueueStatus {
  queue: string
  mode: 'redis' | 'memory-only'
  tasks: string[]
  counts: TaskCounts
  inline: { running: number; waiting: number; concurrency: number; maxWaiting: number }
  spool: Record<string, unknown> | null
  /** Jobs in this process's spool, waiting for Redis. */
  spoolDepth: number
  /** "Done" markers of inline runs waiting to be written to Redis. */
  markersPending: number
  /** Markers forgotten because more than 100000 keyed inline runs waited for Redis. */
  markersLost: number
  producer: string
  workers: Array<Record<string, unknown>>
  schedules: Array<Record<string, unknown>>
  errors: number
}

const idleWorker: WorkerHandle = {
  close: () => Promise.resolve(),
  status: () => ({ running: false, reason: 'memory-only: tasks run in process' }),
}

/** Inline runs get the same JSON copy a worker would (no shared references, no Dates). */
function parseArgs(payload: string): unknown {
  return safeJsonParse(payload)
}

function workOption(
  value: unknown,
  fallback: number,
  option: string,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw invalidOption(option, 'an integer', value)
  }
  if (value < min || value > max)
    throw invalidOption(option, `between ${min} and ${max}`, value, 'range')
  return value
}
