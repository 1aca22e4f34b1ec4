import {
  ClosedError,
  FlowUnavailableError,
  InlineBusyError,
  InlineRateLimitedError,
  TaskDroppedError,
  TaskFailedError,
  RedisUnavailableError,
  TaskResultUnavailableError,
  UnknownTaskError,
  invalidOption,
} from '../errors.js'
import type { FailsoftContext } from '../context.js'
import type { Disposable } from '../health/events.js'
import type { ComponentHandle, HealthMonitor } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError, isReplyError } from '../redis/replies.js'
import { safeJsonParse } from '../util/json.js'
import { LogLimiter } from '../util/log-limiter.js'
import { asError } from '../util/async.js'
import { CatchUp } from './catch-up.js'
import { TaskClaims } from './claims.js'
import { InlineLimiter, RateWindow, runWithRetries, type RunOutcome } from './inline.js'
import { flowIds, prepareFlow, toBullFlow, type FlowHandle, type FlowNode } from './flow.js'
import { RecentDispatches } from './recent-dispatches.js'
import { KeyedRuns } from './keyed.js'
import {
  NAME,
  resolveTaskOptions,
  resolveTaskQueueOptions,
  type TaskOptionsInput,
  type TaskQueueInput,
  type TaskQueueOptions,
} from './options.js'
import { Producer, jobOptions } from './producer.js'
import {
  TaskResults,
  bounded,
  encodeProgress,
  type TaskEventListener,
  type TaskEventName,
} from './results.js'
import {
  Schedules,
  occurrenceId,
  type ScheduleEntry,
  type ScheduleOptions,
  type ScheduleResult,
} from './scheduler.js'
import { MemorySpool, type JobJournal } from './spool.js'
import { FileSpool } from './spool-file.js'
import {
  Task,
  prepareJob,
  type DispatchHandle,
  type DispatchOptions,
  type DispatchResult,
  type PreparedJob,
  type TaskContext,
  type TaskDefinition,
  type TaskHandler,
  type TaskProgress,
  type TaskResultOptions,
} from './task.js'
import type { TaskCounts, TaskQueueStatus } from './status.js'
import { TaskWorker, type WorkOptions, type WorkerHandle } from './worker.js'
import { ORPHAN_RESCAN_MS } from '../tunables.js'
import { tracing } from '../diagnostics/channels.js'
import { traceDispatch } from './tracing.js'

export type { TaskCounts, TaskQueueStatus } from './status.js'

/** Idempotency keys run inline during one outage, remembered to skip repeats. */
const MAX_KEYED = 100_000
const LOG_EVERY_MS = 10_000

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
  /** The queue's `rateLimit` for this process's inline and local runs (null: none). */
  readonly #rate: RateWindow | null
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
  /** Jobs handed to Redis lately, to add again if Redis forgets them (a rollback). */
  readonly #recent = new RecentDispatches()
  /** Task markers and leases in Redis (null when doneTtlMs is 0, or memory-only). */
  readonly #claims: TaskClaims | null
  readonly #deferred = new Set<NodeJS.Timeout>()
  /** Results and events (QueueEvents, opened on first use). */
  readonly #results: TaskResults
  /** Task ids in this process's spool, not yet handed to Redis (their results wait). */
  readonly #spooledIds = new Set<string>()
  /** Memory-only delayed dispatches: the run their result() waits for. */
  readonly #runs = new WeakMap<DispatchResult<unknown>, Promise<DispatchResult<unknown>>>()
  readonly #deferredRuns = new Map<NodeJS.Timeout, (error: Error) => void>()
  readonly #logLimiter: LogLimiter
  readonly #counts: TaskCounts = {
    queued: 0,
    underReplicated: 0,
    inlineOk: 0,
    inlineFailed: 0,
    spooled: 0,
    replayed: 0,
    deferred: 0,
    dropped: 0,
    duplicate: 0,
    rejected: 0,
    rateLimited: 0,
    flowsQueued: 0,
    flowsRejected: 0,
    flowsUnconfirmed: 0,
    ambiguous: 0,
    replayRefused: 0,
    unconfirmed: 0,
    keyedConflicts: 0,
    writesDeferred: 0,
    rollbackReadded: 0,
    rollbackIncomplete: 0,
    localPeriodicRuns: 0,
  }
  /** Redis refuses writes for now (OOM…): the recovery writes left wait for a retry while up. */
  #errors = 0
  /** What the queue owes Redis after an outage (null: memory-only). */
  readonly #catchUp: CatchUp | null = null
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
      Math.min(this.options.inline.concurrency, this.options.globalConcurrency ?? Infinity),
      this.options.inline.maxWaiting,
    )
    const rate = this.options.rateLimit
    this.#rate = rate === null ? null : new RateWindow(rate.max, rate.durationMs)
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
      recover: (ctx) => this.#catchUp?.recover(ctx) ?? Promise.resolve(),
      needsRecovery: () => this.#catchUp?.needsRecovery() ?? false,
      status: () => this.status(),
      close: () => this.close(),
    })
    this.#logger = this.#handle.logger
    this.#logLimiter = new LogLimiter(this.#logger, LOG_EVERY_MS)
    this.#results = new TaskResults({
      monitor: this.#monitor,
      queue: this.name,
      bullPrefix: this.#bullPrefix,
      connectionName: `tasks:${this.name}:events`,
      logger: this.#logger,
      onError,
      spooled: (id) => this.#spooledIds.has(id),
    })
    this.#schedules = new Schedules({
      logger: this.#logger,
      runLocal: (entry, occurrence) => this.#runLocalPeriodic(entry, occurrence),
    })
    if (this.#producer !== null && this.#journal !== null) {
      this.#catchUp = new CatchUp({
        monitor: this.#monitor,
        producer: this.#producer,
        journal: this.#journal,
        schedules: this.#schedules,
        keyed: this.#keyed,
        recent: this.#recent,
        claims: this.#claims,
        definitions: this.#definitions,
        options: this.options,
        counts: this.#counts,
        logger: this.#logger,
        logLimiter: this.#logLimiter,
        workers: () => this.#workers,
        closed: () => this.#closed,
        closeSignal: this.#closeController.signal,
        onError,
        handedOver: (ids) => {
          for (const id of ids) this.#spooledIds.delete(id)
        },
      })
    }
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
          this.#catchUp?.up()
        }),
      )
      if (this.#monitor.state === 'down') this.#schedules.startLocal()
      // Created after Redis came up: recovery steps already ran without us.
      if (this.#monitor.available) this.#catchUp?.drainSoon()
      // A process sharing the spool directory may die at any time: its journal is looked for
      // again now and then, not only at a recovery or start-up.
      this.#rescanTimer = setInterval(() => {
        this.#journal?.rescan()
        if (this.#monitor.available) this.#catchUp?.drainSoon(0)
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
  ): Promise<DispatchHandle<R>> {
    const definition = this.#definitions.get(name)
    if (definition === undefined) return Promise.reject(new UnknownTaskError(name, this.name))
    return this.#dispatch(definition, args, options) as Promise<DispatchHandle<R>>
  }

  /**
   * Listen to the tasks of this queue: 'completed', 'failed', 'progress', 'retrying',
   * 'stalled'. Runs on workers — in any process — come from BullMQ's event stream
   * (QueueEvents, opened by the first listener); inline and local runs of this process are
   * emitted here only. Returns a Disposable: `dispose()` removes the listener.
   */
  on<K extends TaskEventName>(event: K, listener: TaskEventListener<K>): Disposable {
    this.#assertOpen()
    return this.#results.on(event, listener)
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
    const maxStalledCount = workOption(options.maxStalledCount, 5, 'maxStalledCount', 0, 1000)
    if (this.#memoryOnly) return idleWorker
    const worker = new TaskWorker({
      monitor: this.#monitor,
      queue: this.name,
      bullPrefix: this.#bullPrefix,
      connectionName: `tasks:${this.name}:worker`,
      definitions: this.#definitions,
      claims: this.#claims,
      concurrency,
      rateLimit: this.options.rateLimit,
      lockDurationMs,
      stalledIntervalMs,
      maxStalledCount,
      maxResultBytes: this.options.maxResultBytes,
      removeOnComplete: this.options.removeOnComplete,
      removeOnFail: this.options.removeOnFail,
      telemetry: this.options.telemetry,
      logger: this.#logger.child({ role: 'worker' }),
      onClosed: (w) => this.#workers.delete(w),
    })
    this.#workers.add(worker)
    return worker
  }

  /**
   * Add a flow: a parent task that runs once every child has completed, on this queue's
   * workers (BullMQ's flows). It is added whole, in one transaction, or not at all: while
   * Redis is unavailable (and in a memory-only instance) the answer is `rejected` with
   * FlowUnavailableError — never inline, never spooled, never half a flow. A child that fails
   * for good fails its parent. Never rejects because of Redis; throws for a bad flow
   * (InvalidFlowError, and what a dispatch throws for a node). The handle's `result()` is the
   * parent's; `ids` name every node's task id.
   */
  async flow<R = unknown>(root: FlowNode): Promise<FlowHandle<R>> {
    this.#assertOpen()
    const prepared = prepareFlow(
      root,
      this.name,
      (name) => {
        const definition = typeof name === 'string' ? this.#definitions.get(name) : undefined
        if (definition === undefined) throw new UnknownTaskError(name, this.name)
        return definition
      },
      this.options.maxArgsBytes,
    )
    const ids = flowIds(prepared)
    const task = prepared.job.name
    const producer = this.#producer
    const outcome =
      producer === null
        ? { kind: 'not-sent' as const, error: new RedisUnavailableError('memory-only instance') }
        : await producer.addFlow(toBullFlow(prepared, this.name, this.#bullPrefix, jobOptions))
    let result: DispatchResult<unknown>
    if (outcome.kind === 'queued') {
      this.#counts.flowsQueued++
      result = { mode: 'queued', id: prepared.job.id, jobId: prepared.job.id }
    } else if (outcome.kind === 'ambiguous') {
      // One transaction: the whole flow landed, or none of it. Not retried here.
      this.#counts.flowsUnconfirmed++
      result = { mode: 'unconfirmed', id: prepared.job.id, error: outcome.error }
    } else {
      this.#counts.flowsRejected++
      const why = this.#memoryOnly
        ? 'a memory-only instance has no queue'
        : 'Redis is unavailable (a flow is added whole, or not at all)'
      result = {
        mode: 'rejected',
        id: prepared.job.id,
        error: new FlowUnavailableError(task, why, outcome.error),
      }
    }
    const handle = this.#withResult(result, prepared.job) as FlowHandle<R>
    Object.defineProperty(handle, 'ids', { value: ids, enumerable: true })
    return handle
  }

  /**
   * Run a defined task every `everyMs`, or at the occurrences of a `cron` pattern (in `tz`),
   * through a BullMQ job scheduler (one run per occurrence across all replicas), optionally
   * between `startDate` and `endDate` and at most `limit` times. Never rejects because of
   * Redis: while it is unavailable the scheduler is created once it is back ('pending'), and
   * it is re-created whenever Redis comes back empty. While Redis is unavailable periodic runs
   * are skipped, unless the task was defined with `whileDown: 'local'`.
   */
  async schedule(name: string, options: ScheduleOptions): Promise<ScheduleResult> {
    this.#assertOpen()
    const definition = this.#definitions.get(name)
    if (definition === undefined) throw new UnknownTaskError(name, this.name)
    const { id, timing } = Schedules.validate(name, options)
    const args = options.args === undefined ? {} : options.args
    // Same validation as a dispatch: JSON, size-limited.
    prepareJob(this.name, definition, args, undefined, this.options.maxArgsBytes)
    const entry = this.#schedules.add({ id, name, timing, args, definition })
    if (!this.#monitor.available) return { id, state: 'pending' }
    try {
      await this.#catchUp?.upsertSchedule(entry, (fn) => this.#monitor.run(fn))
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
        await this.#catchUp?.removeSchedule(id, (fn) => this.#monitor.run(fn))
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
    for (const fail of this.#deferredRuns.values())
      fail(new ClosedError(`task queue "${this.name}"`))
    this.#deferredRuns.clear()
    if (this.#deferred.size > 0) {
      this.#logger.warn(
        { lost: this.#deferred.size },
        'delayed in-memory tasks not run before close (memory-only mode)',
      )
      this.#deferred.clear()
    }
    this.#keyed.close()
    const results = this.#results.close()
    await Promise.all([...this.#workers].map((w) => w.close()))
    await results
    await this.#catchUp?.draining?.catch(() => undefined)
    await this.#producer?.close()
    await this.#journal?.close().catch((error: unknown) => this.#onError(error, 'spool close'))
    this.#handle.dispose()
  }

  // ── the one degradation path ───────────────────────────────────────────────────────────────

  #dispatch(
    definition: TaskDefinition,
    args: unknown,
    options: DispatchOptions | undefined,
  ): Promise<DispatchHandle<unknown>> {
    try {
      this.#assertOpen()
      const job = prepareJob(this.name, definition, args, options, this.options.maxArgsBytes)
      const routed = tracing.tasks.dispatch.active
        ? traceDispatch(this.#monitor, this.name, job, () => this.#route(job))
        : this.#route(job)
      return routed.then((result) => this.#withResult(result, job))
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** The dispatch result, with its `result()` method (not enumerable: the data stays as it was). */
  #withResult(result: DispatchResult<unknown>, job: PreparedJob): DispatchHandle<unknown> {
    const task = job.definition.name
    if (result.mode === 'queued') this.#results.remember(result.jobId, result.id, task)
    Object.defineProperty(result, 'result', {
      value: (options?: TaskResultOptions) => this.#result(result, task, options),
      enumerable: false,
      configurable: true,
    })
    return result as DispatchHandle<unknown>
  }

  #result(
    result: DispatchResult<unknown>,
    task: string,
    options: TaskResultOptions | undefined,
  ): Promise<unknown> {
    const id = result.id
    switch (result.mode) {
      case 'queued':
        // Its job, or a copy under the task id (a rollback adds lost jobs again under it).
        return this.#results.wait(task, id, [result.jobId, id], options)
      case 'spooled':
        // The replay adds it under the task id (so does a keyed add that was unanswered).
        return this.#results.wait(task, id, [id], options)
      case 'inline':
        return bounded(task, id, options, (resolve, reject) => {
          settleInline(result, task, resolve, reject)
          return noop
        })
      case 'deferred': {
        const run = this.#runs.get(result)
        return bounded(task, id, options, (resolve, reject) => {
          if (run === undefined) reject(new ClosedError(`task queue "${this.name}"`))
          else run.then((ran) => settleInline(ran, task, resolve, reject), reject)
          return noop
        })
      }
      case 'dropped':
        return Promise.reject(new TaskDroppedError(task, id, 'dropped'))
      case 'rejected':
        return Promise.reject(new TaskDroppedError(task, id, 'rejected', result.error))
      case 'duplicate':
      case 'unconfirmed':
        return Promise.reject(new TaskResultUnavailableError(task, id, result.mode))
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
        this.#recent.record({
          job,
          due: job.delayMs > 0 ? Date.now() + job.delayMs : 0,
          bytes: job.payload.length,
          stamp: this.#monitor.watermark.stamp(),
          at: Date.now(),
        })
        const replicas = outcome.replicas
        if (replicas === undefined) return { mode: 'queued', id: job.id, jobId: outcome.jobId }
        if (replicas < (this.options.waitForReplicas?.count ?? 0)) this.#counts.underReplicated++
        return { mode: 'queued', id: job.id, jobId: outcome.jobId, replicas }
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
    if (policy === 'spool') return this.#spool(job)
    // A key's "done" marker is in Redis, out of reach: whether it already ran (on a worker, in
    // another process) cannot be known here. Spooled under the key's id, it runs once Redis is
    // back — or not at all, if it had run.
    if (job.keyed && !this.#memoryOnly && job.definition.options.keyedFallback === 'spool') {
      return this.#spool(job)
    }
    return this.#inline(job)
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
        ...(job.priority !== undefined && { priority: job.priority }),
        ...(job.lifo !== undefined && { lifo: job.lifo }),
        ...(job.bullmq !== undefined && { bullmq: job.bullmq }),
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
    this.#spooledIds.add(job.id)
    // Spooled while Redis is up (an ambiguous enqueue): hand it over without waiting for an outage.
    if (this.#monitor.available) this.#catchUp?.drainSoon()
    return { mode: 'spooled', id: job.id }
  }

  async #inline(job: PreparedJob): Promise<DispatchResult<unknown>> {
    if (job.keyed && this.#keyed.has(job.id)) {
      this.#counts.duplicate++
      return { mode: 'duplicate', id: job.id }
    }
    const rate = this.#rate
    if (rate !== null && !rate.take()) {
      this.#counts.rateLimited++
      if (this.options.inline.whenBusy === 'spool' && this.#journal !== null)
        return this.#spool(job)
      this.#counts.rejected++
      return {
        mode: 'rejected',
        id: job.id,
        error: new InlineRateLimitedError(rate.max, rate.durationMs),
      }
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
      // Inline while Redis is up (an enqueue it refused): take the key's lease now; if Redis
      // refuses that too, the catch-up takes it later (the key stays one this process runs).
      if (this.#monitor.available) {
        await this.#catchUp
          ?.takeLeases((fn) => this.#monitor.run(fn))
          .catch((error: unknown) => this.#onError(error, 'lease'))
      }
    }
    const release = await slot
    let outcome: RunOutcome & { settled: Promise<RunOutcome> }
    try {
      outcome = await this.#run(job.definition, job.id, parseArgs(job.payload), 'inline')
    } finally {
      release()
    }
    if (job.keyed) void outcome.settled.then((ended) => this.#keyedEnded(job.id, ended))
    this.#emitOutcome(job.id, job.definition.name, 'inline', outcome)
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
    if (this.#claims !== null && this.#monitor.available) this.#catchUp?.drainSoon(0)
  }

  /** Resolves once a succeeded key's marker is written, or at once when it cannot be now. */
  async #keyedWritten(id: string): Promise<void> {
    const catchUp = this.#catchUp
    if (!this.#monitor.available || catchUp === null) return
    if (this.#keyed.get(id)?.markerPending !== true) return
    try {
      await catchUp.writeMarkers((fn) => this.#monitor.run(fn))
    } catch (error) {
      this.#onError(error, 'marker')
    }
  }

  #run(
    definition: TaskDefinition,
    id: string,
    args: unknown,
    mode: 'inline' | 'local',
  ): Promise<RunOutcome & { settled: Promise<RunOutcome> }> {
    const name = definition.name
    const base = { id, name, queue: this.name, mode } as const
    const progress: TaskContext['progress'] = (value) => {
      const text = encodeProgress(name, value)
      if (this.#results.hasListeners) {
        this.#results.emit('progress', { ...base, progress: safeJsonParse(text) as TaskProgress })
      }
    }
    return runWithRetries(
      definition,
      args,
      { ...base, progress, children: noChildren },
      (late) =>
        this.#logLimiter.log(
          'late',
          'warn',
          { err: loggableError(late), task: definition.name },
          'task settled after its timeout',
        ),
      this.#closeController.signal,
      this.#monitor,
      (attempt, error) =>
        this.#results.emit('retrying', {
          ...base,
          attempt,
          error: TaskFailedError.from(name, id, error),
        }),
      (error) =>
        this.#logLimiter.log(
          `backoff:${definition.name}`,
          'warn',
          { err: loggableError(error), task: definition.name },
          'custom backoff strategy failed: no more tries',
        ),
    )
  }

  /** 'completed' or 'failed' for a run of this process (listeners of this process only). */
  #emitOutcome(id: string, name: string, mode: 'inline' | 'local', outcome: RunOutcome): void {
    if (!this.#results.hasListeners) return
    const base = { id, name, queue: this.name, mode }
    if (outcome.ok) this.#results.emit('completed', { ...base, value: outcome.value })
    else
      this.#results.emit('failed', {
        ...base,
        error: TaskFailedError.from(name, id, outcome.error),
      })
  }

  /** Memory-only, delayed: a local timer, then the inline runner. */
  #defer(job: PreparedJob): DispatchResult<unknown> {
    this.#counts.deferred++
    let ran!: (result: DispatchResult<unknown>) => void
    let failed!: (error: Error) => void
    const run = new Promise<DispatchResult<unknown>>((resolve, reject) => {
      ran = resolve
      failed = reject
    })
    // Rejected at close (the run never happens): only a result() waiting sees it.
    run.catch(noop)
    const timer = setTimeout(() => {
      this.#deferred.delete(timer)
      this.#deferredRuns.delete(timer)
      const runJob: PreparedJob = { ...job, delayMs: 0 }
      this.#inline(runJob).then(
        (result) => {
          if (result.mode === 'rejected') this.#onError(result.error, 'deferred task')
          ran(result)
        },
        (error: unknown) => {
          this.#onError(error, 'deferred task')
          failed(asError(error))
        },
      )
    }, job.delayMs)
    this.#deferred.add(timer)
    this.#deferredRuns.set(timer, failed)
    const result: DispatchResult<unknown> = { mode: 'deferred', id: job.id }
    this.#runs.set(result, run)
    return result
  }

  /**
   * One local periodic run (Redis unavailable). A fixed period's run is named after its slot
   * (`local-<id>-<slot>`). A cron occurrence's run carries the BullMQ job id of that same
   * occurrence (`repeat:<id>:<epoch ms>`) and is tracked like a keyed inline run: its done
   * marker reaches Redis in the recovery step, before 'up', so the iteration BullMQ kept for
   * that occurrence is skipped by the workers instead of running it a second time.
   */
  async #runLocalPeriodic(
    entry: ScheduleEntry,
    occurrence: number | null,
  ): Promise<'ran' | 'busy'> {
    const slotId =
      occurrence === null
        ? `local-${entry.id}-${Math.floor(Date.now() / (entry.timing.everyMs ?? 1000))}`
        : occurrenceId(entry.id, occurrence)
    const keyed = occurrence !== null && this.#claims !== null
    if (keyed && this.#keyed.has(slotId)) return 'busy'
    if (this.#rate !== null && !this.#rate.take()) {
      this.#counts.rateLimited++
      return 'busy'
    }
    const slot = this.#limiter.acquire()
    if (slot === null) return 'busy'
    if (keyed) this.#keyed.start(slotId)
    const release = await slot
    try {
      const outcome = await this.#run(entry.definition, slotId, entry.args, 'local')
      if (keyed) void outcome.settled.then((ended) => this.#keyedEnded(slotId, ended))
      this.#emitOutcome(slotId, entry.name, 'local', outcome)
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

const idleWorker: WorkerHandle = {
  close: () => Promise.resolve(),
  status: () => ({
    running: false,
    reason: 'memory-only: tasks run in process',
    inProgress: 0,
    concurrency: 0,
    markersPending: 0,
    connections: [],
    completed: 0,
    failed: 0,
    skippedDone: 0,
    deferred: 0,
    leasesLost: 0,
    claimsRefused: 0,
    deferredOffRedis: 0,
    heldAfterRollback: 0,
    markersReasserted: 0,
    leasesReasserted: 0,
    unknownTask: 0,
    errors: 0,
    markerErrors: 0,
    markersRetried: 0,
    markersDropped: 0,
    reconnectKicks: 0,
    socketsDropped: 0,
  }),
}

function noop(): void {}

/** An inline run's outcome as a result: its value, or TaskFailedError; a rejection's error. */
function settleInline(
  result: DispatchResult<unknown>,
  task: string,
  resolve: (value: unknown) => void,
  reject: (error: Error) => void,
): void {
  if (result.mode === 'inline') {
    if (result.ok) resolve(result.value)
    else reject(TaskFailedError.from(task, result.id, result.error))
  } else if (result.mode === 'rejected') {
    reject(new TaskDroppedError(task, result.id, 'rejected', result.error))
  } else {
    reject(new TaskResultUnavailableError(task, result.id, 'duplicate'))
  }
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

/** ctx.children() of a run that is no flow's parent on a worker: none. */
function noChildren(): Promise<Readonly<Record<string, unknown>>> {
  return Promise.resolve({})
}
