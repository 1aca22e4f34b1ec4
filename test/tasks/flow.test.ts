// Flows (tasks.flow): a parent that runs once its children have completed, on real Redis —
// added whole or not at all, rejected (typed) while Redis is unavailable, a failed child
// failing its parent, and no node run twice through a worker killed mid-flow.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { createFailsoft, type FailsoftError } from '../../src/index.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { countExecutions, makeTasks, sleep, spawnNode, tempDir } from './helpers.js'

describe('flows', () => {
  test('the parent runs after its children, and reads their values by task id', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    const order: string[] = []
    tasks.define('resize', async (args: { size: number }) => {
      await sleep(50)
      order.push(`resize ${args.size}`)
      return args.size * 2
    })
    let seen: Readonly<Record<string, unknown>> = {}
    tasks.define('publish', async (_args: unknown, ctx) => {
      order.push('publish')
      seen = await ctx.children()
      return Object.values(seen).reduce((a: number, b) => a + Number(b), 0)
    })
    tasks.work({ concurrency: 4 })
    const flow = await tasks.flow({
      task: 'publish',
      args: {},
      children: [
        { task: 'resize', args: { size: 1 } },
        { task: 'resize', args: { size: 2 } },
        { task: 'resize', args: { size: 3 } },
      ],
    })
    assert.equal(flow.mode, 'queued')
    assert.equal(flow.ids.children.length, 3)
    assert.equal(await flow.result({ timeoutMs: 10_000 }), 12)
    assert.equal(order.at(-1), 'publish')
    assert.deepEqual(
      Object.fromEntries(flow.ids.children.map((c) => [c.id, seen[c.id]])),
      Object.fromEntries(flow.ids.children.map((c, i) => [c.id, (i + 1) * 2])),
    )
  })

  test('a child that fails for good fails its parent: result() rejects, the parent never runs', async (t) => {
    const server = await startRedis(t)
    const { tasks } = await makeTasks(t, server.url)
    let parentRuns = 0
    tasks.define('child', (args: { ok: boolean }) => {
      if (!args.ok) throw new Error('no')
      return 1
    })
    tasks.define('parent', () => {
      parentRuns++
    })
    tasks.work({ concurrency: 2 })
    const flow = await tasks.flow({
      task: 'parent',
      children: [
        { task: 'child', args: { ok: true } },
        { task: 'child', args: { ok: false } },
      ],
    })
    await assert.rejects(flow.result({ timeoutMs: 10_000 }), (error: FailsoftError) => {
      assert.equal(error.code, 'FAILSOFT_TASK_FAILED')
      return true
    })
    await sleep(300)
    assert.equal(parentRuns, 0)
  })

  test('while Redis is unavailable a flow is rejected whole (FAILSOFT_FLOW_UNAVAILABLE): nothing runs, nothing is added later', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { tasks, failsoft } = await makeTasks(t, server.url)
    let runs = 0
    tasks.define('n', () => {
      runs++
    })
    await server.kill()
    await waitFor(() => !failsoft.health.available, { message: 'down' })
    const flow = await tasks.flow({ task: 'n', children: [{ task: 'n' }, { task: 'n' }] })
    assert.equal(flow.mode, 'rejected')
    assert.equal(
      flow.mode === 'rejected' && (flow.error as FailsoftError).code,
      'FAILSOFT_FLOW_UNAVAILABLE',
    )
    await assert.rejects(
      flow.result(),
      (error: FailsoftError) => error.code === 'FAILSOFT_TASK_DROPPED',
    )
    assert.equal(runs, 0, 'never inline')
    assert.equal(tasks.status().counts.flowsRejected, 1)
    await server.start()
    await waitFor(() => failsoft.health.available, { timeoutMs: 8000 })
    tasks.work()
    await sleep(500)
    assert.equal(runs, 0, 'never spooled')
  })

  test('a memory-only instance rejects flows; bad flows are refused before anything is sent, named', async (t) => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    t.after(() => failsoft.close())
    const tasks = failsoft.tasks()
    tasks.define('n', () => 1)
    const flow = await tasks.flow({ task: 'n' })
    assert.equal(flow.mode, 'rejected')
    const refused = async (node: unknown, code: string, what: RegExp): Promise<void> => {
      await assert.rejects(tasks.flow(node as never), (error: FailsoftError) => {
        assert.equal(error.code, code)
        assert.match(error.message, what)
        return true
      })
    }
    await refused({ task: 'missing' }, 'FAILSOFT_UNKNOWN_TASK', /missing/)
    await refused({ task: 'n', children: {} }, 'FAILSOFT_INVALID_FLOW', /children must be an array/)
    await refused({ task: 'n', extra: 1 }, 'FAILSOFT_INVALID_FLOW', /unknown flow node key "extra"/)
    await refused(
      { task: 'n', options: { idempotencyKey: 'k' } },
      'FAILSOFT_INVALID_FLOW',
      /no idempotencyKey/,
    )
    await refused({ task: 'n', args: { x: 1n } }, 'FAILSOFT_INVALID_TASK_ARGS', /n/)
    let deep: Record<string, unknown> = { task: 'n' }
    for (let i = 0; i < 20; i++) deep = { task: 'n', children: [deep] }
    await refused(deep, 'FAILSOFT_INVALID_FLOW', /levels deep/)
  })

  test('a worker killed mid-flow: every node runs once, the parent last', async (t) => {
    const server = await startRedis(t)
    const dir = tempDir(t)
    const execFile = join(dir, 'exec.log')
    const { tasks, prefix } = await makeTasks(t, server.url)
    tasks.define('job', () => undefined)
    const env = {
      REDIS_URL: server.url,
      PREFIX: prefix,
      EXEC_FILE: execFile,
      WORK_MS: '600',
      LOCK_MS: '2000',
      STALLED_MS: '1000',
      // The killed worker's leases are taken over after twice this, Redis answering.
      LEASE_MS: '2000',
    }
    const first = spawnNode(t, env)
    await first.next('ready')
    const flow = await tasks.flow({
      task: 'job',
      args: { n: 0 },
      children: Array.from({ length: 6 }, (_, i) => ({ task: 'job', args: { n: i + 1 } })),
    })
    assert.equal(flow.mode, 'queued')
    await sleep(300) // the children are running on the first worker
    await first.kill()
    const second = spawnNode(t, env)
    await second.next('ready')
    await flow.result({ timeoutMs: 30_000 })
    await sleep(500)
    const runs = countExecutions(execFile)
    const ids = [flow.ids.id, ...flow.ids.children.map((c) => c.id)]
    assert.deepEqual(
      ids.map((id) => runs.get(id) ?? 0),
      ids.map(() => 1),
      'every node once',
    )
    const lines = readFileSync(execFile, 'utf8').trim().split('\n')
    assert.equal(lines.at(-1)?.split(' ')[1], flow.ids.id, 'the parent last')
  })
})
