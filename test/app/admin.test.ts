// The operator switch (forced fallback behind ADMIN_TOKEN) and what must never leak: the admin
// token and the Redis password stay out of the status payload and the logs.
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { clientKey, FailureLimiter } from '../../app/status.js'
import { captureLogs, http, redis, startTestApp, WsClient } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const TOKEN = 'operator-token-0123456789abcdef'
const switchUrl = (url: string): string => `${url}/api/admin/fallback`

describe('operator switch', () => {
  test('is disabled without ADMIN_TOKEN', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const res = await http<{ error: { code: string } }>(switchUrl(app.url), {
      method: 'POST',
      body: { force: true },
      headers: { authorization: 'Bearer anything' },
    })
    assert.equal(res.status, 403)
    assert.equal(res.body.error.code, 'admin_disabled')
  })

  test('needs the token; forces every component onto its fallback and releases it', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url, adminToken: TOKEN })
    const health = app.services.failsoft.health
    const client = await WsClient.open(t, app.url)
    await client.next((m) => m.type === 'status')
    assert.equal(client.lastStatus().redis.available, true)

    const missing = await http(switchUrl(app.url), { method: 'POST', body: { force: true } })
    assert.equal(missing.status, 401)
    assert.equal(missing.headers.get('www-authenticate'), 'Bearer')
    const wrong = await http(switchUrl(app.url), {
      method: 'POST',
      body: { force: true },
      headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}x` },
    })
    assert.equal(wrong.status, 401)
    assert.equal(health.forced, false)
    const bad = await http(switchUrl(app.url), {
      method: 'POST',
      body: { force: 'yes' },
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    assert.equal(bad.status, 400)

    const forced = await http<{ forced: boolean }>(switchUrl(app.url), {
      method: 'POST',
      body: { force: true },
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    assert.equal(forced.status, 200)
    assert.equal(forced.body.forced, true)
    await client.next((m) => m.type === 'status' && (m.redis as { forced: boolean }).forced, {
      timeoutMs: 2000,
      message: 'forced status pushed',
    })
    const ready = await http<{ status: string; forced: boolean }>(`${app.url}/readyz`)
    assert.deepEqual([ready.status, ready.body.status, ready.body.forced], [200, 'degraded', true])
    assert.equal(
      (
        await http<{ dispatch: { mode: string } }>(`${app.url}/api/notifications`, {
          method: 'POST',
          body: { to: 'a@example.org', subject: 'forced', body: 'inline' },
        })
      ).body.dispatch.mode,
      'inline',
    )

    const released = await http<{ forced: boolean }>(switchUrl(app.url), {
      method: 'POST',
      body: { force: false },
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    assert.equal(released.body.forced, false)
    await waitFor(() => health.available, { timeoutMs: 3000, message: 'back on Redis' })
  })

  test('answers 429 after repeated failed attempts', async (t) => {
    const app = await startTestApp(t, { redisUrl: null, adminToken: TOKEN })
    const attempt = () =>
      http(switchUrl(app.url), {
        method: 'POST',
        body: { force: true },
        headers: { authorization: 'Bearer guess-guess-guess-guess' },
      })
    for (let i = 0; i < 10; i++) assert.equal((await attempt()).status, 401)
    const blocked = await attempt()
    assert.equal(blocked.status, 429)
    const wait = Number(blocked.headers.get('retry-after'))
    assert.ok(wait >= 1 && wait <= 60, `retry-after ${wait}`)
  })

  test('the lock-out is per client address: a guesser does not lock the operator out', async (t) => {
    const app = await startTestApp(t, { redisUrl: null, adminToken: TOKEN })
    const { port } = new URL(app.url)
    // From another loopback address (Linux routes all of 127.0.0.0/8 to lo).
    const from = (localAddress: string, token: string) =>
      new Promise<number>((resolve, reject) => {
        const body = JSON.stringify({ force: false })
        const req = request(
          {
            host: '127.0.0.1',
            port,
            localAddress,
            method: 'POST',
            path: '/api/admin/fallback',
            headers: {
              authorization: `Bearer ${token}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            res.resume()
            res.on('end', () => resolve(res.statusCode ?? 0))
          },
        )
        req.on('error', reject)
        req.end(body)
      })
    for (let i = 0; i < 10; i++)
      assert.equal(await from('127.0.0.2', 'wrong-guess-0123456789'), 401)
    assert.equal(
      await from('127.0.0.2', 'wrong-guess-0123456789'),
      429,
      'the guesser is locked out',
    )
    assert.equal(await from('127.0.0.2', TOKEN), 429, 'even with the right token, for now')
    assert.equal(await from('127.0.0.1', TOKEN), 200, 'the operator, elsewhere, is not')
    assert.equal(await from('127.0.0.3', 'wrong-guess-0123456789'), 401, 'nor another client')
  })

  test('a global ceiling, far above the per-client limit, holds many addresses together', () => {
    const limiter = new FailureLimiter({
      perClient: 3,
      global: 10,
      windowMs: 60_000,
      maxClients: 4,
    })
    const t0 = 1_000_000
    for (let i = 0; i < 3; i++) limiter.fail('10.0.0.1', t0)
    assert.ok(limiter.retryAfter('10.0.0.1', t0) > 0, 'per client')
    assert.equal(limiter.retryAfter('10.0.0.2', t0), 0, 'another client may try')
    for (let i = 0; i < 7; i++) limiter.fail(`10.0.1.${i}`, t0 + 1000)
    assert.equal(limiter.trackedClients, 4, 'bounded memory: past maxClients, global only')
    assert.equal(limiter.retryAfter('10.0.0.99', t0 + 1000), 59, 'the global ceiling')
    assert.equal(limiter.retryAfter('10.0.0.99', t0 + 61_000), 0, 'a minute later, open again')
    assert.equal(limiter.trackedClients, 0, 'old failures are forgotten')
  })

  test('failures are counted per IPv4 address and per IPv6 /64', () => {
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7')
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7')
    assert.equal(clientKey('2001:db8:a:b:1:2:3:4'), '2001:db8:a:b::/64')
    assert.equal(clientKey('2001:db8:a:b::9'), '2001:db8:a:b::/64')
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
    assert.equal(clientKey('::1'), '0:0:0:0::/64')
    assert.equal(clientKey(undefined), 'unknown')
  })
})

describe('secrets', () => {
  test('neither the Redis password nor the admin token reach the status or the logs', async (t) => {
    const password = 'redis-pass-Zq81xv0'
    const server = await redis(t, { password })
    const logs = captureLogs()
    const app = await startTestApp(t, {
      redisUrl: server.url,
      adminToken: TOKEN,
      logger: logs.logger,
    })
    assert.equal(app.services.failsoft.health.state, 'up')
    const client = await WsClient.open(t, app.url)
    await client.next((m) => m.type === 'status')
    await http(switchUrl(app.url), {
      method: 'POST',
      body: { force: true },
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    await http(switchUrl(app.url), {
      method: 'POST',
      body: { force: false },
      headers: { authorization: `Bearer wrong-${TOKEN}` },
    })
    await server.kill()
    await client.next(
      (m) => m.type === 'status' && (m.redis as { available: boolean }).available === false,
    )
    const status = await http(`${app.url}/api/status`)
    const metrics = await http<string>(`${app.url}/metrics`)
    for (const text of [
      JSON.stringify(status.body),
      JSON.stringify(client.messages),
      metrics.body,
      logs.text(),
    ]) {
      assert.ok(!text.includes(password), 'no Redis password')
      assert.ok(!text.includes(TOKEN), 'no admin token')
    }
    assert.ok(
      !JSON.stringify(status.body).includes(String(server.port)),
      'no Redis address in the public status',
    )
    // Closing a BullMQ worker while Redis is down leaves its blocking-fetch watchdog timer
    // (up to 11 s) holding the test process open: close with Redis back.
    await http(switchUrl(app.url), {
      method: 'POST',
      body: { force: false },
      headers: { authorization: `Bearer ${TOKEN}` },
    })
    await server.start()
    await waitFor(() => app.services.failsoft.health.available, { timeoutMs: 5000 })
  })
})
