// Tasks when Redis forgets writes it acknowledged (a restart from an older RDB snapshot): the
// jobs `dispatch` reported queued are added again under the same ids, the done markers of the
// tasks that finished are written again first — nothing lost, nothing run twice, producer and
// worker in different failsoft instances.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep, uniquePrefix, type TasksSetup } from './helpers.js'

test('a restart from an older snapshot: every acknowledged job runs, none twice', async (t) => {
  const server = await startRedis(t)
  const prefix = uniquePrefix()
  const producer = await makeTasks(t, server.url, { prefix })
  const worker = await makeTasks(t, server.url, { prefix })
  const runs = new Map<string, number>()
  const job = producer.tasks.define('job', () => undefined)
  worker.tasks.define('job', (_args: { n: number }, ctx) => {
    runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
  })
  worker.tasks.work({ concurrency: 4 })
  await sleep(300)
  const snapshot = await server.snapshot()

  // After the snapshot: 10 jobs that run and finish, 10 that wait (delayed) in Redis.
  const finished: string[] = []
  for (let n = 0; n < 10; n++) {
    const result = await job.dispatch({ n })
    assert.equal(result.mode, 'queued')
    finished.push(result.id)
  }
  await waitFor(() => finished.every((id) => runs.get(id) === 1), { message: 'first 10 ran' })
  const waiting: string[] = []
  for (let n = 10; n < 20; n++) {
    const result = await job.dispatch({ n }, { delayMs: 1500 })
    assert.equal(result.mode, 'queued')
    waiting.push(result.id)
  }
  await sleep(300) // the heartbeats confirm those writes
  await server.restartFromSnapshot(snapshot)

  await waitFor(() => waiting.every((id) => runs.get(id) !== undefined), {
    timeoutMs: 20_000,
    message: 'the waiting jobs Redis forgot ran',
  })
  await sleep(3000) // the re-added copies of the finished ones are due by now
  const twice = [...runs].filter(([, count]) => count > 1)
  assert.deepEqual(twice, [], 'no task ran twice')
  assert.equal(runs.size, 20)
  assert.equal(producer.tasks.status().counts.rollbackReadded, 20)
  assert.ok(producer.failsoft.status().redis.transitions.rollback >= 1)
})

// Regression (randomized checker, seed 29): Redis restarted empty while a long task ran; its
// job was added again under the same id and another worker ran it beside the first run — the
// lease had gone with Redis' data and was only taken again at the first run's next renewal.
test('Redis restarted empty during a long run: a copy added again under the same id waits for it, and is not run again', async (t) => {
  const server = await startRedis(t)
  const prefix = uniquePrefix()
  const a = await makeTasks(t, server.url, { prefix })
  const b = await makeTasks(t, server.url, { prefix })
  const producer = await makeTasks(t, server.url, { prefix })
  let active = 0
  let maxActive = 0
  let runs = 0
  let started!: () => void
  const running = new Promise<void>((resolve) => (started = resolve))
  for (const setup of [a, b]) {
    setup.tasks.define('long', async () => {
      runs++
      active++
      maxActive = Math.max(maxActive, active)
      started()
      await sleep(6000)
      active--
    })
  }
  const long = producer.tasks.define('long', () => undefined)
  a.tasks.work({ concurrency: 1 })
  b.tasks.work({ concurrency: 1 })
  const first = await long.dispatch({}, { idempotencyKey: 'report:7' })
  assert.equal(first.mode, 'queued')
  await running
  await server.restart({ keepData: false })
  await waitFor(
    () => [a, b, producer].every((s) => s.failsoft.status().redis.transitions.up >= 2),
    { timeoutMs: 10_000, message: 'every instance back after the reset' },
  )
  // A fresh process dispatches the same key: Redis forgot the job, so it is queued again.
  const late = await makeTasks(t, server.url, { prefix })
  const again = await late.tasks
    .define('long', () => undefined)
    .dispatch({}, { idempotencyKey: 'report:7' })
  assert.equal(again.id, first.id)
  await waitFor(() => active === 0 && runs >= 1, { timeoutMs: 15_000, message: 'the run ended' })
  await sleep(3000) // the copy is looked at again after the first run's end
  assert.equal(maxActive, 1, 'never two runs of the task id at once')
  assert.equal(runs, 1, 'the copy found the task done')
})

/** A recovery step that takes `ms`, added once started: this process returns to Redis that late. */
function slowRecovery(setup: TasksSetup, ms: number): void {
  setup.failsoft.context.monitor.register({
    name: 'test:slow-recovery',
    fallback: 'none',
    recover: () => sleep(ms),
  })
}

// Regressions (multi-host Sentinel test, SENTINEL FAILOVER, 1 run in 5): after a rollback, a
// worker claimed a job another process had completed before that process wrote its lost done
// marker again, and the task ran twice. The worker that ran it the second time (1) was still
// recovering, its BullMQ connection already on the new primary — a worker now claims nothing
// while its process is off Redis; or (2, the same run had the two recoveries 54 ms apart) was
// back first — a worker that reconciled a rollback now claims nothing for 1 s, while the other
// processes write their markers again.
for (const how of ['B still recovering', 'B back first, having seen the rollback'] as const) {
  test(`after a rollback, a worker does not claim before its peers have written their markers again (${how})`, async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const producer = await makeTasks(t, server.url, { prefix })
    // A comes back to Redis (and writes its lost markers and leases again) late; B, direct,
    // has its BullMQ connection back at once.
    const proxy = await startProxy(t, server)
    const a = await makeTasks(t, proxy.urlFor(server), { prefix })
    const b = await makeTasks(t, server.url, { prefix })
    const first = how === 'B still recovering'
    if (first) slowRecovery(b, 4000) // B itself back 4 s after Redis, A after 2 s
    const runs = new Map<string, string[]>()
    const handler =
      (who: string) =>
      async (args: { ms: number }, ctx: { id: string }): Promise<void> => {
        runs.set(ctx.id, [...(runs.get(ctx.id) ?? []), who])
        await sleep(args.ms)
      }
    const job = producer.tasks.define('job', () => undefined)
    a.tasks.define('job', handler('a'))
    b.tasks.define('job', handler('b'))
    a.tasks.work({ concurrency: 1 })
    const done: string[] = []
    for (let n = 0; n < 10; n++) done.push((await job.dispatch({ ms: 0 }, { delayMs: 800 })).id)
    const snapshot = await server.snapshot() // holds the 10, delayed, none run
    await waitFor(() => done.every((id) => runs.has(id)), { message: 'A ran the 10' })
    const long = await job.dispatch({ ms: 9000 })
    await waitFor(() => runs.has(long.id), { message: 'A runs the long job' })
    b.tasks.work({ concurrency: 4 })
    if (!first) {
      // B completes a task of its own after the snapshot: it sees the rollback too.
      const own = await job.dispatch({ ms: 0 })
      await waitFor(() => runs.has(own.id), { message: 'B ran its own' })
    }
    await sleep(400) // the heartbeats confirm those writes
    proxy.blackhole()
    await server.restartFromSnapshot(snapshot)
    await sleep(first ? 2000 : 600)
    proxy.pass()
    await waitFor(() => b.failsoft.health.available, { timeoutMs: 15_000 })
    await sleep(2500) // B has had every chance to take the jobs
    const twice = [...runs].filter(([, who]) => who.length > 1)
    assert.deepEqual(twice, [], 'no task ran twice, nor beside itself')
    assert.ok(a.failsoft.status().redis.transitions.rollback >= 1, 'A saw the rollback')
    if (!first) assert.ok(b.failsoft.status().redis.transitions.rollback >= 1, 'B saw it too')
  })
}
