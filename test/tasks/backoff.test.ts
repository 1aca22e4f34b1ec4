// A custom backoff strategy (backoff: { type: 'custom', strategy }): the same function decides
// the wait between tries on a BullMQ worker and inline, and a negative wait ends the retries.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft, type FailsoftError } from '../../src/index.js'
import { captureLogs } from '../support/log-capture.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks } from './helpers.js'

/** Fails every try; the strategy waits 50 ms after the first, and says stop after the second. */
function flaky(): {
  tries: number[]
  calls: Array<[number, string]>
  handler: (args: unknown, ctx: { attempt: number }) => never
  strategy: (attempt: number, error: Error) => number
} {
  const tries: number[] = []
  const calls: Array<[number, string]> = []
  return {
    tries,
    calls,
    handler: (_args, ctx) => {
      tries.push(ctx.attempt)
      throw new Error(`boom ${ctx.attempt}`)
    },
    strategy: (attempt, error) => {
      calls.push([attempt, error.message])
      return attempt >= 2 ? -1 : 50
    },
  }
}

describe('custom backoff strategy', () => {
  test('bad backoff options are refused, naming the option', (t) => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks()
    const refused = (backoff: unknown, option: string): void =>
      assert.throws(
        () => tasks.define(`t${Math.random()}`.replace('.', ''), () => 1, { backoff } as never),
        (error: FailsoftError) =>
          error.code === 'FAILSOFT_INVALID_OPTION' && error.message.includes(option),
      )
    refused({ type: 'custom' }, 'backoff.strategy')
    refused({ type: 'custom', strategy: 5 }, 'backoff.strategy')
    refused({ type: 'custom', strategy: () => 1, delayMs: 10 }, 'backoff')
    refused({ type: 'linear' }, 'backoff.type')
  })

  test('on a BullMQ worker: called with the try and its error; a negative wait ends the retries', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const f = flaky()
    const task = tasks.define('flaky', f.handler, {
      attempts: 5,
      backoff: { type: 'custom', strategy: f.strategy },
    })
    const worker = tasks.work()
    assert.equal((await task.dispatch({})).mode, 'queued')
    // (worker.status().failed counts every failed try)
    await waitFor(() => f.calls.length === 2, { timeoutMs: 8000, message: 'two tries' })
    await waitFor(() => worker.status().failed === 2, { timeoutMs: 8000, message: 'failed' })
    await new Promise((resolve) => setTimeout(resolve, 500)) // no third try comes
    assert.deepEqual(f.tries, [1, 2])
    assert.deepEqual(f.calls, [
      [1, 'boom 1'],
      [2, 'boom 2'],
    ])
  })

  test('inline: the same rule; a strategy that throws ends the retries and is logged', async (t) => {
    const logs = captureLogs()
    const failsoft = createFailsoft({ redis: null, logger: logs.logger })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks()
    const f = flaky()
    const task = tasks.define('flaky', f.handler, {
      attempts: 5,
      backoff: { type: 'custom', strategy: f.strategy },
    })
    const result = await task.dispatch({})
    assert.equal(result.mode, 'inline')
    assert.equal(result.mode === 'inline' && result.ok, false)
    assert.deepEqual(f.tries, [1, 2])
    assert.deepEqual(f.calls, [
      [1, 'boom 1'],
      [2, 'boom 2'],
    ])
    let tries = 0
    const broken = tasks.define(
      'broken',
      () => {
        tries++
        throw new Error('always')
      },
      {
        attempts: 5,
        backoff: {
          type: 'custom',
          strategy: () => {
            throw new Error('strategy bug')
          },
        },
      },
    )
    const outcome = await broken.dispatch({})
    assert.equal(outcome.mode === 'inline' && outcome.ok, false)
    assert.equal(tries, 1)
    assert.ok(
      logs.records.some((r) => r.msg === 'custom backoff strategy failed: no more tries'),
      `the strategy failure is logged: ${JSON.stringify(logs.records.map((r) => r.msg))}`,
    )
  })
})
