import { asError, withDeadline } from '../util/async.js'
import {
  FlowProducer,
  Job,
  Queue,
  type FlowJob,
  type JobsOptions,
  type RepeatOptions,
} from 'bullmq'
import type { Redis } from 'ioredis'
import { RedisTimeoutError, RedisUnavailableError } from '../errors.js'
import type { Disposable } from '../health/events.js'
import type { HealthMonitor } from '../health/monitor.js'
import { dropConnection } from '../redis/connection.js'
import { isReplyError } from '../redis/replies.js'
import type { TaskQueueOptions } from './options.js'
import type { OutgoingJob, TaskDefinition } from './task.js'

/** What happened to one enqueue. */
export type EnqueueOutcome =
  /** In Redis, as BullMQ job `jobId` (on `replicas` replicas, with `waitForReplicas`). */
  | { readonly kind: 'queued'; readonly jobId: string; readonly replicas?: number }
  /** Certainly not in Redis: nothing was written, or Redis answered with an error. */
  | { readonly kind: 'not-sent'; readonly error: Error }
  /** Written, no answer (deadline, connection lost): it may still land. Never run it inline. */
  | { readonly kind: 'ambiguous'; readonly error: Error }

/**
 * The job option that carries failsoft's task id when BullMQ numbers the job itself. BullMQ
 * keeps options it does not know, and hands them back to the worker in `job.opts`.
 */
export const TASK_ID_OPTION = 'failsoftId'

interface Waiting {
  readonly start: number
  readonly resolve: (outcome: EnqueueOutcome) => void
  /**
   * The dispatch has its outcome (possibly "ambiguous" at the deadline). The entry stays in
   * `#waiting` until BullMQ settles the add, so the monitor's watchdog still sees it.
   */
  answered: boolean
}

const NOT_WRITABLE = /Stream isn't writeable/

/**
 * The producer side: its own ioredis connection (no offline queue, no automatic reconnect:
 * it is connected when the health monitor says Redis is up, dropped when it says down) and
 * the BullMQ `Queue` on top of it, created only once the connection is ready — a BullMQ
 * connection whose first connect fails stays broken for good.
 */
export class Producer {
  readonly #monitor: HealthMonitor
  readonly #name: string
  readonly #bullPrefix: string
  readonly #options: TaskQueueOptions
  readonly #connectionName: string
  readonly #onError: (error: unknown, source: string) => void
  #connection: Redis | null = null
  #queue: Queue | null = null
  readonly #waiting = new Set<Waiting>()
  /** Adds that landed, waiting for the next WAIT (`waitForReplicas`). */
  #unreplicated: Array<{ jobId: string; resolve: (outcome: EnqueueOutcome) => void }> = []
  #sweeper: NodeJS.Timeout | null = null
  #preparing: Promise<Queue> | null = null
  /** BullMQ's FlowProducer on this producer's connection, created on the first flow. */
  #flows: FlowProducer | null = null
  /** The queue's settings kept in Redis (global concurrency) are to be written (again). */
  #settingsOwed: boolean
  readonly #watch: Disposable
  #closed = false

  constructor(options: {
    monitor: HealthMonitor
    queue: string
    bullPrefix: string
    options: TaskQueueOptions
    connectionName: string
    onError: (error: unknown, source: string) => void
  }) {
    this.#monitor = options.monitor
    this.#name = options.queue
    this.#bullPrefix = options.bullPrefix
    this.#options = options.options
    this.#connectionName = options.connectionName
    this.#onError = options.onError
    this.#settingsOwed = options.options.globalConcurrency !== null
    // The adds are tracked here rather than through `monitor.run` (one wrapper less per
    // dispatch); the monitor's watchdog still sees the oldest one.
    this.#watch = this.#monitor.watchInFlight((since) => {
      // Insertion order is start order: the first one started since the outage began. Those
      // from before it were answered (ambiguous, spooled) and no longer matter to the
      // watchdog: forgotten here, whether BullMQ ever settles them or not.
      for (const entry of this.#waiting) {
        if (entry.start >= since) return performance.now() - entry.start
        if (entry.answered) this.#waiting.delete(entry)
      }
      return 0
    })
  }

  /** The queue, ready to take jobs now (no await needed), or null. */
  get readyQueue(): Queue | null {
    return this.#queue !== null && this.#connection?.status === 'ready' ? this.#queue : null
  }

  /**
   * Connect (if needed) and create the BullMQ queue (once). Rejects when Redis does not
   * answer within `timeoutMs`; the next call tries again.
   */
  prepare(timeoutMs: number): Promise<Queue> {
    if (this.#closed) return Promise.reject(new RedisUnavailableError('task queue closed'))
    const ready = this.readyQueue
    if (ready !== null) return Promise.resolve(ready)
    this.#preparing ??= this.#prepare().finally(() => {
      this.#preparing = null
    })
    return withDeadline(this.#preparing, timeoutMs, 'task producer connect')
  }

  async #prepare(): Promise<Queue> {
    const connection = (this.#connection ??= this.#createConnection())
    if (connection.status !== 'ready') {
      if (connection.status !== 'wait' && connection.status !== 'end') connection.disconnect()
      try {
        await connection.connect()
      } catch (error) {
        connection.disconnect()
        throw error
      }
    }
    if (this.#queue === null) {
      // Job retention (removeOnComplete / removeOnFail) is the worker's setting: jobs stay
      // small on the way in, which is the hot path.
      const telemetry = this.#options.telemetry
      const queue = new Queue(this.#name, {
        connection,
        prefix: this.#bullPrefix,
        ...(telemetry === null ? {} : { telemetry }),
      })
      queue.on('error', (error: unknown) => this.#onError(error, 'queue'))
      this.#queue = queue
      try {
        await queue.waitUntilReady()
      } catch (error) {
        // Its connection failed while BullMQ initialised: that Queue object is unusable.
        this.#queue = null
        queue.close().catch((e: unknown) => this.#onError(e, 'queue close'))
        throw error
      }
    }
    return this.#queue
  }

  #createConnection(): Redis {
    // The 'subscriber' role has the command defaults (no offline queue, no reconnect by
    // ioredis) without the monitor's close hook: this socket is connected and dropped by us,
    // following the monitor's state, and is not itself a health signal.
    const connection = this.#monitor.createConnection('subscriber', this.#connectionName)
    // The monitor's own listener contains 'error' events; this one counts them for status().
    connection.on('error', (error: unknown) => this.#onError(error, 'connection'))
    return connection
  }

  /**
   * Add one job, waiting at most `enqueueTimeoutMs`. Tracked by the health monitor as a
   * command in flight, so a frozen Redis brings the state down (and this connection with it)
   * within the monitor's command deadline.
   */
  enqueue(job: OutgoingJob): Promise<EnqueueOutcome> {
    const queue = this.readyQueue
    return queue === null ? this.#prepareThenSend(job) : this.#send(queue, job)
  }

  async #prepareThenSend(job: OutgoingJob): Promise<EnqueueOutcome> {
    let queue: Queue
    try {
      queue = await this.prepare(this.#options.enqueueTimeoutMs)
    } catch (error) {
      return { kind: 'not-sent', error: asError(error) }
    }
    if (this.readyQueue === null) {
      return { kind: 'not-sent', error: new RedisUnavailableError('task producer not connected') }
    }
    return this.#send(queue, job)
  }

  #send(queue: Queue, job: OutgoingJob): Promise<EnqueueOutcome> {
    if (!this.#monitor.available) {
      return Promise.resolve({ kind: 'not-sent', error: new RedisUnavailableError() })
    }
    return new Promise<EnqueueOutcome>((resolve) => {
      // From here the command is written in this same tick (ready socket, no offline queue):
      // any later failure but a refusal from Redis leaves it "may have landed". Job.create is
      // what Queue.add runs after its wrappers (telemetry span, default job options, the
      // 'waiting' event), none of which this internal queue uses; on a 2-core machine those
      // wrappers cost 5-7 % of dispatch throughput at 50 concurrent callers (measured).
      // With BullMQ's telemetry, Queue.add: its producer span and the context the worker
      // continues (the add is then written a few microtasks later, still before any await on
      // Redis).
      const adding: Promise<Job> =
        this.#options.telemetry === null
          ? Job.create(queue, job.name, job.args, jobOptions(job))
          : queue.add(job.name, job.args, jobOptions(job))
      const entry: Waiting = { start: performance.now(), resolve, answered: false }
      this.#waiting.add(entry)
      this.#sweepSoon()
      adding.then(
        (added) => {
          this.#waiting.delete(entry)
          if (entry.answered) return
          entry.answered = true
          const jobId = added.id ?? job.id
          if (this.#options.waitForReplicas === null) resolve({ kind: 'queued', jobId })
          else this.#afterWait(jobId, resolve)
        },
        (error: unknown) => {
          this.#waiting.delete(entry)
          const waiting = !entry.answered
          entry.answered = true
          const e = asError(error)
          if (isRefusal(e)) {
            // Redis (or a BullMQ script) answered with an error: the job is not in Redis.
            // LOADING, BUSY, READONLY… mean Redis cannot serve: the monitor must know.
            if (isReplyError(e)) this.#monitor.reportFailure(e)
            if (waiting) resolve({ kind: 'not-sent', error: e })
            return
          }
          this.#monitor.reportFailure(e)
          if (!waiting) return
          const definite = e instanceof RedisUnavailableError || NOT_WRITABLE.test(e.message)
          resolve({ kind: definite ? 'not-sent' : 'ambiguous', error: e })
        },
      )
    })
  }

  /**
   * `waitForReplicas`: the adds of this tick are answered after one `WAIT` on their connection
   * (it counts the replicas that have every write this connection made before it). A WAIT that
   * fails or outlasts its own timeout by the command deadline answers 0 replicas.
   */
  #afterWait(jobId: string, resolve: (outcome: EnqueueOutcome) => void): void {
    const wait = this.#options.waitForReplicas
    const connection = this.#connection
    if (wait === null || connection === null) {
      resolve({ kind: 'queued', jobId, replicas: 0 })
      return
    }
    this.#unreplicated.push({ jobId, resolve })
    if (this.#unreplicated.length > 1) return
    setImmediate(() => {
      const batch = this.#unreplicated
      this.#unreplicated = []
      const deadline = wait.timeoutMs + this.#monitor.commandDeadlineMs
      withDeadline(
        // The queue's own connection (BullMQ uses the instance given, not a copy).
        connection.wait(wait.count, wait.timeoutMs),
        deadline,
        'WAIT',
      ).then(
        (reply) => {
          const replicas = Number(reply) || 0
          for (const item of batch) item.resolve({ kind: 'queued', jobId: item.jobId, replicas })
        },
        (error: unknown) => {
          this.#onError(error, 'WAIT')
          for (const item of batch) item.resolve({ kind: 'queued', jobId: item.jobId, replicas: 0 })
        },
      )
    })
  }

  /**
   * One timer for all enqueues in flight (rather than one per dispatch, on the hot path):
   * past `enqueueTimeoutMs` an enqueue is answered "ambiguous" — its add may still land.
   */
  #sweepSoon(): void {
    if (this.#sweeper !== null) return
    const tick = Math.max(5, Math.min(50, Math.floor(this.#options.enqueueTimeoutMs / 10)))
    this.#sweeper = setInterval(() => {
      const expired = performance.now() - this.#options.enqueueTimeoutMs
      // Insertion order is start order: stop at the first one still within its deadline.
      for (const entry of this.#waiting) {
        if (entry.start > expired) break
        if (entry.answered) continue
        entry.answered = true
        entry.resolve({
          kind: 'ambiguous',
          error: new RedisTimeoutError(this.#options.enqueueTimeoutMs, {
            details: { source: 'enqueue' },
          }),
        })
      }
      if (this.#waiting.size === 0 && this.#sweeper !== null) {
        clearInterval(this.#sweeper)
        this.#sweeper = null
      }
    }, tick)
  }

  /** Hand a batch over in order (spool replay); rejects if Redis fails meanwhile. */
  async addBatch(
    jobs: readonly OutgoingJob[],
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    timeoutMs: number,
  ): Promise<void> {
    const queue = await this.prepare(timeoutMs)
    await withDeadline(
      run(() =>
        queue.addBulk(
          jobs.map((job) => ({ name: job.name, data: job.args, opts: jobOptions(job) })),
        ),
      ),
      timeoutMs,
      'spool replay',
    )
  }

  /**
   * Add a flow (BullMQ's FlowProducer: one MULTI/EXEC, so all of it or none lands), waiting
   * at most `enqueueTimeoutMs`. Never sent while the monitor says Redis is unavailable.
   */
  async addFlow(flow: FlowJob): Promise<EnqueueOutcome> {
    if (!this.#monitor.available) return { kind: 'not-sent', error: new RedisUnavailableError() }
    const timeoutMs = this.#options.enqueueTimeoutMs
    let producer: FlowProducer
    try {
      await this.prepare(timeoutMs)
      const connection = this.#connection
      if (connection === null) throw new RedisUnavailableError('task producer not connected')
      producer = this.#flows ??= this.#createFlowProducer(connection)
    } catch (error) {
      return { kind: 'not-sent', error: asError(error) }
    }
    try {
      // Not through monitor.run: a large flow may take longer than one command's deadline
      // without Redis being frozen (the heartbeat watches that); its own deadline bounds it.
      const added = await withDeadline(producer.add(flow), timeoutMs, 'add flow')
      return { kind: 'queued', jobId: added.job.id ?? '' }
    } catch (error) {
      const e = asError(error)
      if (isRefusal(e)) {
        // Redis answered (EXECABORT, a script error…): no part of the flow is in Redis.
        if (isReplyError(e)) this.#monitor.reportFailure(e)
        return { kind: 'not-sent', error: e }
      }
      return { kind: 'ambiguous', error: e }
    }
  }

  #createFlowProducer(connection: Redis): FlowProducer {
    const producer = new FlowProducer({ connection, prefix: this.#bullPrefix })
    producer.on('error', (error: unknown) => this.#onError(error, 'flow producer'))
    return producer
  }

  /** The queue's settings kept in Redis must be written (first use, or Redis lost them). */
  get settingsOwed(): boolean {
    return this.#settingsOwed
  }

  /** Redis lost data (a reset, a rollback): the queue's settings may be gone with it. */
  settingsLost(): void {
    if (this.#options.globalConcurrency !== null) this.#settingsOwed = true
  }

  /** Write the queue's settings kept in Redis: BullMQ's global concurrency. */
  async applySettings(
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    timeoutMs: number,
  ): Promise<void> {
    const concurrency = this.#options.globalConcurrency
    if (!this.#settingsOwed || concurrency === null) return
    const queue = await this.prepare(timeoutMs)
    await withDeadline(
      run(() => queue.setGlobalConcurrency(concurrency)),
      timeoutMs,
      'set global concurrency',
    )
    this.#settingsOwed = false
  }

  /** Create or update a BullMQ job scheduler (`repeat`: `every` or `pattern`, and bounds). */
  async upsertScheduler(
    id: string,
    name: string,
    repeat: Omit<RepeatOptions, 'key'>,
    args: unknown,
    definition: TaskDefinition,
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    timeoutMs: number,
  ): Promise<void> {
    const queue = await this.prepare(timeoutMs)
    await withDeadline(
      run(() =>
        queue.upsertJobScheduler(id, repeat, { name, data: args, opts: retryOptions(definition) }),
      ),
      timeoutMs,
      'upsert job scheduler',
    )
  }

  async removeScheduler(
    id: string,
    run: <T>(fn: () => Promise<T>) => Promise<T>,
    timeoutMs: number,
  ): Promise<void> {
    const queue = await this.prepare(timeoutMs)
    await withDeadline(
      run(() => queue.removeJobScheduler(id)),
      timeoutMs,
      'remove job scheduler',
    )
  }

  /**
   * Redis is down: destroy the socket so every add still waiting is rejected at once (a
   * graceful disconnect would wait for a FIN that a partitioned server never sends).
   * `prepare` opens a new one once Redis answers.
   */
  disconnect(): void {
    if (this.#connection !== null) dropConnection(this.#connection)
  }

  get connectionStatus(): string {
    return this.#connection?.status ?? 'none'
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#sweeper !== null) clearInterval(this.#sweeper)
    this.#sweeper = null
    this.#watch.dispose()
    const flows = this.#flows
    this.#flows = null
    if (flows !== null) {
      await withDeadline(flows.close(), 1000, 'flow producer close').catch((error: unknown) =>
        this.#onError(error, 'flow producer close'),
      )
    }
    const queue = this.#queue
    this.#queue = null
    // The connection is the monitor's (shared with BullMQ): failsoft.close() ends it.
    if (queue !== null) {
      await withDeadline(queue.close(), 1000, 'queue close').catch((error: unknown) =>
        this.#onError(error, 'queue close'),
      )
    }
    this.#connection?.disconnect()
  }
}

/** Retry options per task, computed once: the hot path only adds the task id (and delay). */
const retryCache = new WeakMap<TaskDefinition, JobsOptions | null>()

export function jobOptions(job: OutgoingJob): JobsOptions {
  const retry = job.definition === undefined ? null : cachedRetry(job.definition)
  const opts: JobsOptions & { [TASK_ID_OPTION]?: string } = retry === null ? {} : { ...retry }
  if (job.idIsJobId) opts.jobId = job.id
  else opts[TASK_ID_OPTION] = job.id
  if (job.delayMs > 0) opts.delay = job.delayMs
  if (job.priority !== undefined && job.priority > 0) opts.priority = job.priority
  if (job.lifo === true) opts.lifo = true
  // Redis mode only (validated at dispatch: none of the keys set above).
  if (job.bullmq !== undefined) Object.assign(opts, job.bullmq)
  return opts
}

function cachedRetry(definition: TaskDefinition): JobsOptions | null {
  let retry = retryCache.get(definition)
  if (retry === undefined) {
    const options = retryOptions(definition)
    retry = Object.keys(options).length === 0 ? null : options
    retryCache.set(definition, retry)
  }
  return retry
}

/** The BullMQ backoff type of a task with a custom strategy (see TaskWorker). */
export const CUSTOM_BACKOFF = 'failsoft-custom'

function retryOptions(definition: TaskDefinition): JobsOptions {
  const { attempts, backoff } = definition.options
  if (attempts <= 1) return {}
  // A custom strategy is the worker's (settings.backoffStrategy, looked up by task name).
  if (backoff.type === 'custom') return { attempts, backoff: { type: CUSTOM_BACKOFF } }
  return { attempts, backoff: { type: backoff.type, delay: backoff.delayMs } }
}

/** Redis answered (a reply error, or a BullMQ script status): the job is not in Redis. */
function isRefusal(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  if (isReplyError(error)) return true
  const code = (error as { code?: unknown }).code
  return typeof code === 'number' && code < 0
}
