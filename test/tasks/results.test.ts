// Results (dispatch → result(), task.run()) and events (completed, failed, progress, retrying)
// in every mode, against a real Redis: queued, across a kill and a restart with its data, a
// job lost in an empty restart, inline, spooled and replayed, dropped, timeouts and failures.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import {
  TaskFailedError,
  type TaskEventName,
  type TaskEvents,
  type TaskQueue,
} from '../../src/index.js'
import { rejection, startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { withoutTestContext } from '../support/published.js'
import { makeTasks, sleep, spawnNode, uniquePrefix } from './helpers.js'

const closeWhileDown = fileURLToPath(new URL('./fixtures/close-while-down.ts', import.meta.url))

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

type Recorded = { [K in TaskEventName]: { event: K } & TaskEvents[K] }[TaskEventName]

/** Every event of these kinds the queue emits, in order. */
function record(tasks: TaskQueue, ...names: TaskEventName[]): Recorded[] {
  const seen: Recorded[] = []
  for (const event of names) {
    tasks.on(event, (payload: TaskEvents[typeof event]) =>
      seen.push({ event, ...payload } as Recorded),
    )
  }
  return seen
}

describe('results: queued', () => {
  test('result() resolves with the value the worker returned; run() is dispatch + result', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const add = tasks.define('add', (args: { a: number; b: number }) => ({ sum: args.a + args.b }))
    const none = tasks.define('none', () => undefined)
    tasks.work({ concurrency: 2 })
    const handle = await add.dispatch({ a: 2, b: 3 })
    assert.equal(handle.mode, 'queued')
    assert.deepEqual(await handle.result({ timeoutMs: 10_000 }), { sum: 5 })
    assert.deepEqual(await handle.result(), { sum: 5 }, 'again, from the job kept in Redis')
    assert.deepEqual(await add.run({ a: 20, b: 22 }, { timeoutMs: 10_000 }), { sum: 42 })
    assert.equal(await none.run(null, { timeoutMs: 10_000 }), null, 'undefined is stored as null')
    const keyed = await add.run({ a: 1, b: 1 }, { idempotencyKey: 'k1', timeoutMs: 10_000 })
    assert.deepEqual(keyed, { sum: 2 })
    // The method is not part of the data: the result still compares and serializes as before.
    assert.deepEqual(JSON.parse(JSON.stringify(handle)), { ...handle })
    assert.equal(Object.keys(handle).includes('result'), false)
  })

  test('a failing task rejects with FAILSOFT_TASK_FAILED carrying its error name and message', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const bad = tasks.define('bad', () => {
      throw new TypeError('no such thing')
    })
    tasks.work()
    const error = await rejection(bad.run(null, { timeoutMs: 10_000 }))
    assert.ok(error instanceof TaskFailedError)
    assert.equal(error.code, 'FAILSOFT_TASK_FAILED')
    assert.equal(error.errorName, 'TypeError')
    assert.equal(error.errorMessage, 'no such thing')
    assert.equal(error.details.task, 'bad')
  })

  test('timeoutMs rejects with FAILSOFT_TASK_RESULT_TIMEOUT; an aborted signal with its reason', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const idle = tasks.define('idle', () => 'never run: no worker')
    const handle = await idle.dispatch(null)
    const started = Date.now()
    const timeout = await rejection(handle.result({ timeoutMs: 300 }))
    assert.equal(timeout.code, 'FAILSOFT_TASK_RESULT_TIMEOUT')
    assert.ok(Date.now() - started < 3000)
    const controller = new AbortController()
    const waiting = handle.result({ signal: controller.signal })
    controller.abort(new Error('caller gave up'))
    assert.equal((await rejection(waiting)).message, 'caller gave up')
    assert.equal(
      (await rejection(handle.result({ timeoutMs: -1 }))).code,
      'FAILSOFT_INVALID_OPTION',
    )
  })

  test('a job removed at completion (removeOnComplete: true): a later result() reads its end from the event stream, then is FAILSOFT_TASK_RESULT_UNAVAILABLE once the stream moved on', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url, { removeOnComplete: true })
    const quick = tasks.define('quick', () => 7)
    const completed = record(tasks, 'completed')
    tasks.work()
    const handle = await quick.dispatch(null)
    // Waiting before it completes: the completion event carries the value.
    assert.equal(await handle.result({ timeoutMs: 10_000 }), 7)
    await waitFor(() => completed.length === 1, { message: 'completed event' })
    // Asked after the job was removed: its 'completed' entry is among the stream's last ones.
    assert.equal(await handle.result({ timeoutMs: 10_000 }), 7)
    // A thousand later events (other jobs of a busy queue): nothing in Redis says any more.
    const redis = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 })
    try {
      const pipeline = redis.pipeline()
      for (let i = 0; i < 1000; i++) {
        pipeline.xadd(
          `${prefix}:tasks:${tasks.name}:events`,
          '*',
          'event',
          'waiting',
          'jobId',
          `other-${i}`,
        )
      }
      await pipeline.exec()
    } finally {
      redis.disconnect()
    }
    const error = await rejection(handle.result({ timeoutMs: 10_000 }))
    assert.equal(error.code, 'FAILSOFT_TASK_RESULT_UNAVAILABLE')
    assert.equal((error as unknown as { reason: string }).reason, 'job-missing')
  })
})

describe('results: bounds', () => {
  test('a value larger than maxResultBytes (or not JSON) is not stored: the task completes once, result() says why', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url, { maxResultBytes: 1000 })
    let runs = 0
    const big = tasks.define('big', () => {
      runs++
      return { blob: 'x'.repeat(2000) }
    })
    const odd = tasks.define('odd', () => ({ n: 1n }))
    const fits = tasks.define('fits', () => ({ blob: 'x'.repeat(900) }))
    tasks.work()
    const tooLarge = await rejection(big.run(null, { timeoutMs: 10_000 }))
    assert.equal(tooLarge.code, 'FAILSOFT_TASK_RESULT_UNAVAILABLE')
    assert.equal((tooLarge as unknown as { reason: string }).reason, 'too-large')
    const notJson = await rejection(odd.run(null, { timeoutMs: 10_000 }))
    assert.equal((notJson as unknown as { reason: string }).reason, 'not-json')
    assert.equal(
      ((await fits.run(null, { timeoutMs: 10_000 })) as { blob: string }).blob.length,
      900,
    )
    await sleep(300)
    assert.equal(runs, 1, 'completed, not retried')
  })
})

describe('results: an end the event reader did not see', () => {
  test('a job removed on completion before the first result() opened the event reader: the value, from the stream', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url, { removeOnComplete: true })
    let ran = 0
    const quick = tasks.define('quick', (args: { n: number }) => {
      ran++
      return args.n + 1
    })
    tasks.work()
    const handle = await quick.dispatch({ n: 41 })
    assert.ok(handle.mode === 'queued')
    const redis = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 })
    const jobKey = `${prefix}:tasks:${tasks.name}:${handle.jobId}`
    try {
      await waitFor(async () => ran === 1 && (await redis.exists(jobKey)) === 0, {
        timeoutMs: 10_000,
        message: 'completed and removed',
      })
    } finally {
      redis.disconnect()
    }
    // Nothing in Redis holds the job any more; its 'completed' event, written before this
    // process read the stream, still does.
    assert.equal(await handle.result({ timeoutMs: 10_000 }), 42)
  })
})

describe('results: closing', () => {
  // BullMQ races its blocking read with an 11 s watchdog timer; a read in flight when the
  // socket went away (kept by ioredis to be re-sent) held the process up to 11 s.
  for (const fault of ['killed', 'frozen'] as const) {
    test(`a process that awaited a result and listens to events, closed 1 s after Redis was ${fault}, exits by itself at once`, async (t) => {
      const server = await startRedis(t)
      const child = spawn(process.execPath, ['--import', 'tsx', closeWhileDown], {
        env: { ...withoutTestContext(), REDIS_URL: server.url },
        stdio: ['pipe', 'pipe', 'inherit'],
      })
      t.after(() => child.kill('SIGKILL'))
      const exited = once(child, 'exit')
      let out = ''
      child.stdout.setEncoding('utf8')
      child.stdout.on('data', (chunk: string) => (out += chunk))
      await waitFor(() => out.includes('waiting\n'), {
        timeoutMs: 20_000,
        message: 'child waiting',
      })
      assert.match(out, /ran 1\n/)
      if (fault === 'killed') await server.kill()
      else server.freeze()
      await sleep(1000)
      child.stdin.end('go\n')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      const [code, signal] = (await exited) as [number | null, string | null]
      clearTimeout(timer)
      assert.equal(signal, null, 'exited by itself (it was killed 5 s after close)')
      assert.equal(code, 0)
      assert.match(out, /closed\n/)
    })
  }
})

describe('results: copies of one task id', () => {
  test('a repeated idempotency key: the value of its one run, or ran-as-another-job once that job is gone', async (t) => {
    const server = await startRedis(t)
    const kept = await makeTasks(t, server.url)
    let runs = 0
    const once = kept.tasks.define('once', () => ++runs)
    kept.tasks.work()
    assert.equal(await once.run(null, { idempotencyKey: 'k', timeoutMs: 10_000 }), 1)
    assert.equal(await once.run(null, { idempotencyKey: 'k', timeoutMs: 10_000 }), 1, 'same job')

    const removed = await makeTasks(t, server.url, { removeOnComplete: true })
    let removedRuns = 0
    const again = removed.tasks.define('again', () => ++removedRuns)
    removed.tasks.work()
    assert.equal(await again.run(null, { idempotencyKey: 'k', timeoutMs: 10_000 }), 1)
    // The job is gone; the key's done marker lives: a new job, completed without running.
    const error = await rejection(again.run(null, { idempotencyKey: 'k', timeoutMs: 10_000 }))
    assert.equal((error as unknown as { reason: string }).reason, 'ran-as-another-job')
    assert.equal(removedRuns, 1)
  })
})

describe('results across outages', () => {
  test('a result awaited across a kill and a restart with the data resolves once a worker runs it', async (t) => {
    const server = await startRedis(t)
    const { tasks, failsoft } = await makeTasks(t, server.url)
    const slow = tasks.define('slow', (args: { n: number }) => args.n * 2)
    const handle = await slow.dispatch({ n: 21 })
    assert.equal(handle.mode, 'queued')
    let settled = false
    const result = handle.result({ timeoutMs: 30_000 }).finally(() => {
      settled = true
    })
    await sleep(200)
    await server.restart({ keepData: true, delayMs: 1000 })
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 10_000, message: 'up' })
    assert.equal(settled, false, 'still waiting: nothing ran the job yet')
    tasks.work()
    assert.equal(await result, 42)
  })

  test('a job Redis forgot in an empty restart is added again by the recovery: its result resolves', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const again = tasks.define('again', () => 'ran after the reset')
    const handle = await again.dispatch(null)
    const result = handle.result({ timeoutMs: 30_000 })
    await sleep(200)
    await server.restart({ keepData: false, delayMs: 300 })
    await waitFor(() => tasks.status().counts.rollbackReadded === 1, {
      timeoutMs: 10_000,
      message: 'the job is added again under its task id',
    })
    tasks.work()
    assert.equal(await result, 'ran after the reset')
  })

  test('a job lost in an empty restart (not added again): result() rejects with FAILSOFT_TASK_RESULT_UNAVAILABLE within a bound', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const lost = tasks.define('lost', () => 'never')
    const filler = tasks.define('filler', () => undefined)
    const handle = await lost.dispatch(null)
    const result = handle.result({ timeoutMs: 30_000 })
    // 10 000 later queued dispatches: the process no longer remembers the first one to add it
    // again (it keeps the last 10 000). Counted as answered, since a slow add may be spooled.
    let queued = 0
    while (queued < 10_050) {
      const batch = await Promise.all(Array.from({ length: 100 }, (_, n) => filler.dispatch({ n })))
      queued += batch.filter((r) => r.mode === 'queued').length
    }
    await sleep(200)
    await server.restart({ keepData: false, delayMs: 300 })
    const started = Date.now()
    const error = await rejection(result)
    assert.equal(error.code, 'FAILSOFT_TASK_RESULT_UNAVAILABLE')
    assert.equal((error as unknown as { reason: string }).reason, 'job-missing')
    assert.ok(Date.now() - started < 10_000, `rejected after ${Date.now() - started} ms`)
  })

  test('a result and its completed event, missed while this process was cut off, arrive once it is back', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const prefix = uniquePrefix()
    // A: dispatches and waits, through the proxy. B: the worker, straight to Redis.
    const a = await makeTasks(t, proxy.urlFor(server), { prefix })
    const b = await makeTasks(t, server.url, { prefix })
    const gate = { open: false }
    a.tasks.define('job', () => 'unused here')
    b.tasks.define('job', async (args: { n: number }) => {
      await waitFor(() => gate.open, { timeoutMs: 20_000 })
      return args.n + 1
    })
    const events = record(a.tasks, 'completed')
    b.tasks.work()
    const handle = await a.tasks.dispatch<number>('job', { n: 1 })
    assert.equal(handle.mode, 'queued')
    const result = handle.result({ timeoutMs: 30_000 })
    await sleep(300) // A's event stream is being read
    proxy.blackhole()
    await waitFor(() => a.failsoft.health.state === 'down', { timeoutMs: 5000, message: 'A down' })
    gate.open = true // B completes the job while A cannot see it
    await sleep(500)
    assert.equal(events.length, 0)
    proxy.pass()
    assert.equal(await result, 2)
    await waitFor(() => events.length === 1, { timeoutMs: 15_000, message: 'completed event' })
    assert.equal(events[0]?.id, handle.id)
    assert.equal(events[0]?.name, 'job')
    assert.equal(events[0]?.event === 'completed' && events[0].value, 2)
  })
})

describe('results across outages: jobs removed on completion, job numbers reused', () => {
  test('removeOnComplete: true — a result whose job completed while this process was cut off resolves once it is back (from the stream)', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const prefix = uniquePrefix()
    const a = await makeTasks(t, proxy.urlFor(server), { prefix })
    const b = await makeTasks(t, server.url, { prefix, removeOnComplete: true })
    const gate = { open: false }
    a.tasks.define('job', () => 'unused here')
    b.tasks.define('job', async (args: { n: number }) => {
      await waitFor(() => gate.open, { timeoutMs: 20_000 })
      return args.n + 1
    })
    b.tasks.work({ concurrency: 5 })
    const handles = []
    for (let n = 0; n < 5; n++) handles.push(await a.tasks.dispatch<number>('job', { n }))
    const results = handles.map((h) => h.result({ timeoutMs: 30_000 }))
    await sleep(300)
    proxy.blackhole()
    await waitFor(() => a.failsoft.health.state === 'down', { timeoutMs: 5000, message: 'A down' })
    gate.open = true // B completes (and removes) the jobs while A cannot see it
    await sleep(1000)
    proxy.pass()
    assert.deepEqual(await Promise.all(results), [1, 2, 3, 4, 5])
  })

  test('a wait begun while cut off, across an empty restart whose new jobs reuse the job numbers: never another task’s value', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const prefix = uniquePrefix()
    const a = await makeTasks(t, proxy.urlFor(server), { prefix, removeOnComplete: true })
    a.tasks.define('job', () => 'unused here')
    const handles = []
    for (let n = 1; n <= 3; n++)
      handles.push(await a.tasks.dispatch<number>('job', { n: 1000 + n }))
    proxy.blackhole()
    await waitFor(() => a.failsoft.health.state === 'down', { timeoutMs: 5000, message: 'A down' })
    const results = handles.map((h) => h.result({ timeoutMs: 30_000 }))
    await server.restart({ keepData: false })
    // Another process numbers its own jobs 1, 2, 3 in the new, empty Redis; they run only once
    // A is back (their 'completed' events then reach A live).
    const b = await makeTasks(t, server.url, { prefix, removeOnComplete: true })
    b.tasks.define('job', (args: { n: number }) => args.n)
    const others = []
    for (let n = 1; n <= 3; n++) others.push(await b.tasks.dispatch<number>('job', { n }))
    assert.deepEqual(
      others.map((h) => (h.mode === 'queued' ? h.jobId : h.mode)),
      handles.map((h) => (h.mode === 'queued' ? h.jobId : h.mode)),
      'the same job numbers',
    )
    proxy.pass()
    await waitFor(() => a.failsoft.health.state === 'up', { timeoutMs: 10_000, message: 'A up' })
    b.tasks.work({ concurrency: 5 })
    assert.deepEqual(
      await Promise.all(others.map((h) => h.result({ timeoutMs: 10_000 }))),
      [1, 2, 3],
    )
    // A's recovery saw the reset and added its lost jobs again, under their task ids.
    assert.deepEqual(await Promise.all(results), [1001, 1002, 1003])
  })
})

describe('results: fallbacks', () => {
  test('inline: result() is the inline run’s value, or its failure typed', async (t) => {
    const server = await startRedis(t)
    const { tasks, failsoft } = await makeTasks(t, server.url)
    const ok = tasks.define('ok', (args: string) => args.toUpperCase())
    const ko = tasks.define('ko', () => {
      throw new RangeError('out of range')
    })
    failsoft.health.forceFallback(true)
    const handle = await ok.dispatch('abc')
    assert.equal(handle.mode, 'inline')
    assert.equal(await handle.result(), 'ABC')
    assert.equal(await ok.run('x'), 'X')
    const error = await rejection(ko.run(null))
    assert.ok(error instanceof TaskFailedError)
    assert.equal(error.errorName, 'RangeError')
    assert.ok(error.cause instanceof RangeError, 'the inline error itself as cause')
  })

  test('spooled: result() resolves after the replay to Redis and the worker’s run', async (t) => {
    const server = await startRedis(t)
    const { tasks, failsoft } = await makeTasks(t, server.url)
    const later = tasks.define('later', (args: { v: string }) => `done ${args.v}`, {
      fallback: 'spool',
    })
    tasks.work()
    failsoft.health.forceFallback(true)
    const handle = await later.dispatch({ v: 'x' })
    assert.equal(handle.mode, 'spooled')
    let settled = false
    const result = handle.result({ timeoutMs: 30_000 }).finally(() => {
      settled = true
    })
    await sleep(6000) // longer than the poll: still in the spool, still waiting
    assert.equal(settled, false)
    failsoft.health.forceFallback(false)
    assert.equal(await result, 'done x')
  })

  test('dropped rejects at once with FAILSOFT_TASK_DROPPED', async (t) => {
    const server = await startRedis(t)
    const { tasks, failsoft } = await makeTasks(t, server.url)
    const gone = tasks.define('gone', () => 1, { fallback: 'drop' })
    failsoft.health.forceFallback(true)
    const handle = await gone.dispatch(null)
    assert.equal(handle.mode, 'dropped')
    const error = await rejection(handle.result({ timeoutMs: 60_000 }))
    assert.equal(error.code, 'FAILSOFT_TASK_DROPPED')
    assert.equal((await rejection(gone.run(null))).code, 'FAILSOFT_TASK_DROPPED')
  })

  test('memory-only: inline and delayed (deferred) results', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const echo = tasks.define('echo', (args: number) => args)
    assert.equal(await echo.run(5), 5)
    const handle = await echo.dispatch(6, { delayMs: 100 })
    assert.equal(handle.mode, 'deferred')
    assert.equal(await handle.result({ timeoutMs: 5000 }), 6)
  })
})

describe('events and progress', () => {
  test('queued: progress, retrying and completed events from the worker, with the task id and name', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const steps = tasks.define(
      'steps',
      async (_args: null, ctx) => {
        if (ctx.attempt === 1) throw new Error('first try fails')
        ctx.progress(50)
        ctx.progress({ step: 2, of: 2 })
        await sleep(100)
        return 'ok'
      },
      { attempts: 2, backoff: { type: 'fixed', delayMs: 100 } },
    )
    const events = record(tasks, 'progress', 'retrying', 'completed', 'failed')
    tasks.work()
    const handle = await steps.dispatch(null)
    assert.equal(await handle.result({ timeoutMs: 15_000 }), 'ok')
    await waitFor(() => events.some((e) => e.event === 'completed'), { message: 'completed' })
    assert.deepEqual(
      events.map((e) => e.event),
      ['retrying', 'progress', 'progress', 'completed'],
    )
    for (const e of events) {
      assert.equal(e.id, handle.id)
      assert.equal(e.name, 'steps')
      assert.equal(e.mode, 'worker')
    }
    const [retrying, p1, p2] = events
    assert.equal(retrying?.event === 'retrying' && retrying.attempt, 1)
    assert.equal(retrying?.event === 'retrying' && retrying.error.errorMessage, 'first try fails')
    assert.equal(p1?.event === 'progress' && p1.progress, 50)
    assert.deepEqual(p2?.event === 'progress' && p2.progress, { step: 2, of: 2 })
  })

  test('queued: a stalled event when the worker running a job is killed, then it completes once on another', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    // The worker of another OS process takes the job, with a 1 s lock and a 2 s lease, and
    // is SIGKILLed while the handler runs.
    const doomed = spawnNode(t, {
      ROLE: 'worker',
      REDIS_URL: server.url,
      PREFIX: prefix,
      WORK_MS: '60000',
      LOCK_MS: '1000',
      STALLED_MS: '500',
      LEASE_MS: '2000',
      CONCURRENCY: '1',
    })
    await doomed.next('ready')
    // (a lease not renewed is taken over after about twice the claimer's leaseMs)
    const { tasks } = await makeTasks(t, server.url, { prefix, leaseMs: 2000 })
    let runs = 0
    const job = tasks.define('job', (args: { n: number }) => {
      runs++
      return args.n
    })
    const events = record(tasks, 'stalled', 'completed')
    const handle = await job.dispatch({ n: 7 })
    assert.equal(handle.mode, 'queued')
    const active = `${prefix}:tasks:${tasks.name}:active`
    await waitFor(async () => Number(await server.cli('LLEN', active)) === 1, {
      timeoutMs: 10_000,
      message: 'the other process runs it',
    })
    await doomed.kill()
    tasks.work({ lockDurationMs: 1000, stalledIntervalMs: 500 })
    assert.equal(await handle.result({ timeoutMs: 20_000 }), 7)
    await waitFor(() => events.some((e) => e.event === 'completed'), { message: 'completed' })
    const stalled = events.find((e) => e.event === 'stalled')
    assert.ok(stalled, `a stalled event (got ${events.map((e) => e.event).join(', ')})`)
    assert.equal(stalled.id, handle.id)
    assert.equal(stalled.name, 'job')
    assert.equal(stalled.mode, 'worker')
    assert.equal(runs, 1, 'ran once here (the killed run never finished)')
  })

  test('queued: a failed event for a task failed for good', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const bad = tasks.define('bad', () => {
      throw new SyntaxError('nope')
    })
    const failed = record(tasks, 'failed')
    tasks.work()
    const handle = await bad.dispatch(null)
    await waitFor(() => failed.length === 1, { timeoutMs: 10_000, message: 'failed event' })
    const event = failed[0]
    assert.ok(event?.event === 'failed')
    assert.equal(event.id, handle.id)
    assert.equal(event.error.code, 'FAILSOFT_TASK_FAILED')
    assert.equal(event.error.errorName, 'SyntaxError')
    assert.equal(event.error.errorMessage, 'nope')
  })

  test('inline: progress, retrying, completed and failed events in this process; bad progress throws', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const steps = tasks.define(
      'steps',
      (args: { fail: boolean }, ctx) => {
        ctx.progress(1)
        if (args.fail || ctx.attempt === 1) throw new Error(`try ${ctx.attempt}`)
        ctx.progress({ done: true })
        return 'ok'
      },
      { attempts: 2, backoff: { type: 'fixed', delayMs: 10 } },
    )
    const invalid: string[] = []
    const bad = tasks.define('bad-progress', (_args: null, ctx) => {
      for (const value of [Number.NaN, 'text', [1], { big: 'x'.repeat(5000) }]) {
        try {
          ctx.progress(value as never)
        } catch (error) {
          invalid.push((error as { code: string }).code)
        }
      }
    })
    const events = record(tasks, 'progress', 'retrying', 'completed', 'failed')
    const handle = await steps.dispatch({ fail: false })
    assert.equal(await handle.result(), 'ok')
    assert.deepEqual(
      events.map((e) => e.event),
      ['progress', 'retrying', 'progress', 'progress', 'completed'],
    )
    assert.ok(events.every((e) => e.id === handle.id && e.name === 'steps' && e.mode === 'inline'))
    events.length = 0
    await rejection(steps.run({ fail: true }))
    assert.deepEqual(
      events.map((e) => e.event),
      ['progress', 'retrying', 'progress', 'failed'],
    )
    await bad.run(null)
    assert.deepEqual(invalid, Array(4).fill('FAILSOFT_INVALID_PROGRESS'))
  })

  test('a listener disposed no longer receives events; a throwing listener does not break the run', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const echo = tasks.define('echo', (args: number) => args)
    const seen: number[] = []
    const throwing = tasks.on('completed', () => {
      throw new Error('listener bug')
    })
    const listener = tasks.on('completed', (e) => seen.push(e.value as number))
    assert.equal(await echo.run(1), 1)
    listener.dispose()
    throwing.dispose()
    assert.equal(await echo.run(2), 2)
    assert.deepEqual(seen, [1])
  })
})
