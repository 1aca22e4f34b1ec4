/**
 * Every error failsoft throws on purpose is a `FailsoftError` with a stable `code`.
 * Codes never change meaning once released: match on `code`, not on `message`.
 */
export type FailsoftErrorCode =
  | 'FAILSOFT_INVALID_OPTION'
  | 'FAILSOFT_REDIS_UNAVAILABLE'
  | 'FAILSOFT_REDIS_TIMEOUT'
  | 'FAILSOFT_CLOSED'
  | 'FAILSOFT_INVALID_KEY'
  | 'FAILSOFT_INVALID_VALUE'
  | 'FAILSOFT_VALUE_TOO_LARGE'
  | 'FAILSOFT_INVALID_TTL'
  | 'FAILSOFT_INVALID_NAME'
  | 'FAILSOFT_INVALID_MESSAGE'
  | 'FAILSOFT_MESSAGE_TOO_LARGE'
  | 'FAILSOFT_CHANNEL_FULL'
  | 'FAILSOFT_UNKNOWN_TASK'
  | 'FAILSOFT_INVALID_TASK_ARGS'
  | 'FAILSOFT_SPOOL_FULL'
  | 'FAILSOFT_INLINE_BUSY'
  | 'FAILSOFT_INLINE_RATE_LIMITED'
  | 'FAILSOFT_FLOW_UNAVAILABLE'
  | 'FAILSOFT_INVALID_FLOW'
  | 'FAILSOFT_TASK_TIMEOUT'
  | 'FAILSOFT_LEASE_LOST'
  | 'FAILSOFT_TASK_FAILED'
  | 'FAILSOFT_TASK_DROPPED'
  | 'FAILSOFT_TASK_RESULT_TIMEOUT'
  | 'FAILSOFT_TASK_RESULT_UNAVAILABLE'
  | 'FAILSOFT_INVALID_PROGRESS'

export interface FailsoftErrorOptions {
  cause?: unknown
  /** Structured context (never secrets): the offending value, the limit, the option name … */
  details?: Record<string, unknown>
}

export class FailsoftError extends Error {
  readonly code: FailsoftErrorCode
  readonly details: Readonly<Record<string, unknown>>

  constructor(code: FailsoftErrorCode, message: string, options: FailsoftErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.details = Object.freeze({ ...options.details })
  }
}

/** Redis is known to be unavailable (or failsoft is forced to its fallbacks); nothing was sent. */
export class RedisUnavailableError extends FailsoftError {
  constructor(message = 'Redis is unavailable', options: FailsoftErrorOptions = {}) {
    super('FAILSOFT_REDIS_UNAVAILABLE', message, options)
  }
}

/**
 * A command was sent but no reply came within the deadline. The command may still execute
 * later (a frozen Redis processes its input buffer when it wakes up): treat it as "may have
 * landed", never as "did not happen".
 */
export class RedisTimeoutError extends FailsoftError {
  constructor(timeoutMs: number, options: FailsoftErrorOptions = {}) {
    super('FAILSOFT_REDIS_TIMEOUT', `Redis did not answer within ${timeoutMs} ms`, {
      ...options,
      details: { timeoutMs, ...options.details },
    })
  }
}

/** The failsoft instance (or component) was closed. */
export class ClosedError extends FailsoftError {
  constructor(what = 'failsoft instance') {
    super('FAILSOFT_CLOSED', `The ${what} is closed`)
  }
}

/** Describe a value for an error message without dumping it whole (or leaking a secret). */
export function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (typeof value === 'string') {
    const shown = value.length > 60 ? `${value.slice(0, 57)}...` : value
    return `${JSON.stringify(shown)} (string of length ${value.length})`
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${String(value)} (${typeof value})`
  }
  if (Array.isArray(value)) return `an array of length ${value.length}`
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'symbol') return 'a symbol'
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name
  if (typeof name === 'string' && name !== 'Object' && /^[A-Za-z0-9_$]{1,60}$/.test(name)) {
    return `an instance of ${name}`
  }
  return `an object (${Object.prototype.toString.call(value)})`
}

/** Build the error thrown by option validation: it names the option and what it received. */
export function invalidOption(
  option: string,
  expected: string,
  received: unknown,
  kind: 'type' | 'range' = 'type',
): TypeError | RangeError {
  const message = `failsoft: option \`${option}\` must be ${expected}; received ${describeValue(received)}`
  const error = kind === 'range' ? new RangeError(message) : new TypeError(message)
  Object.assign(error, { code: 'FAILSOFT_INVALID_OPTION', option })
  return error
}

/** A channel or group name breaks Channels' naming rule (ASCII letters, digits, `-_.`, < 100 chars). */
export class InvalidNameError extends FailsoftError {
  constructor(kind: 'channel' | 'group', name: unknown, reason: string) {
    super('FAILSOFT_INVALID_NAME', `Invalid ${kind} name ${describeValue(name)}: ${reason}`, {
      details: { kind, name: typeof name === 'string' ? name.slice(0, 120) : describeValue(name) },
    })
  }
}

/** A channel message is not a plain JSON-serializable object with a string `type`. */
export class InvalidMessageError extends FailsoftError {
  constructor(reason: string, options: FailsoftErrorOptions = {}) {
    super('FAILSOFT_INVALID_MESSAGE', `Invalid channel message: ${reason}`, options)
  }
}

/** A channel message serializes to more than `maxMessageBytes`. */
export class MessageTooLargeError extends FailsoftError {
  constructor(bytes: number, limit: number) {
    super(
      'FAILSOFT_MESSAGE_TOO_LARGE',
      `Channel message is ${bytes} bytes as JSON; the limit (maxMessageBytes) is ${limit}`,
      { details: { bytes, limit } },
    )
  }
}

/** `send` to a channel whose receive buffer already holds `capacity` messages. */
export class ChannelFullError extends FailsoftError {
  constructor(channel: string, capacity: number) {
    super('FAILSOFT_CHANNEL_FULL', `Channel "${channel}" is full (capacity ${capacity})`, {
      details: { channel, capacity },
    })
  }
}

/** `dispatch` or `schedule` named a task that was not defined on that queue. */
export class UnknownTaskError extends FailsoftError {
  constructor(name: unknown, queue: string) {
    super(
      'FAILSOFT_UNKNOWN_TASK',
      `No task named ${describeValue(name)} is defined on queue "${queue}"; call tasks.define() first`,
      {
        details: {
          name: typeof name === 'string' ? name.slice(0, 120) : describeValue(name),
          queue,
        },
      },
    )
  }
}

/** Task arguments (or dispatch options) are not JSON-serializable or exceed `maxArgsBytes`. */
export class InvalidTaskArgsError extends FailsoftError {
  constructor(task: string, reason: string, options: FailsoftErrorOptions = {}) {
    super('FAILSOFT_INVALID_TASK_ARGS', `Invalid arguments for task "${task}": ${reason}`, {
      ...options,
      details: { task, ...options.details },
    })
  }
}

/** The spool already holds `maxRecords` jobs or `maxBytes` bytes: the job was not accepted. */
export class SpoolFullError extends FailsoftError {
  constructor(limit: 'maxRecords' | 'maxBytes', value: number) {
    super('FAILSOFT_SPOOL_FULL', `The task spool is full (spool.${limit} = ${value})`, {
      details: { limit, value },
    })
  }
}

/** Every inline slot is busy and `inline.maxWaiting` runs already wait: the job did not run. */
export class InlineBusyError extends FailsoftError {
  constructor(concurrency: number, maxWaiting: number) {
    super(
      'FAILSOFT_INLINE_BUSY',
      `Inline task runner is busy (${concurrency} running, ${maxWaiting} waiting)`,
      { details: { concurrency, maxWaiting } },
    )
  }
}

/**
 * The queue's `rateLimit` was reached by this process's inline runs (Redis unavailable): the
 * job did not run.
 */
export class InlineRateLimitedError extends FailsoftError {
  constructor(max: number, durationMs: number) {
    super(
      'FAILSOFT_INLINE_RATE_LIMITED',
      `Inline task runner is at the queue's rate limit (${max} per ${durationMs} ms)`,
      { details: { max, durationMs } },
    )
  }
}

/**
 * A flow (parent and child jobs) could not be added: Redis is unavailable (or refused it). A
 * flow is added whole or not at all — never in part, never inline, never spooled.
 */
export class FlowUnavailableError extends FailsoftError {
  constructor(task: string, reason: string, cause?: unknown) {
    super('FAILSOFT_FLOW_UNAVAILABLE', `Flow "${task}" was not added: ${reason}`, {
      details: { task },
      ...(cause !== undefined && { cause }),
    })
  }
}

/** A flow's shape is not accepted (too many nodes, too deep, not a tree of { task, args }). */
export class InvalidFlowError extends FailsoftError {
  constructor(message: string, value: unknown) {
    super('FAILSOFT_INVALID_FLOW', `${message}; received ${describeValue(value)}`, {
      details: { received: describeValue(value) },
    })
  }
}

/** One try of a task ran longer than its `timeoutMs`; its `ctx.signal` was aborted. */
export class TaskTimeoutError extends FailsoftError {
  constructor(task: string, timeoutMs: number) {
    super('FAILSOFT_TASK_TIMEOUT', `Task "${task}" did not finish within ${timeoutMs} ms`, {
      details: { task, timeoutMs },
    })
  }
}

/**
 * A running task's lease was lost: another run of the same task id may now start (this worker
 * was cut off from Redis for longer than the lease while others reached it, or its lease was
 * taken over). The handler's `ctx.signal` is aborted with this error: stop, the task runs again.
 */
export class LeaseLostError extends FailsoftError {
  constructor(task: string, reason: string) {
    super('FAILSOFT_LEASE_LOST', `Task "${task}" lost its lease: ${reason}`, {
      details: { task, reason },
    })
  }
}

/** Longest error name and message a TaskFailedError carries over from the task's error. */
const MAX_ERROR_TEXT = 2000

function clip(text: string): string {
  return text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT - 3)}...` : text
}

/**
 * A task failed — all its tries, on a worker or inline: what `result()` / `run()` reject with,
 * and the `error` of a 'failed' event. `errorName` and `errorMessage` are the task's own error
 * (read back from BullMQ's job when it ran on a worker, possibly in another process); locally,
 * `cause` is that error itself.
 */
export class TaskFailedError extends FailsoftError {
  /** The name of the task's error (`'TypeError'`, `'TaskTimeoutError'`…); `'Error'` if unknown. */
  readonly errorName: string
  /** The message of the task's error. */
  readonly errorMessage: string

  constructor(
    task: string,
    id: string,
    failure: { readonly name: string; readonly message: string },
    options: FailsoftErrorOptions & { jobId?: string | undefined } = {},
  ) {
    const errorName = clip(failure.name || 'Error')
    const errorMessage = clip(failure.message)
    super('FAILSOFT_TASK_FAILED', `Task "${task}" (${id}) failed: ${errorName}: ${errorMessage}`, {
      ...(options.cause !== undefined && { cause: options.cause }),
      details: {
        task,
        id,
        ...(options.jobId !== undefined && { jobId: options.jobId }),
        errorName,
        errorMessage,
        ...options.details,
      },
    })
    this.errorName = errorName
    this.errorMessage = errorMessage
  }

  /** From an error of this process (an inline run): its name and message, and the error as cause. */
  static from(task: string, id: string, error: unknown): TaskFailedError {
    if (error instanceof TaskFailedError) return error
    const e = error instanceof Error ? error : new Error(describeValue(error))
    const name = typeof e.name === 'string' ? e.name : 'Error'
    const message = typeof e.message === 'string' ? e.message : ''
    const code = (e as { code?: unknown }).code
    return new TaskFailedError(
      task,
      id,
      { name, message },
      { cause: e, details: typeof code === 'string' ? { errorCode: code.slice(0, 100) } : {} },
    )
  }
}

/** `result()` of a dispatch that will never run: answered `dropped` or `rejected`. */
export class TaskDroppedError extends FailsoftError {
  constructor(task: string, id: string, mode: 'dropped' | 'rejected', cause?: unknown) {
    super(
      'FAILSOFT_TASK_DROPPED',
      mode === 'dropped'
        ? `Task "${task}" (${id}) was dropped (fallback 'drop' while Redis was unavailable): it never runs`
        : `Task "${task}" (${id}) was not accepted: it never runs`,
      { cause, details: { task, id, mode } },
    )
  }
}

/** `result({ timeoutMs })`: the task had not finished within `timeoutMs` (it may still run). */
export class TaskResultTimeoutError extends FailsoftError {
  constructor(task: string, id: string, timeoutMs: number) {
    super(
      'FAILSOFT_TASK_RESULT_TIMEOUT',
      `No result for task "${task}" (${id}) within ${timeoutMs} ms; it may still run`,
      { details: { task, id, timeoutMs } },
    )
  }
}

/** Why a result cannot be known (`TaskResultUnavailableError.reason`). */
export type TaskResultUnavailableReason =
  /**
   * The job is not in Redis: removed by `removeOnComplete` / `removeOnFail` before its outcome
   * was read, or lost with Redis' data (restarted empty, flushed).
   */
  | 'job-missing'
  /**
   * The job completed without running: another copy of the same task id ran (an add that
   * landed although unanswered, and its spool replay) and its value is in that other job.
   */
  | 'ran-as-another-job'
  /** Answered `duplicate`: the key ran (or runs) inline here; that run's value is not kept. */
  | 'duplicate'
  /** Answered `unconfirmed`: it runs at most once, in a job whose id is not known. */
  | 'unconfirmed'
  /** It ran on a worker and returned more than `maxResultBytes` of JSON: not stored. */
  | 'too-large'
  /** It ran on a worker and returned a value JSON cannot hold (a BigInt, a cycle): not stored. */
  | 'not-json'

/** `result()` cannot know the task's outcome (`reason`); the task itself may have run. */
export class TaskResultUnavailableError extends FailsoftError {
  readonly reason: TaskResultUnavailableReason

  constructor(task: string, id: string, reason: TaskResultUnavailableReason, jobId?: string) {
    const why: Record<TaskResultUnavailableReason, string> = {
      'job-missing':
        'its job is not in Redis (removed by removeOnComplete/removeOnFail, or lost with Redis data)',
      'ran-as-another-job': 'it ran as another copy of the same task id, whose value is not known',
      duplicate: 'it was answered duplicate (its key ran inline in this process)',
      unconfirmed: 'its add was unconfirmed (it runs at most once, in an unknown job)',
      'too-large': 'its value was larger than maxResultBytes as JSON and was not stored',
      'not-json': 'its value is not JSON-serializable and was not stored',
    }
    super(
      'FAILSOFT_TASK_RESULT_UNAVAILABLE',
      `No result for task "${task}" (${id}): ${why[reason]}`,
      {
        details: { task, id, reason, ...(jobId !== undefined && { jobId }) },
      },
    )
    this.reason = reason
  }
}

/** `ctx.progress(value)`: not a finite number or a JSON object, or larger than the limit. */
export class InvalidProgressError extends FailsoftError {
  constructor(task: string, reason: string) {
    super('FAILSOFT_INVALID_PROGRESS', `Invalid progress for task "${task}": ${reason}`, {
      details: { task },
    })
  }
}
