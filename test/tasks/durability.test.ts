// Nothing lost, nothing run twice — across OS processes: the spool survives a SIGKILL, a
// crash mid-replay neither loses nor duplicates, and the worker (in its own process) runs
// every task exactly once through a freeze (ambiguous enqueues) and a kill.
import assert from 'node:assert/strict'
import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import type { DispatchResult, Task } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { countExecutions, makeTasks, sleep, spawnNode, tempDir, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('spool durability', () => {
  test('spooled tasks survive a SIGKILL during the outage; a new process replays them in order, once', async (t) => {
    const server = await startRedis(t)
    await server.kill()
    const prefix = uniquePrefix()
    const dir = tempDir(t)
    const spool = join(dir, 'spool.jsonl')
    const spooler = spawnNode(t, {
      ROLE: 'spooler',
      REDIS_URL: server.url,
      PREFIX: prefix,
      SPOOL: spool,
      COUNT: '300',
    })
    const { ids, state } = await spooler.next<{ ids: string[]; state: string }>('spooled')
    assert.equal(state, 'down')
    assert.equal(ids.length, 300)
    await spooler.kill()
    // Every acknowledged job is on disk (fsynced before the dispatch resolved).
    const lines = readFileSync(spool, 'utf8').trim().split('\n')
    assert.equal(lines.length, 300)

    await server.start()
    const { failsoft, tasks } = await makeTasks(t, server.url, { prefix, spoolDir: dir })
    const order: number[] = []
    const seen = new Map<string, number>()
    tasks.define('job', (args: { n: number }, ctx) => {
      order.push(args.n)
      seen.set(ctx.id, (seen.get(ctx.id) ?? 0) + 1)
    })
    await waitFor(() => failsoft.health.state === 'up', { message: 'up' })
    assert.equal(
      tasks.status().counts.replayed,
      300,
      'the dead process spool was adopted and replayed',
    )
    tasks.work({ concurrency: 1 })
    await waitFor(() => order.length >= 300, { timeoutMs: 15_000, message: 'all 300 run' })
    await sleep(300)
    assert.deepEqual(order, [...Array(300).keys()], 'in dispatch order, each once')
    assert.deepEqual([...seen.keys()].sort(), [...ids].sort(), 'same job ids as dispatched')
    assert.ok([...seen.values()].every((c) => c === 1))
  })

  test('a crash in the middle of a replay neither loses nor duplicates a task', async (t) => {
    const server = await startRedis(t)
    await server.kill()
    const prefix = uniquePrefix()
    const dir = tempDir(t)
    const spool = join(dir, 'spool.jsonl')
    const count = 4000
    const spooler = spawnNode(t, {
      ROLE: 'spooler',
      REDIS_URL: server.url,
      PREFIX: prefix,
      SPOOL: spool,
      COUNT: String(count),
    })
    await spooler.next('spooled', 60_000)
    await spooler.kill()
    await server.start()
    // A process that starts replaying, killed as soon as the first jobs reach Redis.
    const replayer = spawnNode(t, {
      ROLE: 'replayer',
      REDIS_URL: server.url,
      PREFIX: prefix,
      SPOOL: spool,
    })
    const waitKey = `${prefix}:tasks:default:wait`
    await waitFor(async () => Number(await server.cli('LLEN', waitKey)) > 0, {
      timeoutMs: 20_000,
      intervalMs: 1,
      message: 'replay started',
    })
    await replayer.kill()
    const atKill = Number(await server.cli('LLEN', waitKey))
    if (atKill >= count)
      t.diagnostic('the replay finished before the kill; the test still checks exactly-once')

    const { failsoft, tasks } = await makeTasks(t, server.url, { prefix, spoolDir: dir })
    const seen = new Map<number, number>()
    tasks.define('job', (args: { n: number }) => {
      seen.set(args.n, (seen.get(args.n) ?? 0) + 1)
    })
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 20_000, message: 'up' })
    tasks.work({ concurrency: 20 })
    await waitFor(() => seen.size >= count, { timeoutMs: 30_000, message: `all ${count} run` })
    await sleep(500)
    assert.equal(seen.size, count, 'none lost')
    assert.ok(
      [...seen.values()].every((c) => c === 1),
      'none run twice',
    )
    t.diagnostic(`killed with ${atKill} of ${count} handed over`)
  })
})

interface Accepted {
  id: string
  mode: DispatchResult['mode']
}

/** Dispatch from `workers` loops until stopped; every accepted id is recorded. */
function dispatchLoop(
  job: Task<{ n: number }>,
  workers: number,
): { accepted: Accepted[]; stop: () => Promise<void> } {
  const accepted: Accepted[] = []
  let running = true
  let n = 0
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      const result = await job.dispatch({ n: n++ })
      if (result.mode === 'rejected' || result.mode === 'dropped')
        throw new Error(`not accepted: ${result.mode}`)
      accepted.push({ id: result.id, mode: result.mode })
      await sleep(2)
    }
  })
  return {
    accepted,
    stop: async () => {
      running = false
      await Promise.all(loops)
    },
  }
}

describe('exactly once with the worker in another process', () => {
  async function scenario(t: Parameters<typeof makeTasks>[0], persistence: boolean) {
    const server = await startRedis(t, { persistence })
    const prefix = uniquePrefix()
    const dir = tempDir(t)
    const execFile = join(dir, 'executions.log')
    const worker = spawnNode(t, {
      ROLE: 'worker',
      REDIS_URL: server.url,
      PREFIX: prefix,
      EXEC_FILE: execFile,
      CONCURRENCY: '20',
    })
    assert.equal((await worker.next<{ state: string }>('ready')).state, 'up')
    const { failsoft, tasks } = await makeTasks(t, server.url, { prefix, spoolDir: dir })
    const job = tasks.define('job', (args: { n: number }, ctx) => {
      appendFileSync(execFile, `i ${ctx.id} ${args.n}\n`)
    })
    return { server, failsoft, tasks, job, execFile, prefix, worker }
  }

  async function settle(
    setup: Awaited<ReturnType<typeof scenario>>,
    accepted: Accepted[],
  ): Promise<Map<string, number>> {
    const { failsoft, tasks, execFile } = setup
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 10_000,
      message: 'producer recovered',
    })
    await waitFor(() => tasks.status().spoolDepth === 0, {
      timeoutMs: 10_000,
      message: 'spool replayed',
    })
    try {
      await waitFor(
        () => {
          const seen = countExecutions(execFile)
          return accepted.every((a) => seen.has(a.id))
        },
        { timeoutMs: 30_000, intervalMs: 100, message: 'every accepted task ran' },
      )
    } catch (error) {
      const seen = countExecutions(execFile)
      const missing = accepted.filter((a) => !seen.has(a.id))
      const states = await Promise.all(
        missing.slice(0, 5).map(async (m) => ({
          ...m,
          job: await setup.server.cli(
            'HMGET',
            `${setup.prefix}:tasks:default:${m.id}`,
            'name',
            'finishedOn',
            'failedReason',
            'processedOn',
            'atm',
            'ats',
            'stc',
          ),
          lock: await setup.server.cli('PTTL', `${setup.prefix}:tasks:default:${m.id}:lock`),
          active: await setup.server.cli('LPOS', `${setup.prefix}:tasks:default:active`, m.id),
          wait: await setup.server.cli('LPOS', `${setup.prefix}:tasks:default:wait`, m.id),
          stalled: await setup.server.cli(
            'SISMEMBER',
            `${setup.prefix}:tasks:default:stalled`,
            m.id,
          ),
        })),
      )
      setup.worker.child.send({ cmd: 'status' })
      const status = await setup.worker.next('status')
      throw new Error(
        `${missing.length} never ran, e.g. ${JSON.stringify(states)} worker ${JSON.stringify(status)}`,
        {
          cause: error,
        },
      )
    }
    await sleep(1000) // a duplicate run would show up by now
    return countExecutions(execFile)
  }

  test('freeze: ambiguous enqueues are spooled, replayed and run exactly once', async (t) => {
    const setup = await scenario(t, false)
    const { server, tasks, job } = setup
    const loop = dispatchLoop(job, 20)
    await sleep(800)
    server.freeze()
    t.after(() => server.thaw())
    await sleep(2000)
    server.thaw()
    await sleep(800)
    await loop.stop()
    const executions = await settle(setup, loop.accepted)
    const count = (mode: string): number => loop.accepted.filter((a) => a.mode === mode).length
    const duplicates = [...executions.entries()].filter(([, c]) => c > 1)
    t.diagnostic(
      `accepted ${loop.accepted.length}: queued ${count('queued')}, inline ${count('inline')}, spooled ${count('spooled')}; ambiguous ${tasks.status().counts.ambiguous}`,
    )
    assert.ok(count('spooled') > 0, 'the freeze produced ambiguous enqueues')
    assert.ok(count('inline') > 0, 'dispatches during the freeze ran inline')
    assert.deepEqual(duplicates, [], 'no task ran twice')
    for (const a of loop.accepted) assert.equal(executions.get(a.id), 1, `${a.mode} ${a.id}`)
  })

  test('kill and restart with its data (AOF): every accepted task runs exactly once', async (t) => {
    const setup = await scenario(t, true)
    const { server, job } = setup
    const loop = dispatchLoop(job, 20)
    await sleep(800)
    await server.kill()
    await sleep(1500)
    await server.start()
    await sleep(800)
    await loop.stop()
    const executions = await settle(setup, loop.accepted)
    const duplicates = [...executions.entries()].filter(([, c]) => c > 1)
    assert.deepEqual(duplicates, [], 'no task ran twice')
    for (const a of loop.accepted) assert.equal(executions.get(a.id), 1, `${a.mode} ${a.id}`)
  })
})
