// The operator switch (forced fallback behind ADMIN_TOKEN) and what must never leak: the admin
// token and the Redis password stay out of the status payload and the logs.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
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
    assert.equal(blocked.headers.get('retry-after'), '60')
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
