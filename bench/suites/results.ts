/**
 * Results suite: the round trip "dispatch, then wait for the value" with Redis up —
 * failsoft's `(await task.dispatch(args)).result()` against BullMQ's
 * `(await queue.add(...)).waitUntilFinished(queueEvents)`, on the same redis-server, each with
 * a worker (concurrency 1 and 20) in this process running the same no-op handler. A third
 * setup waits for failsoft's jobs with BullMQ's waitUntilFinished, to tell the cost of
 * result() from the cost of failsoft's worker (its lease and done marker per job). Windows
 * alternate between the setups (ABC, CBA…); the median of the windows is reported.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Job, Queue, QueueEvents, Worker } from 'bullmq'
import { createFailsoft } from '../../src/index.js'
import { RedisServer, sleep } from '../../test/support/fault-kit.js'
import {
  median,
  measureThroughput,
  ratio,
  type BenchContext,
  type SuiteReport,
  type Table,
} from '../report.js'

interface Setup {
  readonly name: string
  roundTrip(seq: number): Promise<unknown>
  close(): Promise<void>
}

const handler = (args: { seq: number }): { seq: number } => ({ seq: args.seq })

async function failsoftSetup(
  url: string,
  concurrency: number,
  dir: string,
  wait: 'result' | 'bullmq',
): Promise<Setup> {
  const prefix = `bres${wait}`
  const failsoft = createFailsoft({ redis: url, prefix, logger: false })
  const tasks = failsoft.tasks({ spool: { path: join(dir, `spool-${wait}.jsonl`) } })
  const task = tasks.define('echo', handler)
  const worker = tasks.work({ concurrency })
  await failsoft.ready()
  if (wait === 'result') {
    return {
      name: 'failsoft dispatch() + result()',
      roundTrip: async (seq) => (await task.dispatch({ seq })).result({ timeoutMs: 10_000 }),
      close: async () => {
        await worker.close()
        await failsoft.close()
      },
    }
  }
  // failsoft's queue and worker, BullMQ's wait: what result() itself costs, apart.
  const { hostname, port } = new URL(url)
  const connection = { host: hostname, port: Number(port) }
  const queue = new Queue('default', { connection, prefix: `${prefix}:tasks` })
  const events = new QueueEvents('default', { connection, prefix: `${prefix}:tasks` })
  queue.on('error', () => undefined)
  events.on('error', () => undefined)
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()])
  return {
    name: 'failsoft dispatch() + BullMQ waitUntilFinished',
    roundTrip: async (seq) => {
      const handle = await task.dispatch({ seq })
      if (handle.mode !== 'queued') throw new Error(`not queued: ${handle.mode}`)
      return new Job(queue, 'echo', { seq }, {}, handle.jobId).waitUntilFinished(events, 10_000)
    },
    close: async () => {
      await events.close()
      await queue.close()
      await worker.close()
      await failsoft.close()
    },
  }
}

async function bullmqSetup(url: string, concurrency: number): Promise<Setup> {
  const { hostname, port } = new URL(url)
  const connection = { host: hostname, port: Number(port) }
  const queue = new Queue('bench-results', { connection })
  const events = new QueueEvents('bench-results', { connection })
  const worker = new Worker('bench-results', async (job) => handler(job.data as { seq: number }), {
    connection,
    concurrency,
    removeOnComplete: { count: 1000 },
  })
  queue.on('error', () => undefined)
  events.on('error', () => undefined)
  worker.on('error', () => undefined)
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), worker.waitUntilReady()])
  return {
    name: 'BullMQ add() + job.waitUntilFinished(queueEvents)',
    roundTrip: async (seq) => (await queue.add('echo', { seq })).waitUntilFinished(events, 10_000),
    close: async () => {
      await worker.close()
      await events.close()
      await queue.close()
    },
  }
}

interface Row {
  setup: string
  concurrency: number
  opsPerSec: number
  p50: number
  p99: number
}

export default async function resultsSuite(ctx: BenchContext): Promise<SuiteReport> {
  const server = await RedisServer.start()
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-bench-results-'))
  const windowMs = ctx.quick ? 300 : 1000
  const rows: Row[] = []
  try {
    for (const concurrency of [1, 20]) {
      const setups = [
        await failsoftSetup(server.url, concurrency, dir, 'result'),
        await bullmqSetup(server.url, concurrency),
        await failsoftSetup(server.url, concurrency, dir, 'bullmq'),
      ]
      await sleep(300)
      try {
        for (const setup of setups) await measureThroughput((s) => setup.roundTrip(s), 1, 200)
        const measured = new Map<string, Array<{ opsPerSec: number; p50: number; p99: number }>>()
        for (let r = 0; r < ctx.runs * 2; r++) {
          for (const setup of r % 2 === 0 ? setups : [...setups].reverse()) {
            const m = await measureThroughput((s) => setup.roundTrip(s), concurrency, windowMs)
            measured.set(setup.name, [...(measured.get(setup.name) ?? []), m])
          }
        }
        for (const setup of setups) {
          const ms = measured.get(setup.name) ?? []
          const row = {
            setup: setup.name,
            concurrency,
            opsPerSec: median(ms.map((m) => m.opsPerSec)),
            p50: median(ms.map((m) => m.p50)),
            p99: median(ms.map((m) => m.p99)),
          }
          rows.push(row)
          ctx.log(`${row.setup} c${concurrency}: p50 ${row.p50.toFixed(2)} ms`)
        }
      } finally {
        for (const setup of setups) await setup.close()
      }
    }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  const bull = (c: number): Row | undefined =>
    rows.find((r) => r.concurrency === c && r.setup.startsWith('BullMQ'))
  const mixed = (c: number): Row | undefined =>
    rows.find((r) => r.concurrency === c && r.setup.endsWith('BullMQ waitUntilFinished'))
  const table: Table = {
    title: 'Dispatch and wait for the result, Redis up (worker in the same process)',
    columns: [
      'setup',
      'callers',
      'round trips/s',
      'p50 ms',
      'p99 ms',
      'p50 vs BullMQ',
      'p50 vs failsoft + waitUntilFinished',
    ],
    rows: rows.map((r) => [
      r.setup,
      r.concurrency,
      Math.round(r.opsPerSec),
      r.p50.toFixed(2),
      r.p99.toFixed(2),
      ratio(r.p50, bull(r.concurrency)?.p50 ?? NaN),
      ratio(r.p50, mixed(r.concurrency)?.p50 ?? NaN),
    ]),
    note: `Median of ${ctx.runs * 2} windows of ${windowMs} ms, setups alternated (ABC, CBA…); worker concurrency = callers; handler returns its argument. Ratios are of latency (lower is better). "failsoft + waitUntilFinished" runs failsoft's dispatch and worker (lease and done marker per job) with BullMQ's wait: the last column is what result() itself adds (one HMGET when the wait starts; the value comes from the same QueueEvents event).`,
  }
  return {
    suite: 'results',
    title: 'Task results: failsoft result() vs BullMQ waitUntilFinished',
    tables: [table],
    data: { rows },
  }
}
