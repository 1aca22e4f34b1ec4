import type { Failsoft } from '../failsoft.js'
import type { Disposable } from '../health/events.js'
import { readSnapshot, statusFigures, type Attributes, type StatusFigure } from './figures.js'
import type {
  OpenTelemetryApi,
  OtelBatchObservableResult,
  OtelMeter,
  OtelMeterProvider,
  OtelObservable,
  OtelTracerProvider,
} from './otel-api.js'
import { recordEvents, recordedFigures, type RecordedFigure } from './recorded.js'
import { traceSpans } from './spans.js'
import { disposeAll } from './subscribe.js'

/** The instrumentation scope failsoft reports under. */
export const SCOPE = 'failsoft'

export interface OpenTelemetryOptions {
  /**
   * The `@opentelemetry/api` module. Default: imported when this is called (an optional peer
   * dependency); when it is not installed, nothing is instrumented and nothing throws.
   */
  api?: OpenTelemetryApi
  /** Default: the global one (`api.metrics.getMeterProvider()`). */
  meterProvider?: OtelMeterProvider
  /** Default: the global one (`api.trace.getTracerProvider()`). */
  tracerProvider?: OtelTracerProvider
  /** Export the metrics. Default true. */
  metrics?: boolean
  /** Export spans (recovery rounds and steps, task runs, dispatches). Default true. */
  traces?: boolean
  /**
   * Attributes added to every metric point, e.g. `{ 'failsoft.instance': 'api' }` when a
   * process runs several instances. Default none.
   */
  attributes?: Attributes
}

/** What `instrumentOpenTelemetry` returns: dispose to stop exporting. */
export interface OpenTelemetryInstrumentation extends Disposable {
  /** False when `@opentelemetry/api` could not be loaded (then nothing is exported). */
  readonly enabled: boolean
  /** Why it is not enabled, or null. */
  readonly reason: string | null
}

/**
 * Export `failsoft`'s metrics and spans through OpenTelemetry's API (docs/observability.md).
 * The metrics are read from `failsoft.status()` at collection time, except the histograms and
 * the recovery step counts, recorded from failsoft's diagnostics channels while instrumented.
 */
export async function instrumentOpenTelemetry(
  failsoft: Failsoft,
  options: OpenTelemetryOptions = {},
): Promise<OpenTelemetryInstrumentation> {
  let api = options.api
  if (api === undefined) {
    try {
      api = (await import('@opentelemetry/api')) as unknown as OpenTelemetryApi
    } catch (error) {
      const reason = `@opentelemetry/api could not be loaded (${error instanceof Error ? error.message : String(error)}); failsoft exports nothing to OpenTelemetry`
      return { enabled: false, reason, dispose: () => undefined }
    }
  }
  const disposables: Disposable[] = []
  if (options.metrics !== false) {
    const provider = options.meterProvider ?? api.metrics.getMeterProvider()
    const meter = provider.getMeter(SCOPE)
    disposables.push(observeStatus(failsoft, meter, options.attributes ?? {}))
    disposables.push(recordToMeter(failsoft, meter, options.attributes ?? {}))
  }
  if (options.traces !== false) {
    const provider = options.tracerProvider ?? api.trace.getTracerProvider()
    disposables.push(traceSpans(failsoft, api, provider.getTracer(SCOPE)))
  }
  return { enabled: true, reason: null, dispose: () => disposeAll(disposables) }
}

/** The status figures as observable instruments, all read from one status() per collection. */
function observeStatus(failsoft: Failsoft, meter: OtelMeter, extra: Attributes): Disposable {
  const instruments = new Map<StatusFigure, OtelObservable>()
  for (const figure of statusFigures) {
    const options = { description: figure.description, unit: figure.unit }
    instruments.set(
      figure,
      figure.kind === 'counter'
        ? meter.createObservableCounter(figure.name, options)
        : meter.createObservableGauge(figure.name, options),
    )
  }
  const observables = [...instruments.values()]
  const callback = (result: OtelBatchObservableResult): void => {
    const snapshot = readSnapshot(failsoft)
    for (const [figure, instrument] of instruments) {
      for (const { attributes, value } of figure.read(snapshot)) {
        result.observe(instrument, value, { ...extra, ...attributes })
      }
    }
  }
  meter.addBatchObservableCallback(callback, observables)
  return { dispose: () => meter.removeBatchObservableCallback(callback, observables) }
}

function recordToMeter(failsoft: Failsoft, meter: OtelMeter, extra: Attributes): Disposable {
  const record = new Map<RecordedFigure, (value: number, attributes: Attributes) => void>()
  for (const figure of Object.values(recordedFigures) as RecordedFigure[]) {
    const options = { description: figure.description, unit: figure.unit }
    if (figure.kind === 'counter') {
      const counter = meter.createCounter(figure.name, options)
      record.set(figure, (value, attributes) => counter.add(value, attributes))
    } else {
      const histogram = meter.createHistogram(figure.name, {
        ...options,
        ...(figure.buckets ? { advice: { explicitBucketBoundaries: [...figure.buckets] } } : {}),
      })
      record.set(figure, (value, attributes) => histogram.record(value, attributes))
    }
  }
  return recordEvents(failsoft, {
    record: (figure, value, attributes) =>
      record.get(figure)?.(
        value,
        Object.keys(extra).length ? { ...extra, ...attributes } : attributes,
      ),
  })
}
