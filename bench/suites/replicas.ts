/**
 * Replicas suite: what `waitForReplicas` (a queued dispatch acknowledged after Redis' WAIT)
 * costs, on a healthy real Sentinel set (a primary, one replica, 3 Sentinels), beside BullMQ
 * doing the same by hand (Queue.add, then WAIT on its connection) in the same run.
 *
 * Setups, each measured for the same window from 50 concurrent callers, median of `runs`:
 * failsoft dispatch; failsoft dispatch with waitForReplicas { count: 1, timeoutMs: 100 };
 * BullMQ Queue.add; BullMQ Queue.add + WAIT 1 100 per add.
 */
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { createFailsoft, type Failsoft } from '../../src/index.js'
import { SentinelSet } from '../../test/support/sentinel.js'
import { Cleanups } from '../cleanups.js'
import {
  measureThroughput,
  median,
  ratio,
  type BenchContext,
  type SuiteReport,
  type Throughput,
} from '../report.js'

const CONCURRENCY = 50
const WAIT = { count: 1, timeoutMs: 100 }

type Setup = 'failsoft' | 'failsoft + waitForReplicas' | 'BullMQ add' | 'BullMQ add + WAIT'
const SETUPS: readonly Setup[] = [
  'failsoft',
  'failsoft + waitForReplicas',
  'BullMQ add',
  'BullMQ add + WAIT',
]

async function dispatcher(
  setup: Setup,
  set: SentinelSet,
  hooks: Cleanups,
  prefix: string,
): Promise<(seq: number) => Promise<unknown>> {
  if (setup === 'failsoft' || setup === 'failsoft + waitForReplicas') {
    const failsoft: Failsoft = createFailsoft({ redis: set.options, prefix, logger: false })
    hooks.after(() => failsoft.close())
    const tasks = failsoft.tasks({
      spool: { path: false },
      ...(setup === 'failsoft + waitForReplicas' && { waitForReplicas: WAIT }),
    })
    const task = tasks.define('bench', () => undefined)
    await failsoft.ready()
    return async (seq) => {
      const result = await task.dispatch({ seq })
      if (result.mode !== 'queued') throw new Error(`not queued: ${result.mode}`)
    }
  }
  const connection = new Redis({ ...set.options, maxRetriesPerRequest: null })
  hooks.after(() => connection.disconnect())
  const queue = new Queue('bench', { connection, prefix: `${prefix}:bull` })
  hooks.after(() => queue.close())
  await queue.waitUntilReady()
  if (setup === 'BullMQ add') return (seq) => queue.add('bench', { seq })
  return async (seq) => {
    await queue.add('bench', { seq })
    await connection.wait(WAIT.count, WAIT.timeoutMs)
  }
}

export default async function replicasSuite(ctx: BenchContext): Promise<SuiteReport> {
  const windowMs = ctx.quick ? 1000 : 3000
  const hooks = new Cleanups()
  const set = await SentinelSet.start(hooks, { replicas: 1, sentinels: 3 })
  const measured = new Map<Setup, Throughput[]>()
  try {
    for (let run = 0; run < ctx.runs; run++) {
      // Alternated (ABCD, DCBA…): a machine whose load drifts does not favour one setup.
      for (const setup of run % 2 === 0 ? SETUPS : [...SETUPS].reverse()) {
        const inner = new Cleanups()
        try {
          const op = await dispatcher(setup, set, inner, `rb${run}${setup.length}`)
          await measureThroughput(op, CONCURRENCY, 300) // warm-up
          const result = await measureThroughput(op, CONCURRENCY, windowMs)
          measured.set(setup, [...(measured.get(setup) ?? []), result])
          ctx.log(`replicas ${setup}: ${Math.round(result.opsPerSec)} ops/s`)
        } finally {
          await inner.run()
        }
      }
    }
  } finally {
    await hooks.run()
  }
  const summary = (setup: Setup): Throughput => {
    const runs = measured.get(setup) ?? []
    return {
      opsPerSec: median(runs.map((r) => r.opsPerSec)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
    }
  }
  const plain = summary('failsoft')
  const waited = summary('failsoft + waitForReplicas')
  const bull = summary('BullMQ add')
  const bullWait = summary('BullMQ add + WAIT')
  return {
    suite: 'replicas',
    title: 'waitForReplicas (WAIT) cost',
    tables: [
      {
        title: 'Dispatch acknowledged after WAIT 1 replica (healthy Sentinel set)',
        columns: ['setup', 'ops/s', 'p50 ms', 'p99 ms', 'vs failsoft plain', 'vs BullMQ + WAIT'],
        rows: SETUPS.map((setup) => {
          const s = summary(setup)
          return [
            setup,
            Math.round(s.opsPerSec),
            s.p50.toFixed(2),
            s.p99.toFixed(2),
            ratio(s.opsPerSec, plain.opsPerSec),
            ratio(s.opsPerSec, bullWait.opsPerSec),
          ]
        }),
        note: `${CONCURRENCY} concurrent callers, ${windowMs / 1000} s per setup after a 0.3 s warm-up, median of ${ctx.runs} run(s), the order of the setups alternated; one primary + one replica + 3 Sentinels on loopback, every setup through ioredis' { sentinels, name }. failsoft + waitForReplicas: { count: 1, timeoutMs: 100 } (one WAIT per tick covers every add of that tick); BullMQ add + WAIT: Queue.add then WAIT 1 100 on the queue's connection, per add. Ratios are ops/s.`,
      },
    ],
    notes: [
      `failsoft with WAIT runs at ${ratio(waited.opsPerSec, plain.opsPerSec)} of failsoft without it, and ${ratio(waited.opsPerSec, bullWait.opsPerSec)} of BullMQ with a WAIT per add (BullMQ without WAIT: ${Math.round(bull.opsPerSec)} ops/s).`,
    ],
    data: Object.fromEntries([...measured.entries()]),
  }
}
