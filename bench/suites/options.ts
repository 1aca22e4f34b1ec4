/**
 * Job options suite: dispatch throughput with Redis up, failsoft's `task.dispatch(args,
 * options)` against BullMQ's `queue.add(name, data, opts)` given the same options, on the same
 * redis-server, producers only (no worker: what is measured is the add). Three profiles:
 * - priority: a BullMQ priority 1–10 on every job (the prioritized set);
 * - delay: every job delayed 60 s (the delayed set);
 * - retries: 3 attempts with an exponential backoff and a removeOnComplete count (the options
 *   a worker reads later; failsoft sets them from the task's definition and the queue).
 * Windows alternate between the setups (ABBA), each from empty queues; the median is reported.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Queue, type JobsOptions } from 'bullmq'
import { Redis } from 'ioredis'
import { createFailsoft, type DispatchOptions } from '../../src/index.js'
import { RedisServer, sleep } from '../../test/support/fault-kit.js'
import { clearJobs } from '../clear-jobs.js'
import {
  median,
  measureThroughput,
  ratio,
  type BenchContext,
  type SuiteReport,
  type Table,
} from '../report.js'

type Profile = 'priority' | 'delay' | 'retries'
const PROFILES: readonly Profile[] = ['priority', 'delay', 'retries']

/** The keys of the jobs a window queued (BullMQ's setups, then failsoft's). */
const JOB_KEYS = ['bull:bopt-*', 'bopt-*:tasks:*']

interface Setup {
  readonly name: string
  dispatch(seq: number): Promise<unknown>
  close(): Promise<void>
}

const priorityOf = (seq: number): number => (seq % 10) + 1

function failsoftOptions(profile: Profile, seq: number): DispatchOptions | undefined {
  if (profile === 'priority') return { priority: priorityOf(seq) }
  if (profile === 'delay') return { delayMs: 60_000 }
  return undefined // retries: from the task's definition
}

function bullmqOptions(profile: Profile, seq: number): JobsOptions {
  if (profile === 'priority') return { priority: priorityOf(seq) }
  if (profile === 'delay') return { delay: 60_000 }
  return {
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
    removeOnComplete: { count: 1000 },
  }
}

async function failsoftSetup(url: string, profile: Profile, dir: string): Promise<Setup> {
  const failsoft = createFailsoft({ redis: url, prefix: `bopt-${profile}`, logger: false })
  const tasks = failsoft.tasks({
    spool: { path: join(dir, `spool-${profile}.jsonl`) },
    removeOnComplete: { count: 1000 },
  })
  const task = tasks.define(
    'job',
    () => undefined,
    profile === 'retries'
      ? { attempts: 3, backoff: { type: 'exponential', delayMs: 1000 } }
      : undefined,
  )
  await failsoft.ready()
  return {
    name: 'failsoft dispatch(args, options)',
    dispatch: async (seq) => {
      const result = await task.dispatch({ seq }, failsoftOptions(profile, seq))
      if (result.mode !== 'queued') throw new Error(`not queued: ${result.mode}`)
    },
    close: () => failsoft.close(),
  }
}

async function bullmqSetup(url: string, profile: Profile): Promise<Setup> {
  const { hostname, port } = new URL(url)
  const queue = new Queue(`bopt-${profile}`, {
    connection: { host: hostname, port: Number(port) },
  })
  queue.on('error', () => undefined)
  await queue.waitUntilReady()
  return {
    name: 'BullMQ add(name, data, opts)',
    dispatch: (seq) => queue.add('job', { seq }, bullmqOptions(profile, seq)),
    close: () => queue.close(),
  }
}

interface Row {
  profile: Profile
  setup: string
  concurrency: number
  opsPerSec: number
  p50: number
  p99: number
}

export default async function optionsSuite(ctx: BenchContext): Promise<SuiteReport> {
  const server = await RedisServer.start()
  const admin = new Redis(server.url)
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-bench-options-'))
  const windowMs = ctx.quick ? 250 : 700
  const rows: Row[] = []
  try {
    for (const profile of PROFILES) {
      const setups = [
        await bullmqSetup(server.url, profile),
        await failsoftSetup(server.url, profile, dir),
      ]
      await sleep(300) // failsoft's first health decision
      try {
        for (const concurrency of [1, 50]) {
          for (const setup of setups) {
            await measureThroughput((s) => setup.dispatch(s), concurrency, 200)
          }
          const measured = new Map<string, Array<{ opsPerSec: number; p50: number; p99: number }>>()
          for (let r = 0; r < ctx.runs * 2; r++) {
            for (const setup of r % 2 === 0 ? setups : [...setups].reverse()) {
              await clearJobs(admin, JOB_KEYS)
              const m = await measureThroughput((s) => setup.dispatch(s), concurrency, windowMs)
              measured.set(setup.name, [...(measured.get(setup.name) ?? []), m])
            }
          }
          for (const setup of setups) {
            const ms = measured.get(setup.name) ?? []
            const row: Row = {
              profile,
              setup: setup.name,
              concurrency,
              opsPerSec: median(ms.map((m) => m.opsPerSec)),
              p50: median(ms.map((m) => m.p50)),
              p99: median(ms.map((m) => m.p99)),
            }
            rows.push(row)
            ctx.log(`${profile} ${row.setup} c${concurrency}: ${Math.round(row.opsPerSec)}/s`)
          }
        }
      } finally {
        for (const setup of setups) await setup.close()
        await clearJobs(admin, JOB_KEYS)
      }
    }
  } finally {
    admin.disconnect()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  const bull = (row: Row): Row | undefined =>
    rows.find(
      (r) =>
        r.profile === row.profile &&
        r.concurrency === row.concurrency &&
        r.setup.startsWith('BullMQ'),
    )
  const table: Table = {
    title: 'Dispatch with job options, Redis up (producers only)',
    columns: ['options', 'setup', 'callers', 'dispatches/s', 'p50 ms', 'p99 ms', 'vs BullMQ'],
    rows: rows.map((r) => [
      r.profile,
      r.setup,
      r.concurrency,
      Math.round(r.opsPerSec),
      r.p50.toFixed(2),
      r.p99.toFixed(2),
      ratio(r.opsPerSec, bull(r)?.opsPerSec ?? NaN),
    ]),
    note: `Median of ${ctx.runs * 2} windows of ${windowMs} ms per setup, ABBA order, each from empty queues. priority: 1–10 on every job; delay: 60 s on every job; retries: attempts 3, exponential backoff 1 s, removeOnComplete { count: 1000 } (failsoft: from the task's definition and the queue's options). The ratio is of throughput (higher is better). failsoft's add also sets its task id option on the job and goes through its deadline and health checks.`,
  }
  return {
    suite: 'options',
    title: 'Job options: failsoft dispatch(args, options) vs BullMQ add(name, data, opts)',
    tables: [table],
    data: { rows },
  }
}
