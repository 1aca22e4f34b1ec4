import { tracing } from '../diagnostics/channels.js'
import type { Failsoft } from '../failsoft.js'
import type { Disposable } from '../health/events.js'
import {
  SPAN_KIND,
  SPAN_STATUS_ERROR,
  type OpenTelemetryApi,
  type OtelAttributes,
  type OtelSpan,
  type OtelTracer,
} from './otel-api.js'
import { disposeAll, errorType, onTrace } from './subscribe.js'

/**
 * OpenTelemetry spans built from the instance's diagnostics channels: a recovery round with a
 * child span per component step, each try of a task handler run in this process (the
 * messaging conventions' `process` span), and each dispatch (`send`). A span's parent is the
 * context active where the operation started (the HTTP request that dispatched, say).
 */
export function traceSpans(
  failsoft: Failsoft,
  api: OpenTelemetryApi,
  tracer: OtelTracer,
): Disposable {
  const health = failsoft.health
  const spans = new WeakMap<object, OtelSpan>()
  let round: OtelSpan | null = null

  const open = (
    message: object,
    name: string,
    kind: number,
    attributes: OtelAttributes,
    parent: unknown,
  ): OtelSpan => {
    const span = tracer.startSpan(name, { kind, attributes }, parent)
    spans.set(message, span)
    return span
  }
  const close = (
    message: { error?: unknown },
    outcome?: (span: OtelSpan) => void,
  ): OtelSpan | undefined => {
    const span = spans.get(message)
    if (span === undefined) return undefined
    spans.delete(message)
    outcome?.(span)
    if (message.error !== undefined) failed(span, message.error)
    span.end()
    return span
  }

  const disposables: Disposable[] = [
    onTrace(tracing.recovery, health, {
      start: (message) => {
        round = open(
          message,
          'failsoft.recovery',
          SPAN_KIND.INTERNAL,
          {
            'failsoft.recovery.reset': message.reset,
            'failsoft.recovery.rollback': message.rollback,
            'failsoft.recovery.downtime_ms': message.downtimeMs,
            'failsoft.recovery.late_commands_fenced': message.lateCommandsFenced,
          },
          api.context.active(),
        )
      },
      finish: (message) => {
        const span = close(message)
        if (span === round) round = null
      },
    }),
    onTrace(tracing.recoveryStep, health, {
      start: (message) => {
        const parent =
          round === null ? api.context.active() : api.trace.setSpan(api.context.active(), round)
        open(
          message,
          'failsoft.recovery.step',
          SPAN_KIND.INTERNAL,
          { 'failsoft.component': message.component },
          parent,
        )
      },
      finish: (message) => void close(message),
    }),
    onTrace(tracing.tasks.run, health, {
      start: (message) => {
        const attributes: OtelAttributes = {
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'process',
          'messaging.destination.name': message.queue,
          'messaging.message.id': message.id,
          'failsoft.task.name': message.task,
          'failsoft.task.mode': message.mode,
          'failsoft.task.attempt': message.attempt,
        }
        // Only a worker's run came through BullMQ; an inline run never left this process.
        if (message.mode === 'worker') attributes['messaging.system'] = 'bullmq'
        const kind = message.mode === 'worker' ? SPAN_KIND.CONSUMER : SPAN_KIND.INTERNAL
        open(message, `process ${message.queue}`, kind, attributes, api.context.active())
      },
      finish: (message) => void close(message),
    }),
    onTrace(tracing.tasks.dispatch, health, {
      start: (message) => {
        open(
          message,
          `send ${message.queue}`,
          SPAN_KIND.PRODUCER,
          {
            'messaging.operation.type': 'send',
            'messaging.operation.name': 'send',
            'messaging.destination.name': message.queue,
            'messaging.message.id': message.id,
            'failsoft.task.name': message.task,
          },
          api.context.active(),
        )
      },
      finish: (message) =>
        void close(message, (span) => {
          const mode = message.result?.mode
          if (mode === undefined) return
          span.setAttribute('failsoft.task.dispatch.mode', mode)
          if (mode === 'queued') span.setAttribute('messaging.system', 'bullmq')
        }),
    }),
  ]
  return { dispose: () => disposeAll(disposables) }
}

function failed(span: OtelSpan, error: unknown): void {
  span.setAttribute('error.type', errorType(error))
  if (error instanceof Error) span.recordException(error)
  span.setStatus({
    code: SPAN_STATUS_ERROR,
    message: error instanceof Error ? error.message : String(error),
  })
}
