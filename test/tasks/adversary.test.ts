// Tasks against an adversary's schedule: handlers longer than the outage and the lock, retries
// of a try that ignored its timeout, keyed tasks that ran inline across a recovery, and 'drop'
// tasks whose add went unanswered. Each case reproduces a break found by an outside review.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { DispatchResult, TaskContext } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep } from './helpers.js'

/** Runs of one task recorded in real time; `overlaps` counts two runs of an id at once. */
class Runs {
  readonly started: Array<{ id: string; mode: string; attempt: number }> = []
  readonly finished: string[] = []
  readonly #running = new Map<string, number>()
  overlaps = 0

  async run(ctx: TaskContext, ms: number, ignoreSignal = false): Promise<string> {
    this.started.push({ id: ctx.id, mode: ctx.mode, attempt: ctx.attempt })
    const now = (this.#running.get(ctx.id) ?? 0) + 1
    this.#running.set(ctx.id, now)
    if (now > 1) this.overlaps++
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ms)
        if (!ignoreSignal) {
          ctx.signal.addEventListener('abort', () => {
            clearTimeout(timer)
            reject(ctx.signal.reason as Error)
          })
        }
      })
      this.finished.push(ctx.id)
      return 'done'
    } finally {
      this.#running.set(ctx.id, (this.#running.get(ctx.id) ?? 1) - 1)
    }
  }

  startsOf(id: string): number {
    return this.started.filter((s) => s.id === id).length
  }
}

describe('tasks under an adversary', () => {
  test('a handler longer than a freeze plus its lock never overlaps its stalled copy', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const runs = new Runs()
    const long = tasks.define('long', (_args: null, ctx) => runs.run(ctx, 4000), {
      timeoutMs: 60_000,
    })
    tasks.work({ concurrency: 2, lockDurationMs: 1000, stalledIntervalMs: 500 })
    const result = await long.dispatch(null)
    assert.equal(result.mode, 'queued')
    await waitFor(() => runs.started.length === 1, { message: 'the run started' })
    server.freeze()
    t.after(() => server.thaw())
    await sleep(2500) // longer than the lock: BullMQ takes the job for stalled after the thaw
    server.thaw()
    await waitFor(() => runs.finished.length >= 1, { timeoutMs: 15_000, message: 'it finished' })
    await sleep(3000) // a stalled copy, if it runs, starts within this
    assert.equal(
      runs.overlaps,
      0,
      `runs of one task id never overlap: ${JSON.stringify(runs.started)}`,
    )
    assert.equal(runs.finished.length, 1, 'one successful run')
  })

  test('a retry after a timed-out try waits for that try to end, even if it ignores its signal', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const runs = new Runs()
    let calls = 0
    const stubborn = tasks.define(
      'stubborn',
      async (_args: null, ctx) => {
        calls++
        // The first try ignores its timeout, runs on for 1.5 s, then fails; the retry is quick.
        await runs.run(ctx, calls === 1 ? 1500 : 50, true)
        if (calls === 1) throw new Error('the first try fails, late')
      },
      { timeoutMs: 300, attempts: 3, backoff: { type: 'fixed', delayMs: 10 } },
    )
    tasks.work({ concurrency: 2 })
    await stubborn.dispatch(null)
    await waitFor(() => runs.finished.length === 2, {
      timeoutMs: 15_000,
      message: 'both tries ended',
    })
    assert.equal(runs.overlaps, 0, `tries never overlap: ${JSON.stringify(runs.started)}`)
  })

  test('a try that timed out but then succeeded is the run: its retry does not run', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const runs = new Runs()
    const late = tasks.define('late', (_args: null, ctx) => runs.run(ctx, 1200, true), {
      timeoutMs: 300,
      attempts: 3,
      backoff: { type: 'fixed', delayMs: 10 },
    })
    const worker = tasks.work({ concurrency: 2 })
    await late.dispatch(null)
    await waitFor(() => Number(worker.status().skippedDone) >= 1, {
      timeoutMs: 15_000,
      message: 'the retry completed without running',
    })
    assert.equal(runs.started.length, 1, `one run: ${JSON.stringify(runs.started)}`)
  })

  test('inline: a retry after a timed-out try waits for that try to end', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const runs = new Runs()
    let calls = 0
    const stubborn = tasks.define(
      'stubborn',
      (_args: null, ctx) => {
        calls++
        return runs.run(ctx, calls === 1 ? 800 : 20, true)
      },
      { timeoutMs: 200, attempts: 2, backoff: { type: 'fixed', delayMs: 10 } },
    )
    const result = await stubborn.dispatch(null)
    assert.equal(result.mode, 'inline')
    assert.equal(runs.overlaps, 0, `tries never overlap: ${JSON.stringify(runs.started)}`)
  })

  test('by default a keyed dispatch while Redis is down is spooled: a key a worker already ran does not run again', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const web = await makeTasks(t, server.url)
    const work = await makeTasks(t, server.url, { prefix: web.prefix })
    const runs = new Runs()
    const report = web.tasks.define('report', (_a: null, ctx) => runs.run(ctx, 20))
    work.tasks.define('report', (_a: null, ctx) => runs.run(ctx, 20))
    work.tasks.work()
    assert.equal((await report.dispatch(null, { idempotencyKey: 'ran' })).mode, 'queued')
    await waitFor(() => runs.finished.length === 1, { message: 'the worker ran it' })

    await server.kill()
    await waitFor(() => !web.failsoft.health.available)
    const again = await report.dispatch(null, { idempotencyKey: 'ran' }) // ran already
    const fresh = await report.dispatch(null, { idempotencyKey: 'new' }) // never ran
    assert.equal(again.mode, 'spooled', 'not run inline: its marker is in Redis, out of reach')
    assert.equal(fresh.mode, 'spooled')
    assert.equal(runs.started.length, 1)
    await server.start()
    await waitFor(() => runs.finished.length === 2, {
      timeoutMs: 10_000,
      message: 'the new key ran',
    })
    await sleep(1500) // a second run of 'ran', if any, starts within this
    assert.deepEqual(
      runs.started.map((r) => r.id),
      [again.id, fresh.id],
      'each key once: the replay of the key that had run was skipped',
    )
  })

  test("keyedFallback 'inline': a keyed task run inline during an outage does not run again after recovery", async (t) => {
    const server = await startRedis(t)
    const a = await makeTasks(t, server.url)
    const b = await makeTasks(t, server.url, { prefix: a.prefix })
    const runs = new Runs()
    const handler = (_args: null, ctx: TaskContext): Promise<string> => runs.run(ctx, 2500)
    const onA = a.tasks.define('report', handler, { keyedFallback: 'inline' })
    const onB = b.tasks.define('report', handler, { keyedFallback: 'inline' })
    b.tasks.work({ concurrency: 2 })

    await server.kill()
    await waitFor(() => a.failsoft.health.state === 'down' && b.failsoft.health.state === 'down')
    // Runs inline for 2.5 s; Redis comes back while it runs.
    const inline = onA.dispatch(null, { idempotencyKey: 'weekly' })
    await waitFor(() => runs.started.length === 1, { message: 'the inline run started' })
    await server.start()
    await waitFor(() => a.failsoft.health.available && b.failsoft.health.available, {
      timeoutMs: 5000,
      message: 'both back up',
    })
    const again: DispatchResult[] = []
    again.push(await onA.dispatch(null, { idempotencyKey: 'weekly' })) // same process
    again.push(await onB.dispatch(null, { idempotencyKey: 'weekly' })) // another process
    const first = await inline
    assert.equal(first.mode, 'inline')
    await sleep(2500) // a second run, if queued, starts within this
    again.push(await onA.dispatch(null, { idempotencyKey: 'weekly' })) // after it finished
    again.push(await onB.dispatch(null, { idempotencyKey: 'weekly' }))
    await sleep(1500)
    assert.equal(
      runs.started.length,
      1,
      `one run for one key: ${JSON.stringify({ runs: runs.started, again: again.map((r) => r.mode) })}`,
    )
  })

  test("keyedFallback 'inline' while Redis refuses writes (OOM): the dispatch runs and resolves, it never throws", async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const runs = new Runs()
    const task = tasks.define('report', (_a: null, ctx) => runs.run(ctx, 10), {
      keyedFallback: 'inline',
    })
    await server.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
    await server.cli('CONFIG', 'SET', 'maxmemory', '1')
    t.after(() => server.cli('CONFIG', 'SET', 'maxmemory', '0').catch(() => undefined))
    // The add is refused (OOM), so it falls back inline — where the key's lease is refused too.
    const result = await task.dispatch(null, { idempotencyKey: 'oom' })
    assert.equal(result.mode, 'inline')
    assert.equal(runs.finished.length, 1)
    await server.cli('CONFIG', 'SET', 'maxmemory', '0')
    const repeat = await task.dispatch(null, { idempotencyKey: 'oom' })
    assert.equal(repeat.mode, 'duplicate', 'the key ran: it is not run again')
    assert.equal(runs.started.length, 1)
  })

  test("a 'drop' task answered 'dropped' never runs, even if its add landed late", async (t) => {
    const server = await startRedis(t)
    const producer = await makeTasks(t, server.url)
    const worker = await makeTasks(t, server.url, { prefix: producer.prefix })
    const ran: string[] = []
    const optional = producer.tasks.define('optional', (_a: null, ctx) => void ran.push(ctx.id), {
      fallback: 'drop',
    })
    worker.tasks.define('optional', (_a: null, ctx) => void ran.push(ctx.id))
    worker.tasks.work()
    const results: DispatchResult[] = []
    await optional.dispatch(null) // warm up the producer connection
    server.freeze()
    t.after(() => server.thaw())
    // Sent into the freeze: unanswered, they may land when Redis wakes up.
    const pending = Array.from({ length: 5 }, () => optional.dispatch(null))
    results.push(...(await Promise.all(pending)))
    server.thaw()
    await waitFor(() => producer.failsoft.health.available && worker.failsoft.health.available, {
      timeoutMs: 5000,
    })
    await sleep(2000)
    const dropped = results.filter((r) => r.mode === 'dropped').map((r) => r.id)
    const ranDropped = dropped.filter((id) => ran.includes(id))
    assert.deepEqual(
      ranDropped,
      [],
      `dispatches answered 'dropped' never run (${JSON.stringify(results.map((r) => r.mode))})`,
    )
    for (const r of results) {
      if (r.mode !== 'dropped' && r.mode !== 'rejected') {
        assert.ok(ran.includes(r.id), `an accepted dispatch (${r.mode}) runs`)
      }
    }
  })
})
