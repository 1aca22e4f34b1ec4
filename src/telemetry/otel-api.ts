/**
 * The part of `@opentelemetry/api` failsoft uses, written structurally: `failsoft/otel`'s
 * declarations then do not import the optional peer, so a project without it still
 * type-checks, and any 1.x api object fits (test/telemetry checks the real one does).
 */

export type OtelAttributes = Record<string, string | number | boolean>

/** An observable instrument (its callbacks are batch ones: failsoft never adds its own). */
export type OtelObservable = object

export interface OtelBatchObservableResult {
  observe(observable: OtelObservable, value: number, attributes?: OtelAttributes): void
}

export interface OtelInstrumentOptions {
  description?: string
  unit?: string
  advice?: { explicitBucketBoundaries?: number[] }
}

export interface OtelMeter {
  createHistogram(
    name: string,
    options?: OtelInstrumentOptions,
  ): { record(value: number, attributes?: OtelAttributes): void }
  createCounter(
    name: string,
    options?: OtelInstrumentOptions,
  ): { add(value: number, attributes?: OtelAttributes): void }
  createObservableGauge(name: string, options?: OtelInstrumentOptions): OtelObservable
  createObservableCounter(name: string, options?: OtelInstrumentOptions): OtelObservable
  addBatchObservableCallback(
    callback: (result: OtelBatchObservableResult) => void,
    observables: OtelObservable[],
  ): void
  removeBatchObservableCallback(
    callback: (result: OtelBatchObservableResult) => void,
    observables: OtelObservable[],
  ): void
}

export interface OtelMeterProvider {
  getMeter(name: string, version?: string): OtelMeter
}

export interface OtelSpan {
  setAttribute(key: string, value: string | number | boolean): this
  recordException(exception: Error | string): void
  setStatus(status: { code: number; message?: string }): this
  end(): void
}

export interface OtelContextApi {
  active(): unknown
}

export interface OtelTracer {
  startSpan(
    name: string,
    options?: { kind?: number; attributes?: OtelAttributes },
    context?: unknown,
  ): OtelSpan
}

export interface OtelTracerProvider {
  getTracer(name: string, version?: string): OtelTracer
}

/** `import * as api from '@opentelemetry/api'` fits this. */
export interface OpenTelemetryApi {
  readonly metrics: { getMeterProvider(): OtelMeterProvider }
  readonly trace: {
    getTracerProvider(): OtelTracerProvider
    setSpan(context: unknown, span: OtelSpan): unknown
  }
  readonly context: OtelContextApi
}

/** SpanKind and SpanStatusCode of the api, whose numeric values the specification fixes. */
export const SPAN_KIND = { INTERNAL: 0, PRODUCER: 3, CONSUMER: 4 } as const
export const SPAN_STATUS_ERROR = 2
