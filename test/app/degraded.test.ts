// The reference app without Redis: at start-up (nothing listening) and when Redis is killed
// under it. Everything keeps working from the fallbacks, and comes back by itself.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { captureLogs, http, joinRoom, redis, startTestApp, WsClient } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

interface Dispatch {
  id: string
  task: string
  mode: string
  ok?: boolean
}

describe('degraded mode', () => {
  test('starts with no Redis at all, logs the ERROR and the WARNINGs, serves every feature', async (t) => {
    const logs = captureLogs()
    const app = await startTestApp(t, { redisUrl: 'redis://127.0.0.1:1', logger: logs.logger })
    const records = logs.records()
    assert.ok(
      records.some((r) => r.level === 50 && r.component === 'health'),
      'one ERROR for Redis',
    )
    const warned = records.filter((r) => r.level === 40).map((r) => String(r.component))
    for (const component of ['cache:projects', 'channels:default', 'tasks:app']) {
      assert.ok(warned.includes(component), `a WARNING for ${component}`)
    }

    const ready = await http<{ status: string; redis: string }>(`${app.url}/readyz`)
    assert.equal(ready.status, 200)
    assert.deepEqual([ready.body.status, ready.body.redis], ['degraded', 'down'])

    assert.equal((await http(`${app.url}/api/projects/1`)).headers.get('x-cache'), 'database')
    assert.equal((await http(`${app.url}/api/projects/1`)).headers.get('x-cache'), 'memory')

    const created = await http<{ project: { id: number }; dispatches: Dispatch[] }>(
      `${app.url}/api/projects`,
      { method: 'POST', body: { title: 'Offline project', email: 'offline@example.org' } },
    )
    assert.equal(created.status, 201)
    assert.deepEqual(
      created.body.dispatches.map((d) => [d.task, d.mode, d.ok]),
      [
        ['embed_project', 'inline', true],
        ['send_email', 'inline', true],
      ],
    )
    const outbox = await http<{ emails: Array<{ to: string; mode: string }> }>(
      `${app.url}/api/outbox`,
    )
    assert.deepEqual(
      outbox.body.emails.map((e) => [e.to, e.mode]),
      [['offline@example.org', 'inline']],
    )
    const similar = await http<{ embedded: boolean }>(
      `${app.url}/api/projects/${created.body.project.id}/similar`,
    )
    assert.equal(similar.body.embedded, true)

    // "Recompute now" runs the batch here while Redis is unavailable (a spooled run would wait
    // for a Redis that may never come).
    const batch = await http<{ dispatch: Dispatch }>(`${app.url}/api/impact/recompute`, {
      method: 'POST',
    })
    assert.deepEqual([batch.body.dispatch.mode, batch.body.dispatch.ok], ['local', true])
    const impact = await http<{ runs: Array<{ taskId: string; mode: string }> }>(
      `${app.url}/api/impact`,
    )
    assert.deepEqual(
      impact.body.runs.filter((r) => r.taskId === batch.body.dispatch.id).map((r) => r.mode),
      ['local'],
    )

    const [alice, bob] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    await joinRoom(alice, 'offline', 'alice')
    await joinRoom(bob, 'offline', 'bob')
    alice.send({ type: 'chat.message', text: 'still here' })
    await bob.next((m) => m.type === 'chat.message' && m.text === 'still here')
    assert.equal(bob.lastStatus().redis.available, false)

    const metrics = await http<string>(`${app.url}/metrics`)
    assert.match(metrics.body, /^failsoft_redis_up 0$/m)
    assert.match(metrics.body, /^app_task_dispatches_total\{task="send_email",mode="inline"\} 1$/m)
    assert.match(metrics.body, /^app_task_dispatches_total\{task="compost",mode="local"\} 1$/m)
  })

  test('Redis killed: the panel turns degraded at once, chat stays up in-process, tasks run inline; all returns after a restart', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const [alice, bob] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    await joinRoom(alice, 'lobby', 'alice')
    await joinRoom(bob, 'lobby', 'bob')
    assert.equal(alice.lastStatus().redis.available, true)

    const killedAt = Date.now()
    await server.kill()
    await alice.next(
      (m) => m.type === 'status' && (m.redis as { available: boolean }).available === false,
      {
        timeoutMs: 2000,
        message: 'degraded status pushed within 2 s',
      },
    )
    assert.ok(Date.now() - killedAt < 2000)

    alice.send({ type: 'chat.message', text: 'during the outage' })
    await bob.next((m) => m.type === 'chat.message' && m.text === 'during the outage')

    const mail = await http<{ dispatch: Dispatch }>(`${app.url}/api/notifications`, {
      method: 'POST',
      body: { to: 'ops@example.org', subject: 'Outage', body: 'Redis is down' },
    })
    assert.deepEqual([mail.body.dispatch.mode, mail.body.dispatch.ok], ['inline', true])
    // A dispatched batch waits in the durable spool (what an enqueue caught by a freeze does).
    const batch = { body: { dispatch: await app.services.tasks.compost({ reason: 'test' }) } }
    assert.equal(batch.body.dispatch.mode, 'spooled')
    const spooledStatus = (await http<{ dispatches: Dispatch[] }>(`${app.url}/api/status`)).body
    assert.deepEqual(
      spooledStatus.dispatches
        .filter((d) => d.id === batch.body.dispatch.id)
        .map((d) => [d.mode, 'handedOver' in d]),
      [['spooled', false]],
    )

    const from = alice.messages.length
    await server.start()
    await alice.next(
      (m) => m.type === 'status' && (m.redis as { available: boolean }).available === true,
      { from, timeoutMs: 5000, message: 'status back on Redis' },
    )
    // The spooled batch was handed to the queue under its id and run by a worker, once.
    const runsOfBatch = async () => {
      const impact = await http<{ runs: Array<{ taskId: string; mode: string }> }>(
        `${app.url}/api/impact`,
      )
      return impact.body.runs.filter((r) => r.taskId === batch.body.dispatch.id)
    }
    await waitFor(async () => (await runsOfBatch()).length > 0, {
      timeoutMs: 5000,
      message: 'the spooled compost batch runs after recovery',
    })
    assert.deepEqual(
      (await runsOfBatch()).map((r) => r.mode),
      ['worker'],
    )
    // The panel no longer shows it as waiting: handed over, and where it ran.
    await waitFor(
      async () => {
        const status = await http<{ dispatches: Array<Dispatch & Record<string, unknown>> }>(
          `${app.url}/api/status`,
        )
        const record = status.body.dispatches.find((d) => d.id === batch.body.dispatch.id)
        return (
          record?.handedOver === true &&
          (record.ran as { mode?: string } | undefined)?.mode === 'worker'
        )
      },
      { timeoutMs: 3000, message: 'the spooled record says it was handed over and ran' },
    )

    alice.send({ type: 'chat.message', text: 'after the outage' })
    await bob.next((m) => m.type === 'chat.message' && m.text === 'after the outage')
    const after = await http<{ dispatch: Dispatch }>(`${app.url}/api/notifications`, {
      method: 'POST',
      body: { to: 'ops@example.org', subject: 'Back', body: 'Redis is back' },
    })
    assert.equal(after.body.dispatch.mode, 'queued')
  })

  test('Redis frozen: no request waits on it, chat and tasks keep answering', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const [a, b] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    await joinRoom(a, 'frozen', 'a')
    await joinRoom(b, 'frozen', 'b')
    await http(`${app.url}/api/projects/4`)

    server.freeze()
    t.after(() => server.thaw())
    const timed = async <T>(run: () => Promise<T>): Promise<T> => {
      const started = Date.now()
      const result = await run()
      assert.ok(Date.now() - started < 1500, `answered in ${Date.now() - started} ms`)
      return result
    }
    const project = await timed(() =>
      http<{ project: { id: number } }>(`${app.url}/api/projects/4`),
    )
    assert.equal(project.body.project.id, 4)
    const mail = await timed(() =>
      http<{ dispatch: Dispatch }>(`${app.url}/api/notifications`, {
        method: 'POST',
        body: { to: 'ops@example.org', subject: 'Frozen', body: 'Redis is frozen' },
      }),
    )
    assert.ok(['inline', 'spooled'].includes(mail.body.dispatch.mode), mail.body.dispatch.mode)
    await a.next(
      (m) => m.type === 'status' && (m.redis as { available: boolean }).available === false,
      {
        timeoutMs: 2000,
        message: 'degraded status pushed after the freeze is detected',
      },
    )
    a.send({ type: 'chat.message', text: 'frozen but chatting' })
    await b.next((m) => m.type === 'chat.message' && m.text === 'frozen but chatting', {
      timeoutMs: 1000,
    })

    server.thaw()
    await waitFor(() => app.services.failsoft.health.available, { timeoutMs: 5000 })
  })
})
