import assert from 'node:assert/strict'
import diagnostics from 'node:diagnostics_channel'
import { describe, test } from 'node:test'
import * as otelApi from '@opentelemetry/api'
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricData,
} from '@opentelemetry/sdk-metrics'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base'
import type { Telemetry } from 'bullmq'
import { Registry } from 'prom-client'
import { channelNames, createFailsoft, type Failsoft } from '../../src/index.js'
import { instrumentOpenTelemetry, type OpenTelemetryApi } from '../../src/otel.js'
import { collectFailsoftMetrics } from '../../src/prometheus.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { captureLogs } from '../support/log-capture.js'

const PASSWORD = 'metrics-s3cret-pw'

// The real api fits the structural type failsoft/otel declares (a compile-time check).
const api: OpenTelemetryApi = otelApi

/** An OpenTelemetry SDK set up as an application would, with in-memory exporters. */
function openTelemetrySdk(): {
  meterProvider: MeterProvider
  tracerProvider: BasicTracerProvider
  metrics(): Promise<MetricData[]>
  spans(): ReadableSpan[]
  shutdown(): Promise<void>
} {
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({
    exporter: metricExporter,
    exportIntervalMillis: 3_600_000,
  })
  const meterProvider = new MeterProvider({ readers: [reader] })
  const spanExporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(spanExporter)],
  })
  return {
    meterProvider,
    tracerProvider,
    async metrics() {
      metricExporter.reset()
      await reader.forceFlush()
      return metricExporter
        .getMetrics()
        .flatMap((resource) => resource.scopeMetrics)
        .filter((scope) => scope.scope.name === 'failsoft')
        .flatMap((scope) => scope.metrics)
    },
    spans: () => spanExporter.getFinishedSpans(),
    async shutdown() {
      await meterProvider.shutdown()
      await tracerProvider.shutdown()
    },
  }
}

/** The value of a gauge or counter point whose attributes include `attributes`. */
function point(
  metrics: MetricData[],
  name: string,
  attributes: Record<string, string> = {},
): number | undefined {
  const metric = metrics.find((m) => m.descriptor.name === name)
  assert.ok(metric, `metric ${name} is exported`)
  const found = metric.dataPoints.find((p) =>
    Object.entries(attributes).every(([key, value]) => p.attributes[key] === value),
  )
  if (found === undefined) return undefined
  assert.equal(typeof found.value, 'number', `${name} is a gauge or a sum`)
  return found.value as number
}

/** The count and sum of a histogram's points whose attributes include `attributes`. */
function histogram(
  metrics: MetricData[],
  name: string,
  attributes: Record<string, string> = {},
): { count: number; sum: number } {
  const metric = metrics.find((m) => m.descriptor.name === name)
  assert.ok(metric, `histogram ${name} is exported`)
  assert.equal(metric.dataPointType, DataPointType.HISTOGRAM)
  let count = 0
  let sum = 0
  for (const p of metric.dataPoints) {
    if (!Object.entries(attributes).every(([key, value]) => p.attributes[key] === value)) continue
    const value = p.value as { count: number; sum?: number }
    count += value.count
    sum += value.sum ?? 0
  }
  return { count, sum }
}

/** One sample of the Prometheus text format, e.g. `failsoft_redis_up` or `x{a="b"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

let counter = 0
function open(t: { after(fn: () => unknown): void }, url: string | null): Failsoft {
  const failsoft = createFailsoft({
    redis: url,
    prefix: `m${process.pid}x${++counter}`,
    logger: captureLogs().logger,
    health: { probeIntervalMs: 50 },
  })
  t.after(() => failsoft.close())
  return failsoft
}

const everyChannel = (): string[] =>
  Object.values(channelNames).flatMap((name) =>
    name.startsWith('failsoft:health.') && !name.includes('recovery')
      ? [name]
      : ['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((e) => `tracing:${name}:${e}`),
  )

describe('metrics and traces from the library', () => {
  test('no diagnostics channel has a subscriber until an exporter is attached, nor after it is disposed', async (t) => {
    const subscribed = (): string[] =>
      everyChannel().filter((name) => diagnostics.hasSubscribers(name))
    assert.deepEqual(subscribed(), [])
    const failsoft = open(t, null)
    const registry = new Registry()
    const collector = collectFailsoftMetrics(failsoft, { register: registry })
    const otel = await instrumentOpenTelemetry(failsoft, { api })
    assert.equal(otel.enabled, true)
    assert.ok(subscribed().length > 0)
    collector.dispose()
    otel.dispose()
    assert.deepEqual(subscribed(), [])
    assert.deepEqual(registry.getMetricsAsArray(), [])
  })

  test('exports the same figures through an OpenTelemetry SDK and prom-client during a real outage and recovery', async (t) => {
    const server = await startRedis(t, { password: PASSWORD })
    const failsoft = open(t, server.url)
    const sdk = openTelemetrySdk()
    t.after(() => sdk.shutdown())
    // `api` not passed: failsoft/otel imports @opentelemetry/api itself.
    const otel = await instrumentOpenTelemetry(failsoft, {
      meterProvider: sdk.meterProvider,
      tracerProvider: sdk.tracerProvider,
    })
    t.after(() => otel.dispose())
    assert.deepEqual([otel.enabled, otel.reason], [true, null])
    const registry = new Registry()
    const collector = collectFailsoftMetrics(failsoft, { register: registry })
    t.after(() => collector.dispose())

    assert.equal(await failsoft.ready(), 'up')
    const cache = failsoft.cache({ namespace: 'm' })
    const layer = failsoft.channels()
    const tasks = failsoft.tasks({ queue: 'mq' })
    const double = tasks.define('double', (n: number) => n * 2)
    const later = tasks.define('later', () => 'done', { fallback: 'spool' })
    const workerRan: string[] = []
    tasks.define('report', () => workerRan.push('report'))
    tasks.work({ concurrency: 1 })
    await cache.set('a', 1)
    assert.equal(await cache.get('a'), 1)

    // ── the outage ──
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', { message: 'down after the kill' })
    await cache.get('a') // served from memory
    await cache.set('b', 2) // journaled: deleted in Redis on recovery
    await layer.groupSend('room', { type: 'hello' })
    const inline = await double.dispatch(21)
    assert.deepEqual([inline.mode, inline.mode === 'inline' && inline.ok], ['inline', true])
    assert.equal((await later.dispatch(null)).mode, 'spooled')

    const duringOtel = await sdk.metrics()
    const duringProm = await registry.metrics()
    const outbox = layer.status().outbox.size
    assert.ok(outbox >= 1, 'the cross-process message waits in the outbox')
    const down = { 'failsoft.health.state': 'down' }
    assert.equal(point(duringOtel, 'failsoft.health.state', down), 1)
    assert.equal(point(duringOtel, 'failsoft.redis.available'), 0)
    assert.equal(sample(duringProm, 'failsoft_redis_up'), 0)
    assert.equal(sample(duringProm, 'failsoft_health_state{state="down"}'), 1)
    const ns = { 'failsoft.cache.namespace': 'm' }
    assert.equal(point(duringOtel, 'failsoft.cache.journal.size', ns), 1)
    assert.equal(sample(duringProm, 'failsoft_cache_journal_keys{namespace="m"}'), 1)
    const main = { 'failsoft.channels.layer': 'default' }
    assert.equal(point(duringOtel, 'failsoft.channels.outbox.size', main), outbox)
    assert.equal(sample(duringProm, 'failsoft_channel_outbox_messages{layer="default"}'), outbox)
    const mq = { 'messaging.destination.name': 'mq' }
    assert.equal(point(duringOtel, 'failsoft.tasks.spool.depth', mq), 1)
    assert.equal(sample(duringProm, 'failsoft_task_spool_depth{queue="mq"}'), 1)
    assert.equal(
      point(duringOtel, 'failsoft.tasks.inline.runs', { ...mq, 'failsoft.task.outcome': 'ok' }),
      1,
    )
    assert.equal(sample(duringProm, 'failsoft_task_inline_runs_total{queue="mq",outcome="ok"}'), 1)
    const cacheOps = point(duringOtel, 'failsoft.fallback.operations', {
      'failsoft.component': 'cache:m',
    })
    assert.ok(cacheOps !== undefined && cacheOps >= 2, 'the outage reads and writes are counted')
    assert.equal(
      sample(duringProm, 'failsoft_fallback_operations_total{component="cache:m"}'),
      cacheOps,
    )
    assert.ok((point(duringOtel, 'failsoft.health.outage.elapsed') ?? 0) > 0)

    // ── the recovery ──
    await server.restart({ keepData: true })
    await waitFor(() => failsoft.health.available, { timeoutMs: 10_000, message: 'up again' })
    await waitFor(
      () =>
        tasks.status().spoolDepth === 0 &&
        tasks.status().counts.replayed === 1 &&
        layer.status().outbox.size === 0,
      { timeoutMs: 10_000, message: 'spool replayed, outbox flushed' },
    )
    await tasks.dispatch('report', null)
    await waitFor(() => workerRan.length === 1, { timeoutMs: 10_000, message: 'a worker run' })
    await waitFor(
      () =>
        sdk
          .spans()
          .some((s) => s.name === 'process mq' && s.attributes['failsoft.task.name'] === 'report'),
      { message: 'the worker run span ended' },
    )

    const afterOtel = await sdk.metrics()
    const afterProm = await registry.metrics()
    const transition = (to: string): number | undefined =>
      point(afterOtel, 'failsoft.health.transitions', { 'failsoft.health.transition': to })
    assert.deepEqual([transition('down'), transition('up')], [1, 2]) // start-up, then the recovery
    assert.equal(sample(afterProm, 'failsoft_transitions_total{to="down"}'), 1)
    assert.equal(sample(afterProm, 'failsoft_transitions_total{to="up"}'), 2)
    assert.equal(point(afterOtel, 'failsoft.health.state', { 'failsoft.health.state': 'up' }), 1)
    assert.equal(point(afterOtel, 'failsoft.health.outage.elapsed'), 0)

    const outage = histogram(afterOtel, 'failsoft.health.outage.duration')
    assert.equal(outage.count, 1)
    assert.ok(outage.sum > 0)
    assert.equal(sample(afterProm, 'failsoft_outage_duration_seconds_count'), 1)
    assert.ok((sample(afterProm, 'failsoft_outage_duration_seconds_sum') ?? 0) > 0)

    for (const component of ['cache:m', 'channels:default', 'tasks:mq']) {
      const ok = { 'failsoft.component': component, 'failsoft.recovery.outcome': 'ok' }
      assert.ok(
        (point(afterOtel, 'failsoft.recovery.steps', ok) ?? 0) >= 1,
        `${component} recovered`,
      )
      const series = `failsoft_recovery_steps_total{component="${component}",outcome="ok"}`
      assert.ok((sample(afterProm, series) ?? 0) >= 1, series)
    }
    assert.ok(histogram(afterOtel, 'failsoft.recovery.duration').count >= 1)
    assert.ok((point(afterOtel, 'failsoft.cache.reconciled_keys', ns) ?? 0) >= 1)
    assert.equal(point(afterOtel, 'failsoft.cache.journal.size', ns), 0)
    assert.equal(point(afterOtel, 'failsoft.tasks.spool.replayed', mq), 1)
    assert.equal(sample(afterProm, 'failsoft_task_spool_replayed_total{queue="mq"}'), 1)
    assert.ok((point(afterOtel, 'failsoft.channels.outbox.flushed', main) ?? 0) >= 1)

    // Redis round trips, under the database client conventions.
    const redis = {
      'db.system.name': 'redis',
      'server.address': server.host,
      'server.port': String(server.port),
    }
    const commands = histogram(afterOtel, 'db.client.operation.duration', redis)
    assert.ok(commands.count >= 2, 'the cache commands are timed')
    assert.ok((sample(afterProm, 'failsoft_redis_command_duration_seconds_count') ?? 0) >= 2)

    // Task runs: the inline one and the worker's, under the messaging conventions.
    const runs = histogram(afterOtel, 'messaging.process.duration', {
      'failsoft.task.mode': 'inline',
    })
    assert.equal(runs.count, 1)

    // Spans: recovery rounds with a child per component step, task runs, dispatches.
    const spans = sdk.spans()
    // The start-up round may run before the dynamic import of the api resolved: look for the
    // round after the outage.
    const last = spans.find(
      (s) =>
        s.name === 'failsoft.recovery' &&
        Number(s.attributes['failsoft.recovery.downtime_ms']) > 0 &&
        s.status.code !== otelApi.SpanStatusCode.ERROR,
    )
    assert.ok(last, 'the recovery round after the outage has its span')
    const steps = spans.filter(
      (s) =>
        s.name === 'failsoft.recovery.step' &&
        s.parentSpanContext?.spanId === last.spanContext().spanId,
    )
    assert.deepEqual(steps.map((s) => s.attributes['failsoft.component']).sort(), [
      'cache:m',
      'channels:default',
      'tasks:mq',
    ])
    const inlineRun = spans.find(
      (s) => s.name === 'process mq' && s.attributes['failsoft.task.mode'] === 'inline',
    )
    assert.ok(inlineRun, 'the inline run has its span')
    assert.equal(inlineRun.kind, otelApi.SpanKind.INTERNAL)
    assert.equal(inlineRun.attributes['failsoft.task.name'], 'double')
    const workerRun = spans.find(
      (s) => s.name === 'process mq' && s.attributes['failsoft.task.name'] === 'report',
    )
    assert.ok(workerRun)
    assert.equal(workerRun.kind, otelApi.SpanKind.CONSUMER)
    assert.equal(workerRun.attributes['messaging.system'], 'bullmq')
    const sends = spans.filter((s) => s.name === 'send mq')
    assert.deepEqual(
      sends.map((s) => s.attributes['failsoft.task.dispatch.mode']),
      ['inline', 'spooled', 'queued'],
    )

    // Never a credential, never the full URL.
    const exported = JSON.stringify([afterOtel, spans.map((s) => s.attributes)]) + afterProm
    assert.ok(!exported.includes(PASSWORD), 'no password in what is exported')
    assert.ok(!exported.includes(server.url), 'no Redis URL in what is exported')
  })

  test('a transition channel carries the cause without credentials', async (t) => {
    const server = await startRedis(t, { password: PASSWORD })
    const failsoft = open(t, server.url.replace(PASSWORD, `${PASSWORD}-wrong`))
    const seen: Array<{ error: Error }> = []
    const listener = (message: unknown): void => {
      const { health, error } = message as { health: unknown; error: Error }
      if (health === failsoft.health) seen.push({ error })
    }
    diagnostics.subscribe(channelNames.healthDown, listener)
    t.after(() => diagnostics.unsubscribe(channelNames.healthDown, listener))
    assert.equal(await failsoft.ready(), 'down')
    assert.equal(seen.length, 1)
    const { error } = seen[0] as { error: Error }
    assert.ok(error instanceof Error)
    assert.ok(!JSON.stringify({ ...error, message: error.message }).includes(PASSWORD))
    assert.equal(Object.keys(error).includes('command'), false, 'not the ioredis error itself')
  })

  test("hands BullMQ's own telemetry option to the queue and the worker: its producer span, and the context the worker continues", async (t) => {
    const server = await startRedis(t)
    const failsoft = open(t, server.url)
    const started: Array<{ name: string; kind: unknown }> = []
    const continued: string[] = []
    const span = {
      setSpanOnContext: (context: unknown) => context,
      setAttribute: () => undefined,
      setAttributes: () => undefined,
      addEvent: () => undefined,
      recordException: () => undefined,
      end: () => undefined,
    }
    // A stand-in for bullmq-otel: records what BullMQ asks of it.
    const telemetry = {
      tracer: {
        startSpan(name: string, options?: { kind?: unknown }) {
          started.push({ name, kind: options?.kind })
          return span
        },
      },
      contextManager: {
        with: <A extends () => unknown>(_context: unknown, fn: A) => fn(),
        active: () => ({}),
        getMetadata: () => 'context-of-the-dispatch',
        fromMetadata: (context: unknown, metadata: string) => {
          continued.push(metadata)
          return context
        },
      },
    } as unknown as Telemetry
    const tasks = failsoft.tasks({ queue: 'tq', telemetry })
    const ran: number[] = []
    const report = tasks.define('report', (n: number) => ran.push(n))
    tasks.work({ concurrency: 1 })
    assert.equal(await failsoft.ready(), 'up')
    assert.equal((await report.dispatch(7)).mode, 'queued')
    await waitFor(() => ran.length === 1, { timeoutMs: 10_000, message: 'the worker ran it' })
    assert.ok(
      started.some((s) => s.name === 'add tq.report'),
      `BullMQ's producer span (${started.map((s) => s.name).join(', ')})`,
    )
    assert.ok(
      started.some((s) => s.name === 'process tq'),
      "BullMQ's consumer span",
    )
    assert.ok(continued.includes('context-of-the-dispatch'), 'the worker continued the context')
    assert.throws(() => failsoft.tasks({ queue: 'bad', telemetry: {} as Telemetry }), {
      code: 'FAILSOFT_INVALID_OPTION',
    })
  })
})
