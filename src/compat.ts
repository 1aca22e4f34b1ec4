/**
 * The seed's function names, for code ported from it: `safeCacheGet/Set/Delete`,
 * `safeGroupSend` and `executeTaskSync`, on a default instance configured from `REDIS_URL`
 * (or by `configureDefault(options)` before the first call). None of them ever throws.
 *
 * ```ts
 * import { safeCacheGet, safeCacheSet } from 'failsoft/compat'
 * const projects = await safeCacheGet('projects', [])
 * ```
 */
import { createFailsoft, type Failsoft } from './failsoft.js'
import { loggableError } from './logger.js'
import type { FailsoftOptions } from './options.js'
import type { Task, DispatchOptions, DispatchResult } from './tasks/task.js'

let defaultInstance: Failsoft | null = null
let defaultOptions: FailsoftOptions | null = null

/**
 * Configure the default instance used by the compat functions. Call it once at start-up,
 * before the first compat call; calling it again replaces (and closes) the previous one.
 */
export async function configureDefault(options: FailsoftOptions): Promise<Failsoft> {
  const previous = defaultInstance
  defaultInstance = null
  defaultOptions = options
  if (previous) await previous.close()
  return getDefault()
}

/** The default instance, created on first use from `configureDefault` or `REDIS_URL`. */
export function getDefault(): Failsoft {
  if (defaultInstance === null) {
    defaultInstance = createFailsoft(
      defaultOptions ?? { redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    )
  }
  return defaultInstance
}

/** Close the default instance (tests, graceful shutdown). The next compat call creates a new one. */
export async function closeDefault(): Promise<void> {
  const instance = defaultInstance
  defaultInstance = null
  if (instance) await instance.close()
}

/**
 * The seed's `safeGroupSend`: `groupSend` on the default instance's default channel layer
 * (`getDefault().channels()`). Resolves true when the message was accepted — delivered to this
 * process' members and published to Redis, or kept for the other processes in the bounded
 * outbox while Redis is unavailable — and false otherwise (invalid group or message, closed
 * instance), with the failure logged at ERROR. Never throws.
 */
export async function safeGroupSend(
  group: string,
  message: { type: string; [key: string]: unknown },
): Promise<boolean> {
  let layer
  try {
    layer = getDefault().channels()
  } catch (error) {
    const instance = defaultInstance
    instance?.context.logger.error(
      { err: loggableError(error), group: typeof group === 'string' ? group : typeof group },
      'safeGroupSend failed: no channel layer',
    )
    return false
  }
  return layer.safeGroupSend(group, message)
}

/** Programmer errors in the seed-named cache functions: logged, at most once a minute per code. */
const cacheProblems = new Map<string, { at: number; suppressed: number }>()

function reportCacheProblem(fn: string, key: unknown, error: unknown): void {
  const code = (error as { code?: unknown } | null)?.code
  const signature = `${fn}:${typeof code === 'string' ? code : 'other'}`
  const now = Date.now()
  const seen = cacheProblems.get(signature)
  if (seen !== undefined && now - seen.at < 60_000) {
    seen.suppressed++
    return
  }
  cacheProblems.set(signature, { at: now, suppressed: 0 })
  const logger = defaultInstance?.context.logger
  logger?.error(
    {
      err: loggableError(error),
      key: typeof key === 'string' ? key.slice(0, 120) : typeof key,
      suppressedSinceLast: seen?.suppressed ?? 0,
    },
    `${fn} failed; returned the default`,
  )
}

/**
 * The seed's `safeCacheGet`: the cached value, or `defaultValue` on a miss. Never throws —
 * not for Redis (the memory tier serves while it is unavailable), nor for an invalid key or a
 * closed instance: those return `defaultValue` and are logged at ERROR (once a minute each).
 */
export async function safeCacheGet<T = unknown>(key: string): Promise<T | undefined>
export async function safeCacheGet<T>(key: string, defaultValue: T): Promise<T>
export async function safeCacheGet<T>(key: string, defaultValue?: T): Promise<T | undefined> {
  try {
    return await getDefault().cache().get<T | undefined>(key, defaultValue)
  } catch (error) {
    reportCacheProblem('safeCacheGet', key, error)
    return defaultValue
  }
}

/**
 * The seed's `safeCacheSet`: store `value` for `ttlSeconds` (default 300; `null` = no expiry).
 * Resolves true when stored in the active backend, false otherwise (an invalid key, TTL or
 * unserializable value, logged at ERROR). Never throws.
 */
export async function safeCacheSet(
  key: string,
  value: unknown,
  ttlSeconds?: number | null,
): Promise<boolean> {
  try {
    return await getDefault().cache().set(key, value, { ttlSeconds })
  } catch (error) {
    reportCacheProblem('safeCacheSet', key, error)
    return false
  }
}

/** The seed's `safeCacheDelete`: true when the key existed in the active backend. Never throws. */
export async function safeCacheDelete(key: string): Promise<boolean> {
  try {
    return await getDefault().cache().delete(key)
  } catch (error) {
    reportCacheProblem('safeCacheDelete', key, error)
    return false
  }
}

/**
 * The seed's `executeTaskSync(task, args)`: queue the task when Redis is up, run it in this
 * process when it is down (or follow the task's own fallback). `task` is a Task from
 * `define()`, or the name of a task defined on the default instance's default queue
 * (`getDefault().tasks()`). Never throws: a bad name, bad arguments or a closed instance
 * resolve to `{ mode: 'rejected', error }`, and an inline handler's failure to
 * `{ mode: 'inline', ok: false, error }`.
 */
export async function executeTaskSync<A, R = unknown>(
  task: Task<A, R> | string,
  args: A,
  options?: DispatchOptions,
): Promise<DispatchResult<R>> {
  try {
    if (typeof task === 'string') {
      return await getDefault().tasks().dispatch<R>(task, args, options)
    }
    return await task.dispatch(args, options)
  } catch (error) {
    return {
      mode: 'rejected',
      id: '',
      error: error instanceof Error ? error : new Error(String(error)),
    }
  }
}
