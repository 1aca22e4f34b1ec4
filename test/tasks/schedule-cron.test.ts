// Cron schedules (cron, tz) and the bounds of any schedule (startDate, endDate, limit): BullMQ
// job schedulers while Redis is up; while it is down, with whileDown: 'local', a local timer per
// occurrence whose run carries the occurrence's BullMQ job id, so the iteration BullMQ kept for
// it is skipped once Redis is back.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { nextOccurrence, occurrenceId } from '../../src/tasks/scheduler.js'
import type { ScheduleOptions } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, sleep, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const EVERY_SECOND = '*/1 * * * * *'

describe('cron schedules: occurrences', () => {
  test('nextOccurrence reads the pattern in its tz (America/New_York vs UTC, DST included)', () => {
    const winter = Date.parse('2026-01-15T12:00:00Z')
    const summer = Date.parse('2026-07-15T12:00:00Z')
    const at = (ms: number | null): string | null =>
      ms === null ? null : new Date(ms).toISOString()
    // 09:00 in New York is 14:00 UTC in winter (EST), 13:00 UTC in summer (EDT).
    assert.equal(
      at(nextOccurrence({ cron: '0 9 * * *', tz: 'America/New_York' }, winter)),
      '2026-01-15T14:00:00.000Z',
    )
    assert.equal(
      at(nextOccurrence({ cron: '0 9 * * *', tz: 'America/New_York' }, summer)),
      '2026-07-15T13:00:00.000Z',
    )
    assert.equal(
      at(nextOccurrence({ cron: '0 9 * * *', tz: 'UTC' }, winter)),
      '2026-01-16T09:00:00.000Z',
    )
  })

  test('nextOccurrence: strictly after, seconds field, within startDate and endDate', () => {
    assert.equal(nextOccurrence({ cron: EVERY_SECOND }, 1_000_000), 1_001_000)
    assert.equal(nextOccurrence({ cron: EVERY_SECOND }, 1_000_500), 1_001_000)
    const after = Date.parse('2026-01-15T12:00:00Z')
    const startDate = Date.parse('2026-02-01T00:00:00Z')
    assert.equal(
      nextOccurrence({ cron: '0 9 * * *', tz: 'UTC', startDate }, after),
      Date.parse('2026-02-01T09:00:00Z'),
    )
    const endDate = Date.parse('2026-01-15T13:00:00Z')
    assert.equal(nextOccurrence({ cron: '0 9 * * *', tz: 'UTC', endDate }, after), null)
    assert.equal(nextOccurrence({ everyMs: 1000 }, after), null, 'fixed periods: not cron')
    assert.equal(occurrenceId('report', 1_001_000), 'repeat:report:1001000')
  })
})

describe('cron schedules: validation', () => {
  const invalid: Array<[string, unknown, string, RegExp]> = [
    ['both everyMs and cron', { everyMs: 1000, cron: '* * * * *' }, 'schedule options', /not both/],
    ['neither everyMs nor cron', { id: 'x' }, 'schedule options', /everyMs or cron/],
    ['an invalid cron pattern', { cron: '61 * * * *' }, 'cron', /"61 \* \* \* \*"/],
    ['a cron pattern that is no pattern', { cron: 'every day' }, 'cron', /"every day"/],
    ['an empty cron pattern', { cron: '  ' }, 'cron', /non-empty/],
    ['an unknown time zone', { cron: '0 9 * * *', tz: 'Mars/Olympus' }, 'tz', /"Mars\/Olympus"/],
    ['tz with everyMs', { everyMs: 1000, tz: 'UTC' }, 'tz', /cron only/],
    [
      'endDate before startDate',
      { cron: '0 9 * * *', startDate: '2026-02-01T00:00:00Z', endDate: '2026-01-01T00:00:00Z' },
      'endDate',
      /after startDate/,
    ],
    ['an unreadable date', { everyMs: 1000, startDate: 'tomorrow' }, 'startDate', /"tomorrow"/],
    ['a zero limit', { cron: '0 9 * * *', limit: 0 }, 'limit', /positive integer; received 0/],
    ['a negative limit', { everyMs: 1000, limit: -3 }, 'limit', /received -3/],
    ['a fractional limit', { everyMs: 1000, limit: 1.5 }, 'limit', /received 1\.5/],
  ]
  for (const [what, options, option, message] of invalid) {
    test(`schedule() refuses ${what} (FAILSOFT_INVALID_OPTION, option ${option})`, async (t) => {
      const { tasks } = await makeTasks(t, null)
      tasks.define('report', () => undefined)
      await assert.rejects(tasks.schedule('report', options as ScheduleOptions), (error: Error) => {
        assert.equal((error as { code?: unknown }).code, 'FAILSOFT_INVALID_OPTION')
        assert.equal((error as { option?: unknown }).option, option)
        assert.match(error.message, message)
        return true
      })
      assert.deepEqual(tasks.status().schedules, [], 'nothing scheduled')
    })
  }

  test('dates are a Date, an ISO string or epoch ms; status() shows them as ISO strings', async (t) => {
    const { tasks } = await makeTasks(t, null)
    tasks.define('report', () => undefined)
    await tasks.schedule('report', {
      cron: '0 9 * * 1-5',
      tz: 'Europe/Paris',
      startDate: new Date('2030-01-01T00:00:00Z'),
      endDate: Date.parse('2030-06-01T00:00:00Z'),
      limit: 10,
    })
    await tasks.schedule('report', { id: 'hourly', everyMs: 3_600_000, endDate: '2031-01-01' })
    const [cron, hourly] = tasks.status().schedules
    assert.deepEqual(
      { ...cron, localRuns: 0, localSkipped: 0 },
      {
        id: 'report',
        task: 'report',
        cron: '0 9 * * 1-5',
        tz: 'Europe/Paris',
        startDate: '2030-01-01T00:00:00.000Z',
        endDate: '2030-06-01T00:00:00.000Z',
        limit: 10,
        synced: false,
        whileDown: 'local', // memory-only: every schedule runs here
        localRuns: 0,
        localSkipped: 0,
      },
    )
    assert.equal(hourly?.everyMs, 3_600_000)
    assert.equal(hourly?.endDate, '2031-01-01T00:00:00.000Z')
    assert.equal(hourly?.cron, undefined)
  })
})

describe('cron schedules run locally', () => {
  test('memory-only: occurrences run here, with their ids; limit and endDate stop them', async (t) => {
    const { tasks } = await makeTasks(t, null)
    const runs = { limited: [] as string[], ending: [] as string[] }
    tasks.define('limited', (_args: unknown, ctx) => {
      runs.limited.push(ctx.id)
    })
    tasks.define('ending', (_args: unknown, ctx) => {
      runs.ending.push(ctx.id)
    })
    const endDate = Date.now() + 2500
    await tasks.schedule('limited', { cron: EVERY_SECOND, limit: 2 })
    await tasks.schedule('ending', { cron: EVERY_SECOND, endDate })
    await waitFor(() => runs.limited.length >= 2 && runs.ending.length >= 1, {
      timeoutMs: 8000,
      message: 'local runs',
    })
    await waitFor(() => Date.now() > endDate + 1000, { timeoutMs: 5000 })
    const ended = runs.ending.length
    await sleep(2000)
    assert.equal(runs.limited.length, 2, 'limit 2: two local runs')
    assert.equal(runs.ending.length, ended, 'no local run after endDate')
    for (const id of [...runs.limited, ...runs.ending]) {
      const at = Number(/^repeat:(?:limited|ending):(\d+)$/.exec(id)?.[1])
      assert.ok(at % 1000 === 0 && at > 0, id)
    }
    for (const id of runs.ending) assert.ok(Number(id.split(':')[2]) <= endDate, id)
    const limited = tasks.status().schedules.find((s) => s.id === 'limited')
    assert.equal(limited?.localRuns, 2)
  })
})

describe('cron schedules on Redis', () => {
  test('a six-field seconds pattern fires through BullMQ, each run on its occurrence', async (t) => {
    const server = await startRedis(t)
    const { tasks, prefix } = await makeTasks(t, server.url)
    const runs: Array<{ id: string; mode: string; args: unknown }> = []
    tasks.define('tick', (args: unknown, ctx) => {
      runs.push({ id: ctx.id, mode: ctx.mode, args })
    })
    tasks.work()
    assert.deepEqual(
      await tasks.schedule('tick', { cron: EVERY_SECOND, tz: 'America/New_York', args: { n: 1 } }),
      { id: 'tick', state: 'scheduled' },
    )
    const key = `${prefix}:tasks:default:repeat:tick`
    assert.equal(await server.cli('HGET', key, 'pattern'), EVERY_SECOND)
    assert.equal(await server.cli('HGET', key, 'tz'), 'America/New_York')
    await waitFor(() => runs.length >= 2, { timeoutMs: 8000, message: 'two cron runs' })
    for (const run of runs) {
      assert.equal(run.mode, 'worker')
      assert.deepEqual(run.args, { n: 1 })
      const match = /^repeat:tick:(\d+)$/.exec(run.id)
      assert.ok(match, run.id)
      assert.equal(Number(match[1]) % 1000, 0, `on a whole second: ${run.id}`)
    }
    assert.equal(new Set(runs.map((r) => r.id)).size, runs.length, 'no occurrence twice')
    const status = tasks.status().schedules[0]
    assert.equal(status?.cron, EVERY_SECOND)
    assert.equal(status?.tz, 'America/New_York')
    assert.equal(status?.synced, true)
  })

  test('Redis restarted empty: the cron scheduler is re-created, pattern and tz included', async (t) => {
    const server = await startRedis(t)
    const { failsoft, tasks, prefix } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('tick', () => {
      runs++
    })
    tasks.work()
    await tasks.schedule('tick', { cron: EVERY_SECOND, tz: 'Asia/Tokyo', limit: 1000 })
    await waitFor(() => runs >= 1, { timeoutMs: 8000, message: 'first run' })
    await server.restart({ keepData: false })
    const key = `${prefix}:tasks:default:repeat:tick`
    await waitFor(async () => (await server.cli('EXISTS', key)) === 1, {
      timeoutMs: 8000,
      message: 'scheduler re-created in the empty Redis',
    })
    // (the scheduler is re-created by a recovery step, before 'up')
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 8000, message: 'up' })
    assert.equal(await server.cli('HGET', key, 'pattern'), EVERY_SECOND)
    assert.equal(await server.cli('HGET', key, 'tz'), 'Asia/Tokyo')
    assert.equal(await server.cli('HGET', key, 'limit'), '1000')
    const afterRestart = runs
    await waitFor(() => runs >= afterRestart + 2, { timeoutMs: 8000, message: 'runs resume' })
  })

  test('limit and endDate stop the runs (BullMQ)', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const runs = { limited: 0, ending: 0 }
    tasks.define('limited', () => {
      runs.limited++
    })
    tasks.define('ending', () => {
      runs.ending++
    })
    tasks.work()
    const endDate = Date.now() + 2500
    await tasks.schedule('limited', { cron: EVERY_SECOND, limit: 2 })
    await tasks.schedule('ending', { cron: EVERY_SECOND, endDate })
    await waitFor(() => runs.limited >= 2 && runs.ending >= 1, {
      timeoutMs: 8000,
      message: 'runs',
    })
    await waitFor(() => Date.now() > endDate + 1000, { timeoutMs: 5000 })
    const atEnd = { ...runs }
    await sleep(2500)
    assert.equal(runs.limited, 2, 'limit 2: two runs')
    assert.equal(runs.ending, atEnd.ending, 'no run after endDate')
    assert.ok(runs.ending <= 3, `at most the 3 occurrences before endDate: ${runs.ending}`)
  })

  test("Redis down, whileDown: 'local': two instances run the occurrences locally, and none of them runs again from Redis", async (t) => {
    // Redis keeps its data through the kill (AOF): the iteration BullMQ created for the first
    // occurrence is still there, and due, when it comes back.
    const server = await startRedis(t, { persistence: true })
    const prefix = uniquePrefix()
    interface Run {
      who: string
      id: string
      mode: string
    }
    const runs: Run[] = []
    const instances = await Promise.all(
      ['a', 'b'].map(async (who) => {
        const setup = await makeTasks(t, server.url, { prefix })
        setup.tasks.define(
          'tick',
          (_args: unknown, ctx) => {
            runs.push({ who, id: ctx.id, mode: ctx.mode })
          },
          { whileDown: 'local' },
        )
        return { who, ...setup, worker: setup.tasks.work() }
      }),
    )
    // The first occurrence is 3 s away: Redis is down (and seen down) before it.
    const startDate = Math.ceil((Date.now() + 3000) / 1000) * 1000
    const first = startDate + 1000
    for (const { tasks } of instances) {
      const result = await tasks.schedule('tick', { cron: EVERY_SECOND, startDate })
      assert.equal(result.state, 'scheduled')
    }
    assert.equal(
      await server.cli('EXISTS', `${prefix}:tasks:default:${occurrenceId('tick', first)}`),
      1,
      'BullMQ holds the iteration of the first occurrence',
    )
    await server.kill()
    await waitFor(() => instances.every((i) => i.failsoft.health.state === 'down'), {
      message: 'both down',
    })
    assert.ok(Date.now() < first, 'down before the first occurrence')
    const local = (who: string): Run[] => runs.filter((r) => r.who === who && r.mode === 'local')
    await waitFor(() => local('a').length >= 3 && local('b').length >= 3, {
      timeoutMs: 10_000,
      message: 'three local runs in each instance',
    })
    await server.start()
    await waitFor(() => instances.every((i) => i.failsoft.health.state === 'up'), {
      timeoutMs: 10_000,
      message: 'both up',
    })
    const localIds = new Set(runs.filter((r) => r.mode === 'local').map((r) => r.id))
    await waitFor(() => runs.some((r) => r.mode === 'worker'), {
      timeoutMs: 8000,
      message: 'the workers run the schedule again',
    })
    await sleep(1500)

    for (const who of ['a', 'b']) {
      const ids = local(who).map((r) => r.id)
      assert.equal(new Set(ids).size, ids.length, `${who}: each occurrence once locally`)
      assert.equal(ids[0], occurrenceId('tick', first), `${who}: from the first occurrence`)
      for (const id of ids) {
        const at = Number(/^repeat:tick:(\d+)$/.exec(id)?.[1])
        assert.ok(at >= first && at % 1000 === 0, id)
      }
    }
    const workerIds = runs.filter((r) => r.mode === 'worker').map((r) => r.id)
    assert.equal(new Set(workerIds).size, workerIds.length, 'no occurrence twice from Redis')
    const again = workerIds.filter((id) => localIds.has(id))
    assert.deepEqual(again, [], 'no occurrence run locally runs again from Redis')
    const skipped = instances.reduce((n, i) => n + i.worker.status().skippedDone, 0)
    assert.ok(skipped >= 1, 'the iteration BullMQ kept for the first occurrence was skipped')
    assert.ok(instances.every((i) => i.tasks.status().markersPending === 0))
  })
})
