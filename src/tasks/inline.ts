import { asError } from '../util/async.js'
import { sleep } from '../util/sleep.js'
import { TaskTimeoutError } from '../errors.js'
import { backoffDelay } from './options.js'
import type { TaskContext, TaskDefinition } from './task.js'
import { SETTLE_GRACE_MS } from '../tunables.js'
import { tracing } from '../diagnostics/channels.js'
import { traceOperation } from '../diagnostics/publish.js'
import type { Health } from '../health/types.js'

export type RunOutcome = { ok: true; value: unknown } | { ok: false; error: Error }

/** One try of a handler under way. */
export interface Try {
  /**
   * What the try amounts to for its caller: the handler's value, or its error, or
   * TaskTimeoutError at the task's deadline — whichever comes first.
   */
  readonly result: Promise<unknown>
  /**
   * When the handler itself has returned. A handler that ignores `ctx.signal` may run on past
   * its deadline; nothing else may run the same task until this settles.
   */
  readonly settled: Promise<RunOutcome>
  /** Ask the handler to stop (its `ctx.signal`), e.g. when its lease was lost. */
  abort(reason: Error): void
}

/**
 * Start one try of a handler with its deadline. The handler's `ctx.signal` is aborted at the
 * deadline; a handler that ignores it keeps running in the background: its late outcome is
 * only reported through `onLate` (it can no longer change `result`), and `settled` tells when
 * it really ended.
 */
export function startTry(
  definition: TaskDefinition,
  args: unknown,
  context: Omit<TaskContext, 'signal' | 'attempt'>,
  attempt: number,
  onLate: (error: unknown) => void,
  outer?: AbortSignal,
  /** The instance's health, for the `failsoft:tasks.run` diagnostics channel. */
  health?: Health,
): Try {
  const controller = new AbortController()
  const abortFromOuter = (): void => controller.abort(outer?.reason)
  outer?.addEventListener('abort', abortFromOuter, { once: true })
  const ctx: TaskContext = { ...context, attempt, signal: controller.signal }
  let timer: NodeJS.Timeout | undefined
  const invoke = (): Promise<unknown> =>
    Promise.resolve().then(() =>
      (definition.handler as (a: unknown, c: TaskContext) => unknown)(args, ctx),
    )
  const work =
    health !== undefined && tracing.tasks.run.active
      ? traceOperation(
          tracing.tasks.run,
          { health, ...context, task: context.name, attempt },
          invoke,
        )
      : invoke()
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const error = new TaskTimeoutError(definition.name, definition.options.timeoutMs)
      controller.abort(error)
      reject(error)
    }, definition.options.timeoutMs)
  })
  const settled: Promise<RunOutcome> = work.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error: asError(error) }),
  )
  const result = Promise.race([work, deadline]).finally(() => {
    clearTimeout(timer)
    // After a timeout the handler may still settle: its rejection must not go unhandled.
    if (controller.signal.aborted) work.catch(onLate)
  })
  void settled.finally(() => outer?.removeEventListener('abort', abortFromOuter))
  return {
    result,
    settled,
    abort: (reason) => {
      if (!controller.signal.aborted) controller.abort(reason)
    },
  }
}

/** All tries of a handler in this process, with the task's backoff between them; tries never overlap. */
export async function runWithRetries(
  definition: TaskDefinition,
  args: unknown,
  context: Omit<TaskContext, 'signal' | 'attempt'>,
  onLate: (error: unknown) => void,
  signal?: AbortSignal,
  health?: Health,
  /** Try `attempt` failed with `error` and another try follows (after the backoff). */
  onRetry?: (attempt: number, error: Error) => void,
  /** A custom backoff strategy threw (or returned no number): no more tries; reported here. */
  onBackoffError?: (error: unknown) => void,
): Promise<RunOutcome & { settled: Promise<RunOutcome> }> {
  const { attempts, backoff } = definition.options
  for (let attempt = 1; ; attempt++) {
    const current = startTry(definition, args, context, attempt, onLate, signal, health)
    try {
      return { ok: true, value: await current.result, settled: current.settled }
    } catch (error) {
      const failed = { ok: false as const, error: asError(error), settled: current.settled }
      if (attempt >= attempts || signal?.aborted === true) return failed
      const grace = Math.min(SETTLE_GRACE_MS, definition.options.timeoutMs)
      if ((await within(current.settled, grace)) === 'running') return failed
      let delayMs: number
      try {
        delayMs = backoffDelay(backoff, attempt, failed.error)
      } catch (strategyError) {
        onBackoffError?.(strategyError)
        return failed
      }
      if (delayMs < 0) return failed
      onRetry?.(attempt, failed.error)
      await sleep(delayMs, signal)
    }
  }
}

function within(promise: Promise<unknown>, ms: number): Promise<'settled' | 'running'> {
  let timer: NodeJS.Timeout | undefined
  const running = new Promise<'running'>((resolve) => {
    timer = setTimeout(() => resolve('running'), ms)
  })
  return Promise.race([promise.then(() => 'settled' as const), running]).finally(() =>
    clearTimeout(timer),
  )
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

/**
 * A sliding window of run starts: at most `max` in any `durationMs` (the queue's `rateLimit`,
 * applied by this process to its inline and local runs while Redis cannot). Holds at most
 * `max` timestamps.
 */
export class RateWindow {
  readonly max: number
  readonly durationMs: number
  readonly #starts: number[] = []
  #head = 0

  constructor(max: number, durationMs: number) {
    this.max = max
    this.durationMs = durationMs
  }

  /** Count one start now if the window allows it; false (nothing counted) when it is full. */
  take(now = performance.now()): boolean {
    while (this.#head < this.#starts.length && this.#starts[this.#head]! <= now - this.durationMs)
      this.#head++
    if (this.#head > 1024 && this.#head * 2 > this.#starts.length) {
      this.#starts.splice(0, this.#head)
      this.#head = 0
    }
    if (this.#starts.length - this.#head >= this.max) return false
    this.#starts.push(now)
    return true
  }
}
