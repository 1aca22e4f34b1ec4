/**
 * `failsoft/otel`: failsoft's metrics and spans through OpenTelemetry's API.
 *
 * ```ts
 * import { createFailsoft } from 'failsoft'
 * import { instrumentOpenTelemetry } from 'failsoft/otel'
 *
 * const failsoft = createFailsoft({ redis: process.env.REDIS_URL })
 * await instrumentOpenTelemetry(failsoft) // the global meter and tracer providers
 * ```
 *
 * `@opentelemetry/api` is an optional peer dependency, imported only when this is called (or
 * passed as `api`); without it nothing is exported and nothing throws. Nothing here imports
 * an SDK: the application's own OpenTelemetry set-up decides where the figures go. See
 * docs/observability.md.
 */
export { instrumentOpenTelemetry, SCOPE } from './telemetry/otel.js'
export type { OpenTelemetryInstrumentation, OpenTelemetryOptions } from './telemetry/otel.js'
export type {
  OpenTelemetryApi,
  OtelMeterProvider,
  OtelTracerProvider,
} from './telemetry/otel-api.js'
