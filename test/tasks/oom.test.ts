// Redis at maxmemory with noeviction answers every write with "OOM command not allowed…".
// That is temporary: a spooled task must stay in the spool (never be skipped), the replay is
// retried while Redis is up, and once memory is freed each task runs exactly once, in order.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Redis } from 'ioredis'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const FULL = ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']

/** Write until Redis answers OOM, with smaller and smaller values so that it stays full. */
async function fill(url: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 })
  await redis.connect()
  try {
    let i = 0
    for (const size of [10_000, 1000, 100, 10]) {
      for (;;) {
        try {
          await redis.set(`fill:${i++}`, 'x'.repeat(size))
        } catch (error) {
          assert.match((error as Error).message, /^OOM/)
          break
        }
      }
    }
  } finally {
    redis.disconnect()
  }
}

async function config(url: string, ...args: string[]): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 })
  await redis.connect()
  try {
    await redis.config('SET', args[0] ?? '', args[1] ?? '')
  } finally {
    redis.disconnect()
  }
}

describe('tasks with Redis out of memory (maxmemory, noeviction)', () => {
  test('spooled tasks are kept while Redis refuses writes, then each runs once, in order', async (t) => {
    const server = await startRedis(t, { args: FULL })
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const order: number[] = []
    const runs = new Map<string, number>()
    const record = (args: { n: number }, ctx: { id: string; mode: string }): void => {
      if (ctx.mode === 'worker') order.push(args.n)
      runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
    }
    const spooled = tasks.define('spooled', record, { fallback: 'spool' })
    const inline = tasks.define('inline', record, { fallback: 'inline' })
    tasks.work({ concurrency: 1 })
    assert.equal(failsoft.health.state, 'up')

    // Spooled during an outage (forced here), recovered while Redis is full.
    await fill(server.url)
    failsoft.health.forceFallback(true)
    const ids: string[] = []
    for (let n = 0; n < 5; n++) {
      const result = await spooled.dispatch({ n })
      assert.equal(result.mode, 'spooled')
      ids.push(result.id)
    }
    failsoft.health.forceFallback(false)
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 5000,
      message: 'a full Redis does not keep failsoft on its fallbacks',
    })
    await waitFor(() => tasks.status().counts.writesDeferred >= 2, {
      message: 'the refused replay is retried while up',
    })
    let status = tasks.status()
    assert.equal(status.spoolDepth, 5, 'nothing left the spool')
    assert.equal(status.counts.replayRefused, 0, 'nothing skipped')
    assert.equal(status.counts.replayed, 0)

    // Redis up, but it refuses the add: the task's fallback, as in an outage.
    const whileFull = await spooled.dispatch({ n: 5 })
    assert.equal(whileFull.mode, 'spooled', 'a refused add is spooled (fallback spool)')
    ids.push(whileFull.id)
    const ranInline = await inline.dispatch({ n: -1 })
    assert.equal(ranInline.mode, 'inline', 'a refused add runs inline (fallback inline)')
    assert.equal(ranInline.mode === 'inline' && ranInline.ok, true)
    await sleep(1000)
    status = tasks.status()
    assert.equal(status.spoolDepth, 6)
    assert.equal(status.counts.replayRefused, 0)
    assert.equal(runs.size, 1, 'only the inline run so far')

    // Memory freed: the next retry (within ~2 s) hands everything over.
    await config(server.url, 'maxmemory', '0')
    await waitFor(() => tasks.status().spoolDepth === 0, {
      timeoutMs: 5000,
      message: 'the spool is handed over once Redis takes writes',
    })
    await waitFor(() => ids.every((id) => runs.has(id)), {
      timeoutMs: 10_000,
      message: 'every spooled task runs on the worker',
    })
    await sleep(300)
    for (const id of ids) assert.equal(runs.get(id), 1, `task ${id} ran once`)
    assert.equal(runs.get(ranInline.id), 1)
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5], 'in dispatch order')
    status = tasks.status()
    assert.equal(status.counts.replayed, 6)
    assert.equal(status.counts.replayRefused, 0)
    assert.equal(failsoft.health.state, 'up')
  })

  test('a job completed while Redis is full keeps its "done" marker and writes it when memory frees', async (t) => {
    const server = await startRedis(t, { args: FULL })
    const { tasks } = await makeTasks(t, server.url)
    let runs = 0
    let release: () => void = () => undefined
    const gate = new Promise<void>((resolve) => (release = resolve))
    const slow = tasks.define('slow', async () => {
      runs++
      await gate
    })
    const worker = tasks.work({ concurrency: 1, lockDurationMs: 1000, stalledIntervalMs: 500 })
    const { id } = await slow.dispatch(null, { idempotencyKey: 'report-42' })
    await waitFor(() => runs === 1, { message: 'the job started' })

    // Redis fills up while the job runs: its marker (and BullMQ's completion) are refused.
    await fill(server.url)
    release()
    await waitFor(() => (worker.status().markerErrors as number) === 1, {
      message: 'the marker was refused',
    })
    assert.equal(worker.status().markersPending, 1)
    await sleep(1500)
    await config(server.url, 'maxmemory', '0')
    await waitFor(() => worker.status().markersPending === 0, {
      timeoutMs: 5000,
      message: 'the kept marker is written once Redis takes writes',
    })
    const redis = new Redis(server.url)
    t.after(() => redis.disconnect())
    const keys = await redis.keys('*:done:*')
    assert.ok(
      keys.some((key) => key.endsWith(id)),
      `the marker of ${id} is in Redis (${keys.join(', ')})`,
    )
    assert.ok((await redis.pttl(keys.find((key) => key.endsWith(id)) ?? '')) > 0, 'with its TTL')
    await sleep(1500) // stalled checks run; the job is not run again
    assert.equal(runs, 1, 'the job ran once')
    assert.equal(worker.status().markersDropped, 0)
  })
})
