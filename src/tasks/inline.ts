import { asError } from '../util/async.js'
import { TaskTimeoutError } from '../errors.js'
import { backoffDelay } from './options.js'
import type { TaskContext, TaskDefinition } from './task.js'

export type RunOutcome = { ok: true; value: unknown } | { ok: false; error: Error }

/**
 * One try of a handler with its deadline. The handler's `ctx.signal` is aborted at the
 * deadline; a handler that ignores it keeps running in the background, but its late outcome
 * is only reported through `onLate` (it can no longer change the result).
 */
export async function runOnce(
  definition: TaskDefinition,
  args: unknown,
  context: Omit<TaskContext, 'signal' | 'attempt'>,
  attempt: number,
  onLate: (error: unknown) => void,
  outer?: AbortSignal,
): Promise<unknown> {
  const controller = new AbortController()
  const abortFromOuter = (): void => controller.abort(outer?.reason)
  outer?.addEventListener('abort', abortFromOuter, { once: true })
  const ctx: TaskContext = { ...context, attempt, signal: controller.signal }
  let timer: NodeJS.Timeout | undefined
  const work = Promise.resolve().then(() =>
    (definition.handler as (a: unknown, c: TaskContext) => unknown)(args, ctx),
  )
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const error = new TaskTimeoutError(definition.name, definition.options.timeoutMs)
      controller.abort(error)
      reject(error)
    }, definition.options.timeoutMs)
  })
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
    outer?.removeEventListener('abort', abortFromOuter)
    // After a timeout the handler may still settle: its rejection must not go unhandled.
    if (controller.signal.aborted) work.catch(onLate)
  }
}

/** All tries of a handler in this process, with the task's backoff between them. */
export async function runWithRetries(
  definition: TaskDefinition,
  args: unknown,
  context: Omit<TaskContext, 'signal' | 'attempt'>,
  onLate: (error: unknown) => void,
  signal?: AbortSignal,
): Promise<RunOutcome> {
  const { attempts, backoff } = definition.options
  for (let attempt = 1; ; attempt++) {
    try {
      return { ok: true, value: await runOnce(definition, args, context, attempt, onLate, signal) }
    } catch (error) {
      if (attempt >= attempts || signal?.aborted === true)
        return { ok: false, error: asError(error) }
      await sleep(backoffDelay(backoff, attempt), signal)
    }
  }
}

/**
 * Bounds the inline runs of one queue: `concurrency` at a time, at most `maxWaiting` more in
 * FIFO order; beyond that `acquire` says no at once, so an outage cannot pile unbounded work
 * onto the request path.
 */
export class InlineLimiter {
  readonly concurrency: number
  readonly maxWaiting: number
  #running = 0
  readonly #waiters: Array<() => void> = []

  constructor(concurrency: number, maxWaiting: number) {
    this.concurrency = concurrency
    this.maxWaiting = maxWaiting
  }

  get running(): number {
    return this.#running
  }

  get waiting(): number {
    return this.#waiters.length
  }

  /** A slot (resolve it with the returned release function), or null when full. */
  acquire(): Promise<() => void> | null {
    if (this.#running < this.concurrency) {
      this.#running++
      return Promise.resolve(this.#releaser())
    }
    if (this.#waiters.length >= this.maxWaiting) return null
    return new Promise((resolve) => this.#waiters.push(() => resolve(this.#releaser())))
  }

  #releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#waiters.shift()
      // The slot passes straight to the next waiter: `running` does not change.
      if (next) next()
      else this.#running--
    }
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted === true) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}
