import { createHash, randomBytes } from 'node:crypto'
import { InvalidTaskArgsError, describeValue } from '../errors.js'
import type { JobsOptions } from 'bullmq'
import type { TaskOptions } from './options.js'

/** What a handler receives besides its arguments. */
export interface TaskContext {
  /** The job id: the same on a worker, inline, in the spool and on replay. */
  readonly id: string
  readonly name: string
  readonly queue: string
  /** 1 for the first try. */
  readonly attempt: number
  /**
   * Where this run happens: 'worker' (a BullMQ worker), 'inline' (the dispatching process,
   * Redis unavailable), 'local' (a periodic run while Redis is unavailable, `whileDown: 'local'`).
   */
  readonly mode: 'worker' | 'inline' | 'local'
  /** Aborted when the try passes the task's `timeoutMs` (or the worker closes). */
  readonly signal: AbortSignal
  /**
   * Report progress: a finite number or a JSON object of at most 4 KiB (MAX_PROGRESS_BYTES).
   * On a worker it is BullMQ's `job.updateProgress` (a 'progress' event for every process
   * listening); inline and local runs emit it in this process. Never waits and never fails
   * because of Redis (while a value is on its way only the latest one is kept); throws
   * InvalidProgressError (`FAILSOFT_INVALID_PROGRESS`) for a value that is not allowed.
   */
  readonly progress: (value: TaskProgress) => void
  /**
   * For the parent of a flow (`tasks.flow()`), on its worker: the values its children
   * returned, by their task ids (read from Redis; rejects if Redis fails). Empty for any other
   * run.
   */
  readonly children: () => Promise<Readonly<Record<string, unknown>>>
}

/** What `ctx.progress()` takes: a finite number, or a JSON object (≤ 4 KiB as JSON). */
export type TaskProgress = number | { readonly [key: string]: unknown }

/** Largest progress value, as UTF-8 JSON (BullMQ keeps it in the job and in its event stream). */
export const MAX_PROGRESS_BYTES = 4096

/** Options of `result()` (and of `task.run()`). */
export interface TaskResultOptions {
  /**
   * Give up waiting after this many ms: rejects with TaskResultTimeoutError
   * (`FAILSOFT_TASK_RESULT_TIMEOUT`). The task itself is not cancelled. Default: no limit.
   */
  timeoutMs?: number | undefined
  /** Give up waiting when this signal aborts (rejects with its reason). */
  signal?: AbortSignal | undefined
}

/** The method every dispatch result carries. */
export interface TaskResultHandle<R> {
  /**
   * The task's return value, once it ran: from the BullMQ job (queued, spooled and replayed),
   * or the inline run. Rejects with TaskFailedError (`FAILSOFT_TASK_FAILED`) when the task
   * failed, TaskDroppedError (`FAILSOFT_TASK_DROPPED`) for a dispatch that never runs,
   * TaskResultUnavailableError (`FAILSOFT_TASK_RESULT_UNAVAILABLE`) when the outcome cannot be
   * known, TaskResultTimeoutError past `timeoutMs`. Waits through Redis outages.
   */
  result(options?: TaskResultOptions): Promise<R>
}

/** What `dispatch()` resolves with: the DispatchResult, and its `result()` (not enumerable). */
export type DispatchHandle<R = unknown> = DispatchResult<R> & TaskResultHandle<R>

export type TaskHandler<A, R> = (args: A, context: TaskContext) => R | Promise<R>

/** Options of one dispatch. */
export interface DispatchOptions {
  /**
   * Same key, same job: the job id is derived from it (hashed, namespaced by queue and task),
   * so a repeated dispatch does not create a second job while the first exists, and a worker
   * skips it while the first one's "done" marker lives (`doneTtlMs`). 1 to 1024 characters.
   */
  idempotencyKey?: string | undefined
  /**
   * Run no earlier than this, in ms. While Redis is unavailable a delayed job is never run
   * inline: it goes to the spool, which keeps its due time. Default 0.
   */
  delayMs?: number | undefined
  /**
   * BullMQ's job priority: 1 is the highest, up to 2 097 152; 0 or absent, none (jobs without
   * a priority are taken before prioritized ones, as in BullMQ). Applies when the job waits in
   * Redis — queued, or spooled and replayed (the spool keeps it); an inline run starts at once,
   * so there is nothing to order.
   */
  priority?: number | undefined
  /** BullMQ's `lifo`: the job is taken before the others waiting (same modes as `priority`). */
  lifo?: boolean | undefined
  /**
   * The rest of BullMQ's `JobsOptions`, passed through as is — **Redis mode only**: applied
   * when the job is added to Redis (queued, or spooled and replayed: the spool keeps them, as
   * JSON), ignored by an inline run. The options failsoft itself sets are refused here (use
   * the typed ones): `jobId`, `delay`, `priority`, `lifo`, `attempts`, `backoff`, `repeat`,
   * `parent`, `deduplication`, `debounce`, `timestamp`, `prevMillis`, `repeatJobKey`. At most
   * 4 KiB of JSON.
   */
  bullmq?: PassThroughJobOptions | undefined
}

/** Keys of BullMQ's `JobsOptions` failsoft sets itself (see DispatchOptions.bullmq). */
export const RESERVED_JOB_OPTIONS = [
  'jobId',
  'delay',
  'priority',
  'lifo',
  'attempts',
  'backoff',
  'repeat',
  'parent',
  'deduplication',
  'debounce',
  'timestamp',
  'prevMillis',
  'repeatJobKey',
] as const

/** BullMQ's job options but the ones failsoft sets (DispatchOptions.bullmq). */
export type PassThroughJobOptions = Omit<JobsOptions, (typeof RESERVED_JOB_OPTIONS)[number]>

/** Largest `bullmq` pass-through options, as JSON. */
export const MAX_PASS_THROUGH_BYTES = 4096

/** Largest priority BullMQ accepts (2^21). */
export const MAX_PRIORITY = 2_097_152

/**
 * What became of a dispatch. It never rejects because of Redis; a handler's failure inline
 * is `{ mode: 'inline', ok: false, error }`, never thrown.
 */
export type DispatchResult<R = unknown> =
  /**
   * Redis accepted the job; a worker runs it. `id` is the task id (the handler's `ctx.id`,
   * never reused); `jobId` is BullMQ's (the task id for an idempotency key, otherwise
   * BullMQ's counter, which restarts at 1 in an empty Redis).
   */
  | {
      readonly mode: 'queued'
      readonly id: string
      readonly jobId: string
      /** With `waitForReplicas`: the replicas that had the job when WAIT returned. */
      readonly replicas?: number
    }
  /** Redis unavailable: ran in this process, to completion (all its tries). */
  | { readonly mode: 'inline'; readonly id: string; readonly ok: true; readonly value: R }
  | { readonly mode: 'inline'; readonly id: string; readonly ok: false; readonly error: Error }
  /** Written to the durable spool; handed to the queue, in order, once Redis is back. */
  | { readonly mode: 'spooled'; readonly id: string }
  /** Memory-only instance, delayed job: runs in this process when due (lost if it exits). */
  | { readonly mode: 'deferred'; readonly id: string }
  /**
   * Fallback 'drop' while Redis is unavailable: never runs (counted, logged). An add that was
   * sent and not answered is not dropped (it may have landed): it is spooled like any other,
   * so that it runs exactly once.
   */
  | { readonly mode: 'dropped'; readonly id: string }
  /**
   * This idempotency key already ran (or is running) inline in this process — remembered for
   * `doneTtlMs` — so it is neither run nor queued again.
   */
  | { readonly mode: 'duplicate'; readonly id: string }
  /** Not accepted: inline runner busy (FAILSOFT_INLINE_BUSY), spool full (FAILSOFT_SPOOL_FULL)… It never runs. */
  | { readonly mode: 'rejected'; readonly id: string; readonly error: Error }
  /**
   * The add was sent to Redis and not answered (it may have landed), and the spool could not
   * keep the copy that would make sure it runs (`error`: FAILSOFT_SPOOL_FULL…). It runs at
   * most once: once if that add landed, else never.
   */
  | { readonly mode: 'unconfirmed'; readonly id: string; readonly error: Error }

/** A defined task with everything the queue needs to run it. */
export interface TaskDefinition {
  readonly name: string
  readonly handler: TaskHandler<never, unknown>
  readonly options: Readonly<TaskOptions>
}

/** One job as BullMQ receives it. */
export interface OutgoingJob {
  /** failsoft's task id: never reused, known before the add is sent. */
  readonly id: string
  /**
   * True: the task id is BullMQ's job id too, so BullMQ ignores a second add of it while the
   * job exists (idempotency keys, spool replays — a replay may re-send a job that landed).
   * False: BullMQ numbers the job (its fast path) and the task id travels in the job's
   * options; the worker's claim on the task id stops a second copy.
   */
  readonly idIsJobId: boolean
  readonly name: string
  readonly args: unknown
  /** Delay in ms (0 = now). */
  readonly delayMs: number
  /** BullMQ priority (see DispatchOptions); absent or 0: none. */
  readonly priority?: number | undefined
  readonly lifo?: boolean | undefined
  /** DispatchOptions.bullmq, validated (JSON-safe, no reserved key). */
  readonly bullmq?: Readonly<Record<string, unknown>> | undefined
  readonly definition: TaskDefinition | undefined
}

/** A job on its way: validated, serialized, with its final id (and ready for the producer). */
export interface PreparedJob extends OutgoingJob {
  readonly definition: TaskDefinition
  /** The arguments as JSON text (what the spool stores, size-checked). */
  readonly payload: string
  /** The arguments as given (handed to BullMQ, which serializes them itself). */
  readonly args: unknown
  readonly delayMs: number
  /** True when the id comes from an idempotency key (it may be dispatched again). */
  readonly keyed: boolean
}

export type Dispatcher = (
  definition: TaskDefinition,
  args: unknown,
  options: DispatchOptions | undefined,
) => Promise<DispatchHandle<unknown>>

/** Returned by `tasks.define()`: dispatch it, anywhere in the app. */
export class Task<A = unknown, R = unknown> {
  readonly name: string
  readonly queue: string
  readonly options: Readonly<TaskOptions>
  readonly #definition: TaskDefinition
  readonly #dispatcher: Dispatcher

  /** @internal Created by `tasks.define()`. */
  constructor(queue: string, definition: TaskDefinition, dispatcher: Dispatcher) {
    this.name = definition.name
    this.queue = queue
    this.options = definition.options
    this.#definition = definition
    this.#dispatcher = dispatcher
  }

  /**
   * Queue the task when Redis is up; otherwise apply its fallback. Rejects only for bad
   * input (InvalidTaskArgsError) or a closed instance, never because of Redis.
   */
  dispatch(args: A, options?: DispatchOptions): Promise<DispatchHandle<R>> {
    return this.#dispatcher(this.#definition, args, options) as Promise<DispatchHandle<R>>
  }

  /**
   * Dispatch, then wait for the task's value: `(await task.dispatch(args, options)).result(options)`.
   * Rejects like `result()` (and like `dispatch()` for bad input or a closed instance).
   */
  async run(args: A, options?: DispatchOptions & TaskResultOptions): Promise<R> {
    const { timeoutMs, signal, ...dispatchOptions } = options ?? {}
    const handle = await this.dispatch(args, options === undefined ? undefined : dispatchOptions)
    return handle.result({ timeoutMs, signal })
  }
}

const MAX_KEY_LENGTH = 1024

/** Validate and serialize one dispatch; throws InvalidTaskArgsError. */
export function prepareJob(
  queue: string,
  definition: TaskDefinition,
  args: unknown,
  options: DispatchOptions | undefined,
  maxArgsBytes: number,
): PreparedJob {
  const name = definition.name
  let key: string | undefined
  let delayMs = 0
  let priority = 0
  let lifo = false
  let bullmq: Record<string, unknown> | undefined
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidTaskArgsError(
        name,
        `dispatch options must be an object; received ${describeValue(options)}`,
      )
    }
    key = options.idempotencyKey
    if (
      key !== undefined &&
      (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH)
    ) {
      throw new InvalidTaskArgsError(
        name,
        `idempotencyKey must be a string of 1 to ${MAX_KEY_LENGTH} characters; received ${describeValue(key)}`,
      )
    }
    const delay = options.delayMs
    if (delay !== undefined) {
      if (typeof delay !== 'number' || !Number.isFinite(delay) || delay < 0 || delay > 2 ** 31) {
        throw new InvalidTaskArgsError(
          name,
          `delayMs must be a number of ms between 0 and 2^31; received ${describeValue(delay)}`,
        )
      }
      delayMs = Math.round(delay)
    }
    const p = options.priority
    if (p !== undefined) {
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > MAX_PRIORITY) {
        throw new InvalidTaskArgsError(
          name,
          `priority must be an integer between 0 and ${MAX_PRIORITY} (1 is the highest); received ${describeValue(p)}`,
        )
      }
      priority = p
    }
    if (options.lifo !== undefined) {
      if (typeof options.lifo !== 'boolean') {
        throw new InvalidTaskArgsError(
          name,
          `lifo must be a boolean; received ${describeValue(options.lifo)}`,
        )
      }
      lifo = options.lifo
    }
    if (options.bullmq !== undefined) bullmq = passThrough(name, options.bullmq)
  }
  const payload = encodeArgs(name, args, maxArgsBytes)
  return {
    id: key === undefined ? randomJobId() : keyedJobId(queue, name, key),
    name,
    definition,
    payload,
    args,
    delayMs,
    ...(priority > 0 && { priority }),
    ...(lifo && { lifo }),
    ...(bullmq !== undefined && { bullmq }),
    keyed: key !== undefined,
    // An idempotency key is BullMQ's job id (BullMQ ignores a second add while the job
    // exists); a random id rides along with BullMQ's own counter id, its fast path.
    idIsJobId: key !== undefined,
  }
}

/**
 * Job id for an idempotency key: hashed (the key may hold an address or a token and must not
 * show in Redis), namespaced by queue and task, never a bare integer nor containing ':' (both
 * refused by BullMQ), never BullMQ's own counter (which restarts at 1 on an empty Redis).
 */
export function keyedJobId(queue: string, name: string, key: string): string {
  const digest = createHash('sha256').update(`${queue}\0${name}\0${key}`).digest('base64url')
  return `k-${digest.slice(0, 32)}`
}

/** Ids drawn under one random prefix before a new one is drawn (keeps the counter short). */
const IDS_PER_PREFIX = 36 ** 4
let idPrefix = ''
let idCounter = IDS_PER_PREFIX

/**
 * A task id that is never reused: a random prefix (96 bits, drawn anew every 1.7 M ids and
 * in every process) followed by a counter in base 36 — at most 21 characters, and cheaper
 * than drawing 128 random bits per dispatch (on the hot path). Starts with 't', so never a
 * bare integer; base64url has no ':' (both refused by BullMQ as job ids).
 */
export function randomJobId(): string {
  if (idCounter >= IDS_PER_PREFIX) {
    idPrefix = `t${randomBytes(12).toString('base64url')}`
    idCounter = 0
  }
  return idPrefix + (idCounter++).toString(36)
}

/** JSON text of the arguments, checked against `maxArgsBytes` (UTF-8). */
export function encodeArgs(task: string, args: unknown, maxArgsBytes: number): string {
  let payload: string | undefined
  try {
    payload = JSON.stringify(args)
  } catch (error) {
    throw new InvalidTaskArgsError(task, 'arguments are not JSON-serializable', { cause: error })
  }
  if (payload === undefined) {
    throw new InvalidTaskArgsError(
      task,
      `arguments must be JSON (an object, array, string, number, boolean or null); received ${describeValue(args)}`,
    )
  }
  // A UTF-16 code unit is at most 3 UTF-8 bytes: most payloads skip the exact count.
  if (payload.length * 3 > maxArgsBytes) {
    const bytes = Buffer.byteLength(payload)
    if (bytes > maxArgsBytes) {
      throw new InvalidTaskArgsError(
        task,
        `arguments are ${bytes} bytes as JSON; the limit (maxArgsBytes) is ${maxArgsBytes}`,
        { details: { bytes, limit: maxArgsBytes } },
      )
    }
  }
  return payload
}

/** DispatchOptions.bullmq: a plain object, no reserved key, JSON-safe and bounded (a copy). */
function passThrough(task: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidTaskArgsError(
      task,
      `bullmq must be an object of BullMQ job options; received ${describeValue(value)}`,
    )
  }
  const reserved = RESERVED_JOB_OPTIONS.find((k) => k in value)
  if (reserved !== undefined) {
    throw new InvalidTaskArgsError(
      task,
      `bullmq.${reserved} is set by failsoft: use the dispatch or task option instead (idempotencyKey, delayMs, priority, lifo, attempts, backoff, schedule)`,
    )
  }
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (error) {
    throw new InvalidTaskArgsError(
      task,
      `bullmq options must be JSON (the spool keeps them): ${error instanceof Error ? error.message : String(error)}`,
    )
  }
  if (json === undefined || Buffer.byteLength(json) > MAX_PASS_THROUGH_BYTES) {
    throw new InvalidTaskArgsError(
      task,
      `bullmq options must be at most ${MAX_PASS_THROUGH_BYTES} bytes of JSON; received ${json === undefined ? 'nothing' : `${Buffer.byteLength(json)} bytes`}`,
    )
  }
  return JSON.parse(json) as Record<string, unknown>
}
