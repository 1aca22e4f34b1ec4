import type { Channel } from 'node:diagnostics_channel'
import type { FailsoftMessage, Traced } from '../diagnostics/channels.js'
import type { Disposable } from '../health/events.js'
import type { Health } from '../health/types.js'

/** What a subscriber sees of a traced operation: the message, with `result` or `error` set at the end. */
export type Finished<M> = M & { error?: unknown; result?: unknown }

export interface TraceHandlers<M> {
  /** The operation starts (synchronously, in the caller's context). */
  start?(message: M): void
  /** It settled: `error` is set when it failed. */
  finish?(message: Finished<M>): void
}

/**
 * Follow one instance's operations on a tracing channel: `start`, and `finish` on `asyncEnd`
 * (Node publishes `error` before it, so the error is on the message by then). Messages of
 * other instances in the process are ignored.
 */
export function onTrace<M extends FailsoftMessage>(
  t: Traced<M>,
  health: Health,
  handlers: TraceHandlers<M>,
): Disposable {
  const subscriptions: Array<[Channel<unknown, M>, (message: unknown) => void]> = []
  const { start, finish } = handlers
  if (start !== undefined) {
    subscriptions.push([
      t.channel.start,
      (message) => {
        if ((message as M).health === health) start(message as M)
      },
    ])
  }
  if (finish !== undefined) {
    subscriptions.push([
      t.channel.asyncEnd,
      (message) => {
        if ((message as M).health === health) finish(message as Finished<M>)
      },
    ])
  }
  for (const [channel, listener] of subscriptions) channel.subscribe(listener)
  return {
    dispose: () => {
      for (const [channel, listener] of subscriptions) channel.unsubscribe(listener)
    },
  }
}

/** `error.type` of the semantic conventions: the error's code if it has one, else its name. */
export function errorType(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' ? code : error.name
  }
  return typeof error
}

/** Dispose of everything at once, each exactly once. */
export function disposeAll(disposables: Disposable[]): void {
  for (const disposable of disposables.splice(0)) disposable.dispose()
}
