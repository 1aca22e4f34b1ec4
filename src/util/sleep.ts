/**
 * Resolve after `ms` (at once for ms <= 0), or as soon as `signal` aborts — never rejects.
 * With `unref`, the timer does not keep the process alive: for background waits (a drain's
 * delay), never for one a caller awaits (a retry's backoff must happen even in a script).
 */
export function sleep(ms: number, signal?: AbortSignal, unref = false): Promise<void> {
  if (ms <= 0 || signal?.aborted === true) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    if (unref) timer.unref()
    signal?.addEventListener('abort', done, { once: true })
  })
}
