import { tracing, type TaskRunMessage } from '../diagnostics/channels.js'
import type { Failsoft } from '../failsoft.js'
import type { Disposable } from '../health/events.js'
import type { Attributes } from './figures.js'
import { disposeAll, errorType, onTrace } from './subscribe.js'

/**
 * The figures that cannot be read from `status()` (distributions, and counts of steps no
 * status keeps): recorded as they happen, from the instance's health events and its
 * diagnostics channels — only while an exporter is attached, so they cost nothing otherwise.
 */
export interface RecordedFigure {
  readonly name: string
  readonly prometheus: string
  readonly description: string
  readonly unit: string
  readonly kind: 'histogram' | 'counter'
  /** OpenTelemetry attribute → Prometheus label; the attributes not listed stay OpenTelemetry's only. */
  readonly labels: Readonly<Record<string, string>>
  /** Histogram bucket boundaries, in the figure's unit. */
  readonly buckets?: readonly number[]
}

export const recordedFigures = {
  outageDuration: {
    name: 'failsoft.health.outage.duration',
    prometheus: 'failsoft_outage_duration_seconds',
    description: 'Outages, from "down" to "up" (recorded when Redis is back)',
    unit: 's',
    kind: 'histogram',
    labels: {},
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
  },
  commandDuration: {
    // The semantic conventions' database client histogram (db.system.name=redis).
    name: 'db.client.operation.duration',
    prometheus: 'failsoft_redis_command_duration_seconds',
    description:
      'Round trips through the health monitor to Redis (a command, a pipeline or a script)',
    unit: 's',
    kind: 'histogram',
    labels: { 'error.type': 'error' },
    // The semantic conventions' advice for db.client.operation.duration.
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10],
  },
  recoveryDuration: {
    name: 'failsoft.recovery.duration',
    prometheus: 'failsoft_recovery_duration_seconds',
    description:
      'Rounds of the components\u2019 recovery steps before returning to Redis, by outcome (ok, error, abandoned)',
    unit: 's',
    kind: 'histogram',
    labels: { 'failsoft.recovery.outcome': 'outcome' },
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  },
  recoverySteps: {
    name: 'failsoft.recovery.steps',
    prometheus: 'failsoft_recovery_steps_total',
    description:
      'Recovery steps (reconciliations) run, per component and outcome (ok, error, abandoned)',
    unit: '{step}',
    kind: 'counter',
    labels: { 'failsoft.component': 'component', 'failsoft.recovery.outcome': 'outcome' },
  },
  taskRunDuration: {
    // The semantic conventions' messaging consumer histogram.
    name: 'messaging.process.duration',
    prometheus: 'failsoft_task_run_duration_seconds',
    description:
      'Tries of task handlers run in this process, by mode (worker, inline, local) and error',
    unit: 's',
    kind: 'histogram',
    labels: {
      'messaging.destination.name': 'queue',
      'failsoft.task.name': 'task',
      'failsoft.task.mode': 'mode',
      'error.type': 'error',
    },
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  },
} as const satisfies Record<string, RecordedFigure>

export interface Recorder {
  record(figure: RecordedFigure, value: number, attributes: Attributes): void
}

/** `server.address`, `server.port`, `db.namespace` from the target's label (`host:port/db`: never a credential). */
export function redisAttributes(label: string | null): Attributes {
  const attributes: Attributes = { 'db.system.name': 'redis' }
  const match = label === null ? null : /^(.+):(\d+)\/(\d+)$/.exec(label)
  if (match !== null) {
    attributes['server.address'] = match[1] as string
    attributes['server.port'] = match[2] as string
    attributes['db.namespace'] = match[3] as string
  }
  return attributes
}

function outcome(error: unknown): string {
  if (error === undefined) return 'ok'
  return error instanceof Error && error.name === 'RecoveryAbandoned' ? 'abandoned' : 'error'
}

/** Start recording `failsoft`'s event figures into `recorder`; dispose to stop. */
export function recordEvents(failsoft: Failsoft, recorder: Recorder): Disposable {
  const health = failsoft.health
  const started = new WeakMap<object, number>()
  const start = (message: object): void => void started.set(message, performance.now())
  const seconds = (message: object): number => {
    const at = started.get(message)
    return at === undefined ? 0 : (performance.now() - at) / 1000
  }
  const redis = redisAttributes(failsoft.status().redis.target)
  const disposables: Disposable[] = [
    health.on('up', ({ downtimeMs }) => {
      // 0 at start-up: no outage came before.
      if (downtimeMs > 0) recorder.record(recordedFigures.outageDuration, downtimeMs / 1000, {})
    }),
    onTrace(tracing.redisCommand, health, {
      start,
      finish: (message) => {
        const attributes =
          message.error === undefined ? redis : { ...redis, 'error.type': errorType(message.error) }
        recorder.record(recordedFigures.commandDuration, seconds(message), attributes)
      },
    }),
    onTrace(tracing.recovery, health, {
      start,
      finish: (message) =>
        recorder.record(recordedFigures.recoveryDuration, seconds(message), {
          'failsoft.recovery.outcome': outcome(message.error),
        }),
    }),
    onTrace(tracing.recoveryStep, health, {
      finish: (message) =>
        recorder.record(recordedFigures.recoverySteps, 1, {
          'failsoft.component': message.component,
          'failsoft.recovery.outcome': outcome(message.error),
        }),
    }),
    onTrace<TaskRunMessage>(tracing.tasks.run, health, {
      start,
      finish: (message) => {
        const attributes: Attributes = {
          'messaging.destination.name': message.queue,
          'messaging.operation.name': 'process',
          'failsoft.task.name': message.task,
          'failsoft.task.mode': message.mode,
        }
        if (message.mode === 'worker') attributes['messaging.system'] = 'bullmq'
        if (message.error !== undefined) attributes['error.type'] = errorType(message.error)
        recorder.record(recordedFigures.taskRunDuration, seconds(message), attributes)
      },
    }),
  ]
  return { dispose: () => disposeAll(disposables) }
}
