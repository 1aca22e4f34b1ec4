import type { FailsoftContext } from '../context.js'
import { invalidOption } from '../errors.js'
import type { TaskQueueInput } from './options.js'
import { TaskQueue } from './queue.js'

const registry = new WeakMap<FailsoftContext, Map<string, TaskQueue>>()

/**
 * `failsoft.tasks(options)`: one per queue name and instance — a second call with the same
 * queue returns the same object.
 */
export function taskQueue(context: FailsoftContext, input?: TaskQueueInput): TaskQueue {
  context.assertOpen()
  let byName = registry.get(context)
  if (byName === undefined) {
    byName = new Map()
    registry.set(context, byName)
  }
  const name = input?.queue ?? 'default'
  const existing = byName.get(name)
  if (existing !== undefined && !existing.closed) {
    const extra = Object.keys(input ?? {}).filter((k) => k !== 'queue')
    if (extra.length > 0) {
      throw invalidOption(
        extra[0] ?? 'options',
        `unset: queue "${name}" already exists on this instance (options apply when it is created)`,
        input,
        'range',
      )
    }
    return existing
  }
  const queue = new TaskQueue(context, input)
  byName.set(name, queue)
  return queue
}
