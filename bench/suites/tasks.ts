/**
 * Tasks suite: failsoft's task queue against raw BullMQ, in the same run, on real
 * redis-server processes.
 *
 * 1. Dispatch throughput with Redis up: `task.dispatch()` vs BullMQ `Queue.add()` (its
 *    defaults), sequential and 50 concurrent, no worker running.
 * 2. Dispatch latency through faults — kill (restart with data), freeze, cold start (Redis not
 *    running when the app starts) and, in a full run, a 20 s outage: every setup dispatches at
 *    a fixed rate (open loop, 50/s) at the same time against the same server, with a worker
 *    each; a peer dispatch that hangs is cut at 30 s and counted.
 * 3. Lost and duplicated tasks: every execution is counted by a sequence number carried in the
 *    job data, on the workers and inline.
 *
 * Peers: BullMQ with its defaults (offline queue on), BullMQ with `enableOfflineQueue: false`
 * (its documented producer setting), and the community fallback — fail fast plus a 500 ms
 * command timeout, and run the task inline when `add` throws.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Queue, Worker, type ConnectionOptions } from 'bullmq'
import { Redis } from 'ioredis'
import { createFailsoft, type Failsoft, type Task, type TaskQueue } from '../../src/index.js'
// failsoft's own id source (pooled random bytes): a randomBytes(16) per add cost BullMQ 15 % of
// its throughput at 50 concurrent (measured), which would be charged to the id otherwise.
import { randomJobId } from '../../src/tasks/task.js'
import { RedisServer, sleep } from '../../test/support/fault-kit.js'
import { clearJobs } from '../clear-jobs.js'
import {
  median,
  percentile,
  ratio,
  type BenchContext,
  type Chart,
  type Suite,
  type Table,
  measureThroughput,
  slowestPerBucket,
  type Throughput,
} from '../report.js'

// ── setups ─────────────────────────────────────────────────────────────────────────────────

type Outcome = 'queued' | 'inline' | 'spooled' | 'error' | 'other'

/** The keys of the jobs a window queued (BullMQ's setups, then failsoft's). */
const JOB_KEYS = ['bull:bench*', 'bt*:tasks:*']

interface Execution {
  count: number
  firstAt: number
  byWorker: boolean
}

interface Setup {
  readonly name: string
  /** Resolves with where the task went; rejects when the peer throws. */
  dispatch(seq: number): Promise<Outcome>
  readonly executions: Map<number, Execution>
  close(): Promise<void>
}

interface SetupOptions {
  url: string
  index: number
  worker: boolean
  spoolDir: string
}

type Factory = (options: SetupOptions) => Promise<Setup>

/** Errors the peers emit as events (not thrown to callers): counted, never fatal here. */
let emittedErrors = 0
const countError = (): void => {
  emittedErrors++
}

function hostPort(url: string): { host: string; port: number } {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: Number(parsed.port) }
}

function recorder(executions: Map<number, Execution>, byWorker: boolean) {
  return (seq: number): void => {
    const seen = executions.get(seq)
    if (seen) seen.count++
    else executions.set(seq, { count: 1, firstAt: performance.now(), byWorker })
  }
}

function raceClose(promise: Promise<unknown>, ms = 3000): Promise<unknown> {
  return Promise.race([promise.catch(countError), sleep(ms)])
}

const failsoftSetup: Factory = async ({ url, index, worker, spoolDir }) => {
  const failsoft: Failsoft = createFailsoft({ redis: url, prefix: `bt${index}`, logger: false })
  const tasks: TaskQueue = failsoft.tasks({
    queue: 'bench',
    spool: { path: join(spoolDir, `spool-${index}.jsonl`) },
  })
  const executions = new Map<number, Execution>()
  const onWorker = recorder(executions, true)
  const onInline = recorder(executions, false)
  const job: Task<{ seq: number }> = tasks.define('job', (args: { seq: number }, ctx) => {
    if (ctx.mode === 'worker') onWorker(args.seq)
    else onInline(args.seq)
  })
  const handle = worker ? tasks.work({ concurrency: 50 }) : null
  return {
    name: 'failsoft',
    executions,
    dispatch: async (seq) => {
      const result = await job.dispatch({ seq })
      if (result.mode === 'queued' || result.mode === 'inline' || result.mode === 'spooled') {
        return result.mode
      }
      return result.mode === 'rejected' ? 'error' : 'other'
    },
    close: async () => {
      await handle?.close({ timeoutMs: 2000 })
      await raceClose(failsoft.close(), 5000)
    },
  }
}

function bullmqSetup(
  name: string,
  producerConnection: Record<string, unknown>,
  inlineOnError: boolean,
  jobIds = false,
): Factory {
  return async ({ url, index, worker }) => {
    const queueName = `bench${index}`
    const connection = { ...hostPort(url), ...producerConnection } as ConnectionOptions
    const queue = new Queue(queueName, { connection })
    queue.on('error', countError)
    const executions = new Map<number, Execution>()
    const onWorker = recorder(executions, true)
    const onInline = recorder(executions, false)
    let consumer: Worker | null = null
    if (worker) {
      // The worker with BullMQ's own defaults (its blocking connection needs the offline queue).
      consumer = new Worker(
        queueName,
        async (job) => {
          onWorker((job.data as { seq: number }).seq)
        },
        { connection: hostPort(url), concurrency: 50 },
      )
      consumer.on('error', countError)
    }
    return {
      name,
      executions,
      dispatch: async (seq) => {
        try {
          await queue.add('job', { seq }, jobIds ? { jobId: randomJobId() } : undefined)
          return 'queued'
        } catch (error) {
          if (!inlineOnError) throw error
          onInline(seq) // the community fallback: "Redis failed, run it here"
          return 'inline'
        }
      },
      close: async () => {
        if (consumer) await raceClose(consumer.close(true))
        await raceClose(queue.close())
        await raceClose(queue.disconnect())
      },
    }
  }
}

const FAILSOFT = 'failsoft'
const BULLMQ = 'BullMQ (defaults)'
const BULLMQ_JOB_IDS = 'BullMQ, a random jobId per add'

const throughputSetups: Array<[string, Factory]> = [
  [BULLMQ, bullmqSetup(BULLMQ, {}, false)],
  [FAILSOFT, failsoftSetup],
  // Not a target: what a caller-chosen job id costs BullMQ (failsoft dispatches with an
  // idempotency key use the key's hash as the job id), for the reader.
  [BULLMQ_JOB_IDS, bullmqSetup(BULLMQ_JOB_IDS, {}, false, true)],
]

const faultSetups: Array<[string, Factory]> = [
  [FAILSOFT, failsoftSetup],
  [BULLMQ, bullmqSetup(BULLMQ, {}, false)],
  [
    'BullMQ (enableOfflineQueue: false)',
    bullmqSetup('BullMQ (enableOfflineQueue: false)', { enableOfflineQueue: false }, false),
  ],
  [
    'BullMQ fail-fast + inline on error',
    bullmqSetup(
      'BullMQ fail-fast + inline on error',
      { enableOfflineQueue: false, commandTimeout: 500 },
      true,
    ),
  ],
]

// ── 1. throughput ──────────────────────────────────────────────────────────────────────────

interface ThroughputRow {
  setup: string
  concurrency: number
  opsPerSec: number
  p50: number
  p99: number
}

async function throughput(ctx: BenchContext, spoolDir: string): Promise<ThroughputRow[]> {
  const server = await RedisServer.start()
  const rows: ThroughputRow[] = []
  const windowMs = ctx.quick ? 250 : 700
  const admin = new Redis(server.url)
  try {
    const setups: Setup[] = []
    for (const [index, [, factory]] of throughputSetups.entries()) {
      setups.push(await factory({ url: server.url, index, worker: false, spoolDir }))
    }
    await sleep(300) // failsoft's first health decision
    try {
      for (const concurrency of [1, 50]) {
        const runs = new Map<string, Throughput[]>()
        for (const setup of setups)
          await measureThroughput((s) => setup.dispatch(s), concurrency, 200)
        // Twice ctx.runs, in ABBA order: the shared machine's noise hits both setups alike.
        // Every window starts from empty queues (no worker runs, so a window leaves ~30 k jobs
        // behind): otherwise the setup measured later pays for a larger data set in Redis.
        for (let r = 0; r < ctx.runs * 2; r++) {
          for (const setup of r % 2 === 0 ? setups : [...setups].reverse()) {
            await clearJobs(admin, JOB_KEYS)
            const m = await measureThroughput((s) => setup.dispatch(s), concurrency, windowMs)
            runs.set(setup.name, [...(runs.get(setup.name) ?? []), m])
          }
        }
        for (const setup of setups) {
          const measures = runs.get(setup.name) ?? []
          const row = {
            setup: setup.name,
            concurrency,
            opsPerSec: median(measures.map((m) => m.opsPerSec)),
            p50: median(measures.map((m) => m.p50)),
            p99: median(measures.map((m) => m.p99)),
          }
          rows.push(row)
          ctx.log(`${setup.name} c${concurrency}: ${Math.round(row.opsPerSec)} dispatches/s`)
        }
      }
    } finally {
      for (const setup of setups) await setup.close()
    }
  } finally {
    admin.disconnect()
    await server.stop()
  }
  return rows
}

// ── 2 + 3. faults: latency, lost, duplicated ───────────────────────────────────────────────

type FaultKind = 'kill' | 'freeze' | 'cold start' | 'outage'

interface Sample {
  seq: number
  /** ms since the fault started (negative: before). */
  at: number
  latency: number
  outcome: Outcome | 'capped'
}

interface FaultResult {
  setup: string
  samples: Sample[]
  executions: Map<number, Execution>
  faultEnd: number
  /** ms after the fault ended until a dispatch was taken by Redis again. */
  backOnRedis: number | null
  /** ms after the fault ended until a worker ran a job again. */
  workerBack: number | null
}

const CAP_MS = 30_000
const RATE_MS = 20

async function capped(promise: Promise<Outcome>): Promise<Outcome | 'capped'> {
  let timer: NodeJS.Timeout | undefined
  const cap = new Promise<'capped'>((resolve) => {
    timer = setTimeout(() => resolve('capped'), CAP_MS)
  })
  try {
    return await Promise.race([promise, cap])
  } catch {
    return 'error'
  } finally {
    clearTimeout(timer)
    promise.catch(() => undefined) // its outcome was recorded (or cut at the cap)
  }
}

async function faultScenario(
  ctx: BenchContext,
  kind: FaultKind,
  durationMs: number,
  spoolDir: string,
): Promise<FaultResult[]> {
  const server = await RedisServer.start({ persistence: true })
  const setups: Setup[] = []
  const cold = kind === 'cold start'
  try {
    if (cold) await server.kill()
    for (const [index, [, factory]] of faultSetups.entries()) {
      setups.push(await factory({ url: server.url, index, worker: true, spoolDir }))
    }
    let faultAt = performance.now()
    let faultEnd = Infinity
    const results: FaultResult[] = setups.map((s) => ({
      setup: s.name,
      samples: [],
      executions: s.executions,
      faultEnd: 0,
      backOnRedis: null,
      workerBack: null,
    }))
    let stop = false
    const pending: Array<Promise<void>> = []
    let seq = 0
    // Open loop: a dispatch every RATE_MS per setup, whether or not the previous one returned.
    const ticker = (async () => {
      while (!stop) {
        const n = seq++
        for (const [index, setup] of setups.entries()) {
          const result = results[index]!
          const start = performance.now()
          pending.push(
            capped(setup.dispatch(n)).then((outcome) => {
              const end = performance.now()
              result.samples.push({ seq: n, at: start - faultAt, latency: end - start, outcome })
              if (result.backOnRedis === null && start > faultEnd && outcome === 'queued') {
                result.backOnRedis = end - faultEnd
              }
            }),
          )
        }
        await sleep(RATE_MS)
      }
    })()
    if (!cold) {
      await sleep(ctx.quick ? 500 : 1000)
      faultAt = performance.now()
      if (kind === 'freeze') server.freeze()
      else await server.kill()
    }
    ctx.log(`${kind} for ${durationMs} ms`)
    await sleep(durationMs)
    if (kind === 'freeze') server.thaw()
    else await server.start()
    faultEnd = performance.now()
    await sleep(ctx.quick ? 1500 : 3000)
    stop = true
    await ticker
    await Promise.all(pending)
    // Let the workers drain what was queued, then count executions.
    await settle(results, ctx.quick ? 10_000 : 20_000)
    for (const result of results) {
      result.faultEnd = faultEnd - faultAt
      let first: number | null = null
      for (const e of result.executions.values()) {
        if (e.byWorker && e.firstAt > faultEnd && (first === null || e.firstAt < first))
          first = e.firstAt
      }
      result.workerBack = first === null ? null : first - faultEnd
    }
    return results
  } finally {
    for (const setup of setups) await setup.close().catch(countError)
    await server.stop()
  }
}

/**
 * Wait until every accepted dispatch ran (bounded): a job whose hand-over reply was lost when
 * Redis failed runs only once its lock expires, so "nothing new for a while" is not "done".
 */
async function settle(results: FaultResult[], maxMs: number): Promise<void> {
  const deadline = performance.now() + maxMs
  while (performance.now() < deadline) {
    const done = results.every((r) =>
      r.samples.every((s) => !accepted(s) || r.executions.has(s.seq)),
    )
    if (done) return
    await sleep(100)
  }
}

function accepted(sample: Sample): boolean {
  return sample.outcome === 'queued' || sample.outcome === 'inline' || sample.outcome === 'spooled'
}

interface Tally {
  lost: number
  duplicated: number
  ranThoughRejected: number
}

function tally(result: FaultResult): Tally {
  let lost = 0
  let ranThoughRejected = 0
  for (const s of result.samples) {
    const ran = result.executions.has(s.seq)
    if (accepted(s) && !ran) lost++
    if (!accepted(s) && ran) ranThoughRejected++
  }
  let duplicated = 0
  for (const e of result.executions.values()) if (e.count > 1) duplicated++
  return { lost, duplicated, ranThoughRejected }
}

function fmt(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a'
  if (ms >= 100) return String(Math.round(ms))
  if (ms >= 1) return ms.toFixed(1)
  return ms.toFixed(3)
}

function faultTable(kind: FaultKind, results: FaultResult[], durationMs: number): Table {
  return {
    title: `Dispatch through a ${kind === 'outage' ? `${durationMs / 1000} s outage (kill)` : kind} (${durationMs / 1000} s)`,
    columns: [
      'setup',
      'dispatches in fault',
      'errors thrown',
      'p50 ms',
      'p99 ms',
      'max ms',
      'waits > 500 ms',
      'p99 after detection ms',
      'back on Redis after',
      'worker back after',
      'lost',
      'run twice',
      'ran though it failed',
    ],
    rows: results.map((result) => {
      const inFault = result.samples.filter((s) => s.at >= 0 && s.at <= durationMs)
      const latencies = inFault.map((s) => s.latency)
      const afterDetection = inFault.filter((s) => s.at >= 500).map((s) => s.latency)
      const cut = inFault.filter((s) => s.outcome === 'capped').length
      const t = tally(result)
      return [
        result.setup,
        inFault.length,
        result.samples.filter((s) => s.outcome === 'error').length,
        fmt(percentile(latencies, 50)),
        fmt(percentile(latencies, 99)),
        fmt(latencies.reduce((a, b) => Math.max(a, b), 0)) +
          (cut > 0 ? ` (${cut} cut at 30 s)` : ''),
        inFault.filter((s) => s.latency > 500).length,
        fmt(percentile(afterDetection, 99)),
        result.backOnRedis === null
          ? 'not within the window'
          : `${Math.round(result.backOnRedis)} ms`,
        result.workerBack === null ? 'no job queued after' : `${Math.round(result.workerBack)} ms`,
        t.lost,
        t.duplicated,
        t.ranThoughRejected,
      ]
    }),
    note:
      `Each setup dispatches every ${RATE_MS} ms (open loop) at the same time against one redis-server (AOF on), with a worker (concurrency 50). ` +
      `"dispatches in fault" = started during the fault; "p99 after detection" = started 500 ms or more into it. ` +
      `"lost" = accepted (resolved) but never run; "run twice" = run more than once; "ran though it failed" = add threw (or was cut at 30 s) yet the job ran. ` +
      `"back on Redis" = first dispatch after the fault taken by Redis; "worker back" = first job a worker ran after the fault.`,
  }
}

function latencyChart(kind: FaultKind, results: FaultResult[], durationMs: number): Chart {
  const bucket = 100
  return {
    id: `tasks-latency-${kind.replace(' ', '-')}`,
    title: `Dispatch latency through a ${kind} (${durationMs / 1000} s)`,
    xLabel: 'seconds since the fault started',
    yLabel: 'slowest dispatch started in each 100 ms (ms)',
    logY: true,
    bands: [{ from: 0, to: durationMs / 1000, label: 'Redis unavailable' }],
    series: results.map(({ setup, samples }) => ({
      name: setup,
      points: slowestPerBucket(samples, bucket),
    })),
  }
}

// ── the suite ──────────────────────────────────────────────────────────────────────────────

const tasksSuite: Suite = async (ctx) => {
  emittedErrors = 0
  const guard = (error: unknown): void => {
    emittedErrors++
    ctx.log(`uncaught from a peer: ${String(error)}`)
  }
  process.on('uncaughtException', guard)
  process.on('unhandledRejection', guard)
  const spoolDir = mkdtempSync(join(tmpdir(), 'failsoft-bench-tasks-'))
  try {
    ctx.log('throughput')
    const tp = await throughput(ctx, spoolDir)
    const scenarios: Array<[FaultKind, number]> = ctx.quick
      ? [
          ['kill', 1000],
          ['freeze', 1000],
          ['cold start', 1000],
        ]
      : [
          ['kill', 3000],
          ['freeze', 3000],
          ['cold start', 3000],
          ['outage', 20_000],
        ]
    const faults: Array<{ kind: FaultKind; durationMs: number; results: FaultResult[] }> = []
    for (const [kind, durationMs] of scenarios) {
      faults.push({
        kind,
        durationMs,
        results: await faultScenario(ctx, kind, durationMs, spoolDir),
      })
    }

    const byKey = (setup: string, c: number): ThroughputRow | undefined =>
      tp.find((r) => r.setup === setup && r.concurrency === c)
    const throughputTable: Table = {
      title: 'Dispatch throughput, Redis up (no worker running)',
      columns: [
        'setup',
        'concurrency',
        'dispatches/s',
        'p50 ms',
        'p99 ms',
        'vs BullMQ Queue.add',
        'vs BullMQ with jobIds',
      ],
      rows: tp.map((r) => [
        r.setup,
        r.concurrency,
        Math.round(r.opsPerSec),
        fmt(r.p50),
        fmt(r.p99),
        ratio(r.opsPerSec, byKey(BULLMQ, r.concurrency)?.opsPerSec ?? NaN),
        ratio(r.opsPerSec, byKey(BULLMQ_JOB_IDS, r.concurrency)?.opsPerSec ?? NaN),
      ]),
      note: `Median of ${ctx.runs * 2} runs of ${ctx.quick ? 250 : 700} ms each, setups alternated (ABBA…), each run from empty queues; payload { seq }. failsoft checks the health state, validates and sizes the JSON arguments, draws the task id, then calls Queue.add (BullMQ numbers the job; the task id rides in its options) under a 500 ms deadline watched by the health monitor. Target (issue 5): failsoft >= 0.9x BullMQ Queue.add. "BullMQ, a random jobId per add" is not a target: it shows what a caller-chosen job id costs BullMQ (failsoft pays it only for dispatches with an idempotency key).`,
    }
    const tables: Table[] = [
      throughputTable,
      ...faults.map((f) => faultTable(f.kind, f.results, f.durationMs)),
    ]
    const charts: Chart[] = faults.map((f) => latencyChart(f.kind, f.results, f.durationMs))
    const notes = [
      'failsoft: while Redis is down a dispatch runs the task in process (fallback inline) after a property read; an enqueue sent to a Redis that stops answering waits at most the monitor command deadline (250 ms) and is then spooled under its task id — never run inline, since BullMQ would run it too once Redis answers; the worker claims the task id before running, so a second copy (the late add and its replay) never runs.',
      "BullMQ (defaults): add() waits in ioredis' offline queue for the whole outage, and for a first connection at a cold start; a frozen Redis is not detected at all.",
      'BullMQ (enableOfflineQueue: false): add() fails fast on a closed socket, not on a frozen one, and not before the first connection.',
      'BullMQ fail-fast + inline on error: the usual community fallback. Adds that timed out during a freeze were executed by the worker once Redis resumed, and inline too: "run twice".',
      `Errors emitted as events by the peers (not thrown to callers) during the suite: ${emittedErrors}.`,
    ]
    return {
      suite: 'tasks',
      title: 'Tasks: failsoft vs BullMQ',
      tables,
      charts,
      notes,
      data: {
        throughput: tp,
        faults: faults.map((f) => ({
          kind: f.kind,
          durationMs: f.durationMs,
          results: f.results.map((r) => ({
            setup: r.setup,
            backOnRedisMs: r.backOnRedis,
            workerBackMs: r.workerBack,
            ...tally(r),
            samples: r.samples.map((s) => [
              Math.round(s.at),
              Number(s.latency.toFixed(3)),
              s.outcome,
            ]),
          })),
        })),
      },
    }
  } finally {
    process.off('uncaughtException', guard)
    process.off('unhandledRejection', guard)
    rmSync(spoolDir, { recursive: true, force: true })
  }
}

export default tasksSuite
