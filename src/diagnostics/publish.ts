import { loggableError } from '../logger.js'
import type { Health, HealthEvents } from '../health/types.js'
import { transitions, type Traced } from './channels.js'

/**
 * Run `fn` as a traced operation on `t`. Call sites check `t.active` first, so that nothing
 * (not even the message) is built while nobody subscribes.
 */
export function traceOperation<M extends object, R>(
  t: Traced<M>,
  message: M,
  fn: () => Promise<R>,
): Promise<R> {
  return t.channel.tracePromise(fn, message)
}

/**
 * Publish a health transition on its channel, if anything subscribes. The error of a `down`
 * is copied without what ioredis attaches to its errors (the failed command, AUTH's password
 * included) and with the target's credentials removed from its message.
 */
export function publishTransition<K extends keyof HealthEvents>(
  health: Health,
  event: K,
  payload: HealthEvents[K],
  secrets: readonly string[] = [],
): void {
  const target = transitions[event]
  if (!target.hasSubscribers) return
  const message =
    'error' in payload
      ? { ...payload, error: scrubbedError(payload.error, secrets), health }
      : { ...payload, health }
  target.publish(message)
}

function scrubbedError(error: unknown, secrets: readonly string[]): Error {
  const plain = loggableError(error, secrets)
  const copy = new Error(String(plain.message)) as Error & { code?: unknown }
  copy.name = String(plain.type)
  if (plain.code !== undefined) copy.code = plain.code
  return copy
}
