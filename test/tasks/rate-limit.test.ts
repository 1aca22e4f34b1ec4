// A queue's rate limit and global concurrency, on Redis (BullMQ's limiter and global
// concurrency, shared by every worker of the queue) and while Redis is unavailable (each
// process bounds its own inline runs to the same rate and concurrency).
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft, type FailsoftError } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep, uniquePrefix } from './helpers.js'

function invalid(fn: () => unknown, option: string): void {
  assert.throws(fn, (error: FailsoftError) => {
    assert.equal(error.code, 'FAILSOFT_INVALID_OPTION')
    assert.match(error.message, new RegExp(option.replace('.', '\\.')))
    return true
  })
}

describe('rate limit and global concurrency', () => {
  test('bad options are refused, naming the option', (t) => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    t.after(() => failsoft.close())
    invalid(() => failsoft.tasks({ rateLimit: { durationMs: 1000 } as never }), 'rateLimit.max')
    invalid(() => failsoft.tasks({ rateLimit: { max: 5 } as never }), 'rateLimit.durationMs')
    invalid(() => failsoft.tasks({ rateLimit: { max: 0, durationMs: 1000 } }), 'rateLimit.max')
    invalid(
      () => failsoft.tasks({ rateLimit: { max: 1, durationMs: 1000, per: 1 } as never }),
      'rateLimit',
    )
    invalid(() => failsoft.tasks({ globalConcurrency: 0 }), 'globalConcurrency')
    invalid(() => failsoft.tasks({ globalConcurrency: 1.5 }), 'globalConcurrency')
  })

  test('on Redis, two processes share one rate limit: 15 jobs at 5 per second take more than a second', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const starts: number[] = []
    for (let i = 0; i < 2; i++) {
      const { tasks } = await makeTasks(t, server.url, {
        prefix,
        rateLimit: { max: 5, durationMs: 1000 },
      })
      tasks.define('ping', () => {
        starts.push(Date.now())
      })
      tasks.work({ concurrency: 10 })
    }
    const { tasks: producer } = await makeTasks(t, server.url, { prefix })
    const ping = producer.define('ping', () => undefined)
    for (let n = 0; n < 15; n++) assert.equal((await ping.dispatch({ n })).mode, 'queued')
    await waitFor(() => starts.length === 15, { timeoutMs: 10_000, message: '15 runs' })
    starts.sort((a, b) => a - b)
    // BullMQ counts in fixed windows: 15 runs need three of them, the first and the last at
    // least one window apart.
    assert.ok(
      starts[14]! - starts[0]! >= 950,
      `15 runs at 5 per second spread over ${starts[14]! - starts[0]!} ms`,
    )
  })

  test('on Redis, global concurrency bounds the runs of every worker together, and is set again after Redis restarts empty', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    let running = 0
    let most = 0
    let done = 0
    for (let i = 0; i < 2; i++) {
      const { tasks } = await makeTasks(t, server.url, { prefix, globalConcurrency: 2 })
      tasks.define('slow', async () => {
        running++
        most = Math.max(most, running)
        await sleep(150)
        running--
        done++
      })
      tasks.work({ concurrency: 5 })
    }
    const { tasks: producer, failsoft } = await makeTasks(t, server.url, {
      prefix,
      globalConcurrency: 2,
    })
    const slow = producer.define('slow', () => undefined)
    const meta = `${prefix}:tasks:default:meta`
    await waitFor(async () => (await server.cli('HGET', meta, 'concurrency')) === '2', {
      message: 'global concurrency in the queue meta',
    })
    for (let n = 0; n < 10; n++) await slow.dispatch({ n })
    await waitFor(() => done === 10, { timeoutMs: 10_000, message: '10 runs' })
    assert.ok(most <= 2, `at most 2 at once across both workers (saw ${most})`)
    assert.ok(most >= 1)
    await server.restart({ keepData: false })
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 8000 })
    await waitFor(async () => (await server.cli('HGET', meta, 'concurrency')) === '2', {
      timeoutMs: 8000,
      message: 'global concurrency set again in the empty Redis',
    })
  })

  test('while Redis is down, inline runs keep to the rate: the ones beyond are rejected (FAILSOFT_INLINE_RATE_LIMITED) or spooled', async (t) => {
    const server = await startRedis(t)
    const rejecting = await makeTasks(t, server.url, { rateLimit: { max: 3, durationMs: 60_000 } })
    const spooling = await makeTasks(t, server.url, {
      rateLimit: { max: 3, durationMs: 60_000 },
      inline: { whenBusy: 'spool' },
    })
    let ranLater = 0
    const a = rejecting.tasks.define('a', () => 'ok')
    const b = spooling.tasks.define('b', () => {
      ranLater++
    })
    await server.kill()
    await waitFor(() => !rejecting.failsoft.health.available && !spooling.failsoft.health.available)
    const modes: string[] = []
    const codes: string[] = []
    for (let n = 0; n < 5; n++) {
      const result = await a.dispatch({ n })
      modes.push(result.mode)
      if (result.mode === 'rejected') codes.push((result.error as FailsoftError).code)
    }
    assert.deepEqual(modes, ['inline', 'inline', 'inline', 'rejected', 'rejected'])
    assert.deepEqual(codes, ['FAILSOFT_INLINE_RATE_LIMITED', 'FAILSOFT_INLINE_RATE_LIMITED'])
    assert.equal(rejecting.tasks.status().counts.rateLimited, 2)
    const spooledModes: string[] = []
    for (let n = 0; n < 5; n++) spooledModes.push((await b.dispatch({ n })).mode)
    assert.deepEqual(spooledModes, ['inline', 'inline', 'inline', 'spooled', 'spooled'])
    assert.equal(ranLater, 3)
    // The spooled ones run on a worker once Redis is back.
    spooling.tasks.work()
    await server.start()
    await waitFor(() => ranLater === 5, { timeoutMs: 10_000, message: 'the spooled runs' })
  })
})
