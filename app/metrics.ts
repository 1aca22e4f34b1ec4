import type { Failsoft } from 'failsoft'
import { collectFailsoftMetrics } from 'failsoft/prometheus'
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client'
import type { DispatchRecord } from './tasks.js'

/**
 * Prometheus metrics (prom-client), on a registry of the app's own (two apps in one process,
 * as in the tests, never collide). failsoft's figures come from `failsoft/prometheus`, read
 * from its status at scrape time; the app counts its dispatches and HTTP requests itself.
 */

export interface AppMetrics {
  readonly registry: Registry
  recordDispatch(record: DispatchRecord): void
  recordRequest(method: string, route: string, status: number, seconds: number): void
  text(): Promise<string>
  readonly contentType: string
  /** Stop following failsoft's diagnostics channels (the app is closing). */
  close(): void
}

export function createMetrics(deps: { failsoft: Failsoft }): AppMetrics {
  const registry = new Registry()
  const registers = [registry]
  // Process metrics (heap, event-loop lag, GC): what tells a leak from ordinary RSS growth.
  collectDefaultMetrics({ register: registry })
  const failsoft = collectFailsoftMetrics(deps.failsoft, { register: registry })

  const dispatches = new Counter({
    name: 'app_task_dispatches_total',
    help: 'Task dispatches by task and by what became of them (queued, inline, spooled, …)',
    labelNames: ['task', 'mode'],
    registers,
  })

  const requests = new Histogram({
    name: 'app_http_request_duration_seconds',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers,
  })

  return {
    registry,
    contentType: registry.contentType,
    recordDispatch(record) {
      dispatches.inc({ task: record.task, mode: record.mode })
    },
    recordRequest(method, route, status, seconds) {
      requests.observe({ method, route, status: String(status) }, seconds)
    },
    text: () => registry.metrics(),
    close: () => failsoft.dispose(),
  }
}
