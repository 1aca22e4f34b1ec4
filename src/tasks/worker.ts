import { LogLimiter } from '../util/log-limiter.js'
import {
  DelayedError,
  UnrecoverableError,
  WaitingError,
  Worker,
  type Job,
  type Telemetry,
} from 'bullmq'
import type { Redis } from 'ioredis'
import type { Disposable } from '../health/events.js'
import type { HealthMonitor } from '../health/monitor.js'
import type { Runner } from '../health/types.js'
import { LeaseLostError } from '../errors.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError, isOutOfMemory, isReplyError } from '../redis/replies.js'
import { trimOldest } from '../util/bounded.js'
import { within } from '../util/async.js'
import { sleep } from '../util/sleep.js'
import { DONE, LeaseKeeper, runToken, type TaskClaims } from './claims.js'
import { ConsumerConnections } from './consumer-connections.js'
import { startTry, type RunOutcome } from './inline.js'
import { backoffDelay, type KeepJobs } from './options.js'
import { CUSTOM_BACKOFF, TASK_ID_OPTION } from './producer.js'
import { RETRYING_EVENT, SKIPPED_RETURN, encodeProgress, storableResult } from './results.js'
import type { TaskDefinition, TaskProgress } from './task.js'
import { LEASE_ABORT_PERIODS, ROLLBACK_CLAIM_HOLD_MS } from '../tunables.js'

/** Options of `tasks.work(options)`. */
export interface WorkOptions {
  /** Jobs this worker runs at the same time. Default 1. */
  concurrency?: number | undefined
  /**
   * Lock on a running job, renewed at half this period; a job whose lock expires (its worker
   * died, or the reply that handed it over was lost when Redis failed) is taken again by a
   * worker, in ms. Default 10000 (BullMQ's is 30000).
   */
  lockDurationMs?: number | undefined
  /** How often this worker looks for such jobs, in ms. Default 5000 (BullMQ's is 30000). */
  stalledIntervalMs?: number | undefined
  /**
   * Times a job may be taken again for stalled before BullMQ fails it for good. An outage
   * loses the reply that hands a job to a worker, and each such loss counts as a stall; a second
   * run of the task can never start beside the first (the lease), so stalls caused by outages
   * are harmless. The bound is for a job that crashes its worker every time. Default 5
   * (BullMQ's is 1, which failed — and so lost — jobs caught by two outages).
   */
  maxStalledCount?: number | undefined
}

/** Returned by `tasks.work()`. */
export interface WorkerHandle {
  /**
   * Stop taking jobs and close the worker's connections. Waits for the jobs in progress
   * (at most `timeoutMs`, default 10000) when Redis is up; does not wait when it is down
   * (those jobs are taken again by a worker once their lock expires).
   */
  close(options?: { timeoutMs?: number }): Promise<void>
  status(): WorkerStatus
}

/** `worker.status()`: JSON-safe; counters since the worker started. */
export interface WorkerStatus {
  /** Taking jobs now. */
  running: boolean
  /** Why it does not (a memory-only instance has no queue). */
  reason?: string
  /** Handlers running now. */
  inProgress: number
  concurrency: number
  /** Completed tasks whose "done" marker Redis refused, kept to be written again. */
  markersPending: number
  /** ioredis status of each of the worker's connections. */
  connections: string[]
  completed: number
  failed: number
  /** Copies completed without running: the task was done already. */
  skippedDone: number
  /** Copies put back to wait: another run of the task held its lease. */
  deferred: number
  /** Runs whose lease was lost (their ctx.signal aborted with LeaseLostError). */
  leasesLost: number
  /** Claims Redis refused (OOM at maxmemory): the job was put back, not run unleased. */
  claimsRefused: number
  /**
   * Jobs put back because this process was off Redis when BullMQ handed them out (its
   * recovery, which writes lost leases and markers again, had not finished).
   */
  deferredOffRedis: number
  /** Jobs whose claim waited after a rollback for the other processes' markers (≤ 1 s). */
  heldAfterRollback: number
  /** Done markers written again after Redis forgot writes (a rollback or a reset). */
  markersReasserted: number
  /** Leases of runs still going taken again after Redis forgot writes. */
  leasesReasserted: number
  unknownTask: number
  errors: number
  markerErrors: number
  markersRetried: number
  markersDropped: number
  reconnectKicks: number
  socketsDropped: number
}

interface WorkerDeps {
  /** BullMQ's own telemetry (TaskQueueOptions.telemetry), or null. */
  readonly telemetry: Telemetry | null
  readonly monitor: HealthMonitor
  readonly queue: string
  readonly bullPrefix: string
  readonly connectionName: string
  readonly definitions: ReadonlyMap<string, TaskDefinition>
  /** The task markers and leases of the queue (null when doneTtlMs is 0: at-least-once only). */
  readonly claims: TaskClaims | null
  readonly concurrency: number
  /** The queue's `rateLimit` (BullMQ's limiter, shared by the queue's workers in Redis). */
  readonly rateLimit: { max: number; durationMs: number } | null
  readonly lockDurationMs: number
  readonly stalledIntervalMs: number
  readonly maxStalledCount: number
  /** Largest return value stored in the job (TaskQueueOptions.maxResultBytes). */
  readonly maxResultBytes: number
  readonly removeOnComplete: KeepJobs
  readonly removeOnFail: KeepJobs
  readonly logger: Logger
  readonly onClosed: (worker: TaskWorker) => void
}

/** Retry delay after a failed fetch or completion, in ms (BullMQ's default is 15 s). */
const RUN_RETRY_DELAY_MS = 100
/** Log at most one line per this period per kind of event. */
const LOG_EVERY_MS = 10_000
/** Completed job ids this worker remembers itself (its own check, before Redis'). */
const RECENT_DONE_MAX = 10_000
/** A claim refused (OOM at maxmemory): the job is put back for at least this long (ms). */
const OOM_CLAIM_RETRY_MS = 1000
/** "Done" markers Redis refused (e.g. OOM), kept to be written again; oldest dropped beyond. */
const PENDING_MARKERS_MAX = 10_000
/** How often refused markers are written again. */
const MARKER_RETRY_MS = 1000
/**
 * A deferred copy (another run holds the task's lease) is tried again after the lease's
 * remaining life, at least this long (ms) and at most MAX_DEFER_MS, jittered.
 */
const MIN_DEFER_MS = 200
const MAX_DEFER_MS = 1000

/**
 * A BullMQ worker for every task defined on the queue, with failsoft's connection defaults
 * and the "already done" check that makes a second execution of the same job id impossible
 * while its marker lives.
 */
export class TaskWorker implements WorkerHandle {
  readonly #deps: WorkerDeps
  readonly #worker: Worker
  readonly #connections: ConsumerConnections
  readonly #listeners: Disposable[]
  readonly #logLimiter: LogLimiter
  /** Jobs whose handler is running here. */
  readonly #running = new Set<string>()
  /**
   * Task ids whose handler has not returned yet here (past a timeout too): the run's token and
   * a promise settled once that handler returned and its outcome was recorded.
   */
  readonly #holding = new Map<string, { token: string; ended: Promise<void> }>()
  /** Jobs whose handler finished, not yet reported completed or failed by BullMQ. */
  readonly #reporting = new Set<string>()
  /**
   * Job id → when its marker expires, for the jobs completed here. A marker Redis refused
   * (maxmemory reached) leaves BullMQ unable to record the completion too: the job goes back
   * to the queue once its lock expires, and this worker must still recognise it.
   */
  readonly #recentlyDone = new Map<string, number>()
  /** Markers Redis refused, to write again (id → when it would have expired). */
  readonly #pendingMarkers = new Map<string, number>()
  #markerTimer: NodeJS.Timeout | null = null
  #retryingMarkers = false
  #closing: Promise<void> | null = null
  /** Until then (ms since the epoch) no claim is made: a rollback was just reconciled here. */
  #claimsHeldUntil = 0
  #stats = {
    completed: 0,
    failed: 0,
    skippedDone: 0,
    markersReasserted: 0,
    leasesReasserted: 0,
    unknownTask: 0,
    errors: 0,
    markerErrors: 0,
    markersRetried: 0,
    markersDropped: 0,
    reconnectKicks: 0,
    socketsDropped: 0,
    deferred: 0,
    leasesLost: 0,
    claimsRefused: 0,
    deferredOffRedis: 0,
    heldAfterRollback: 0,
  }

  constructor(deps: WorkerDeps) {
    this.#deps = deps
    this.#logLimiter = new LogLimiter(this.#deps.logger, LOG_EVERY_MS)
    // BullMQ runs the worker's commands on this connection and duplicates it for the blocking
    // fetch: both are tracked (see ConsumerConnections).
    this.#connections = new ConsumerConnections(
      deps.monitor,
      deps.connectionName,
      (error) => this.#onError(error),
      this.#stats,
    )
    const template = this.#connections.template
    this.#connections.connectTemplate()
    this.#worker = new Worker(
      deps.queue,
      (job: Job, token?: string, signal?: AbortSignal) => this.#process(job, token, signal),
      {
        connection: template,
        prefix: deps.bullPrefix,
        concurrency: deps.concurrency,
        lockDuration: deps.lockDurationMs,
        stalledInterval: deps.stalledIntervalMs,
        maxStalledCount: deps.maxStalledCount,
        removeOnComplete: keep(deps.removeOnComplete),
        removeOnFail: keep(deps.removeOnFail),
        runRetryDelay: RUN_RETRY_DELAY_MS,
        autorun: true,
        settings: {
          backoffStrategy: (
            attemptsMade: number,
            type?: string,
            err?: Error,
            job?: { name: string; id?: string | undefined },
          ) => this.#customBackoff(attemptsMade, type, err, job),
        },
        ...(deps.rateLimit === null
          ? {}
          : { limiter: { max: deps.rateLimit.max, duration: deps.rateLimit.durationMs } }),
        ...(deps.telemetry === null ? {} : { telemetry: deps.telemetry }),
      },
    )
    this.#worker.on('error', (error: unknown) => this.#onError(error))
    this.#worker.on('completed', (job: Job) => this.#reporting.delete(instanceOf(job)))
    this.#worker.on('failed', (job: Job | undefined, error: Error) => {
      if (job !== undefined) this.#reporting.delete(instanceOf(job))
      this.#stats.failed++
      this.#logLimiter.log(
        `failed:${job?.name ?? '?'}`,
        'warn',
        { err: loggableError(error), task: job?.name, id: job?.id, attempt: job?.attemptsMade },
        'task failed on the worker',
      )
    })
    this.#listeners = [
      // Redis is unavailable. After a silent partition these sockets look open but are dead:
      // a command sent on them is never answered, and nothing would ever make BullMQ notice.
      // Break them now (ioredis reconnects them by itself, and re-sends what was unanswered).
      deps.monitor.on('down', ({ forced }) => {
        if (!forced) this.#connections.dropSockets()
      }),
      // Redis is back (the monitor's probe saw it): reconnect now rather than at the next
      // backoff tick, so the worker is processing again within a few hundred ms.
      deps.monitor.on('up', () => this.#connections.kick()),
    ]
  }

  /**
   * Redis answers again (the component's recovery step): every connection not ready now
   * connects at once (see ConsumerConnections.revive).
   */
  revive(): void {
    if (this.#closing !== null) return
    this.#connections.revive()
  }

  async #process(
    job: Job,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    if (this.#closing !== null) {
      // Fetched while closing (a blocking fetch already under way): not run here. Handed back
      // to the queue (or, if that fails, left to expire and be taken by another worker).
      await job.moveToWait(token).catch((error: unknown) => this.#onError(error))
      throw new WaitingError()
    }
    const instance = instanceOf(job)
    this.#running.add(instance)
    try {
      return await this.#run(job, token, signal)
    } finally {
      this.#running.delete(instance)
      this.#reporting.add(instance)
    }
  }

  /**
   * BullMQ's backoff strategy for jobs of type CUSTOM_BACKOFF: the task's own `strategy` (-1:
   * no more tries — also when it throws or returns no number, logged).
   */
  #customBackoff(
    attemptsMade: number,
    type?: string,
    err?: Error,
    job?: { name: string; id?: string | undefined },
  ): number {
    const definition = job === undefined ? undefined : this.#deps.definitions.get(job.name)
    const backoff = definition?.options.backoff
    if (type !== CUSTOM_BACKOFF || backoff?.type !== 'custom') return -1
    try {
      return backoffDelay(backoff, attemptsMade, err ?? new Error('unknown failure'))
    } catch (error) {
      this.#logLimiter.log(
        `backoff:${job?.name ?? '?'}`,
        'warn',
        { err: loggableError(error), task: job?.name, id: job?.id },
        'custom backoff strategy failed: no more tries',
      )
      return -1
    }
  }

  async #run(
    job: Job,
    bullToken: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const definition = this.#deps.definitions.get(job.name)
    if (definition === undefined) {
      this.#stats.unknownTask++
      throw new UnrecoverableError(
        `no task named "${job.name}" is defined on queue "${this.#deps.queue}" in this worker`,
      )
    }
    const id = taskIdOf(job)
    const claims = this.#deps.claims
    if (claims !== null && (this.#recentlyDone.get(id) ?? 0) > Date.now()) {
      this.#stats.skippedDone++
      return SKIPPED_RETURN
    }
    // A run of this task id is still going here (a stalled copy handed out again, a retry of a
    // try that ignored its timeout): wait a little for its end; if it goes on, look again later.
    const local = this.#holding.get(id)
    if (local !== undefined) {
      if ((await within(local.ended, MAX_DEFER_MS)) === 'expired') {
        return this.#defer(job, bullToken, MAX_DEFER_MS)
      }
      if ((this.#recentlyDone.get(id) ?? 0) > Date.now()) {
        this.#stats.skippedDone++
        return SKIPPED_RETURN
      }
    }
    // Handed a job while this process is off Redis (its BullMQ connection back on a new
    // primary before the recovery): the recoveries of the processes that lost writes — this
    // one's and the others' — write their leases and done markers again before 'up'. Claim
    // only once this process is up, or a task completed elsewhere can run again.
    if (claims !== null && !(await this.#upWithin(MAX_DEFER_MS))) {
      this.#stats.deferredOffRedis++
      return this.#defer(job, bullToken, MIN_DEFER_MS)
    }
    // Redis forgot writes (a rollback, a reset) seen by this process's recovery: the other
    // processes write their lost markers and leases again in their own recoveries, within
    // about a probe interval of this one. Claim nothing until then (ROLLBACK_CLAIM_HOLD_MS).
    const held = this.#claimsHeldUntil - Date.now()
    if (claims !== null && held > 0) {
      this.#stats.heldAfterRollback++
      await sleep(held)
    }
    if (claims !== null && (this.#recentlyDone.get(id) ?? 0) > Date.now()) {
      this.#stats.skippedDone++
      return SKIPPED_RETURN
    }
    const client =
      claims === null ? null : ((await this.#worker.getBackend().client) as unknown as Redis)
    const token = runToken()
    if (claims !== null && client !== null) {
      const outcome = await this.#claim(claims, client, id, token)
      if (outcome.kind === 'done') {
        // Completed already (an add that landed late and its spool replay, a repeated
        // idempotency key): complete without running.
        this.#stats.skippedDone++
        return SKIPPED_RETURN
      }
      if (outcome.kind === 'busy') return this.#defer(job, bullToken, outcome.retryInMs)
    }
    const progress = new ProgressSender(job, (error) => this.#onError(error))
    const current = startTry(
      definition,
      job.data,
      {
        id,
        name: job.name,
        queue: this.#deps.queue,
        mode: 'worker',
        progress: (value) => progress.send(encodeProgress(job.name, value), value),
        children: () => childrenValues(job),
      },
      job.attemptsMade + 1,
      (late) =>
        this.#logLimiter.log(
          'late',
          'warn',
          { err: loggableError(late), task: job.name },
          'task settled after its timeout',
        ),
      signal,
      this.#deps.monitor,
    )
    const keeper =
      claims === null || client === null
        ? null
        : new LeaseKeeper({
            claims,
            id,
            token,
            run: (fn) => fn(client),
            abortAfterMs: claims.leaseMs * LEASE_ABORT_PERIODS,
            onLost: (reason) => {
              this.#stats.leasesLost++
              this.#logLimiter.log(
                'lease-lost',
                'warn',
                { task: job.name, id, reason },
                'a running task lost its lease; it is asked to stop (ctx.signal)',
              )
              current.abort(new LeaseLostError(job.name, reason))
            },
            onError: (error) => this.#onError(error),
          })
    // Until the handler itself returns — past its timeout too — the lease stays held: no retry
    // or copy of this task id starts beside it.
    const ended = current.settled.then((outcome) => this.#ended(id, token, keeper, client, outcome))
    this.#holding.set(id, { token, ended })
    // Failed or timed out, this rejects: BullMQ may retry, and the retry waits for this try's end.
    let value: unknown
    try {
      value = await current.result
    } catch (error) {
      progress.stop()
      if (willRetry(job, error)) this.#retrying(job, id, client, error)
      throw error
    }
    progress.stop()
    await ended
    this.#stats.completed++
    // BullMQ stores it in the job (and its event): bounded, and JSON, or a marker instead.
    return storableResult(value, this.#deps.maxResultBytes)
  }

  /**
   * A failed try that BullMQ will retry: a 'failsoft:retrying' entry in the queue's event
   * stream (BullMQ itself only says 'delayed' or 'waiting'), read by every QueueEvents.
   * Not awaited: the failure path never waits for Redis.
   */
  #retrying(job: Job, id: string, client: Redis | null, error: unknown): void {
    const e = error instanceof Error ? error : new Error(String(error))
    const send = async (): Promise<void> => {
      const redis = client ?? ((await this.#worker.getBackend().client) as unknown as Redis)
      await redis.xadd(
        `${this.#deps.bullPrefix}:${this.#deps.queue}:events`,
        'MAXLEN',
        '~',
        '10000',
        '*',
        'event',
        RETRYING_EVENT,
        'jobId',
        job.id ?? '',
        'id',
        id,
        'name',
        job.name,
        'attempt',
        String(job.attemptsMade + 1),
        'errorName',
        String(e.name).slice(0, 200),
        'error',
        String(e.message).slice(0, 2000),
      )
    }
    send().catch((err: unknown) => this.#onError(err))
  }

  /**
   * The handler returned (possibly after its timeout): success completes the task — a later
   * retry or copy then skips it — and a failure gives the lease up. Never rejects.
   */
  async #ended(
    id: string,
    token: string,
    keeper: LeaseKeeper | null,
    client: Redis | null,
    outcome: RunOutcome,
  ): Promise<void> {
    keeper?.stop()
    try {
      const claims = this.#deps.claims
      if (claims === null || client === null) return
      if (!outcome.ok) {
        await claims.release(client, id, token).catch((error: unknown) => this.#onError(error))
        return
      }
      const expiresAt = Date.now() + claims.doneTtlMs
      this.#remember(id, expiresAt)
      try {
        await claims.complete(client, id)
        // Written: if Redis forgets it (a rollback), reassertMarkers() writes it again.
        this.#deps.monitor.watermark.stamp()
      } catch (error) {
        // Refused (OOM at maxmemory), or the worker is closing (the connection queues
        // commands while Redis is away). The job itself is complete: keep the marker to
        // write it again, and remember the id here meanwhile.
        this.#stats.markerErrors++
        this.#logLimiter.log(
          'marker',
          'warn',
          { err: loggableError(error), id },
          'could not record a completed task; the marker is kept and written again',
        )
        this.#keepMarker(id, expiresAt)
      }
    } finally {
      if (this.#holding.get(id)?.token === token) this.#holding.delete(id)
    }
  }

  /**
   * True at once when the monitor is up (or the fallbacks are forced by the operator: the
   * worker keeps working then); otherwise waits up to `ms` for 'up'.
   */
  #upWithin(ms: number): Promise<boolean> {
    const monitor = this.#deps.monitor
    if (monitor.available || monitor.forced) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        subscription.dispose()
        resolve(monitor.available)
      }, ms)
      const subscription = monitor.once('up', () => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }

  /** Another run holds the task: put this job back to wait (not a try), to look again later. */
  async #defer(job: Job, bullToken: string | undefined, waitMs: number): Promise<never> {
    this.#stats.deferred++
    const delay = Math.min(MAX_DEFER_MS, Math.max(MIN_DEFER_MS, waitMs))
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4))
    await job.moveToDelayed(Date.now() + jittered, bullToken)
    throw new DelayedError()
  }

  /**
   * Take the task id's lease for this run (see claims.ts). Redis refusing the claim (OOM at
   * maxmemory) falls back to reading the marker: done, or else not run now (never unleased).
   */
  async #claim(
    claims: TaskClaims,
    client: Redis,
    id: string,
    token: string,
  ): Promise<{ kind: 'claimed' } | { kind: 'done' } | { kind: 'busy'; retryInMs: number }> {
    try {
      return await claims.claim(client, id, token)
    } catch (error) {
      if (!isOutOfMemory(error)) throw error
      const held = await client.get(claims.key(id))
      if (held !== null && !held.startsWith('run:')) return { kind: 'done' }
      // No lease could be recorded: a run now would hold none, and its marker would be refused
      // too — once Redis accepts writes again, another worker would find the id free and run
      // it a second time (the randomized checker, seed 22). Look again later; if Redis refuses
      // that as well, the job stays BullMQ's to hand out again, still unrun.
      this.#stats.claimsRefused++
      return { kind: 'busy', retryInMs: OOM_CLAIM_RETRY_MS }
    }
  }

  /**
   * Redis may have forgotten acknowledged writes (a rollback, or all of them: a reset): take
   * again the lease of every run still going here, and write again the marker of every
   * task completed here that is still remembered (at most RECENT_DONE_MAX), with the TTL it
   * has left, in pipelines on the recovery's connection — before 'up', so that no copy of those
   * jobs Redis may hand out again runs a second time.
   */
  async reassertMarkers(run: Runner): Promise<void> {
    const claims = this.#deps.claims
    if (claims === null) return
    this.#claimsHeldUntil = Date.now() + ROLLBACK_CLAIM_HOLD_MS
    // The leases of the runs still going here first: Redis may hand their jobs out again (a
    // spool replay, a re-add after a rollback) and another worker must find them held. RENEW
    // takes a missing lease again; one held by another run since is left to it (that run's
    // handler will see its own lease; this one's keeper reports the loss at its next renewal).
    for (const [id, { token }] of [...this.#holding]) {
      await run((redis) => claims.renew(redis, id, token))
      this.#stats.leasesReasserted++
    }
    if (this.#recentlyDone.size === 0) return
    const now = Date.now()
    const markers = [...this.#recentlyDone].filter(([, expiresAt]) => expiresAt - now > 0)
    for (let i = 0; i < markers.length; i += 1000) {
      const batch = markers.slice(i, i + 1000)
      await run(async (redis) => {
        const pipeline = redis.pipeline()
        for (const [id, expiresAt] of batch) {
          pipeline.set(claims.key(id), DONE, 'PX', Math.max(1, Math.round(expiresAt - now)))
        }
        const replies = (await pipeline.exec()) ?? []
        for (const [error] of replies) if (error) throw error
      })
    }
    this.#stats.markersReasserted += markers.length
  }

  #remember(id: string, expiresAt: number): void {
    this.#recentlyDone.delete(id)
    this.#recentlyDone.set(id, expiresAt)
    trimOldest(this.#recentlyDone, RECENT_DONE_MAX)
  }

  #keepMarker(id: string, expiresAt: number): void {
    if (this.#closing !== null) return
    this.#pendingMarkers.set(id, expiresAt)
    if (trimOldest(this.#pendingMarkers, PENDING_MARKERS_MAX)) {
      this.#stats.markersDropped++
      this.#logLimiter.log(
        'markers-dropped',
        'error',
        { dropped: this.#stats.markersDropped, bound: PENDING_MARKERS_MAX },
        'too many completed tasks without a marker in Redis; the oldest is no longer retried',
      )
    }
    this.#markerTimer ??= setInterval(() => void this.#retryMarkers(), MARKER_RETRY_MS).unref()
  }

  /** Write the refused markers again, oldest first; stop at the first refusal. */
  async #retryMarkers(): Promise<void> {
    if (this.#closing !== null || !this.#deps.monitor.available || this.#retryingMarkers) return
    this.#retryingMarkers = true
    try {
      const client = await this.#worker.getBackend().client
      for (const [id, expiresAt] of [...this.#pendingMarkers]) {
        const left = expiresAt - Date.now()
        if (left > 0 && this.#deps.claims !== null) {
          await this.#deps.claims.complete(client as unknown as Redis, id, left)
        }
        this.#pendingMarkers.delete(id)
        this.#stats.markersRetried++
      }
    } catch (error) {
      this.#onError(error)
    } finally {
      this.#retryingMarkers = false
    }
    if (this.#pendingMarkers.size === 0 && this.#markerTimer !== null) {
      clearInterval(this.#markerTimer)
      this.#markerTimer = null
    }
  }

  #onError(error: unknown): void {
    this.#stats.errors++
    // Connection errors are the outage itself, which the monitor already reports.
    if (isConnectivityError(error) && !isReplyError(error)) {
      this.#deps.logger.debug({ err: loggableError(error) }, 'task worker connection error')
      return
    }
    this.#logLimiter.log('error', 'warn', { err: loggableError(error) }, 'task worker error')
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(options.timeoutMs ?? 10_000)
    return this.#closing
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#connections.markClosing()
    for (const listener of this.#listeners) listener.dispose()
    if (this.#markerTimer !== null) clearInterval(this.#markerTimer)
    this.#markerTimer = null
    if (this.#pendingMarkers.size > 0) {
      this.#deps.logger.warn(
        { markers: this.#pendingMarkers.size },
        'task worker closed with completed tasks whose marker Redis refused; a copy of them may run again',
      )
    }
    try {
      // Never BullMQ's graceful close: it waits for each connection's 'end', which never
      // comes for one that is reconnecting, and then leaves its lock timers running. Instead:
      // stop fetching, let the jobs in progress finish and report (that needs Redis, so only
      // while it is up, and at most timeoutMs), then close without waiting.
      if (this.#deps.monitor.available) {
        await within(this.#worker.pause(true), 1000)
        const deadline = Date.now() + timeoutMs
        await until(
          () => this.#running.size === 0,
          deadline,
          () => this.#deps.monitor.available,
        )
        // BullMQ records each outcome right after the handler; it may fail to (the job was
        // lost with Redis' data): wait a little, not for ever.
        await until(
          () => this.#reporting.size === 0,
          Math.min(deadline, Date.now() + 1000),
          () => this.#deps.monitor.available,
        )
        if (this.#running.size > 0) {
          this.#deps.logger.warn(
            { jobs: this.#running.size },
            'task worker closed with jobs in progress; they run again once their lock expires',
          )
        }
      }
      const closing = this.#worker.close(true)
      if ((await within(closing, 1000)) === 'expired') {
        this.#connections.disconnectAll()
        if ((await within(closing, 1000)) === 'expired') {
          this.#deps.logger.warn({}, 'task worker did not close cleanly; abandoned')
        }
      }
    } catch (error) {
      this.#onError(error)
    } finally {
      this.#connections.disconnectAll()
      this.#deps.onClosed(this)
    }
  }

  status(): WorkerStatus {
    return {
      running: this.#closing === null && this.#worker.isRunning(),
      inProgress: this.#running.size,
      concurrency: this.#deps.concurrency,
      markersPending: this.#pendingMarkers.size,
      connections: this.#connections.statuses(),
      ...this.#stats,
    }
  }
}

async function until(done: () => boolean, deadline: number, still: () => boolean): Promise<void> {
  while (!done() && Date.now() < deadline && still()) {
    await sleep(20)
  }
}

/** BullMQ's own rule (Job.shouldRetryJob, without a custom backoff's -1): another try follows. */
function willRetry(job: Job, error: unknown): boolean {
  if (error instanceof UnrecoverableError || error instanceof DelayedError) return false
  if (error instanceof WaitingError) return false
  const attempts = job.opts.attempts ?? 1
  return job.attemptsMade + 1 < attempts
}

/**
 * `ctx.progress()` on a worker: BullMQ's `updateProgress`, one at a time per run; a value given
 * while one is on its way replaces the one waiting (so an outage, when the worker's connection
 * queues its commands, holds at most two). Errors are counted, never thrown at the handler.
 */
class ProgressSender {
  readonly #job: Job
  readonly #onError: (error: unknown) => void
  #sending = false
  #next: TaskProgress | undefined
  #stopped = false

  constructor(job: Job, onError: (error: unknown) => void) {
    this.#job = job
    this.#onError = onError
  }

  send(_checked: string, value: TaskProgress): void {
    if (this.#stopped) return
    if (this.#sending) {
      this.#next = value
      return
    }
    this.#sending = true
    this.#job
      .updateProgress(value as number | object)
      .catch((error: unknown) => this.#onError(error))
      .finally(() => {
        this.#sending = false
        const next = this.#next
        this.#next = undefined
        if (next !== undefined) this.send('', next)
      })
  }

  /** The run ended: a value still waiting is not sent. */
  stop(): void {
    this.#stopped = true
    this.#next = undefined
  }
}

/** failsoft's task id of a job: carried in its options, or BullMQ's job id itself. */
function taskIdOf(job: Job): string {
  const id = (job.opts as Record<string, unknown>)[TASK_ID_OPTION]
  return typeof id === 'string' && id.length > 0 ? id : (job.id ?? '')
}

/**
 * One BullMQ job, across its retries: its id and creation time (BullMQ's counter restarts at
 * 1 in an empty Redis, so an id alone may name a job from before a restart).
 */
function instanceOf(job: Job): string {
  return `${job.id ?? ''}:${job.timestamp}`
}

/** BullMQ reads a worker-level retention only in its object form (count -1 keeps all). */
function keep(value: KeepJobs): { count: number } | { age: number; count?: number } {
  if (value === true) return { count: 0 }
  if (value === false) return { count: -1 }
  if (typeof value === 'number') return { count: value }
  return value
}

/**
 * ctx.children() on a worker: the values of the job's children (a flow's parent), by task id
 * — a flow node's BullMQ job id is its task id, the last part of BullMQ's key for the child.
 */
async function childrenValues(job: Job): Promise<Readonly<Record<string, unknown>>> {
  const values = await job.getChildrenValues<unknown>()
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(values))
    out[key.slice(key.lastIndexOf(':') + 1)] = value
  return out
}
