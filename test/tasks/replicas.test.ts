// `waitForReplicas`: a queued dispatch is acknowledged after Redis' WAIT, with the number of
// replicas that had the job — on a real primary + replica + Sentinels; fewer than asked (the
// replication cut) is counted, never an error and never a hang; a standalone Redis answers 0.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { SentinelSet } from '../support/sentinel.js'
import { FAST_HEALTH, makeTasks, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('tasks: waitForReplicas', () => {
  test('on a Sentinel set: replicas 1 while replication runs, 0 (counted) once it is cut', async (t) => {
    const set = await SentinelSet.start(t, { replicas: 1 })
    const failsoft = createFailsoft({
      redis: set.options,
      prefix: uniquePrefix(),
      logger: false,
      health: FAST_HEALTH,
    })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks({
      spool: { path: false },
      waitForReplicas: { count: 1, timeoutMs: 300 },
    })
    const task = tasks.define('w', () => undefined)
    await failsoft.ready()
    const results = await Promise.all([1, 2, 3].map((n) => task.dispatch({ n })))
    for (const result of results) {
      assert.equal(result.mode, 'queued')
      assert.equal(result.mode === 'queued' && result.replicas, 1)
    }
    await set.isolateReplicas()
    t.after(() => set.resumeReplicas())
    const started = performance.now()
    const cut = await task.dispatch({ n: 4 })
    const ms = performance.now() - started
    assert.equal(cut.mode, 'queued')
    assert.equal(cut.mode === 'queued' && cut.replicas, 0)
    assert.ok(ms >= 250 && ms < 5000, `answered after the WAIT timeout (${Math.round(ms)} ms)`)
    assert.equal(tasks.status().counts.underReplicated, 1)
    assert.equal(failsoft.status().redis.available, true, 'a WAIT timeout is no outage')
  })

  test('a standalone Redis (no replica) answers 0 replicas at the timeout; without the option, no field', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url, {
      waitForReplicas: { count: 1, timeoutMs: 50 },
    })
    const task = tasks.define('s', () => undefined)
    const result = await task.dispatch({})
    assert.equal(result.mode === 'queued' && result.replicas, 0)
    const plain = await makeTasks(t, server.url)
    const other = await plain.tasks.define('p', () => undefined).dispatch({})
    assert.equal(other.mode, 'queued')
    assert.equal('replicas' in other, false)
    await waitFor(() => tasks.status().counts.underReplicated === 1)
  })

  test('bad waitForReplicas values are refused with the option named', async (t) => {
    const server = await startRedis(t)
    for (const [value, pattern] of [
      [{ count: 0 }, /waitForReplicas\.count/],
      [{ timeoutMs: -1 }, /waitForReplicas\.timeoutMs/],
      [{ replicas: 1 }, /replicas/],
      ['1', /waitForReplicas/],
    ] as const) {
      const failsoft = createFailsoft({ redis: server.url, prefix: uniquePrefix(), logger: false })
      t.after(() => failsoft.close())
      assert.throws(
        () => failsoft.tasks({ waitForReplicas: value as never }),
        (error: unknown) =>
          error instanceof Error &&
          (error as { code?: string }).code === 'FAILSOFT_INVALID_OPTION' &&
          pattern.test(error.message),
      )
    }
  })
})
