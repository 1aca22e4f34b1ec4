/**
 * `failsoft/prometheus`: failsoft's metrics on a prom-client registry.
 *
 * ```ts
 * import { Registry } from 'prom-client'
 * import { createFailsoft } from 'failsoft'
 * import { collectFailsoftMetrics } from 'failsoft/prometheus'
 *
 * const failsoft = createFailsoft({ redis: process.env.REDIS_URL })
 * const register = new Registry()
 * collectFailsoftMetrics(failsoft, { register })
 * // GET /metrics → register.metrics()
 * ```
 *
 * prom-client is an optional peer dependency: only this entry point imports it. See
 * docs/observability.md for every metric.
 */
export { collectFailsoftMetrics } from './telemetry/prometheus.js'
export type { FailsoftCollector, PrometheusOptions } from './telemetry/prometheus.js'
