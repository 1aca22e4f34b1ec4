import { asError, withDeadline } from '../util/async.js'
import { tracing } from '../diagnostics/channels.js'
import { traceOperation } from '../diagnostics/publish.js'
import type { ComponentRegistration, Health, RecoveryContext } from './types.js'

/** A component's recovery step failed (its own error is the cause). */
export class RecoveryStepError extends Error {
  readonly component: string
  constructor(component: string, cause: unknown) {
    super(`recovery step of ${component} failed: ${asError(cause).message}`, { cause })
    this.name = 'RecoveryStepError'
    this.component = component
  }
}

/**
 * The recovery was interrupted (Redis failed again, the operator forced the fallbacks, or
 * failsoft closed): its steps' results do not count, and a later recovery runs them all again.
 * Also the abort reason of the round's signal in that case.
 */
export class RecoveryAbandoned extends Error {
  constructor() {
    super('recovery abandoned')
    this.name = 'RecoveryAbandoned'
  }
}

/**
 * Run every component's recovery step at once (they share nothing; one after the other their
 * round trips would add up), each under `timeoutMs`. Resolves once all of them succeeded.
 * Rejects with RecoveryAbandoned if the round was interrupted (`controller` aborted with a
 * RecoveryAbandoned reason) at any point — even when every step still finished — and
 * otherwise with the RecoveryStepError of the first step that failed. A failing step makes the
 * others stop (the shared signal), and every step has settled when this returns, so no step of
 * this round still runs when the next round starts.
 */
export function runRecoverySteps(
  components: readonly ComponentRegistration[],
  context: RecoveryContext,
  controller: AbortController,
  timeoutMs: number,
  health: Health,
): Promise<void> {
  const round = (): Promise<void> => runSteps(components, context, controller, timeoutMs, health)
  if (!tracing.recovery.active) return round()
  const message = {
    health,
    reset: context.reset,
    rollback: context.rollback !== null,
    downtimeMs: context.downtimeMs,
    lateCommandsFenced: context.lateCommandsFenced,
  }
  return traceOperation(tracing.recovery, message, round)
}

async function runSteps(
  components: readonly ComponentRegistration[],
  context: RecoveryContext,
  controller: AbortController,
  timeoutMs: number,
  health: Health,
): Promise<void> {
  let first: RecoveryStepError | null = null
  await Promise.allSettled(
    components.map(async (registration) => {
      const step = registration.recover
      if (step === undefined || controller.signal.aborted) return
      try {
        const run = (): Promise<void> =>
          withDeadline(step.call(registration, context), timeoutMs, 'recovery')
        await (tracing.recoveryStep.active
          ? traceOperation(tracing.recoveryStep, { health, component: registration.name }, run)
          : run())
      } catch (error) {
        if (first === null && !controller.signal.aborted) {
          first = new RecoveryStepError(registration.name, error)
          controller.abort(first)
        }
      }
    }),
  )
  if (controller.signal.reason instanceof RecoveryAbandoned) throw controller.signal.reason
  if (first !== null) throw first
}
