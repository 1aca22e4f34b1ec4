import { RedisTimeoutError, RedisUnavailableError } from '../errors.js'

/** Whatever was thrown, as an Error (a non-Error is wrapped with its string form). */
export function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/**
 * `promise`, or a RedisTimeoutError after `timeoutMs` (details.source = `what`), or a
 * RedisUnavailableError as soon as `signal` aborts. The underlying promise is not cancelled:
 * callers that abandon it drop the connection it runs on when that matters.
 */
export function withDeadline<T>(
  promise: Promise<T>,
  timeoutMs: number,
  what: string,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(new RedisUnavailableError(`abandoned during ${what}`))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      reject(new RedisTimeoutError(timeoutMs, { details: { source: what } }))
    }, timeoutMs)
    if (signal?.aborted) {
      onAbort()
      promise.catch(() => undefined) // abandoned; its outcome no longer matters
      return
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}

/**
 * 'done' once `promise` settles (fulfilled or rejected), or 'expired' after `ms` — the timer
 * is not unref'd: a bounded wait in a close() holds the process until it ends. The promise
 * is not cancelled.
 */
export function within(promise: Promise<unknown>, ms: number): Promise<'done' | 'expired'> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), ms)
  })
  const done = promise.then(
    () => 'done' as const,
    () => 'done' as const,
  )
  return Promise.race([done, expired]).finally(() => clearTimeout(timer))
}
