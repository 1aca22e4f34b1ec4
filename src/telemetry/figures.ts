import type { CacheStatus } from '../cache/status.js'
import type { ChannelLayerStatus } from '../channels/status.js'
import type { Failsoft, FailsoftStatus } from '../failsoft.js'
import type { TaskQueueStatus } from '../tasks/status.js'

/**
 * The figures failsoft exports, read from `failsoft.status()` when a collector asks (an
 * OpenTelemetry collection, a Prometheus scrape): nothing is counted on the hot path for them.
 * One table for both exporters, so that `failsoft/otel` and `failsoft/prometheus` report the
 * same numbers under their own naming conventions. docs/observability.md lists them.
 */

export type Attributes = Record<string, string>

export interface Observation {
  readonly attributes: Attributes
  readonly value: number
}

export interface StatusFigure {
  /** OpenTelemetry instrument name (dotted; `failsoft.*` where no semantic convention exists). */
  readonly name: string
  /** Prometheus metric name (counters end in `_total`). */
  readonly prometheus: string
  readonly description: string
  /** UCUM unit, as OpenTelemetry wants it ('s', 'By', '{operation}'). */
  readonly unit: string
  /** 'counter': a cumulative count since the instance was created; 'gauge': a value now. */
  readonly kind: 'counter' | 'gauge'
  /** OpenTelemetry attribute → Prometheus label, for every attribute the figure has. */
  readonly labels: Readonly<Record<string, string>>
  read(snapshot: Snapshot): readonly Observation[]
}

/** One reading of an instance, shared by every figure of one collection. */
export interface Snapshot {
  readonly status: FailsoftStatus
  /** Date.now() when it was read. */
  readonly at: number
  readonly caches: ReadonlyArray<readonly [string, CacheStatus]>
  readonly layers: ReadonlyArray<readonly [string, ChannelLayerStatus]>
  readonly queues: ReadonlyArray<readonly [string, TaskQueueStatus]>
}

export function readSnapshot(failsoft: Failsoft): Snapshot {
  const status = failsoft.status()
  const caches: Array<[string, CacheStatus]> = []
  const layers: Array<[string, ChannelLayerStatus]> = []
  const queues: Array<[string, TaskQueueStatus]> = []
  // Component names are `cache:<namespace>`, `channels:<layer>`, `tasks:<queue>`.
  for (const name of Object.keys(status.components)) {
    const [kind, ...rest] = name.split(':')
    const id = rest.join(':')
    const cache = kind === 'cache' ? status.components[`cache:${id}`] : undefined
    const layer = kind === 'channels' ? status.components[`channels:${id}`] : undefined
    const queue = kind === 'tasks' ? status.components[`tasks:${id}`] : undefined
    if (cache !== undefined) caches.push([id, cache])
    else if (layer !== undefined) layers.push([id, layer])
    else if (queue !== undefined) queues.push([id, queue])
  }
  return { status, at: Date.now(), caches, layers, queues }
}

const COMPONENT = { 'failsoft.component': 'component' }
const NAMESPACE = { 'failsoft.cache.namespace': 'namespace' }
const LAYER = { 'failsoft.channels.layer': 'layer' }
const QUEUE = { 'messaging.destination.name': 'queue' }

const num = (value: unknown): number => (typeof value === 'number' ? value : 0)

function perCache(read: (cache: CacheStatus) => number): (snapshot: Snapshot) => Observation[] {
  return (s) =>
    s.caches.map(([namespace, cache]) => ({
      attributes: { 'failsoft.cache.namespace': namespace },
      value: num(read(cache)),
    }))
}

function perLayer(
  read: (layer: ChannelLayerStatus) => number,
): (snapshot: Snapshot) => Observation[] {
  return (s) =>
    s.layers.map(([layer, status]) => ({
      attributes: { 'failsoft.channels.layer': layer },
      value: num(read(status)),
    }))
}

function perQueue(read: (queue: TaskQueueStatus) => number): (snapshot: Snapshot) => Observation[] {
  return (s) =>
    s.queues.map(([queue, status]) => ({
      attributes: { 'messaging.destination.name': queue },
      value: num(read(status)),
    }))
}

/** Each queue's counts, one observation per `failsoft.task.outcome`. */
function queueCounts(
  outcomes: Readonly<Record<string, keyof TaskQueueStatus['counts']>>,
): (snapshot: Snapshot) => Observation[] {
  return (s) =>
    s.queues.flatMap(([queue, status]) =>
      Object.entries(outcomes).map(([outcome, field]) => ({
        attributes: { 'messaging.destination.name': queue, 'failsoft.task.outcome': outcome },
        value: num(status.counts[field]),
      })),
    )
}

const DROP_REASONS: Readonly<Record<string, (layer: ChannelLayerStatus) => number>> = {
  channel_full: (l) => l.skippedFull,
  expired: (l) => l.expired,
  undeliverable: (l) => l.undeliverable,
  cross_process_gap: (l) => l.crossProcessGaps,
  outbox_count: (l) => l.outbox.droppedCount,
  outbox_bytes: (l) => l.outbox.droppedBytes,
  outbox_age: (l) => l.outbox.droppedAge,
}

export const statusFigures: readonly StatusFigure[] = [
  // ── health ──
  {
    name: 'failsoft.health.state',
    prometheus: 'failsoft_health_state',
    description: 'Health state of the instance: 1 for the current state, 0 for the others',
    unit: '1',
    kind: 'gauge',
    labels: { 'failsoft.health.state': 'state' },
    read: (s) =>
      (['starting', 'up', 'down'] as const).map((state) => ({
        attributes: { 'failsoft.health.state': state },
        value: s.status.redis.state === state ? 1 : 0,
      })),
  },
  {
    name: 'failsoft.redis.available',
    prometheus: 'failsoft_redis_up',
    description: '1 while the components use Redis, 0 while they serve from their fallbacks',
    unit: '1',
    kind: 'gauge',
    labels: {},
    read: (s) => [{ attributes: {}, value: s.status.redis.available ? 1 : 0 }],
  },
  {
    name: 'failsoft.health.forced',
    prometheus: 'failsoft_fallback_forced',
    description: '1 while the operator switch (forceFallback) forces the fallbacks',
    unit: '1',
    kind: 'gauge',
    labels: {},
    read: (s) => [{ attributes: {}, value: s.status.redis.forced ? 1 : 0 }],
  },
  {
    name: 'failsoft.health.transitions',
    prometheus: 'failsoft_transitions_total',
    description:
      'Health transitions: to "down" (fallbacks), to "up" (Redis, start-up included), "reset" (Redis came back empty), "rollback" (Redis forgot acknowledged writes)',
    unit: '{transition}',
    kind: 'counter',
    labels: { 'failsoft.health.transition': 'to' },
    read: (s) => {
      const transitions = s.status.redis.transitions
      return (['down', 'up', 'reset', 'rollback'] as const).map((to) => ({
        attributes: { 'failsoft.health.transition': to },
        value: num(transitions[to]),
      }))
    },
  },
  {
    name: 'failsoft.health.outage.elapsed',
    prometheus: 'failsoft_outage_elapsed_seconds',
    description: 'How long the current outage has lasted; 0 while Redis is used',
    unit: 's',
    kind: 'gauge',
    labels: {},
    read: (s) => {
      const { state, since } = s.status.redis
      const elapsed = state === 'down' ? Math.max(0, s.at - Date.parse(since)) / 1000 : 0
      return [{ attributes: {}, value: elapsed }]
    },
  },
  {
    name: 'failsoft.redis.rtt',
    prometheus: 'failsoft_redis_rtt_seconds',
    description:
      'Smoothed round trip to Redis measured by the heartbeats (absent before the first)',
    unit: 's',
    kind: 'gauge',
    labels: {},
    read: (s) =>
      s.status.redis.rttMs === null ? [] : [{ attributes: {}, value: s.status.redis.rttMs / 1000 }],
  },
  // ── every component ──
  {
    name: 'failsoft.component.on_redis',
    prometheus: 'failsoft_component_on_redis',
    description: '1 when the component serves from Redis, 0 from its fallback',
    unit: '1',
    kind: 'gauge',
    labels: COMPONENT,
    read: (s) =>
      Object.entries(s.status.components).map(([component, status]) => ({
        attributes: { 'failsoft.component': component },
        value: status.backend === 'redis' ? 1 : 0,
      })),
  },
  {
    name: 'failsoft.fallback.operations',
    prometheus: 'failsoft_fallback_operations_total',
    description: 'Operations served by a fallback because Redis was unavailable, per component',
    unit: '{operation}',
    kind: 'counter',
    labels: COMPONENT,
    read: (s) =>
      Object.entries(s.status.components).map(([component, status]) => ({
        attributes: { 'failsoft.component': component },
        value: num(status.fallbackOps),
      })),
  },
  // ── cache ──
  {
    name: 'failsoft.cache.journal.size',
    prometheus: 'failsoft_cache_journal_keys',
    description: 'Keys changed without Redis, to be invalidated in Redis by the next recovery',
    unit: '{key}',
    kind: 'gauge',
    labels: NAMESPACE,
    read: perCache((c) => c.journal.keys),
  },
  {
    name: 'failsoft.cache.journal.overflows',
    prometheus: 'failsoft_cache_journal_overflows_total',
    description: 'Times the journal overflowed (the recovery then moves the namespace generation)',
    unit: '{overflow}',
    kind: 'counter',
    labels: NAMESPACE,
    read: perCache((c) => c.journal.overflows),
  },
  {
    name: 'failsoft.cache.reconciled_keys',
    prometheus: 'failsoft_cache_reconciled_keys_total',
    description: 'Keys deleted in Redis by reconciliation after an outage',
    unit: '{key}',
    kind: 'counter',
    labels: NAMESPACE,
    read: perCache((c) => c.reconciledKeys),
  },
  {
    name: 'failsoft.cache.generation_bumps',
    prometheus: 'failsoft_cache_generation_bumps_total',
    description: 'Namespace generation moves (clear(), a journal overflow, a deep rollback)',
    unit: '{bump}',
    kind: 'counter',
    labels: NAMESPACE,
    read: perCache((c) => c.generationBumps),
  },
  {
    name: 'failsoft.cache.rollbacks',
    prometheus: 'failsoft_cache_rollbacks_total',
    description: 'Recoveries after which the cache reconciled writes Redis may have forgotten',
    unit: '{recovery}',
    kind: 'counter',
    labels: NAMESPACE,
    read: perCache((c) => c.rollbacks),
  },
  {
    name: 'failsoft.cache.memory.entries',
    prometheus: 'failsoft_cache_memory_entries',
    description: 'Entries in the in-process memory tier',
    unit: '{entry}',
    kind: 'gauge',
    labels: NAMESPACE,
    read: perCache((c) => c.memory.entries),
  },
  // ── channel layer ──
  {
    name: 'failsoft.channels.outbox.size',
    prometheus: 'failsoft_channel_outbox_messages',
    description: 'Cross-process messages waiting in the outbox for Redis',
    unit: '{message}',
    kind: 'gauge',
    labels: LAYER,
    read: perLayer((l) => l.outbox.size),
  },
  {
    name: 'failsoft.channels.outbox.bytes',
    prometheus: 'failsoft_channel_outbox_bytes',
    description: 'Bytes of the messages waiting in the outbox',
    unit: 'By',
    kind: 'gauge',
    labels: LAYER,
    read: perLayer((l) => l.outbox.bytes),
  },
  {
    name: 'failsoft.channels.outbox.flushed',
    prometheus: 'failsoft_channel_outbox_flushed_total',
    description: 'Messages the outbox published once Redis was back',
    unit: '{message}',
    kind: 'counter',
    labels: LAYER,
    read: perLayer((l) => l.outbox.flushed),
  },
  {
    name: 'failsoft.channels.messages.dropped',
    prometheus: 'failsoft_channel_dropped_messages_total',
    description:
      'Channel-layer messages not delivered, by reason (outbox_*: dropped from the outage outbox by its count, bytes or age bound)',
    unit: '{message}',
    kind: 'counter',
    labels: { ...LAYER, 'failsoft.drop.reason': 'reason' },
    read: (s) =>
      s.layers.flatMap(([layer, status]) =>
        Object.entries(DROP_REASONS).map(([reason, read]) => ({
          attributes: { 'failsoft.channels.layer': layer, 'failsoft.drop.reason': reason },
          value: num(read(status)),
        })),
      ),
  },
  {
    name: 'failsoft.channels.repaired',
    prometheus: 'failsoft_channel_repaired_messages_total',
    description: 'Cross-process messages received again through gap repair',
    unit: '{message}',
    kind: 'counter',
    labels: LAYER,
    read: perLayer((l) => l.repair.repaired),
  },
  {
    name: 'failsoft.websocket.clients',
    prometheus: 'failsoft_websocket_clients',
    description: 'WebSocket clients connected to this process',
    unit: '{client}',
    kind: 'gauge',
    labels: LAYER,
    read: perLayer((l) => l.websocketClients),
  },
  // ── tasks ──
  {
    name: 'failsoft.tasks.dispatches',
    prometheus: 'failsoft_task_dispatches_total',
    description: 'Dispatches by what became of them',
    unit: '{dispatch}',
    kind: 'counter',
    labels: { ...QUEUE, 'failsoft.task.outcome': 'outcome' },
    read: queueCounts({
      queued: 'queued',
      inline_ok: 'inlineOk',
      inline_failed: 'inlineFailed',
      spooled: 'spooled',
      deferred: 'deferred',
      dropped: 'dropped',
      duplicate: 'duplicate',
      rejected: 'rejected',
      ambiguous: 'ambiguous',
      unconfirmed: 'unconfirmed',
    }),
  },
  {
    name: 'failsoft.tasks.inline.runs',
    prometheus: 'failsoft_task_inline_runs_total',
    description: 'Tasks run inline (the fallback) because Redis was unavailable, by outcome',
    unit: '{run}',
    kind: 'counter',
    labels: { ...QUEUE, 'failsoft.task.outcome': 'outcome' },
    read: queueCounts({ ok: 'inlineOk', failed: 'inlineFailed' }),
  },
  {
    name: 'failsoft.tasks.inline.running',
    prometheus: 'failsoft_task_inline_running',
    description: 'Inline runs under way now',
    unit: '{run}',
    kind: 'gauge',
    labels: QUEUE,
    read: perQueue((q) => q.inline.running),
  },
  {
    name: 'failsoft.tasks.spool.depth',
    prometheus: 'failsoft_task_spool_depth',
    description: 'Jobs waiting in the spool for Redis',
    unit: '{job}',
    kind: 'gauge',
    labels: QUEUE,
    read: perQueue((q) => q.spoolDepth),
  },
  {
    name: 'failsoft.tasks.spool.replayed',
    prometheus: 'failsoft_task_spool_replayed_total',
    description: 'Spooled jobs replayed to the queue after an outage',
    unit: '{job}',
    kind: 'counter',
    labels: QUEUE,
    read: perQueue((q) => q.counts.replayed),
  },
  {
    name: 'failsoft.tasks.markers.pending',
    prometheus: 'failsoft_task_markers_pending',
    description: '"Done" markers of inline runs waiting to be written to Redis',
    unit: '{marker}',
    kind: 'gauge',
    labels: QUEUE,
    read: perQueue((q) => q.markersPending),
  },
]
