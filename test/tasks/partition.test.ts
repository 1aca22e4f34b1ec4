// A silent partition (blackhole) between the processes and Redis: the worker's sockets look
// open but are dead. Once the path heals the worker must be processing again at once, and the
// jobs caught in the partition must run exactly once.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('tasks through a silent partition', () => {
  test('after a blackhole the worker processes again within a few seconds; nothing runs twice', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft, tasks } = await makeTasks(t, proxy.urlFor(server))
    const runs = new Map<string, number>()
    const modes = new Map<string, string>()
    const slow = (ms: number) => async (_args: unknown, ctx: { id: string; mode: string }) => {
      runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
      modes.set(ctx.id, ctx.mode)
      await sleep(ms)
    }
    const spooled = tasks.define('spooled', slow(50), { fallback: 'spool' })
    const inline = tasks.define('inline', slow(0), { fallback: 'inline' })
    const worker = tasks.work({ concurrency: 1 })

    const warm = await spooled.dispatch(null)
    assert.equal(warm.mode, 'queued')
    await waitFor(() => runs.has(warm.id), { message: 'the worker runs a first job' })

    // Queued right before the partition: most are still waiting when it starts.
    const before: string[] = []
    for (let i = 0; i < 8; i++) {
      const result = await spooled.dispatch({ i })
      assert.equal(result.mode, 'queued')
      before.push(result.id)
    }
    proxy.blackhole()
    await waitFor(() => failsoft.health.state === 'down', { message: 'partition detected' })
    const during = await spooled.dispatch({ during: true })
    assert.equal(during.mode, 'spooled')
    const ranInline = await inline.dispatch({ during: true })
    assert.equal(ranInline.mode, 'inline')
    await sleep(2000)

    proxy.pass()
    const healed = Date.now()
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 5000, message: 'recovered' })
    const after = await spooled.dispatch({ after: true })
    assert.equal(after.mode, 'queued')
    await waitFor(() => runs.has(after.id), {
      timeoutMs: 5000,
      message: `the worker runs a job dispatched after the partition (worker ${JSON.stringify(
        worker.status(),
      )})`,
    })
    const lag = Date.now() - healed
    assert.ok(lag < 3000, `worker processing ${lag} ms after the path healed`)

    const all = [warm.id, ...before, during.id, after.id]
    await waitFor(() => all.every((id) => runs.has(id)), {
      timeoutMs: 10_000,
      message: 'every queued and spooled job runs',
    })
    await sleep(300)
    for (const id of all) {
      assert.equal(runs.get(id), 1, `job ${id} ran once`)
      assert.equal(modes.get(id), 'worker', `job ${id} ran on the worker`)
    }
    assert.equal(runs.get(ranInline.id), 1)
    assert.equal(modes.get(ranInline.id), 'inline')
    assert.equal(tasks.status().spoolDepth, 0)
  })
})
