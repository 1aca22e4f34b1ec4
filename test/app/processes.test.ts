// The reference app as real OS processes sharing one Redis (and one SQLite file): chat across
// processes, its degradation to in-process delivery while Redis is down and its return, and
// the worker-only mode (`npm run worker`).
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { http, joinRoom, redis, spawnApp, tempDir, uniquePrefix, WsClient } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const available = (m: Record<string, unknown>, value: boolean): boolean =>
  m.type === 'status' && (m.redis as { available: boolean }).available === value

describe('two app processes on one Redis', () => {
  test('chat crosses processes; in-process chat survives a Redis kill; crossing resumes after the restart', async (t) => {
    const server = await redis(t)
    const dir = tempDir(t)
    const common = {
      REDIS_URL: server.url,
      DATABASE_PATH: join(dir, 'app.db'),
      FAILSOFT_PREFIX: uniquePrefix(),
    }
    const one = await spawnApp(t, { ...common, SPOOL_PATH: join(dir, 'spool-1.jsonl') })
    const two = await spawnApp(t, { ...common, SPOOL_PATH: join(dir, 'spool-2.jsonl') })
    const ana = await WsClient.open(t, one.url)
    const alex = await WsClient.open(t, one.url)
    const ben = await WsClient.open(t, two.url)
    const hello = (client: WsClient) => client.messages.find((m) => m.type === 'hello')?.process
    await waitFor(() => hello(ana) !== undefined && hello(ben) !== undefined)
    assert.notEqual(hello(ana), hello(ben))
    for (const [client, name] of [
      [ana, 'ana'],
      [alex, 'alex'],
      [ben, 'ben'],
    ] as const) {
      await joinRoom(client, 'street', name)
    }

    ana.send({ type: 'chat.message', text: 'hello from process one' })
    const crossed = await ben.next((m) => m.type === 'chat.message', {
      message: 'the message crosses to process two',
    })
    assert.equal(crossed.text, 'hello from process one')
    assert.equal(crossed.process, hello(ana))

    await server.kill()
    for (const client of [ana, ben]) {
      await client.next((m) => available(m, false), {
        timeoutMs: 2000,
        message: 'each process pushes its degraded status within 2 s',
      })
    }
    ana.send({ type: 'chat.message', text: 'same process, Redis down' })
    await alex.next((m) => m.type === 'chat.message' && m.text === 'same process, Redis down')
    ben.send({ type: 'chat.message', text: 'process two alone' })
    await ben.next((m) => m.type === 'chat.message' && m.text === 'process two alone')

    const fromAna = ana.messages.length
    const fromBen = ben.messages.length
    await server.start()
    await ana.next((m) => available(m, true), { from: fromAna, timeoutMs: 5000 })
    await ben.next((m) => available(m, true), { from: fromBen, timeoutMs: 5000 })
    ben.send({ type: 'chat.message', text: 'crossing again' })
    await ana.next((m) => m.type === 'chat.message' && m.text === 'crossing again', {
      timeoutMs: 3000,
      message: 'cross-process chat resumes after the restart (memberships re-asserted)',
    })
  })

  test('worker-only mode runs the jobs of a web process started without a worker', async (t) => {
    const server = await redis(t)
    const dir = tempDir(t)
    const common = {
      REDIS_URL: server.url,
      DATABASE_PATH: join(dir, 'app.db'),
      FAILSOFT_PREFIX: uniquePrefix(),
    }
    const web = await spawnApp(t, {
      ...common,
      RUN_WORKER: '0',
      SPOOL_PATH: join(dir, 'web.jsonl'),
    })
    const worker = await spawnApp(t, { ...common, SPOOL_PATH: join(dir, 'worker.jsonl') }, 'worker')
    // Its first log line says which Redis it uses, as the web process's does.
    const first = JSON.parse(worker.output().split('\n')[0] ?? '') as { msg: string }
    assert.match(
      first.msg,
      new RegExp(`^task worker starting: Redis at 127\\.0\\.0\\.1:${server.port}/0`),
    )
    const sent = await http<{ dispatch: { id: string; mode: string } }>(
      `${web.url}/api/notifications`,
      {
        method: 'POST',
        body: { to: 'worker@example.org', subject: 'From the web process', body: 'Run elsewhere' },
      },
    )
    assert.equal(sent.body.dispatch.mode, 'queued')
    let email: { mode: string; process: string } | undefined
    await waitFor(
      async () => {
        const outbox = await http<{
          emails: Array<{ taskId: string; mode: string; process: string }>
        }>(`${web.url}/api/outbox`)
        email = outbox.body.emails.find((e) => e.taskId === sent.body.dispatch.id)
        return email !== undefined
      },
      { timeoutMs: 5000, message: 'the worker process sends the email' },
    )
    assert.equal(email?.mode, 'worker')
    assert.match(email?.process ?? '', /^worker-/)
  })
})
