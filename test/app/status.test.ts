// The status panel's payload: a start is shown as the start, not as a transition; a process
// started without Redis that gets it later shows one recovery; memory-only is a mode in which
// nothing is ever buffered for Redis.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { freePort, waitFor } from '../support/fault-kit.js'
import type { StatusPayload } from '../../app/status.js'
import { captureLogs, http, joinRoom, redis, startTestApp, WsClient } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const status = async (url: string): Promise<StatusPayload> =>
  (await http<StatusPayload>(`${url}/api/status`)).body

describe('status payload', () => {
  test('a clean start on Redis is the start, not a recovery; an outage then counts', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const first = await status(app.url)
    assert.equal(first.redis.start?.on, 'redis')
    assert.equal(first.redis.lastTransition, null, 'no transition after the start')
    assert.deepEqual(first.redis.transitions, { down: 0, up: 0, reset: 0 })

    await server.kill()
    await waitFor(async () => (await status(app.url)).redis.available === false, {
      message: 'degraded',
    })
    const down = await status(app.url)
    assert.equal(down.redis.lastTransition?.to, 'down')
    assert.deepEqual(down.redis.transitions, { down: 1, up: 0, reset: 0 })

    await server.start()
    await waitFor(async () => (await status(app.url)).redis.available, {
      timeoutMs: 5000,
      message: 'back on Redis',
    })
    const back = await status(app.url)
    assert.equal(back.redis.lastTransition?.to, 'up')
    assert.equal(back.redis.transitions.up, 1, 'one recovery')
    assert.equal(back.redis.transitions.down, 1)
    assert.equal(back.redis.start?.on, 'redis', 'the start stays what it was')
  })

  test('a start without Redis is the start too; Redis arriving later is one recovery', async (t) => {
    const port = await freePort()
    const app = await startTestApp(t, { redisUrl: `redis://127.0.0.1:${port}` })
    const first = await status(app.url)
    assert.equal(first.redis.start?.on, 'fallback')
    assert.equal(first.redis.lastTransition, null)
    assert.deepEqual(first.redis.transitions, { down: 0, up: 0, reset: 0 })
    await redis(t, { port })
    await waitFor(async () => (await status(app.url)).redis.available, {
      timeoutMs: 5000,
      message: 'Redis found',
    })
    const back = await status(app.url)
    assert.equal(back.redis.lastTransition?.to, 'up')
    assert.deepEqual([back.redis.transitions.down, back.redis.transitions.up], [0, 1])
  })

  test('memory-only: a mode, with nothing buffered for Redis, before or at shutdown', async (t) => {
    const logs = captureLogs()
    const app = await startTestApp(t, { redisUrl: null, logger: logs.logger })
    const [alice, bob] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    await joinRoom(alice, 'solo', 'alice')
    await joinRoom(bob, 'solo', 'bob')
    for (let i = 0; i < 5; i++) alice.send({ type: 'chat.message', text: `message ${i}` })
    await bob.next((m) => m.type === 'chat.message' && m.text === 'message 4')
    alice.send({ type: 'poll.vote', poll: 1, option: 0, voter: 'voter-memory-1' })
    await alice.next((m) => m.type === 'poll.results')

    const payload = await status(app.url)
    assert.equal(payload.redis.mode, 'memory-only')
    assert.equal(payload.redis.start?.on, 'memory-only')
    assert.equal(payload.redis.lastTransition, null)
    assert.equal(payload.channels.buffered, 0, 'no cross-process buffer without Redis')
    const layer = app.services.failsoft.status().components['channels:default']
    assert.equal(layer?.outbox.buffered, 0, 'nothing was ever put in the outbox')

    await app.close()
    assert.ok(
      !logs.records().some((r) => /unsent/.test(String(r.msg))),
      'nothing reported unsent at shutdown',
    )
  })
})
