import { tracing } from '../diagnostics/channels.js'
import { traceOperation } from '../diagnostics/publish.js'
import type { Health } from '../health/types.js'
import type { DispatchResult, PreparedJob } from './task.js'

/**
 * A dispatch traced on `failsoft:tasks.dispatch` (after validation: an invalid dispatch is
 * rejected before it is traced). Called only when something subscribes.
 */
export function traceDispatch(
  health: Health,
  queue: string,
  job: PreparedJob,
  route: () => Promise<DispatchResult<unknown>>,
): Promise<DispatchResult<unknown>> {
  const message = { health, queue, task: job.definition.name, id: job.id }
  return traceOperation(tracing.tasks.dispatch, message, route)
}
