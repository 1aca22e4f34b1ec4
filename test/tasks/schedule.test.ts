// Periodic tasks: BullMQ job schedulers while Redis is up, re-created when Redis comes back
// empty, skipped while Redis is down unless the task opts into local runs.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('schedules', () => {
  test('schedule() creates a BullMQ job scheduler; a worker runs it every period', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    const runs: Array<{ at: number; args: unknown; mode: string }> = []
    tasks.define('compost', (args: unknown, ctx) => {
      runs.push({ at: Date.now(), args, mode: ctx.mode })
    })
    tasks.work()
    assert.deepEqual(await tasks.schedule('compost', { everyMs: 1000, args: { batch: 50 } }), {
      id: 'compost',
      state: 'scheduled',
    })
    assert.equal(await server.cli('EXISTS', `${prefix}:tasks:default:repeat:compost`), 1)
    await waitFor(() => runs.length >= 2, { timeoutMs: 5000, message: 'two periodic runs' })
    assert.deepEqual(runs[0]?.args, { batch: 50 })
    assert.equal(runs[0]?.mode, 'worker')
  })

  test('Redis restarted empty: the scheduler is re-created and runs resume', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks, prefix } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('compost', () => {
      runs++
    })
    const job = tasks.define('job', () => undefined)
    tasks.work()
    await tasks.schedule('compost', { everyMs: 1000 })
    await waitFor(() => runs >= 1, { timeoutMs: 5000, message: 'first run' })
    const before = (await job.dispatch(null)).id
    await server.restart({ keepData: false })
    await waitFor(
      () => failsoft.status().redis.transitions !== undefined && failsoft.health.state === 'up',
      {
        message: 'back up',
      },
    )
    await waitFor(
      async () => (await server.cli('EXISTS', `${prefix}:tasks:default:repeat:compost`)) === 1,
      {
        timeoutMs: 5000,
        message: 'scheduler re-created in the empty Redis',
      },
    )
    const afterRestart = runs
    await waitFor(() => runs >= afterRestart + 2, { timeoutMs: 6000, message: 'runs resume' })
    // Ids never come from BullMQ's counter (which restarts at 1 in an empty Redis).
    const after = (await job.dispatch(null)).id
    assert.notEqual(after, before)
    assert.doesNotMatch(after, /^\d+$/)
  })

  test("while Redis is down periodic runs are skipped; whileDown: 'local' runs them here", async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const runs = { skip: [] as string[], local: [] as string[] }
    tasks.define('report', (_args: unknown, ctx) => {
      runs.skip.push(ctx.mode)
    })
    tasks.define(
      'cleanup',
      (_args: unknown, ctx) => {
        runs.local.push(ctx.mode)
      },
      { whileDown: 'local' },
    )
    await tasks.schedule('report', { everyMs: 1000 })
    await tasks.schedule('cleanup', { everyMs: 1000 })
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    await sleep(2500)
    assert.deepEqual(runs.skip, [], 'skipped: N replicas would each run it')
    assert.ok(runs.local.length >= 2, `local runs while down: ${runs.local.length}`)
    assert.ok(runs.local.every((m) => m === 'local'))
    assert.ok(tasks.status().counts.localPeriodicRuns >= 2)
    await server.start()
    await waitFor(() => failsoft.health.state === 'up')
    const localAtRecovery = runs.local.length
    await sleep(1500)
    assert.equal(runs.local.length, localAtRecovery, 'local timers stop once Redis is back')
  })

  test('schedule() while Redis is down is pending, and created on recovery', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks, prefix } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('compost', () => {
      runs++
    })
    tasks.work()
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    assert.deepEqual(await tasks.schedule('compost', { everyMs: 1000 }), {
      id: 'compost',
      state: 'pending',
    })
    await server.start()
    await waitFor(() => failsoft.health.state === 'up')
    assert.equal(await server.cli('EXISTS', `${prefix}:tasks:default:repeat:compost`), 1)
    await waitFor(() => runs >= 1, { timeoutMs: 5000, message: 'runs once Redis is back' })
    assert.equal(tasks.status().schedules[0]?.synced, true)
  })

  test('unschedule() removes the scheduler', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    tasks.define('compost', () => undefined)
    await tasks.schedule('compost', { everyMs: 1000 })
    assert.equal(await tasks.unschedule('compost'), true)
    assert.equal(await server.cli('EXISTS', `${prefix}:tasks:default:repeat:compost`), 0)
    assert.equal(await tasks.unschedule('compost'), false)
  })
})
