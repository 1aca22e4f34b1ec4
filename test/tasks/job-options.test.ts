// Dispatch options BullMQ users rely on — priority and lifo — in every mode: queued (BullMQ
// orders the waiting jobs), spooled while Redis is down (the spool keeps them; the replay hands
// them to BullMQ with them), inline (runs at once: nothing to order), and bad values refused.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { InvalidTaskArgsError } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('dispatch options: priority and lifo', () => {
  test('queued: a worker takes the waiting jobs by priority (1 first), unprioritized ones before', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const order: string[] = []
    const task = tasks.define('p', (args: { name: string }) => {
      order.push(args.name)
    })
    for (const [name, priority] of [
      ['low', 50],
      ['none', undefined],
      ['high', 1],
      ['mid', 10],
    ] as const) {
      const result = await task.dispatch({ name }, { priority })
      assert.equal(result.mode, 'queued')
    }
    tasks.work({ concurrency: 1 })
    await waitFor(() => order.length === 4, { message: 'all four run' })
    assert.deepEqual(order, ['none', 'high', 'mid', 'low'])
  })

  test('queued: lifo jobs are taken before the others waiting', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const order: number[] = []
    const task = tasks.define('l', (args: { n: number }) => {
      order.push(args.n)
    })
    await task.dispatch({ n: 1 })
    await task.dispatch({ n: 2 })
    await task.dispatch({ n: 3 }, { lifo: true })
    tasks.work({ concurrency: 1 })
    await waitFor(() => order.length === 3, { message: 'all three run' })
    assert.deepEqual(order, [3, 1, 2])
  })

  test('spooled while Redis is down: the replay keeps each job priority', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { tasks, failsoft } = await makeTasks(t, server.url)
    const order: string[] = []
    const task = tasks.define(
      's',
      (args: { name: string }) => {
        order.push(args.name)
      },
      { fallback: 'spool' },
    )
    await server.kill()
    await waitFor(() => !failsoft.health.available, { message: 'down' })
    for (const [name, priority] of [
      ['low', 50],
      ['high', 1],
      ['mid', 10],
    ] as const) {
      const result = await task.dispatch({ name }, { priority })
      assert.equal(result.mode, 'spooled')
    }
    await server.start()
    await waitFor(() => failsoft.health.available && tasks.status().spoolDepth === 0, {
      timeoutMs: 10_000,
      message: 'replayed',
    })
    tasks.work({ concurrency: 1 })
    await waitFor(() => order.length === 3, { message: 'all three run' })
    assert.deepEqual(order, ['high', 'mid', 'low'])
  })

  test('inline while Redis is down: runs at once, the options accepted', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const task = tasks.define('i', (args: { n: number }) => args.n * 2)
    const result = await task.dispatch({ n: 21 }, { priority: 3, lifo: true })
    assert.equal(result.mode, 'inline')
    assert.ok(result.mode === 'inline' && result.ok && result.value === 42)
  })

  test('a priority or lifo BullMQ would not take is refused before anything is written', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const task = tasks.define('bad', () => undefined)
    for (const priority of [-1, 1.5, 2_097_153, Number.NaN, '1']) {
      await assert.rejects(
        task.dispatch({}, { priority: priority as number }),
        (error: unknown) =>
          error instanceof InvalidTaskArgsError &&
          error.code === 'FAILSOFT_INVALID_TASK_ARGS' &&
          /priority must be an integer between 0 and 2097152/.test(error.message),
        `priority ${String(priority)}`,
      )
    }
    await assert.rejects(
      task.dispatch({}, { lifo: 'yes' as unknown as boolean }),
      /lifo must be a boolean; received/,
    )
    assert.equal(tasks.status().counts.inlineOk, 0)
  })
})

describe('dispatch options: the BullMQ pass-through (Redis mode only)', () => {
  /** The options BullMQ stored with a job (its hash's `opts` field, parsed). */
  async function storedOptions(
    server: { cli(...args: string[]): Promise<unknown> },
    prefix: string,
    jobId: string,
  ): Promise<Record<string, unknown>> {
    const raw = await server.cli('HGET', `${prefix}:tasks:default:${jobId}`, 'opts')
    return JSON.parse(String(raw)) as Record<string, unknown>
  }

  test('queued: the options reach the job BullMQ stores', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    const task = tasks.define('b', () => undefined)
    const result = await task.dispatch({}, { bullmq: { stackTraceLimit: 3, sizeLimit: 4096 } })
    assert.equal(result.mode, 'queued')
    const opts = await storedOptions(server, prefix, result.mode === 'queued' ? result.jobId : '')
    assert.equal(opts.stackTraceLimit, 3)
    assert.equal(opts.sizeLimit, 4096)
  })

  test('spooled while Redis is down: the spool keeps them and the replay applies them', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { tasks, failsoft, prefix } = await makeTasks(t, server.url)
    const task = tasks.define('b', () => undefined, { fallback: 'spool' })
    await server.kill()
    await waitFor(() => !failsoft.health.available, { message: 'down' })
    const result = await task.dispatch({}, { bullmq: { stackTraceLimit: 7 } })
    assert.equal(result.mode, 'spooled')
    await server.start()
    await waitFor(() => failsoft.health.available && tasks.status().spoolDepth === 0, {
      timeoutMs: 10_000,
      message: 'replayed',
    })
    // A replayed job's BullMQ id is its task id.
    const opts = await storedOptions(server, prefix, result.id)
    assert.equal(opts.stackTraceLimit, 7)
  })

  test('inline: the run happens, the options ignored', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const task = tasks.define('b', () => 'ran')
    const result = await task.dispatch({}, { bullmq: { stackTraceLimit: 1 } })
    assert.equal(result.mode, 'inline')
    assert.equal(result.mode === 'inline' && result.ok && result.value, 'ran')
  })

  test('keys failsoft sets, non-JSON values and oversized options are refused, named', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const task = tasks.define('b', () => undefined)
    const refused = async (bullmq: unknown, what: RegExp): Promise<void> => {
      await assert.rejects(
        async () => task.dispatch({}, { bullmq } as never),
        (error: InvalidTaskArgsError) => {
          assert.equal(error.code, 'FAILSOFT_INVALID_TASK_ARGS')
          assert.match(error.message, what)
          return true
        },
      )
    }
    await refused({ jobId: 'mine' }, /bullmq\.jobId is set by failsoft/)
    await refused({ attempts: 3 }, /bullmq\.attempts/)
    await refused({ delay: 10 }, /bullmq\.delay/)
    await refused({ x: 1n }, /must be JSON/)
    await refused({ x: 'y'.repeat(5000) }, /at most 4096 bytes/)
    await refused([1], /must be an object/)
  })
})
