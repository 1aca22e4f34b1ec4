import { QueueEvents } from 'bullmq'
import {
  ClosedError,
  InvalidProgressError,
  TaskFailedError,
  TaskResultTimeoutError,
  TaskResultUnavailableError,
  describeValue,
  invalidOption,
} from '../errors.js'
import type { Disposable } from '../health/events.js'
import type { HealthMonitor } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError, isReplyError } from '../redis/replies.js'
import { within } from '../util/async.js'
import { trimOldest } from '../util/bounded.js'
import { safeJsonParse } from '../util/json.js'
import { LogLimiter } from '../util/log-limiter.js'
import { ConsumerConnections } from './consumer-connections.js'
import { TASK_ID_OPTION } from './producer.js'
import { MAX_PROGRESS_BYTES, type TaskProgress, type TaskResultOptions } from './task.js'

/**
 * What a worker returns to BullMQ for a copy of a task it completed without running (the task
 * id was done already): the job's `returnvalue` is this, never the task's value. `result()`
 * then looks at the other copies it knows of, and no 'completed' event is emitted for it.
 */
export const SKIPPED_RETURN = Object.freeze({ failsoft: 'skipped: the task id ran already' })

/** What a worker returns to BullMQ instead of a value it cannot store (see maxResultBytes). */
export function unstoredResult(reason: 'too-large' | 'not-json', bytes?: number): object {
  return { failsoft: UNSTORED, reason, ...(bytes !== undefined && { bytes }) }
}
const UNSTORED = 'result not stored'

/**
 * The value a worker hands to BullMQ: itself, or a marker when it is not JSON or larger than
 * `maxBytes` as JSON (checked only for values that can be large: objects and long strings).
 */
export function storableResult(value: unknown, maxBytes: number): unknown {
  if (value === undefined || value === null) return value
  const type = typeof value
  if (type === 'bigint' || type === 'symbol' || type === 'function')
    return unstoredResult('not-json')
  if (type !== 'object' && !(type === 'string' && (value as string).length * 3 > maxBytes)) {
    return value
  }
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    return unstoredResult('not-json')
  }
  if (text === undefined) return unstoredResult('not-json')
  if (text.length * 3 > maxBytes) {
    const bytes = Buffer.byteLength(text)
    if (bytes > maxBytes) return unstoredResult('too-large', bytes)
  }
  return value
}

function unstoredReason(value: unknown): 'too-large' | 'not-json' | null {
  if (typeof value !== 'object' || value === null) return null
  const marker = value as { failsoft?: unknown; reason?: unknown }
  if (marker.failsoft !== UNSTORED) return null
  return marker.reason === 'too-large' ? 'too-large' : 'not-json'
}

/** The custom event a worker adds to BullMQ's event stream when a failed try will be retried. */
export const RETRYING_EVENT = 'failsoft:retrying'

/** Where a run happened: a BullMQ worker (any process), inline, or a local periodic run. */
export type TaskEventMode = 'worker' | 'inline' | 'local'

interface TaskEventBase {
  /** The task id (`ctx.id`); the BullMQ job id when the job was gone before it could be read. */
  readonly id: string
  /** BullMQ's job id (worker runs only). */
  readonly jobId?: string
  /** The task's name; null when its job was removed before the event could be read. */
  readonly name: string | null
  readonly queue: string
  readonly mode: TaskEventMode
}

/** The events of `tasks.on(event, listener)`. */
export interface TaskEvents {
  /** A run succeeded (copies completed without running are not reported). */
  completed: TaskEventBase & { readonly value: unknown }
  /** The last try failed: the task is failed for good. */
  failed: TaskEventBase & { readonly error: TaskFailedError }
  /** `ctx.progress(value)` */
  progress: TaskEventBase & { readonly progress: TaskProgress }
  /** Try `attempt` failed and another try follows (after the backoff). */
  retrying: TaskEventBase & { readonly attempt: number; readonly error: TaskFailedError }
  /** BullMQ found the job's lock expired (its worker died or was cut off) and handed it out again. */
  stalled: TaskEventBase
}

export type TaskEventName = keyof TaskEvents
export type TaskEventListener<K extends TaskEventName> = (event: TaskEvents[K]) => void

const EVENT_NAMES: readonly TaskEventName[] = [
  'completed',
  'failed',
  'progress',
  'retrying',
  'stalled',
]

/** How often every waiting result is checked in Redis, whatever the events said (ms). */
const POLL_MS = 5000
/** A job missing from Redis is looked for again after this long before its result is given up. */
const MISSING_CONFIRM_MS = 1000
/** Events of the queue's stream looked through for the end of a job that is not in Redis. */
const LOOK_BACK = 1000
/** …read this many at a time (a completed event carries its value: up to maxResultBytes). */
const LOOK_BACK_PAGE = 100
/** Jobs checked per pipeline. */
const CHECK_BATCH = 500
/** Job ids → task id and name, remembered for events (dispatched here, or read once). */
const KNOWN_MAX = 10_000
/** Cross-process events waiting for their job's name: beyond, events are dropped (counted). */
const EVENT_BACKLOG_MAX = 1000
const LOG_EVERY_MS = 10_000

interface Waiter {
  readonly task: string
  readonly id: string
  /** The BullMQ jobs that may hold the task's outcome (its job id, and the task id). */
  readonly jobIds: readonly string[]
  /**
   * The resets and rollbacks this process had seen when the wait began: an end read for a
   * BullMQ job number is trusted only within one epoch (the number names the same job).
   */
  readonly epoch: number
  readonly resolve: (value: unknown) => void
  readonly reject: (error: Error) => void
  missingSince: number
  done: boolean
}

type JobState =
  | { kind: 'missing' }
  | { kind: 'pending' }
  | { kind: 'completed'; value: unknown }
  | { kind: 'skipped' }
  | { kind: 'failed'; name: string; message: string }

interface ResultsDeps {
  readonly monitor: HealthMonitor
  readonly queue: string
  readonly bullPrefix: string
  readonly connectionName: string
  readonly logger: Logger
  readonly onError: (error: unknown, what: string) => void
  /** True while the task id waits in this process's spool (not yet handed to Redis). */
  readonly spooled: (id: string) => boolean
}

/**
 * Results and events of one task queue. One BullMQ `QueueEvents` per queue, opened on the
 * first `result()` or `on()` that needs Redis, closed with the queue. Events only wake the
 * waits up; what settles a wait is what the job's hash in Redis says (or an event read in the
 * same epoch, for a job id that cannot be reused). Every wait is checked again when Redis is
 * back and every POLL_MS, so events missed during an outage (or trimmed from the stream)
 * cannot leave a wait hanging.
 */
export class TaskResults {
  readonly #deps: ResultsDeps
  readonly #logLimiter: LogLimiter
  readonly #waiters = new Map<string, Set<Waiter>>()
  readonly #listeners = new Map<TaskEventName, Set<(event: never) => void>>()
  readonly #known = new Map<string, { id: string; name: string }>()
  readonly #monitorListeners: Disposable[] = []
  #events: QueueEvents | null = null
  /** Listened to or waited on while Redis was unavailable: opened at the next 'up'. */
  #wanted = false
  /** The connection given to QueueEvents and the copy BullMQ reads the stream on. */
  #connections: ConsumerConnections | null = null
  #reading: Promise<void> | null = null
  #opening = false
  /** Waits whose jobs are not in Redis, to look for in the event stream (see #lookBack). */
  readonly #lookingBack = new Set<Waiter>()
  /** The stream id the event reader resumes from (see #start). */
  #lastEventId = '$'
  /** The first XREAD was sent: every event from now on is read. */
  #isReading = false
  #poller: NodeJS.Timeout | null = null
  #epoch = 0
  #chain: Promise<void> = Promise.resolve()
  #backlog = 0
  #closed = false
  readonly stats = { eventsDropped: 0, eventErrors: 0 }

  constructor(deps: ResultsDeps) {
    this.#deps = deps
    this.#logLimiter = new LogLimiter(deps.logger, LOG_EVERY_MS)
    if (deps.monitor.memoryOnly) return
    this.#monitorListeners.push(
      // BullMQ's counter restarts in a Redis that lost its data (or goes back, in one that
      // lost its recent writes): a job number may now name another task's job. Both are seen
      // by the recovery before this process is up again, so before any event read since is
      // trusted. An outage alone (a kill and a restart with the data, a freeze, a partition)
      // renumbers nothing.
      deps.monitor.on('reset', () => {
        this.#epoch++
        this.#known.clear()
      }),
      deps.monitor.on('rollback', () => {
        this.#epoch++
        this.#known.clear()
      }),
      deps.monitor.on('down', ({ forced }) => {
        // After a silent partition the events socket looks open and is dead: break it
        // (ioredis reconnects and sends the XREAD again, from the last id read).
        if (!forced) this.#connections?.dropSockets()
      }),
      deps.monitor.on('up', () => {
        if (this.#wanted) this.#open()
        this.#kick()
        this.#checkAll()
      }),
    )
  }

  /** Waits in progress (for status and tests). */
  get waiting(): number {
    let n = 0
    for (const set of this.#waiters.values()) n += set.size
    return n
  }

  get hasListeners(): boolean {
    return this.#listeners.size > 0
  }

  /** A job dispatched here: its task id and name, for the events read back (only with listeners). */
  remember(jobId: string, id: string, name: string): void {
    if (this.#listeners.size === 0) return
    this.#known.set(jobId, { id, name })
    trimOldest(this.#known, KNOWN_MAX)
  }

  // ── results ────────────────────────────────────────────────────────────────────────────────

  /** Wait for the outcome of task `id`, held by one of `jobIds` in Redis. */
  wait(
    task: string,
    id: string,
    jobIds: readonly string[],
    options: TaskResultOptions | undefined,
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(new ClosedError('task queue'))
    return bounded(task, id, options, (resolve, reject) => {
      const waiter: Waiter = {
        task,
        id,
        jobIds: [...new Set(jobIds)],
        epoch: this.#epoch,
        resolve,
        reject,
        missingSince: 0,
        done: false,
      }
      for (const jobId of waiter.jobIds) {
        let set = this.#waiters.get(jobId)
        if (set === undefined) this.#waiters.set(jobId, (set = new Set()))
        set.add(waiter)
      }
      this.#open()
      this.#pollSoon()
      // Now, and again once the event stream is read if it is not yet (an event before the
      // first XREAD is missed).
      this.#check([waiter])
      if (!this.#isReading) void this.#reading?.then(() => this.#check([waiter]))
      return () => {
        waiter.done = true
        this.#forget(waiter)
      }
    })
  }

  #settle(
    waiter: Waiter,
    outcome: { ok: true; value: unknown } | { ok: false; error: Error },
  ): void {
    if (waiter.done) return
    waiter.done = true
    this.#forget(waiter)
    if (outcome.ok) waiter.resolve(outcome.value)
    else waiter.reject(outcome.error)
  }

  #forget(waiter: Waiter): void {
    for (const jobId of waiter.jobIds) {
      const set = this.#waiters.get(jobId)
      if (set === undefined) continue
      set.delete(waiter)
      if (set.size === 0) this.#waiters.delete(jobId)
    }
    if (this.#waiters.size === 0 && this.#poller !== null) {
      clearInterval(this.#poller)
      this.#poller = null
    }
  }

  #pollSoon(): void {
    if (this.#poller !== null) return
    this.#poller = setInterval(() => this.#checkAll(), POLL_MS)
    this.#poller.unref()
  }

  #checkAll(): void {
    const all = new Set<Waiter>()
    for (const set of this.#waiters.values()) for (const w of set) all.add(w)
    if (all.size > 0) this.#check([...all])
  }

  /** Read the jobs of these waits in Redis and settle those whose outcome is known. */
  #check(waiters: readonly Waiter[]): void {
    const monitor = this.#deps.monitor
    if (this.#closed || !monitor.available) return
    const live = waiters.filter((w) => !w.done)
    for (let i = 0; i < live.length; i += CHECK_BATCH) {
      const batch = live.slice(i, i + CHECK_BATCH)
      monitor
        .run(async (redis) => {
          const pipeline = redis.pipeline()
          for (const w of batch) {
            for (const jobId of w.jobIds) {
              pipeline.hmget(
                this.#jobKey(jobId),
                'opts',
                'returnvalue',
                'finishedOn',
                'failedReason',
                'stacktrace',
              )
            }
          }
          return (await pipeline.exec()) ?? []
        })
        .then((replies) => {
          let r = 0
          for (const w of batch) {
            const states: JobState[] = []
            for (const jobId of w.jobIds) {
              const [error, fields] = replies[r++] ?? [null, null]
              if (error) throw error
              states.push(jobState(w.id, jobId, fields as Array<string | null> | null))
            }
            this.#decide(w, states)
          }
        })
        .catch((error: unknown) => this.#deps.onError(error, 'result check'))
    }
  }

  #decide(w: Waiter, states: readonly JobState[]): void {
    if (w.done) return
    const completed = states.find((s) => s.kind === 'completed')
    if (completed !== undefined) {
      const unstored = unstoredReason(completed.value)
      this.#settle(
        w,
        unstored === null
          ? { ok: true, value: completed.value }
          : { ok: false, error: new TaskResultUnavailableError(w.task, w.id, unstored) },
      )
      return
    }
    if (states.some((s) => s.kind === 'pending')) {
      w.missingSince = 0
      return
    }
    const failed = states.find((s) => s.kind === 'failed')
    if (failed !== undefined) {
      const jobId = w.jobIds[states.indexOf(failed)]
      this.#settle(w, {
        ok: false,
        error: new TaskFailedError(w.task, w.id, failed, { jobId }),
      })
      return
    }
    if (states.some((s) => s.kind === 'skipped')) {
      this.#settle(w, {
        ok: false,
        error: new TaskResultUnavailableError(w.task, w.id, 'ran-as-another-job'),
      })
      return
    }
    // Not in Redis (yet, or any more). Still in this process's spool: it will be.
    if (this.#deps.spooled(w.id)) {
      w.missingSince = 0
      return
    }
    // Its end may have been written to the event stream before this process read it (a job
    // removed on completion that ended before the first XREAD, or in a reconnection gap).
    this.#lookingBack.add(w)
    if (this.#lookingBack.size === 1) setImmediate(() => this.#lookBack())
  }

  /**
   * The waits that found none of their jobs in Redis, together: the last LOOK_BACK entries of
   * the queue's stream are read newest first, LOOK_BACK_PAGE at a time, until each wait found
   * the end of one of its jobs (trusted as an event read live is) or the bound is reached.
   * The others go on to #missing.
   */
  #lookBack(): void {
    const waits = [...this.#lookingBack]
    this.#lookingBack.clear()
    const byJob = new Map<string, Waiter[]>()
    for (const w of waits) {
      for (const jobId of w.jobIds) byJob.set(jobId, [...(byJob.get(jobId) ?? []), w])
    }
    const open = (): Waiter[] => waits.filter((w) => !w.done)
    const read = async (): Promise<void> => {
      let before = '+'
      for (let seen = 0; seen < LOOK_BACK && open().length > 0; seen += LOOK_BACK_PAGE) {
        if (!this.#deps.monitor.available) return
        const end = before
        const page = await this.#deps.monitor.run((redis) =>
          redis.xrevrange(this.#eventsKey(), end, '-', 'COUNT', LOOK_BACK_PAGE),
        )
        for (const [id, flat] of page) {
          before = `(${id}`
          const fields = new Map<string, string>()
          for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i] ?? '', flat[i + 1] ?? '')
          const jobId = fields.get('jobId') ?? ''
          for (const w of byJob.get(jobId) ?? []) this.#settleFromEntry(w, jobId, fields)
        }
        if (page.length < LOOK_BACK_PAGE) return
      }
    }
    read()
      .catch((error: unknown) => this.#deps.onError(error, 'result check'))
      .finally(() => {
        for (const w of open()) this.#missing(w)
      })
  }

  /** Settle a wait from its job's entry in the event stream, when it is an end that applies. */
  #settleFromEntry(w: Waiter, jobId: string, fields: ReadonlyMap<string, string>): void {
    const event = fields.get('event')
    if (w.done || (event !== 'completed' && event !== 'failed')) return
    if (!(jobId === w.id || (w.epoch === this.#epoch && this.#deps.monitor.available))) return
    if (event === 'failed') {
      this.#settle(w, {
        ok: false,
        error: new TaskFailedError(
          w.task,
          w.id,
          { name: 'Error', message: fields.get('failedReason') ?? '' },
          { jobId },
        ),
      })
      return
    }
    let value: unknown = null
    try {
      const text = fields.get('returnvalue') ?? ''
      value = text === '' ? null : safeJsonParse(text)
    } catch {
      value = null
    }
    this.#settleCompleted(w, jobId, value)
  }

  /**
   * Settle a wait from job `jobId`'s completion value (an event, or its stream entry): the
   * value, or why it is unavailable. False, unsettled, when the job completed without running
   * and the wait has another job that may hold the value.
   */
  #settleCompleted(w: Waiter, jobId: string, value: unknown): boolean {
    const unstored = unstoredReason(value)
    if (unstored !== null) {
      this.#settle(w, {
        ok: false,
        error: new TaskResultUnavailableError(w.task, w.id, unstored, jobId),
      })
    } else if (!isSkipped(value)) {
      this.#settle(w, { ok: true, value })
    } else if (w.jobIds.length === 1) {
      // Its only job completed without running (the job that ran may be gone already).
      this.#settle(w, {
        ok: false,
        error: new TaskResultUnavailableError(w.task, w.id, 'ran-as-another-job', jobId),
      })
    } else return false
    return true
  }

  /** None of the wait's jobs is in Redis, nor its end in the recent events. */
  #missing(w: Waiter): void {
    if (w.done) return
    const now = Date.now()
    if (w.missingSince === 0) {
      // Once more before giving up: a recovery may be adding it again (a rollback) right now.
      w.missingSince = now
      setTimeout(() => this.#check([w]), MISSING_CONFIRM_MS).unref()
      return
    }
    if (now - w.missingSince < MISSING_CONFIRM_MS) return
    this.#settle(w, {
      ok: false,
      error: new TaskResultUnavailableError(w.task, w.id, 'job-missing', w.jobIds[0]),
    })
  }

  #eventsKey(): string {
    return `${this.#deps.bullPrefix}:${this.#deps.queue}:events`
  }

  #jobKey(jobId: string): string {
    return `${this.#deps.bullPrefix}:${this.#deps.queue}:${jobId}`
  }

  // ── events ─────────────────────────────────────────────────────────────────────────────────

  on<K extends TaskEventName>(event: K, listener: TaskEventListener<K>): Disposable {
    if (!EVENT_NAMES.includes(event)) {
      throw invalidOption('event', `one of ${EVENT_NAMES.join(', ')}`, event, 'range')
    }
    if (typeof listener !== 'function') throw invalidOption('listener', 'a function', listener)
    if (this.#closed) throw new ClosedError('task queue')
    let set = this.#listeners.get(event)
    if (set === undefined) this.#listeners.set(event, (set = new Set()))
    const entry = listener as (event: never) => void
    set.add(entry)
    this.#open()
    let disposed = false
    return {
      dispose: () => {
        if (disposed) return
        disposed = true
        const current = this.#listeners.get(event)
        current?.delete(entry)
        if (current?.size === 0) this.#listeners.delete(event)
      },
    }
  }

  /** An event of a run in this process (inline, local): to this process's listeners only. */
  emit<K extends TaskEventName>(event: K, payload: TaskEvents[K]): void {
    const set = this.#listeners.get(event)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        ;(listener as TaskEventListener<K>)(payload)
      } catch (error) {
        this.stats.eventErrors++
        this.#logLimiter.log(
          'listener',
          'warn',
          { err: loggableError(error), event },
          'a task event listener threw',
        )
      }
    }
  }

  /**
   * Open the queue's QueueEvents (once), unless memory-only or closed — and only once Redis
   * is up: a QueueEvents whose connection never got ready keeps reconnecting after close()
   * (a script run without Redis that listened or waited for a result never exited).
   */
  #open(): void {
    if (this.#events !== null || this.#opening || this.#closed || this.#deps.monitor.memoryOnly) {
      return
    }
    if (!this.#deps.monitor.available) {
      this.#wanted = true
      return
    }
    // Read from the stream's last entry now, not from '$' at the first XREAD: an event written
    // between this call and that XREAD — or in a reconnection before any event was read
    // (BullMQ re-reads from its last id, which stays '$' until one is) — is not missed.
    this.#opening = true
    this.#reading = this.#deps.monitor
      .run((redis) => redis.xrevrange(this.#eventsKey(), '+', '-', 'COUNT', 1))
      .then((entries) => this.#start(entries[0]?.[0] ?? '0-0'))
      .catch((error: unknown) => {
        this.#deps.onError(error, 'events open')
        // Opened at the next 'up', or after a pause; the waits are polled meanwhile.
        this.#wanted = true
        setTimeout(() => {
          if (this.#deps.monitor.available) this.#open()
        }, 1000).unref()
      })
      .finally(() => {
        this.#opening = false
      })
  }

  /** The QueueEvents, reading from stream id `from`; resolves once its first XREAD is sent. */
  #start(from: string): Promise<void> {
    if (this.#closed) return Promise.resolve()
    this.#lastEventId = from
    // BullMQ reads the stream on a copy of this connection: the copy is tracked (broken after
    // a silent partition, revived at 'up', ended at close; see ConsumerConnections).
    const connections = new ConsumerConnections(
      this.#deps.monitor,
      this.#deps.connectionName,
      (error) => this.#deps.onError(error, 'events connection'),
    )
    this.#connections = connections
    const template = connections.template
    const events = new QueueEvents(this.#deps.queue, {
      connection: template,
      prefix: this.#deps.bullPrefix,
      autorun: false,
      lastEventId: from,
    })
    // The last id read of the events listened to: a loop started again resumes there.
    const seen = (_args: unknown, id: string): void => {
      this.#lastEventId = id
    }
    for (const event of ['completed', 'failed', 'progress', 'stalled', RETRYING_EVENT]) {
      events.on(event as 'completed', seen as never)
    }
    events.on('error', (error: unknown) => this.#deps.onError(error, 'events'))
    events.on('completed', ({ jobId, returnvalue }: { jobId: string; returnvalue: unknown }) =>
      this.#onFinished(jobId, { ok: true, value: returnvalue }),
    )
    events.on('failed', ({ jobId, failedReason }: { jobId: string; failedReason: string }) =>
      this.#onFinished(jobId, { ok: false, message: failedReason }),
    )
    events.on('progress', ({ jobId, data }: { jobId: string; data: unknown }) =>
      this.#relay('progress', jobId, { progress: data as TaskProgress }),
    )
    events.on('stalled', ({ jobId }: { jobId: string }) => this.#relay('stalled', jobId, {}))
    events.on(
      RETRYING_EVENT as 'error',
      ((args: Record<string, string>) => {
        const jobId = args.jobId ?? ''
        const known = { id: args.id ?? jobId, name: args.name ?? null }
        const error = new TaskFailedError(
          known.name ?? '?',
          known.id,
          {
            name: args.errorName ?? 'Error',
            message: args.error ?? '',
          },
          { jobId },
        )
        this.#relay('retrying', jobId, { attempt: Number(args.attempt) || 0, error }, known)
      }) as never,
    )
    this.#events = events
    const reading = new Promise<void>((resolve) => {
      const started = Date.now()
      const timer = setInterval(() => {
        const blocking = (events as unknown as { blocking?: boolean }).blocking === true
        if (blocking || this.#closed || Date.now() - started > 10_000) {
          clearInterval(timer)
          this.#isReading = blocking
          resolve()
        }
      }, 5)
      timer.unref()
    })
    this.#run(events)
    return reading
  }

  /** BullMQ's loop reading the stream; started again (from the last id read) if it throws. */
  #run(events: QueueEvents): void {
    events.run().catch((error: unknown) => {
      if (this.#closed) return
      this.#deps.onError(error, 'events loop')
      setTimeout(() => {
        if (this.#closed) return
        ;(events.opts as { lastEventId?: string }).lastEventId = this.#lastEventId
        this.#run(events)
      }, 1000).unref()
      // Events may have been missed meanwhile: what Redis says settles the waits.
      this.#checkAll()
    })
  }

  #onFinished(
    jobId: string,
    outcome: { ok: true; value: unknown } | { ok: false; message: string },
  ): void {
    const set = this.#waiters.get(jobId)
    if (set !== undefined) {
      const recheck: Waiter[] = []
      for (const w of set) {
        // An event settles a wait by itself only when the job id cannot name another job: the
        // task id, or BullMQ's counter within one epoch (no reset or rollback seen since), read
        // while this process is up (its recovery has looked for both).
        const trusted = jobId === w.id || (w.epoch === this.#epoch && this.#deps.monitor.available)
        if (!trusted || !outcome.ok) {
          recheck.push(w)
          continue
        }
        if (!this.#settleCompleted(w, jobId, outcome.value)) recheck.push(w)
      }
      if (recheck.length > 0) this.#check(recheck)
    }
    if (outcome.ok) {
      if (!isSkipped(outcome.value)) this.#relay('completed', jobId, { value: outcome.value })
    } else if (this.#listeners.has('failed')) {
      this.#relay('failed', jobId, { message: outcome.message })
    }
  }

  /**
   * A cross-process event to this process's listeners, with the job's task id and name (read
   * from the job when not known here), in the order they were read.
   */
  #relay(
    event: TaskEventName,
    jobId: string,
    extra: Record<string, unknown>,
    known?: { id: string; name: string | null },
  ): void {
    if (!this.#listeners.has(event)) return
    if (this.#backlog >= EVENT_BACKLOG_MAX) {
      this.stats.eventsDropped++
      this.#logLimiter.log(
        'events-dropped',
        'warn',
        { dropped: this.stats.eventsDropped, bound: EVENT_BACKLOG_MAX },
        'task events dropped: listeners behind',
      )
      return
    }
    this.#backlog++
    const described = known ?? this.#known.get(jobId)
    const needsRead = described === undefined || event === 'failed'
    const read = needsRead ? this.#describe(jobId, event === 'failed') : Promise.resolve(null)
    this.#chain = this.#chain
      .then(() => read)
      .then((found) => {
        const who = found ?? described ?? { id: jobId, name: null }
        const base = {
          id: who.id,
          jobId,
          name: who.name,
          queue: this.#deps.queue,
          mode: 'worker' as const,
        }
        if (event === 'failed') {
          const message = typeof extra.message === 'string' ? extra.message : ''
          const error = new TaskFailedError(
            who.name ?? '?',
            who.id,
            {
              name: found?.errorName ?? 'Error',
              message,
            },
            { jobId },
          )
          this.emit('failed', { ...base, error })
        } else {
          this.emit(event, { ...base, ...extra } as never)
        }
      })
      .catch((error: unknown) => this.#deps.onError(error, 'event'))
      .finally(() => {
        this.#backlog--
      })
  }

  /** The task id and name of a job (and its error's name), or null when it is gone. */
  async #describe(
    jobId: string,
    withError: boolean,
  ): Promise<{ id: string; name: string; errorName?: string } | null> {
    // The event stream may be read again before this process is back on Redis.
    if (!(await this.#upWithin(5000))) return null
    try {
      const fields = await this.#deps.monitor.run((redis) =>
        redis.hmget(this.#jobKey(jobId), 'name', 'opts', ...(withError ? ['stacktrace'] : [])),
      )
      const [name, opts, stacktrace] = fields
      if (typeof name !== 'string') return null
      const id = taskIdFrom(opts ?? null) ?? jobId
      const found = { id, name }
      if (!withError) {
        this.remember(jobId, id, name)
        return found
      }
      return { ...found, errorName: errorNameFrom(stacktrace ?? null) }
    } catch (error) {
      if (!(isConnectivityError(error) && !isReplyError(error))) this.#deps.onError(error, 'event')
      return null
    }
  }

  #upWithin(ms: number): Promise<boolean> {
    const monitor = this.#deps.monitor
    if (monitor.available) return Promise.resolve(true)
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

  #kick(): void {
    this.#connections?.revive()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const listener of this.#monitorListeners) listener.dispose()
    if (this.#poller !== null) clearInterval(this.#poller)
    this.#poller = null
    const all = new Set<Waiter>()
    for (const set of this.#waiters.values()) for (const w of set) all.add(w)
    for (const w of all) this.#settle(w, { ok: false, error: new ClosedError('task queue') })
    this.#listeners.clear()
    const events = this.#events
    this.#events = null
    if (events !== null) {
      const closing = events.close().catch(() => undefined)
      // Ending them interrupts the blocking XREAD, and stops their reconnecting. BullMQ's close
      // then waits for an 'end' that a connection already ended may never emit: bounded, and
      // not waited for at all while Redis is down.
      this.#connections?.disconnectAll()
      if (this.#deps.monitor.available) await within(closing, 1000)
    }
    this.#connections?.disconnectAll()
  }
}

/** Validate `result()` options and run `start` with a timeout and an abort signal. */
export function bounded(
  task: string,
  id: string,
  options: TaskResultOptions | undefined,
  start: (resolve: (value: unknown) => void, reject: (error: Error) => void) => () => void,
): Promise<unknown> {
  let timeoutMs: number | undefined
  let signal: AbortSignal | undefined
  try {
    ;({ timeoutMs, signal } = checkResultOptions(options))
  } catch (error) {
    return Promise.reject(error as Error)
  }
  if (signal?.aborted === true) return Promise.reject(abortReason(signal))
  return new Promise<unknown>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined
    let stop: () => void = () => undefined
    const onAbort = (): void => finish(() => reject(abortReason(signal)))
    let finished = false
    const finish = (settle: () => void): void => {
      if (finished) return
      finished = true
      if (timer !== undefined) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      stop()
      settle()
    }
    if (timeoutMs !== undefined) {
      const ms = timeoutMs
      timer = setTimeout(() => finish(() => reject(new TaskResultTimeoutError(task, id, ms))), ms)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    stop = start(
      (value) => finish(() => resolve(value)),
      (error) => finish(() => reject(error)),
    )
    if (finished) stop()
  })
}

function checkResultOptions(options: TaskResultOptions | undefined): TaskResultOptions {
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null) {
    throw invalidOption('result options', 'an object', options)
  }
  const { timeoutMs, signal } = options
  if (timeoutMs !== undefined) {
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs)) {
      throw invalidOption('timeoutMs', 'a number of ms', timeoutMs)
    }
    if (timeoutMs < 0 || timeoutMs > 2 ** 31 - 1) {
      throw invalidOption('timeoutMs', 'between 0 and 2^31 - 1', timeoutMs, 'range')
    }
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidOption('signal', 'an AbortSignal', signal)
  }
  return { timeoutMs, signal }
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason
  if (reason instanceof Error) return reason
  return new DOMException('The result wait was aborted', 'AbortError')
}

/** Check and encode a progress value (JSON text), or throw InvalidProgressError. */
export function encodeProgress(task: string, value: unknown): string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) {
      throw new InvalidProgressError(task, `a number must be finite; received ${String(value)}`)
    }
    return String(value)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidProgressError(
      task,
      `expected a finite number or a JSON object; received ${describeValue(value)}`,
    )
  }
  let text: string
  try {
    text = JSON.stringify(value)
  } catch (error) {
    throw new InvalidProgressError(task, `not JSON-serializable (${String(error)})`)
  }
  if (text.length * 3 > MAX_PROGRESS_BYTES && Buffer.byteLength(text) > MAX_PROGRESS_BYTES) {
    throw new InvalidProgressError(
      task,
      `${Buffer.byteLength(text)} bytes as JSON; the limit is ${MAX_PROGRESS_BYTES}`,
    )
  }
  return text
}

function isSkipped(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { failsoft?: unknown }).failsoft === SKIPPED_RETURN.failsoft
  )
}

function taskIdFrom(opts: string | null): string | undefined {
  if (opts === null) return undefined
  try {
    const parsed = safeJsonParse(opts) as Record<string, unknown> | null
    const id = parsed?.[TASK_ID_OPTION]
    return typeof id === 'string' && id.length > 0 ? id : undefined
  } catch {
    return undefined
  }
}

/**
 * The error's name from BullMQ's stacktrace field (a JSON array of `err.stack` strings, the
 * last try's last): the text before the first ':' of its first line, when it looks like a
 * name. Anything else — not JSON, not strings, no stack — is 'Error'.
 */
export function errorNameFrom(stacktrace: string | null): string {
  if (stacktrace === null || stacktrace.length === 0) return 'Error'
  try {
    const parsed: unknown = safeJsonParse(stacktrace)
    if (!Array.isArray(parsed) || parsed.length === 0) return 'Error'
    const last: unknown = parsed[parsed.length - 1]
    if (typeof last !== 'string') return 'Error'
    const match = /^([A-Za-z_$][\w$]{0,99})(?: \[[^\]\n]{0,100}\])?:/.exec(last)
    return match?.[1] ?? 'Error'
  } catch {
    return 'Error'
  }
}

/** What one job's hash (HMGET opts returnvalue finishedOn failedReason stacktrace) says. */
function jobState(id: string, jobId: string, fields: Array<string | null> | null): JobState {
  if (fields === null) return { kind: 'missing' }
  const [opts, returnvalue, finishedOn, failedReason, stacktrace] = fields
  if (opts === null || opts === undefined) return { kind: 'missing' }
  // BullMQ's counter restarts at 1 in an empty Redis: this number may name another task's job.
  if (jobId !== id && taskIdFrom(opts) !== id) return { kind: 'missing' }
  if (finishedOn === null || finishedOn === undefined || finishedOn === '') {
    return { kind: 'pending' }
  }
  if (returnvalue !== null && returnvalue !== undefined) {
    let value: unknown = null
    try {
      value = returnvalue === '' ? null : safeJsonParse(returnvalue)
    } catch {
      value = null
    }
    return isSkipped(value) ? { kind: 'skipped' } : { kind: 'completed', value }
  }
  return {
    kind: 'failed',
    name: errorNameFrom(stacktrace ?? null),
    message: failedReason ?? '',
  }
}
