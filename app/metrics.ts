import type { ChannelLayer, Failsoft, TaskQueue } from 'failsoft'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { DispatchRecord } from './tasks.js'

/**
 * Prometheus metrics (prom-client), on a registry of the app's own (two apps in one process,
 * as in the tests, never collide). failsoft's figures are read from its status at scrape
 * time; the app counts its dispatches and HTTP requests itself.
 */

const num = (value: unknown): number => (typeof value === 'number' ? value : 0)

export interface AppMetrics {
  readonly registry: Registry
  recordDispatch(record: DispatchRecord): void
  recordRequest(method: string, route: string, status: number, seconds: number): void
  text(): Promise<string>
  readonly contentType: string
}

export function createMetrics(deps: {
  failsoft: Failsoft
  layer: ChannelLayer
  queue: TaskQueue
}): AppMetrics {
  const { failsoft, layer, queue } = deps
  const registry = new Registry()
  const registers = [registry]
  // Process metrics (heap, event-loop lag, GC): what tells a leak from ordinary RSS growth.
  collectDefaultMetrics({ register: registry })

  new Gauge({
    name: 'failsoft_redis_up',
    help: '1 while the components use Redis, 0 while they are on their fallbacks',
    registers,
    collect() {
      this.set(failsoft.health.available ? 1 : 0)
    },
  })

  new Gauge({
    name: 'failsoft_fallback_forced',
    help: '1 while the operator switch forces the fallbacks',
    registers,
    collect() {
      this.set(failsoft.health.forced ? 1 : 0)
    },
  })

  new Gauge({
    name: 'failsoft_component_on_redis',
    help: '1 when the component serves from Redis, 0 from its fallback',
    labelNames: ['component'],
    registers,
    collect() {
      this.reset()
      for (const [name, component] of Object.entries(failsoft.status().components)) {
        this.set({ component: name }, component.backend === 'redis' ? 1 : 0)
      }
    },
  })

  new Counter({
    name: 'failsoft_fallback_operations_total',
    help: 'Operations served by a fallback because Redis was unavailable, per component',
    labelNames: ['component'],
    registers,
    collect() {
      this.reset()
      for (const [name, component] of Object.entries(failsoft.status().components)) {
        this.inc({ component: name }, num(component.fallbackOps))
      }
    },
  })

  new Counter({
    name: 'failsoft_transitions_total',
    help: 'Health transitions: to "down" (fallbacks), to "up" (Redis), "reset" (Redis came back empty)',
    labelNames: ['to'],
    registers,
    collect() {
      this.reset()
      const transitions = (failsoft.status().redis.transitions ?? {}) as Record<string, unknown>
      for (const to of ['down', 'up', 'reset']) this.inc({ to }, num(transitions[to]))
    },
  })

  new Counter({
    name: 'failsoft_channel_dropped_messages_total',
    help: 'Channel-layer messages not delivered, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset()
      const status = layer.status()
      const outbox = (status.outbox ?? {}) as Record<string, unknown>
      this.inc({ reason: 'channel_full' }, num(status.skippedFull))
      this.inc({ reason: 'expired' }, num(status.expired))
      this.inc({ reason: 'undeliverable' }, num(status.undeliverable))
      // Cross-process messages dropped from the outage outbox, by the bound that dropped them.
      this.inc({ reason: 'outbox_count' }, num(outbox.droppedCount))
      this.inc({ reason: 'outbox_bytes' }, num(outbox.droppedBytes))
      this.inc({ reason: 'outbox_age' }, num(outbox.droppedAge))
      this.inc({ reason: 'cross_process_gap' }, num(status.crossProcessGaps))
    },
  })

  new Gauge({
    name: 'failsoft_websocket_clients',
    help: 'WebSocket clients connected to this process',
    registers,
    collect() {
      this.set(num(layer.status().websocketClients))
    },
  })

  new Gauge({
    name: 'failsoft_task_spool_depth',
    help: 'Jobs waiting in the durable spool for Redis',
    registers,
    collect() {
      this.set(queue.status().spoolDepth)
    },
  })

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
  }
}
