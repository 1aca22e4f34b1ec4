// Redis up: dispatch queues on BullMQ, an in-process worker runs the jobs with the task's
// retries, backoff, delay, timeout and idempotency key.
import assert from 'node:assert/strict'
import { describe, test, type TestContext } from 'node:test'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import type { TaskContext, TaskQueue, WorkerHandle } from '../../src/index.js'
import { startRedis, waitFor, type RedisServer } from '../support/fault-kit.js'
import { makeTasks, sleep } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

/** The BullMQ queue under failsoft's 'default' task queue, closed after the test. */
function bullQueue(t: TestContext, url: string, prefix: string): Queue {
  const { hostname, port } = new URL(url)
  const queue = new Queue('default', {
    connection: { host: hostname, port: Number(port) },
    prefix: `${prefix}:tasks`,
  })
  t.after(() => queue.close())
  return queue
}

describe('tasks with Redis up (queued path)', () => {
  test('dispatch queues the job and a worker runs it with the JSON arguments', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const seen: Array<{
      args: unknown
      ctx: Omit<TaskContext, 'signal' | 'progress' | 'children'>
    }> = []
    const email = tasks.define('send_email', (args: { to: string; at: Date }, ctx) => {
      seen.push({
        args,
        ctx: { id: ctx.id, name: ctx.name, queue: ctx.queue, attempt: ctx.attempt, mode: ctx.mode },
      })
      return 'sent'
    })
    tasks.work()
    const result = await email.dispatch({ to: 'a@example.com', at: new Date(0) })
    assert.equal(result.mode, 'queued')
    await waitFor(() => seen.length === 1, { message: 'the worker runs the job' })
    assert.deepEqual(seen[0], {
      args: { to: 'a@example.com', at: '1970-01-01T00:00:00.000Z' },
      ctx: { id: result.id, name: 'send_email', queue: 'default', attempt: 1, mode: 'worker' },
    })
    assert.equal(tasks.status().counts.queued, 1)
  })

  test('without a key, BullMQ numbers the job and the task id travels in its options', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    const task = tasks.define('plain', () => undefined)
    const result = await task.dispatch({ n: 1 })
    assert.equal(result.mode, 'queued')
    if (result.mode !== 'queued') return
    assert.match(
      result.id,
      /^t[\w-]{16}[\da-z]{1,4}$/,
      'the task id: a random prefix and a counter',
    )
    assert.match(result.jobId, /^\d+$/, "BullMQ's counter")
    const queue = bullQueue(t, server.url, prefix)
    const job = await queue.getJob(result.jobId)
    assert.equal((job?.opts as Record<string, unknown> | undefined)?.failsoftId, result.id)
    const keyed = await task.dispatch({ n: 2 }, { idempotencyKey: 'x' })
    assert.equal(keyed.mode === 'queued' && keyed.jobId, keyed.id, 'a key is the job id')
  })

  test('two copies of one task (a late add and its replay) never both run', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('slow', async () => {
      runs++
      await sleep(300)
    })
    const worker = tasks.work({ concurrency: 2 })
    // What a replay after an ambiguous enqueue leaves when the first add landed too: the
    // first under BullMQ's counter, the replay under the task id — fetched together.
    const queue = bullQueue(t, server.url, prefix)
    const id = 'Zm9yLXRoZS10ZXN0LW9ubHk'
    const late = await queue.add('slow', {}, { failsoftId: id } as never)
    const replay = await queue.add('slow', {}, { jobId: id })
    await waitFor(
      async () =>
        (await late.getState()) === 'completed' && (await replay.getState()) === 'completed',
      { message: 'both copies complete' },
    )
    assert.equal(runs, 1, 'one run')
    assert.equal(worker.status().skippedDone, 1, 'the other copy completed without running')
  })

  test("a copy's failed run gives its claim up: the other copy runs", async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('flaky', () => {
      runs++
      if (runs === 1) throw new Error('first run fails')
    })
    const worker = tasks.work()
    const queue = bullQueue(t, server.url, prefix)
    const id = 'ZmFpbGluZy1jb3B5LXRlc3Q'
    const first = await queue.add('flaky', {}, { failsoftId: id } as never)
    await waitFor(async () => (await first.getState()) === 'failed', { message: 'first fails' })
    const copy = await queue.add('flaky', {}, { jobId: id })
    await waitFor(async () => (await copy.getState()) === 'completed', { message: 'copy runs' })
    assert.equal(runs, 2)
    assert.equal(worker.status().skippedDone, 0)
  })

  test('a failing job is retried with its backoff until it succeeds', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const attempts: Array<{ attempt: number; at: number }> = []
    const flaky = tasks.define(
      'flaky',
      (_args: null, ctx) => {
        attempts.push({ attempt: ctx.attempt, at: Date.now() })
        if (ctx.attempt < 3) throw new Error(`try ${ctx.attempt} fails`)
        return 'ok'
      },
      { attempts: 3, backoff: { type: 'fixed', delayMs: 200 } },
    )
    tasks.work()
    assert.equal((await flaky.dispatch(null)).mode, 'queued')
    await waitFor(() => attempts.length === 3, { timeoutMs: 5000, message: 'three tries' })
    assert.deepEqual(
      attempts.map((a) => a.attempt),
      [1, 2, 3],
    )
    for (let i = 1; i < attempts.length; i++) {
      const gap = attempts[i]!.at - attempts[i - 1]!.at
      assert.ok(gap >= 150, `backoff honoured between tries (${gap} ms)`)
    }
    await sleep(400)
    assert.equal(attempts.length, 3, 'no fourth try after success')
  })

  test('exponential backoff doubles the wait between tries', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const at: number[] = []
    const failing = tasks.define(
      'failing',
      () => {
        at.push(Date.now())
        throw new Error('always')
      },
      { attempts: 3, backoff: { type: 'exponential', delayMs: 150 } },
    )
    tasks.work()
    await failing.dispatch(null)
    await waitFor(() => at.length === 3, { timeoutMs: 5000, message: 'three tries' })
    const [a, b, c] = at as [number, number, number]
    assert.ok(b - a >= 120, `first wait ~150 ms (${b - a})`)
    assert.ok(c - b >= 250, `second wait ~300 ms (${c - b})`)
    await waitFor(() => tasks.status().workers[0]?.failed === 3, {
      message: 'three failures counted',
    })
  })

  test('delayMs runs the job no earlier than asked', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    let ranAt = 0
    const later = tasks.define('later', () => {
      ranAt = Date.now()
    })
    tasks.work()
    const start = Date.now()
    assert.equal((await later.dispatch(null, { delayMs: 400 })).mode, 'queued')
    await waitFor(() => ranAt > 0, { timeoutMs: 5000, message: 'the delayed job runs' })
    assert.ok(ranAt - start >= 380, `ran after ${ranAt - start} ms`)
  })

  test('the same idempotency key makes one job and one run', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    let runs = 0
    const once = tasks.define('once', () => {
      runs++
    })
    tasks.work()
    const first = await once.dispatch(null, { idempotencyKey: 'order-42' })
    const second = await once.dispatch(null, { idempotencyKey: 'order-42' })
    assert.equal(first.id, second.id)
    assert.match(first.id, /^k-[\w-]{32}$/)
    await waitFor(() => runs === 1, { message: 'one run' })
    // After completion (the job may be removed from BullMQ), the done marker still dedups.
    const third = await once.dispatch(null, { idempotencyKey: 'order-42' })
    assert.equal(third.id, first.id)
    await sleep(300)
    assert.equal(runs, 1)
    // Another task with the same key is another job.
    const other = tasks.define('other', () => undefined)
    assert.notEqual((await other.dispatch(null, { idempotencyKey: 'order-42' })).id, first.id)
  })

  /**
   * A task run once by a worker (key 'k', jobs removed on completion), then the same id
   * dispatched again, to be skipped by `skippedBy` (the worker `prepare` returns).
   */
  async function runTwice(
    t: TestContext,
    prepare: (ctx: {
      server: RedisServer
      tasks: TaskQueue
      first: WorkerHandle
    }) => Promise<WorkerHandle>,
  ): Promise<number> {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url, { removeOnComplete: true })
    let runs = 0
    const once = tasks.define('once', () => {
      runs++
    })
    const first = tasks.work()
    await once.dispatch(null, { idempotencyKey: 'k' })
    await waitFor(() => runs === 1, { message: 'first run' })
    const skippedBy = await prepare({ server, tasks, first })
    await once.dispatch(null, { idempotencyKey: 'k' })
    // Generous: under load the second job was once not picked up within 5 s (in about one run
    // of eight; the cause was not established — BullMQ's blocking fetch waits up to its 5 s
    // drainDelay). What is asserted is that it is skipped, not how fast.
    await waitFor(() => skippedBy.status().skippedDone === 1, {
      timeoutMs: 15_000,
      message: 'second copy skipped',
    })
    return runs
  }

  test('a job removed from BullMQ but re-added with the same id is skipped by another worker', async (t) => {
    const runs = await runTwice(t, async ({ tasks, first }) => {
      await first.close()
      // Another worker (another process, in production): only the marker in Redis tells it.
      return tasks.work()
    })
    assert.equal(runs, 1)
  })

  test('the worker that ran a job remembers it itself, even if its marker is lost', async (t) => {
    const runs = await runTwice(t, async ({ server, first }) => {
      const redis = new Redis(server.url)
      t.after(() => redis.disconnect())
      const markers = await redis.keys('*:done:*')
      assert.equal(markers.length, 1)
      await redis.del(...markers)
      return first
    })
    assert.equal(runs, 1)
  })

  test('a try longer than timeoutMs fails with FAILSOFT_TASK_TIMEOUT and aborts ctx.signal', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    let aborted: unknown = null
    const slow = tasks.define(
      'slow',
      (_args: null, ctx) =>
        new Promise((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = ctx.signal.reason
            resolve('late')
          })
        }),
      { timeoutMs: 200 },
    )
    const worker = tasks.work()
    await slow.dispatch(null)
    await waitFor(() => worker.status().failed === 1, { message: 'the try fails' })
    assert.equal((aborted as { code?: string } | null)?.code, 'FAILSOFT_TASK_TIMEOUT')
  })

  test('worker.close() stops taking jobs; a new worker picks them up', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    let runs = 0
    const job = tasks.define('job', () => {
      runs++
    })
    const worker = tasks.work()
    await job.dispatch(null)
    await waitFor(() => runs === 1, { message: 'first worker runs' })
    await worker.close()
    await job.dispatch(null)
    await sleep(300)
    assert.equal(runs, 1, 'nobody runs it while no worker is open')
    tasks.work()
    await waitFor(() => runs === 2, { message: 'the new worker runs it' })
  })

  test('after a kill, the worker runs jobs again within about a second of Redis answering', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const ranAt: number[] = []
    const job = tasks.define('job', () => {
      ranAt.push(Date.now())
    })
    tasks.work()
    await job.dispatch(null)
    await waitFor(() => ranAt.length === 1)
    await server.kill()
    await sleep(2500) // long enough for the worker's reconnect backoff to reach its cap
    await server.start()
    const answering = Date.now()
    await waitFor(() => failsoft.health.state === 'up', { message: 'up' })
    assert.equal((await job.dispatch(null)).mode, 'queued')
    await waitFor(() => ranAt.length === 2, { timeoutMs: 5000, message: 'the worker runs it' })
    const after = ranAt[1]! - answering
    assert.ok(after < 2000, `worker back ${after} ms after Redis answered`)
    const component = failsoft.status().components['tasks:default']
    assert.equal(component?.backend, 'redis')
    assert.equal(component?.counts.queued, 2)
  })
})
