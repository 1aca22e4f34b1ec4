// A Sentinel failover away from a frozen primary that thaws right after the promotion: the
// old node answers as a primary until Sentinel reconfigures it (about 10 s). A connection that
// reconnected by itself meanwhile got the frozen node from the Sentinels, and its handshake
// completed on the thaw: the worker stayed there, ran nothing of the new primary's queue, and
// what it completed there was thrown away (outside review 5: 9 s, tasks run twice, 4 of 9
// runs). Every connection of failsoft's must be on the new primary soon after it is.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft } from '../../src/index.js'
import { waitFor } from '../support/fault-kit.js'
import { SentinelSet } from '../support/sentinel.js'
import { uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('tasks through a Sentinel failover from a frozen primary', () => {
  test('the old primary thawed right after the promotion keeps none of the connections, and the worker runs the new queue', async (t) => {
    const set = await SentinelSet.start(t, { replicas: 2 })
    const prefix = uniquePrefix()
    const failsoft = createFailsoft({ redis: set.options, prefix, logger: false })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks({ spool: { path: false } })
    const runs = new Map<number, number>()
    const job = tasks.define('job', (args: { n: number }) => {
      runs.set(args.n, (runs.get(args.n) ?? 0) + 1)
    })
    const worker = tasks.work({ concurrency: 2 })
    assert.equal(await failsoft.ready(), 'up')
    let n = 0
    await job.dispatch({ n: n++ })
    await waitFor(() => runs.size === 1, { message: 'a first run' })
    for (let round = 0; round < 2; round++) {
      const old = await set.primary()
      old.freeze()
      // Down, so that the worker's connections reconnect by themselves — to the frozen node,
      // which the Sentinels still name until the promotion.
      await waitFor(() => !failsoft.health.available, { timeoutMs: 8000, message: 'down' })
      const promoted = await set.waitForNewPrimary(old.port)
      old.thaw()
      await waitFor(
        () =>
          failsoft.health.available &&
          failsoft.status().redis.primary === `127.0.0.1:${promoted.port}`,
        {
          timeoutMs: 10_000,
          message: `round ${round}: on the new primary`,
        },
      )
      // Every connection of this instance leaves the old node soon after.
      const onOld = async (): Promise<string[]> =>
        String(await old.cli('CLIENT', 'LIST'))
          .split('\n')
          .filter((line) => !/ flags=S /.test(line) && !/ cmd=client/.test(line))
          .map((line) => /name=(\S*)/.exec(line)?.[1] ?? '')
          // failsoft's own names, and BullMQ's (its duplicates rename themselves); not the
          // Sentinels' (sentinel-…)
          .filter((name) => name !== '' && !name.startsWith('sentinel-'))
      await waitFor(async () => (await onOld()).length === 0, {
        timeoutMs: 4000,
        message: `round ${round}: no connection left on the old primary`,
      })
      const before = n
      for (let i = 0; i < 5; i++) {
        const result = await job.dispatch({ n: n++ })
        assert.equal(
          result.mode,
          'queued',
          `round ${round}: ${JSON.stringify(result)} ${JSON.stringify(failsoft.status().redis)}`,
        )
      }
      await waitFor(() => [...runs.keys()].filter((k) => k >= before).length === 5, {
        timeoutMs: 4000,
        message: () =>
          `round ${round}: the jobs dispatched after the failover run (worker ${JSON.stringify(worker.status())}, stray resets ${failsoft.status().redis.strayConnectionsReset})`,
      })
    }
    assert.ok(
      [...runs.values()].every((count) => count === 1),
      'no job ran twice',
    )
  })
})
