// Redis unavailable: each task follows its fallback without waiting on Redis — killed,
// frozen, partitioned, or not running at start-up.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft, type DispatchResult } from '../../src/index.js'
import { freePort, startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { captureLogs, LEVEL, type LogRecord } from '../support/log-capture.js'
import { FAST_HEALTH, makeTasks, sleep, tempDir, timed, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('inline fallback', () => {
  test('Redis killed: dispatch runs the task in process, without waiting on Redis', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const email = tasks.define(
      'send_email',
      (args: { to: string }, ctx) => `${ctx.mode}:${args.to}`,
    )
    assert.equal((await email.dispatch({ to: 'a' })).mode, 'queued')
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', { message: 'outage detected' })
    const { value, ms } = await timed(() => email.dispatch({ to: 'b' }))
    assert.deepEqual(value, { mode: 'inline', id: value.id, ok: true, value: 'inline:b' })
    assert.ok(ms < 50, `inline dispatch took ${ms.toFixed(1)} ms`)
    const status = tasks.status()
    assert.equal(status.counts.inlineOk, 1)
    assert.equal(status.producer, 'end')
  })

  test('dispatch right at the kill never waits more than the enqueue deadline', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const job = tasks.define('job', () => 'ran')
    await job.dispatch(null)
    const killing = server.kill()
    const results = await Promise.all(
      Array.from({ length: 20 }, () => timed(() => job.dispatch(null))),
    )
    await killing
    for (const { value, ms } of results) {
      assert.ok(['queued', 'inline', 'spooled'].includes(value.mode), value.mode)
      assert.ok(ms < 1000, `dispatch took ${ms.toFixed(0)} ms`)
    }
  })

  test('Redis frozen: the first dispatch is spooled (ambiguous), later ones run inline at once', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const runs: string[] = []
    const job = tasks.define('job', (_args: null, ctx) => {
      runs.push(`${ctx.mode}:${ctx.id}`)
    })
    server.freeze()
    t.after(() => server.thaw())
    const first = await timed(() => job.dispatch(null))
    assert.equal(first.value.mode, 'spooled', 'sent without an answer: never run inline')
    assert.ok(first.ms < 700, `the ambiguous dispatch took ${first.ms.toFixed(0)} ms`)
    assert.equal(failsoft.health.state, 'down')
    const second = await timed(() => job.dispatch(null))
    assert.equal(second.value.mode, 'inline')
    assert.ok(second.ms < 50, `inline dispatch took ${second.ms.toFixed(1)} ms`)
    assert.equal(tasks.status().counts.ambiguous, 1)
    assert.equal(tasks.status().spoolDepth, 1)
    // Thaw: the frozen add lands, the spool replays the same id, a worker runs it once.
    tasks.work()
    server.thaw()
    await waitFor(() => failsoft.health.state === 'up', { message: 'recovered' })
    await waitFor(() => runs.includes(`worker:${first.value.id}`), { message: 'worker runs it' })
    await sleep(500)
    assert.equal(runs.filter((r) => r.endsWith(first.value.id)).length, 1, 'exactly once')
    assert.equal(tasks.status().spoolDepth, 0)
  })

  test('partition (blackhole): dispatch falls back within the enqueue deadline', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft, tasks } = await makeTasks(t, proxy.urlFor(server))
    const job = tasks.define('job', () => 'ok')
    assert.equal((await job.dispatch(null)).mode, 'queued')
    proxy.blackhole()
    const first = await timed(() => job.dispatch(null))
    assert.ok(first.ms < 700, `took ${first.ms.toFixed(0)} ms`)
    assert.equal(first.value.mode, 'spooled')
    await waitFor(() => failsoft.health.state === 'down')
    const later = await timed(() => job.dispatch(null))
    assert.equal(later.value.mode, 'inline')
    assert.ok(later.ms < 50)
    proxy.pass()
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 5000, message: 'recovered' })
    await waitFor(() => tasks.status().spoolDepth === 0, { message: 'spool replayed' })
    assert.equal(tasks.status().counts.replayed, 1)
  })

  test('an enqueue slower than enqueueTimeoutMs is spooled, then handed over while Redis stays up', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft, tasks } = await makeTasks(t, proxy.urlFor(server), { enqueueTimeoutMs: 50 })
    const runs: string[] = []
    const job = tasks.define('job', (_args: null, ctx) => {
      runs.push(ctx.id)
    })
    tasks.work()
    proxy.latency(40) // 80 ms round trips: under the monitor's deadline, over the enqueue's
    const { value, ms } = await timed(() => job.dispatch(null))
    assert.equal(value.mode, 'spooled', 'unanswered within 50 ms: may still land')
    assert.ok(ms < 200, `took ${ms.toFixed(0)} ms`)
    assert.equal(failsoft.health.state, 'up')
    await waitFor(() => runs.includes(value.id) && tasks.status().spoolDepth === 0, {
      timeoutMs: 5000,
      message: 'handed over and run',
    })
    proxy.pass()
    await sleep(500)
    assert.deepEqual(runs, [value.id], 'the add landed and the replay re-added it: one run')
    assert.equal(tasks.status().counts.replayed, 1)
  })

  test('cold start with Redis not running: dispatch runs inline at once, even before ready()', async (t) => {
    const port = await freePort()
    const failsoft = createFailsoft({
      redis: `redis://127.0.0.1:${port}`,
      prefix: uniquePrefix(),
      logger: false,
      health: FAST_HEALTH,
    })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks({ spool: { path: `${tempDir(t)}/s.jsonl` } })
    const job = tasks.define('job', (args: { n: number }) => args.n)
    const early = await timed(() => job.dispatch({ n: 1 }))
    assert.deepEqual(early.value, { mode: 'inline', id: early.value.id, ok: true, value: 1 })
    assert.ok(early.ms < 50, `took ${early.ms.toFixed(1)} ms`)
    assert.equal(await failsoft.ready(), 'down')
    const later = await timed(() => job.dispatch({ n: 2 }))
    assert.equal(later.value.mode, 'inline')
    assert.ok(later.ms < 50)
  })

  test('cold start behind a blackhole: nothing waits for the connect deadline', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    proxy.blackhole()
    const failsoft = createFailsoft({
      redis: proxy.urlFor(server),
      prefix: uniquePrefix(),
      logger: false,
      health: FAST_HEALTH,
    })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks({ spool: { path: `${tempDir(t)}/s.jsonl` } })
    const job = tasks.define('job', () => 'ok')
    const results = await Promise.all(
      Array.from({ length: 10 }, () => timed(() => job.dispatch(null))),
    )
    for (const { value, ms } of results) {
      assert.equal(value.mode, 'inline')
      assert.ok(ms < 100, `took ${ms.toFixed(1)} ms`)
    }
    assert.equal(await failsoft.ready(), 'down')
  })

  test('a worker started while Redis is down processes jobs once Redis starts', async (t) => {
    const server = await startRedis(t)
    await server.kill()
    const { failsoft, tasks } = await makeTasks(t, server.url)
    assert.equal(failsoft.health.state, 'down')
    let runs = 0
    const job = tasks.define('job', () => {
      runs++
    })
    tasks.work()
    await sleep(300)
    await server.start()
    await waitFor(() => failsoft.health.state === 'up', { message: 'up' })
    assert.equal((await job.dispatch(null)).mode, 'queued')
    await waitFor(() => runs === 1, { timeoutMs: 3000, message: 'the worker processes' })
  })

  test('a handler failure inline is in the result and logged once, never thrown', async (t) => {
    const { logger, raw } = captureLogs()
    const records = (): LogRecord[] =>
      raw()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogRecord)
    const { tasks } = await makeTasks(t, null, { logger })
    let tries = 0
    const broken = tasks.define(
      'broken',
      () => {
        tries++
        throw new Error('smtp down')
      },
      { attempts: 2, backoff: { type: 'fixed', delayMs: 20 } },
    )
    const result = await broken.dispatch(null)
    assert.equal(result.mode, 'inline')
    assert.equal(result.mode === 'inline' && result.ok, false)
    assert.equal(result.mode === 'inline' && !result.ok && result.error.message, 'smtp down')
    assert.equal(tries, 2, 'inline honours attempts')
    await broken.dispatch(null)
    const failures = records().filter((r) => r.msg === 'task failed inline')
    assert.equal(failures.length, 1, 'rate-limited: one line for two failures')
    assert.equal(failures[0]?.level, LEVEL.warn)
    assert.equal(failures[0]?.err?.message, 'smtp down')
    assert.equal(tasks.status().counts.inlineFailed, 2)
  })

  test('an inline try past timeoutMs fails with FAILSOFT_TASK_TIMEOUT', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const hang = tasks.define('hang', () => new Promise(() => undefined), { timeoutMs: 100 })
    const { value, ms } = await timed(() => hang.dispatch(null))
    assert.equal(
      value.mode === 'inline' && !value.ok && (value.error as { code?: string }).code,
      'FAILSOFT_TASK_TIMEOUT',
    )
    assert.ok(ms >= 90 && ms < 1000)
  })

  test('the same idempotency key runs once inline during an outage', async (t) => {
    const { tasks } = await makeTasks(t, null)
    let runs = 0
    const once = tasks.define('once', () => {
      runs++
    })
    const a = await once.dispatch(null, { idempotencyKey: 'x' })
    const b = await once.dispatch(null, { idempotencyKey: 'x' })
    assert.equal(a.mode, 'inline')
    assert.deepEqual(b, { mode: 'duplicate', id: a.id })
    assert.equal(runs, 1)
  })
})

describe('bounded inline concurrency', () => {
  async function blocked(t: Parameters<typeof makeTasks>[0], whenBusy: 'reject' | 'spool') {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url, {
      inline: { concurrency: 2, maxWaiting: 1, whenBusy },
    })
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    let release: () => void = () => undefined
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let running = 0
    let peak = 0
    const slow = tasks.define('slow', async () => {
      running++
      peak = Math.max(peak, running)
      await gate
      running--
    })
    return { tasks, slow, release, peak: () => peak }
  }

  test('concurrency runs at once, maxWaiting wait, one more is rejected with FAILSOFT_INLINE_BUSY', async (t) => {
    const { tasks, slow, release, peak } = await blocked(t, 'reject')
    const pending: Array<Promise<DispatchResult>> = [
      slow.dispatch(null),
      slow.dispatch(null),
      slow.dispatch(null),
    ]
    await sleep(20)
    assert.deepEqual(
      { running: tasks.status().inline.running, waiting: tasks.status().inline.waiting },
      { running: 2, waiting: 1 },
    )
    const { value, ms } = await timed(() => slow.dispatch(null))
    assert.equal(value.mode, 'rejected')
    assert.equal(
      value.mode === 'rejected' && (value.error as { code?: string }).code,
      'FAILSOFT_INLINE_BUSY',
    )
    assert.ok(ms < 20, 'rejected at once, not queued')
    release()
    const done = await Promise.all(pending)
    assert.deepEqual(
      done.map((r) => r.mode === 'inline' && r.ok),
      [true, true, true],
    )
    assert.equal(peak(), 2)
    assert.equal(tasks.status().counts.rejected, 1)
  })

  test("whenBusy: 'spool' hands the overflow to the spool instead", async (t) => {
    const { tasks, slow, release } = await blocked(t, 'spool')
    const pending = [slow.dispatch(null), slow.dispatch(null), slow.dispatch(null)]
    await sleep(20)
    const overflow = await slow.dispatch(null)
    assert.equal(overflow.mode, 'spooled')
    assert.equal(tasks.status().spoolDepth, 1)
    release()
    await Promise.all(pending)
  })
})

describe('spool and drop fallbacks (in process)', () => {
  test("fallback 'spool' journals while down and replays in order on recovery", async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url)
    const order: number[] = []
    const job = tasks.define(
      'job',
      (args: { n: number }) => {
        order.push(args.n)
      },
      { fallback: 'spool' },
    )
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    for (let n = 0; n < 250; n++) {
      const r = await job.dispatch({ n })
      assert.equal(r.mode, 'spooled')
    }
    assert.equal(tasks.status().spoolDepth, 250)
    await server.start()
    await waitFor(() => failsoft.health.state === 'up', { message: 'recovered' })
    assert.equal(tasks.status().spoolDepth, 0, 'replayed before the state flipped to up')
    tasks.work({ concurrency: 1 })
    await waitFor(() => order.length === 250, { timeoutMs: 10_000, message: 'all run' })
    assert.deepEqual(order, [...Array(250).keys()], 'in order, each once')
  })

  test('a delayed dispatch while down is spooled with its due time, not run inline', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url)
    let ranAt = 0
    const later = tasks.define('later', () => {
      ranAt = Date.now()
    })
    tasks.work()
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    const start = Date.now()
    assert.equal((await later.dispatch(null, { delayMs: 1200 })).mode, 'spooled')
    await server.start()
    await waitFor(() => ranAt > 0, { timeoutMs: 5000, message: 'runs after recovery' })
    assert.ok(ranAt - start >= 1100, `ran ${ranAt - start} ms after dispatch`)
  })

  test("fallback 'drop' drops (counted, logged once) and never waits", async (t) => {
    const { logger, raw } = captureLogs()
    const records = (): LogRecord[] =>
      raw()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogRecord)
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url, { logger })
    let runs = 0
    const optional = tasks.define(
      'optional',
      () => {
        runs++
      },
      { fallback: 'drop' },
    )
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    for (let i = 0; i < 5; i++) assert.equal((await optional.dispatch(null)).mode, 'dropped')
    assert.equal(runs, 0)
    assert.equal(tasks.status().counts.dropped, 5)
    assert.equal(records().filter((r) => r.msg === 'task dropped: Redis is unavailable').length, 1)
    // The component's own WARNING from the monitor names the fallback once.
    assert.equal(
      records().filter(
        (r) =>
          r.msg ===
          'tasks:default is using its fallback: inline runs, the spool or drops, per task',
      ).length,
      1,
    )
  })

  test('the spool bound gives FAILSOFT_SPOOL_FULL', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks } = await makeTasks(t, server.url, { spool: { maxRecords: 3 } })
    const job = tasks.define('job', () => undefined, { fallback: 'spool' })
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down')
    for (let i = 0; i < 3; i++) assert.equal((await job.dispatch(null)).mode, 'spooled')
    const full = await job.dispatch(null)
    assert.equal(full.mode, 'rejected')
    assert.equal(
      full.mode === 'rejected' && (full.error as { code?: string }).code,
      'FAILSOFT_SPOOL_FULL',
    )
  })
})

describe('memory-only instance', () => {
  test('every task runs in process, delayed ones when due; work() is idle', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const runs: string[] = []
    const a = tasks.define('a', (x: string) => {
      runs.push(x)
    })
    const spooled = tasks.define('s', (x: string) => runs.push(x), { fallback: 'spool' })
    const dropped = tasks.define('d', (x: string) => runs.push(x), { fallback: 'drop' })
    assert.equal((await a.dispatch('a')).mode, 'inline')
    assert.equal((await spooled.dispatch('s')).mode, 'inline')
    assert.equal((await dropped.dispatch('d')).mode, 'inline')
    assert.equal((await a.dispatch('later', { delayMs: 100 })).mode, 'deferred')
    assert.deepEqual(runs, ['a', 's', 'd'])
    await waitFor(() => runs.includes('later'), { message: 'deferred run' })
    const worker = tasks.work()
    assert.equal(worker.status().running, false)
    await worker.close()
    assert.equal(tasks.status().mode, 'memory-only')
  })
})

test('typed errors for bad input', async (t) => {
  const { tasks } = await makeTasks(t, null, { maxArgsBytes: 100 })
  const job = tasks.define('job', () => undefined)
  const code = async (p: Promise<unknown>): Promise<string | undefined> => {
    try {
      await p
    } catch (error) {
      return (error as { code?: string }).code
    }
    return 'resolved'
  }
  assert.equal(await code(job.dispatch(10n as never)), 'FAILSOFT_INVALID_TASK_ARGS')
  assert.equal(await code(job.dispatch(undefined)), 'FAILSOFT_INVALID_TASK_ARGS')
  assert.equal(await code(job.dispatch('x'.repeat(200))), 'FAILSOFT_INVALID_TASK_ARGS')
  const circular: Record<string, unknown> = {}
  circular.self = circular
  assert.equal(await code(job.dispatch(circular)), 'FAILSOFT_INVALID_TASK_ARGS')
  assert.equal(await code(job.dispatch(null, { idempotencyKey: '' })), 'FAILSOFT_INVALID_TASK_ARGS')
  assert.equal(await code(job.dispatch(null, { delayMs: -1 })), 'FAILSOFT_INVALID_TASK_ARGS')
  assert.equal(await code(tasks.dispatch('nope', null)), 'FAILSOFT_UNKNOWN_TASK')
  assert.equal(await code(tasks.schedule('nope', { everyMs: 1000 })), 'FAILSOFT_UNKNOWN_TASK')
  assert.throws(
    () => tasks.define('bad', () => undefined, { attempts: 0 }),
    (e: Error) => e instanceof RangeError && e.message.includes('`attempts`'),
  )
  assert.throws(
    () => tasks.define('bad', () => undefined, { timeoutMs: -5 }),
    (e: Error) => e instanceof RangeError && e.message.includes('`timeoutMs`'),
  )
  assert.throws(
    () => tasks.define('bad', () => undefined, { fallback: 'later' as never }),
    /`fallback`/,
  )
  assert.throws(() => tasks.define('bad', () => undefined, { retries: 3 } as never), /`retries`/)
  assert.throws(() => tasks.define('job', () => undefined), RangeError, 'defined twice')
  assert.throws(() => tasks.define('a:b', () => undefined), RangeError)
  await assert.rejects(tasks.schedule('job', { everyMs: 10 }), RangeError)
  const failsoft = createFailsoft({ redis: null, logger: false })
  t.after(() => failsoft.close())
  assert.throws(() => failsoft.tasks({ queue: 'a:b' }), RangeError)
  assert.throws(() => failsoft.tasks({ inline: { concurrency: 0 } }), /inline\.concurrency/)
  assert.throws(() => failsoft.tasks({ bogus: 1 } as never), TypeError)
  const q = failsoft.tasks({ queue: 'q' })
  assert.equal(failsoft.tasks({ queue: 'q' }), q, 'same queue, same object')
  assert.throws(() => failsoft.tasks({ queue: 'q', maxArgsBytes: 10 }), RangeError)
})
