import type { Telemetry } from 'bullmq'
import { invalidOption } from '../errors.js'

/** What a task does while Redis is unavailable (see docs/tasks.md). */
export type TaskFallback = 'inline' | 'spool' | 'drop'

/** Options of `failsoft.tasks(options)`. Every field is optional. */
export interface TaskQueueOptions {
  /**
   * Queue name: the BullMQ queue `<prefix>:tasks:<queue>` and the component `tasks:<queue>`.
   * Letters, digits, `-`, `_`, `.`; 1 to 64 characters. Default 'default'.
   */
  queue: string
  /**
   * Longest a dispatch waits for Redis to accept a job while Redis is believed up, in ms.
   * Past it the enqueue is ambiguous (it may still land): the job goes to the spool under the
   * same id, never inline. Default 500.
   */
  enqueueTimeoutMs: number
  /** Largest task arguments accepted, as UTF-8 JSON bytes. Default 262144 (256 KiB). */
  maxArgsBytes: number
  /**
   * Largest return value a worker hands to BullMQ (stored in the job's hash, and in the
   * 'completed' event of its stream), as UTF-8 JSON bytes. A larger value, or one that is not
   * JSON, is replaced by a marker: the task still completes (it is not run again), and
   * `result()` rejects with FAILSOFT_TASK_RESULT_UNAVAILABLE (`too-large`, `not-json`).
   * Default 1048576 (1 MiB).
   */
  maxResultBytes: number
  /**
   * How long the worker's "already done" marker of a completed job lives in Redis, in ms. A
   * job re-added with the same id within that time (a spool replay after an ambiguous
   * enqueue, a repeated idempotency key) is skipped instead of run again. One small key per
   * completed job; `0` disables the markers (at-least-once only). Default 3600000 (1 h).
   */
  doneTtlMs: number
  /**
   * Lease of a running task, in ms: renewed every third of it while the handler runs (past its
   * timeout too), so that no other run of the same task id — a stalled copy BullMQ hands out
   * again after an outage longer than its lock, a retry, a late add and its replay — starts
   * beside it. A lease silent for this long is taken over only after as long again in which
   * Redis answers, so a worker cut off together with everyone else keeps its run; one cut off
   * alone for 1.5 leases is asked to stop (ctx.signal, LeaseLostError). Default 10000.
   */
  leaseMs: number
  /** The in-process runner used by `inline` fallbacks. */
  inline: {
    /** Inline runs at the same time, for this queue. Default 4. */
    concurrency: number
    /** Inline runs waiting for a free slot; one more gets FAILSOFT_INLINE_BUSY. Default 100. */
    maxWaiting: number
    /**
     * What a dispatch does when `concurrency` runs are busy and `maxWaiting` are waiting:
     * 'reject' returns `{ mode: 'rejected', error: InlineBusyError }` (nothing runs);
     * 'spool' hands the job to the spool (it runs on a worker once Redis is back). Default
     * 'reject'.
     */
    whenBusy: 'reject' | 'spool'
  }
  /** The durable journal of jobs waiting for Redis (fallback 'spool', ambiguous enqueues). */
  spool: {
    /**
     * Journal file, or `false` for an in-memory journal (lost if the process dies). Each
     * process claims its own file: when this one is locked by a live process the next free
     * `<name>.1.jsonl`, `<name>.2.jsonl`… is used, and files left by dead processes are
     * replayed by whoever recovers next. Relative paths resolve against the working
     * directory. Default `./.failsoft/spool-<prefix>-<queue>.jsonl`.
     */
    path: string | false
    /** Jobs waiting in the journal; one more gets FAILSOFT_SPOOL_FULL. Default 100000. */
    maxRecords: number
    /** Journal file size; a record that would pass it gets FAILSOFT_SPOOL_FULL. Default 67108864 (64 MiB). */
    maxBytes: number
  }
  /**
   * Completed jobs BullMQ keeps (its `removeOnComplete`): `true` removes at once, a number
   * keeps that many, `{ age, count }` bounds both (age in seconds). Default `{ count: 1000 }`.
   */
  removeOnComplete: KeepJobs
  /** Failed jobs BullMQ keeps (its `removeOnFail`), same forms. Default `{ count: 10000 }`. */
  removeOnFail: KeepJobs
  /**
   * BullMQ's own telemetry (its `telemetry` option, e.g. bullmq-otel's `new BullMQOtel(name)`),
   * given to the queue and the workers: BullMQ's producer and consumer spans, and the trace
   * context carried from the dispatch to the worker. With it, a dispatch goes through
   * `Queue.add` (BullMQ's span); without it, failsoft adds the job directly, which is 5-7 %
   * faster under load. Default null. See docs/observability.md.
   */
  telemetry: Telemetry | null
  /**
   * Acknowledge a queued dispatch only after Redis' `WAIT`: at least `count` replicas have the
   * job, or `timeoutMs` passed. The result says how many (`replicas`); fewer than `count` is
   * counted (`counts.underReplicated`) and the dispatch is still `queued` — a failover to a
   * replica without it is then reconciled as a rollback (the job is added again). One `WAIT`
   * covers every add of the same tick. Default null (no `WAIT`).
   */
  waitForReplicas: { count: number; timeoutMs: number } | null
  /**
   * At most `max` runs started per `durationMs` for this queue. On Redis it is BullMQ's worker
   * rate limiter, shared by every worker of the queue (kept in Redis); while Redis is
   * unavailable each process bounds its own inline and local runs to the same rate, and a
   * dispatch beyond it is treated as a busy inline runner (`inline.whenBusy`: `rejected` with
   * FAILSOFT_INLINE_RATE_LIMITED, or spooled). Default null (no limit).
   */
  rateLimit: { max: number; durationMs: number } | null
  /**
   * Jobs of this queue running at the same time across every worker (BullMQ's global
   * concurrency, kept in the queue's meta in Redis and set again after Redis lost it). While
   * Redis is unavailable each process's inline runner uses min(`inline.concurrency`, this).
   * Default null (each worker's own `concurrency` only).
   */
  globalConcurrency: number | null
}

/** BullMQ's job retention: remove at once (`true`), keep all (`false`), keep N, or bound age (s) / count. */
export type KeepJobs = boolean | number | { count: number } | { age: number; count?: number }

export const defaultTaskQueueOptions: Readonly<Omit<TaskQueueOptions, 'spool'>> & {
  readonly spool: Readonly<Omit<TaskQueueOptions['spool'], 'path'>>
} = Object.freeze({
  queue: 'default',
  enqueueTimeoutMs: 500,
  maxArgsBytes: 256 * 1024,
  maxResultBytes: 1024 * 1024,
  doneTtlMs: 3_600_000,
  leaseMs: 10_000,
  inline: Object.freeze({ concurrency: 4, maxWaiting: 100, whenBusy: 'reject' as const }),
  spool: Object.freeze({ maxRecords: 100_000, maxBytes: 64 * 1024 * 1024 }),
  removeOnComplete: Object.freeze({ count: 1000 }),
  removeOnFail: Object.freeze({ count: 10_000 }),
  telemetry: null,
  waitForReplicas: null,
  rateLimit: null,
  globalConcurrency: null,
})

/** What `failsoft.tasks()` accepts: every field optional, nested objects partial too. */
export type TaskQueueInput = Partial<Omit<TaskQueueOptions, 'inline' | 'spool'>> & {
  inline?: Partial<TaskQueueOptions['inline']>
  spool?: Partial<TaskQueueOptions['spool']>
}

/** Options of `tasks.define(name, handler, options)`. Every field is optional. */
export interface TaskOptions {
  /** Tries in all (1 = no retry), on a worker and inline alike. Default 1. */
  attempts: number
  /**
   * Wait between tries: 'fixed' waits `delayMs` each time, 'exponential' waits
   * `delayMs × 2^(try - 1)`, 'custom' waits what `strategy(try, error)` returns (ms; a negative
   * number: no more tries) — on a worker (BullMQ's backoff strategy) and inline alike. Default
   * `{ type: 'exponential', delayMs: 1000 }`.
   */
  backoff: TaskBackoff
  /**
   * One try longer than this fails with TaskTimeoutError (FAILSOFT_TASK_TIMEOUT) and the
   * handler's `ctx.signal` is aborted, in ms. Default 30000.
   */
  timeoutMs: number
  /** What a dispatch does while Redis is unavailable. Default 'inline'. */
  fallback: TaskFallback
  /**
   * What fallback 'inline' does with a dispatch that has an idempotency key while Redis is
   * unavailable. 'spool' (the default): failsoft cannot read the key's "done" marker in Redis,
   * so it cannot know whether the key already ran on a worker or in another process — it spools
   * the job under the key's id, and it runs once Redis is back, or not at all if it already ran.
   * 'inline': it runs here now, deduplicated only against the runs this process knows of (a key
   * that already ran elsewhere runs again). Memory-only instances always run inline.
   */
  keyedFallback: 'spool' | 'inline'
  /**
   * Periodic runs (`tasks.schedule`) while Redis is unavailable: 'skip' (every replica would
   * otherwise run them, N times) or 'local' (this process runs them on its own timer — only
   * for tasks that are safe to run once per replica). Default 'skip'.
   */
  whileDown: 'skip' | 'local'
}

export const defaultTaskOptions: Readonly<TaskOptions> = Object.freeze({
  attempts: 1,
  backoff: Object.freeze({ type: 'exponential' as const, delayMs: 1000 }),
  timeoutMs: 30_000,
  fallback: 'inline' as const,
  keyedFallback: 'spool' as const,
  whileDown: 'skip' as const,
})

/**
 * A custom backoff: the wait (ms) before try `attempt + 1`, after try `attempt` (from 1) failed
 * with `error`; a negative number ends the retries (the task fails now). Called on the worker
 * that ran the try, or inline; it must not throw (a throw, or a value that is not a number,
 * ends the retries and is logged).
 */
export type BackoffStrategy = (attempt: number, error: Error) => number

export type TaskBackoff =
  | { type: 'fixed' | 'exponential'; delayMs: number; strategy?: undefined }
  | { type: 'custom'; strategy: BackoffStrategy; delayMs?: undefined }

export type TaskOptionsInput = Partial<Omit<TaskOptions, 'backoff'>> & {
  backoff?:
    | { type?: 'fixed' | 'exponential'; delayMs?: number }
    | { type: 'custom'; strategy: BackoffStrategy }
}

/** Queue names and task names: safe in a Redis key and a BullMQ queue name (no `:`). */
export const NAME = /^[A-Za-z0-9_.-]{1,64}$/
const NAME_RULE = '1 to 64 letters, digits, "-", "_" or "."'

const QUEUE_KEYS = new Set([
  'queue',
  'enqueueTimeoutMs',
  'maxArgsBytes',
  'maxResultBytes',
  'doneTtlMs',
  'leaseMs',
  'inline',
  'spool',
  'removeOnComplete',
  'removeOnFail',
  'telemetry',
  'waitForReplicas',
  'rateLimit',
  'globalConcurrency',
])

export function resolveTaskQueueOptions(
  input: TaskQueueInput | undefined,
  prefix: string,
): TaskQueueOptions {
  const raw = plainObject(input ?? {}, 'tasks options')
  for (const key of Object.keys(raw)) {
    if (!QUEUE_KEYS.has(key)) {
      throw invalidOption(key, `one of ${[...QUEUE_KEYS].join(', ')} (unknown option)`, key)
    }
  }
  const d = defaultTaskQueueOptions
  const queue = raw.queue ?? d.queue
  if (typeof queue !== 'string') throw invalidOption('queue', 'a string', queue)
  if (!NAME.test(queue)) throw invalidOption('queue', NAME_RULE, queue, 'range')

  const inline = plainObject(raw.inline ?? {}, 'inline')
  const spool = plainObject(raw.spool ?? {}, 'spool')
  checkKeys(inline, 'inline', ['concurrency', 'maxWaiting', 'whenBusy'])
  checkKeys(spool, 'spool', ['path', 'maxRecords', 'maxBytes'])

  const whenBusy = inline.whenBusy ?? d.inline.whenBusy
  if (whenBusy !== 'reject' && whenBusy !== 'spool') {
    throw invalidOption('inline.whenBusy', "'reject' or 'spool'", whenBusy)
  }
  const path = spool.path ?? `./.failsoft/spool-${prefix}-${queue}.jsonl`
  if (path !== false && (typeof path !== 'string' || path.length === 0)) {
    throw invalidOption('spool.path', 'a non-empty file path or false', path)
  }
  return {
    queue,
    enqueueTimeoutMs: num(raw.enqueueTimeoutMs, d.enqueueTimeoutMs, 'enqueueTimeoutMs', 1, 60_000),
    maxArgsBytes: int(raw.maxArgsBytes, d.maxArgsBytes, 'maxArgsBytes', 2, 512 * 1024 * 1024),
    maxResultBytes: int(
      raw.maxResultBytes,
      d.maxResultBytes,
      'maxResultBytes',
      4,
      512 * 1024 * 1024,
    ),
    doneTtlMs: int(raw.doneTtlMs, d.doneTtlMs, 'doneTtlMs', 0, 366 * 86_400_000),
    leaseMs: int(raw.leaseMs, d.leaseMs, 'leaseMs', 500, 86_400_000),
    inline: {
      concurrency: int(inline.concurrency, d.inline.concurrency, 'inline.concurrency', 1, 10_000),
      maxWaiting: int(inline.maxWaiting, d.inline.maxWaiting, 'inline.maxWaiting', 0, 1_000_000),
      whenBusy,
    },
    spool: {
      path,
      maxRecords: int(spool.maxRecords, d.spool.maxRecords, 'spool.maxRecords', 1, 100_000_000),
      maxBytes: int(spool.maxBytes, d.spool.maxBytes, 'spool.maxBytes', 1024, 2 ** 40),
    },
    removeOnComplete: keepJobs(raw.removeOnComplete, d.removeOnComplete, 'removeOnComplete'),
    removeOnFail: keepJobs(raw.removeOnFail, d.removeOnFail, 'removeOnFail'),
    telemetry: bullTelemetry(raw.telemetry),
    waitForReplicas: waitForReplicas(raw.waitForReplicas),
    rateLimit: rateLimit(raw.rateLimit),
    globalConcurrency:
      raw.globalConcurrency === undefined || raw.globalConcurrency === null
        ? null
        : int(raw.globalConcurrency, 1, 'globalConcurrency', 1, 100_000),
  }
}

function rateLimit(value: unknown): TaskQueueOptions['rateLimit'] {
  if (value === undefined || value === null) return null
  const o = plainObject(value, 'rateLimit')
  checkKeys(o, 'rateLimit', ['max', 'durationMs'])
  if (o.max === undefined) throw invalidOption('rateLimit.max', 'an integer from 1', o.max)
  if (o.durationMs === undefined) {
    throw invalidOption('rateLimit.durationMs', 'an integer number of ms from 1', o.durationMs)
  }
  return {
    max: int(o.max, 1, 'rateLimit.max', 1, 1_000_000),
    durationMs: int(o.durationMs, 1000, 'rateLimit.durationMs', 1, 86_400_000),
  }
}

function waitForReplicas(value: unknown): TaskQueueOptions['waitForReplicas'] {
  if (value === undefined || value === null) return null
  const o = plainObject(value, 'waitForReplicas')
  checkKeys(o, 'waitForReplicas', ['count', 'timeoutMs'])
  return {
    count: int(o.count, 1, 'waitForReplicas.count', 1, 64),
    timeoutMs: int(o.timeoutMs, 100, 'waitForReplicas.timeoutMs', 1, 10_000),
  }
}

function bullTelemetry(value: unknown): Telemetry | null {
  if (value === undefined || value === null) return null
  const candidate = value as Partial<Telemetry>
  if (
    typeof value !== 'object' ||
    typeof candidate.tracer?.startSpan !== 'function' ||
    typeof candidate.contextManager?.with !== 'function'
  ) {
    throw invalidOption('telemetry', "BullMQ's Telemetry (a tracer and a contextManager)", value)
  }
  return value as Telemetry
}

const TASK_KEYS = ['attempts', 'backoff', 'timeoutMs', 'fallback', 'keyedFallback', 'whileDown']

export function resolveTaskOptions(input: TaskOptionsInput | undefined): TaskOptions {
  const raw = plainObject(input ?? {}, 'task options')
  checkKeys(raw, '', TASK_KEYS)
  const d = defaultTaskOptions
  const backoff = plainObject(raw.backoff ?? {}, 'backoff')
  const type = backoff.type ?? d.backoff.type
  if (type !== 'fixed' && type !== 'exponential' && type !== 'custom') {
    throw invalidOption('backoff.type', "'fixed', 'exponential' or 'custom'", type)
  }
  let resolvedBackoff: TaskBackoff
  if (type === 'custom') {
    checkKeys(backoff, 'backoff', ['type', 'strategy'])
    if (typeof backoff.strategy !== 'function') {
      throw invalidOption('backoff.strategy', 'a function (attempt, error) => ms', backoff.strategy)
    }
    resolvedBackoff = { type, strategy: backoff.strategy as BackoffStrategy }
  } else {
    checkKeys(backoff, 'backoff', ['type', 'delayMs'])
    const delayMs = int(
      backoff.delayMs,
      d.backoff.delayMs ?? 1000,
      'backoff.delayMs',
      0,
      86_400_000,
    )
    resolvedBackoff = { type, delayMs }
  }
  const fallback = raw.fallback ?? d.fallback
  if (fallback !== 'inline' && fallback !== 'spool' && fallback !== 'drop') {
    throw invalidOption('fallback', "'inline', 'spool' or 'drop'", fallback)
  }
  const keyedFallback = raw.keyedFallback ?? d.keyedFallback
  if (keyedFallback !== 'spool' && keyedFallback !== 'inline') {
    throw invalidOption('keyedFallback', "'spool' or 'inline'", keyedFallback)
  }
  const whileDown = raw.whileDown ?? d.whileDown
  if (whileDown !== 'skip' && whileDown !== 'local') {
    throw invalidOption('whileDown', "'skip' or 'local'", whileDown)
  }
  return {
    attempts: int(raw.attempts, d.attempts, 'attempts', 1, 1000),
    backoff: resolvedBackoff,
    timeoutMs: int(raw.timeoutMs, d.timeoutMs, 'timeoutMs', 1, 2_147_483_647),
    fallback,
    keyedFallback,
    whileDown,
  }
}

/**
 * Wait before try `attempt + 1` after try `attempt` failed with `error` (attempt counts from
 * 1); -1: no more tries (a custom strategy said so). Throws what a custom strategy threw, or a
 * TypeError naming the value it returned if that is not a number.
 */
export function backoffDelay(backoff: TaskBackoff, attempt: number, error: Error): number {
  if (backoff.type !== 'custom') {
    if (backoff.type === 'fixed') return backoff.delayMs
    return Math.min(2_147_483_647, backoff.delayMs * 2 ** Math.max(0, attempt - 1))
  }
  const ms: unknown = backoff.strategy(attempt, error)
  if (typeof ms !== 'number' || Number.isNaN(ms)) {
    throw new TypeError(
      `backoff strategy returned ${typeof ms === 'number' ? 'NaN' : typeof ms}, not a number of ms`,
    )
  }
  return ms < 0 ? -1 : Math.min(2_147_483_647, Math.trunc(ms))
}

// ── helpers ──────────────────────────────────────────────────────────────────────────────────

type Loose = Record<string, unknown>

function plainObject(value: unknown, option: string): Loose {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidOption(option, 'an object', value)
  }
  return value as Loose
}

function checkKeys(value: Loose, path: string, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const name = path ? `${path}.${key}` : key
      throw invalidOption(name, `one of ${known.join(', ')} (unknown option)`, key)
    }
  }
}

function num(value: unknown, fallback: number, option: string, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalidOption(option, 'a finite number', value)
  }
  if (value < min || value > max) {
    throw invalidOption(option, `between ${min} and ${max}`, value, 'range')
  }
  return value
}

function int(value: unknown, fallback: number, option: string, min: number, max: number): number {
  const n = num(value, fallback, option, min, max)
  if (!Number.isInteger(n)) throw invalidOption(option, 'an integer', value, 'range')
  return n
}

function keepJobs(value: unknown, fallback: KeepJobs, option: string): KeepJobs {
  if (value === undefined) return fallback
  if (typeof value === 'boolean') return value
  if (typeof value === 'number') return int(value, 0, option, 0, Number.MAX_SAFE_INTEGER)
  const o = plainObject(value, option)
  checkKeys(o, option, ['age', 'count'])
  const max = Number.MAX_SAFE_INTEGER
  const count = o.count === undefined ? undefined : int(o.count, 0, `${option}.count`, 0, max)
  if (o.age === undefined) {
    if (count === undefined) throw invalidOption(option, 'an object with age and/or count', value)
    return { count }
  }
  const age = int(o.age, 0, `${option}.age`, 0, max)
  return count === undefined ? { age } : { age, count }
}
