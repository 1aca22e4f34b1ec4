// The reference app's HTTP API against a real redis-server: the projects cache (x-cache header,
// invalidation, no stale read after an outage), validation errors, probes, metrics, static files.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { http, redis, startTestApp } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

interface ProjectBody {
  project: { id: number; title: string; description: string }
  dispatches?: Array<{ task: string; mode: string }>
}
interface ListBody {
  projects: Array<{ id: number; title: string }>
}
interface ErrorBody {
  error: { code: string; message: string; field?: string }
}

describe('projects API through the cache', () => {
  test('answers from the database, then from Redis, and says so in x-cache', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const first = await http<ListBody>(`${app.url}/api/projects`)
    assert.equal(first.status, 200)
    assert.equal(first.headers.get('x-cache'), 'database')
    assert.equal(first.body.projects.length, 6)
    const second = await http<ListBody>(`${app.url}/api/projects`)
    assert.equal(second.headers.get('x-cache'), 'redis')
    assert.deepEqual(second.body, first.body)

    const detail = await http<ProjectBody>(`${app.url}/api/projects/1`)
    assert.equal(detail.headers.get('x-cache'), 'database')
    assert.equal((await http(`${app.url}/api/projects/1`)).headers.get('x-cache'), 'redis')
    assert.equal(detail.body.project.id, 1)
  })

  test('POST and PATCH invalidate the list and the project', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    await http(`${app.url}/api/projects`)
    await http(`${app.url}/api/projects/2`)

    const created = await http<ProjectBody>(`${app.url}/api/projects`, {
      method: 'POST',
      body: {
        title: 'Seed swap',
        description: 'Swap seeds every spring',
        owner: 'Ana',
        email: 'ana@example.org',
      },
    })
    assert.equal(created.status, 201)
    assert.deepEqual(
      created.body.dispatches?.map((d) => [d.task, d.mode]),
      [
        ['embed_project', 'queued'],
        ['send_email', 'queued'],
      ],
    )
    const list = await http<ListBody>(`${app.url}/api/projects`)
    assert.equal(list.headers.get('x-cache'), 'database')
    assert.ok(list.body.projects.some((p) => p.title === 'Seed swap'))
    // The address went to the task only.
    assert.ok(!JSON.stringify(list.body).includes('ana@example.org'))

    const patched = await http<ProjectBody>(`${app.url}/api/projects/2`, {
      method: 'PATCH',
      body: { title: 'Repair café on Sundays' },
    })
    assert.equal(patched.status, 200)
    const detail = await http<ProjectBody>(`${app.url}/api/projects/2`)
    assert.equal(detail.headers.get('x-cache'), 'database')
    assert.equal(detail.body.project.title, 'Repair café on Sundays')
    assert.equal((await http(`${app.url}/api/projects/2`)).headers.get('x-cache'), 'redis')

    // The worker of this process ran the queued welcome email.
    await waitFor(
      async () => {
        const outbox = await http<{ emails: Array<{ to: string; mode: string }> }>(
          `${app.url}/api/outbox`,
        )
        return outbox.body.emails.some((e) => e.to === 'ana@example.org' && e.mode === 'worker')
      },
      { timeoutMs: 5000, message: 'the welcome email reaches the outbox through the worker' },
    )
  })

  test('no stale project after Redis is killed, the project edited, and Redis restarted with its data', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const health = app.services.failsoft.health
    await http(`${app.url}/api/projects/3`)
    await http(`${app.url}/api/projects`)
    assert.equal((await http(`${app.url}/api/projects/3`)).headers.get('x-cache'), 'redis')
    // Redis keeps the old value on disk: what comes back still holds it.
    await server.cli('SAVE')

    await server.kill()
    await waitFor(() => !health.available, { message: 'degraded after the kill' })
    const patched = await http<ProjectBody>(`${app.url}/api/projects/3`, {
      method: 'PATCH',
      body: { title: 'Solar cooperative (edited offline)' },
    })
    assert.equal(patched.status, 200)
    const during = await http<ProjectBody>(`${app.url}/api/projects/3`)
    assert.equal(during.body.project.title, 'Solar cooperative (edited offline)')
    assert.notEqual(during.headers.get('x-cache'), 'redis')

    await server.start()
    await waitFor(() => health.available, { timeoutMs: 5000, message: 'back on Redis' })
    const after = await http<ProjectBody>(`${app.url}/api/projects/3`)
    assert.equal(after.body.project.title, 'Solar cooperative (edited offline)')
    const list = await http<ListBody>(`${app.url}/api/projects`)
    assert.equal(
      list.body.projects.find((p) => p.id === 3)?.title,
      'Solar cooperative (edited offline)',
    )
    // And it is Redis that serves it from now on — once the cache's peer wait (reads stay off
    // Redis until the other instances confirmed their reconciliation) is over.
    await waitFor(
      async () => (await http(`${app.url}/api/projects/3`)).headers.get('x-cache') === 'redis',
      { timeoutMs: 3000, message: 'served by Redis again' },
    )
  })
})

describe('validation', () => {
  test('bad input gets a 4xx JSON error naming the field', async (t) => {
    const app = await startTestApp(t, { redisUrl: null, bodyLimitBytes: 2048 })
    const post = (body: unknown) =>
      http<ErrorBody>(`${app.url}/api/projects`, { method: 'POST', body })
    const cases: Array<[Promise<{ status: number; body: ErrorBody }>, number, string, string?]> = [
      [post({}), 400, 'invalid_type', 'title'],
      [post({ title: 'ab' }), 400, 'invalid_length', 'title'],
      [post({ title: 'x'.repeat(121) }), 400, 'invalid_length', 'title'],
      [post({ title: 'line\nbreak' }), 400, 'invalid_characters', 'title'],
      [post({ title: 42 }), 400, 'invalid_type', 'title'],
      [post({ title: 'Fine title', admin: true }), 400, 'unknown_field', 'admin'],
      [post({ title: 'Fine title', email: 'not-an-address' }), 400, 'invalid_email', 'email'],
      [post([1, 2]), 400, 'invalid_body'],
      [post({ title: 'Fine title', description: 'y'.repeat(3000) }), 413, 'body_too_large'],
      [
        http<ErrorBody>(`${app.url}/api/projects`, {
          method: 'POST',
          raw: '{"title": ',
          headers: { 'content-type': 'application/json' },
        }),
        400,
        'invalid_json',
      ],
      [
        http<ErrorBody>(`${app.url}/api/projects`, {
          method: 'POST',
          raw: 'title=x',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        }),
        415,
        'unsupported_media_type',
      ],
      [http<ErrorBody>(`${app.url}/api/projects/abc`), 400, 'invalid_id', 'id'],
      [http<ErrorBody>(`${app.url}/api/projects/0`), 400, 'invalid_id', 'id'],
      [http<ErrorBody>(`${app.url}/api/projects/99999999999`), 400, 'invalid_id', 'id'],
      [http<ErrorBody>(`${app.url}/api/projects/999`), 404, 'not_found'],
      [
        http<ErrorBody>(`${app.url}/api/projects/1`, { method: 'PATCH', body: {} }),
        400,
        'empty_patch',
      ],
      [
        http<ErrorBody>(`${app.url}/api/projects/1`, { method: 'DELETE' }),
        405,
        'method_not_allowed',
      ],
      [
        http<ErrorBody>(`${app.url}/api/notifications`, {
          method: 'POST',
          body: { to: 'a@b.org', subject: '', body: 'x' },
        }),
        400,
        'invalid_length',
        'subject',
      ],
      [http<ErrorBody>(`${app.url}/api/nothing-here`), 404, 'not_found'],
    ]
    for (const [pending, status, code, field] of cases) {
      const res = await pending
      assert.equal(res.status, status, JSON.stringify(res.body))
      assert.equal(res.body.error.code, code)
      if (field !== undefined) assert.equal(res.body.error.field, field)
    }
  })

  test('a lone UTF-16 surrogate or bytes that are not UTF-8 are refused, never stored as U+FFFD', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const raw = (body: string | Uint8Array, path = '/api/projects', method = 'POST') =>
      http<ErrorBody & ProjectBody>(`${app.url}${path}`, {
        method,
        raw: body,
        headers: { 'content-type': 'application/json' },
      })
    // The JSON escapes of a lone high and a lone low surrogate.
    for (const escape of ['\\ud800', '\\udfff', 'ab\\ud83d']) {
      const res = await raw(`{"title":"Lone ${escape} surrogate"}`)
      assert.equal(res.status, 400, `${escape}: ${JSON.stringify(res.body)}`)
      assert.deepEqual([res.body.error.code, res.body.error.field], ['invalid_characters', 'title'])
    }
    const patched = await raw('{"owner":"Bad \\udc00 owner"}', '/api/projects/1', 'PATCH')
    assert.deepEqual([patched.status, patched.body.error.field], [400, 'owner'])
    // A surrogate encoded in UTF-8 (ED A0 80, which a lenient decoder turns into three U+FFFD),
    // and a byte that is never UTF-8.
    for (const bytes of [[0xed, 0xa0, 0x80], [0xff]]) {
      const body = Buffer.concat([
        Buffer.from('{"title":"Bad '),
        Buffer.from(bytes),
        Buffer.from(' title"}'),
      ])
      const res = await raw(body)
      assert.equal(res.status, 400, JSON.stringify(res.body))
      assert.equal(res.body.error.code, 'invalid_encoding')
    }
    // A real pair (an emoji) is fine, and nothing refused was stored.
    const ok = await raw('{"title":"Compost \\ud83c\\udf31 club"}')
    assert.equal(ok.status, 201)
    assert.equal(ok.body.project.title, 'Compost \u{1f331} club')
    const list = await http<ListBody>(`${app.url}/api/projects`)
    assert.ok(list.body.projects.every((p) => !p.title.includes('\ufffd')))
  })

  test('a __proto__ key in a body pollutes nothing', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const res = await http<ProjectBody>(`${app.url}/api/projects`, {
      method: 'POST',
      raw: '{"title":"Proto test","__proto__":{"polluted":true}}',
      headers: { 'content-type': 'application/json' },
    })
    assert.equal(res.status, 201)
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
  })
})

describe('probes, metrics and the page', () => {
  test('/healthz, /readyz and /metrics while Redis is up', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    assert.deepEqual((await http(`${app.url}/healthz`)).body, { status: 'ok' })
    const ready = await http<{ status: string; redis: string }>(`${app.url}/readyz`)
    assert.equal(ready.status, 200)
    assert.equal(ready.body.status, 'ok')
    assert.equal(ready.body.redis, 'up')

    await http(`${app.url}/api/notifications`, {
      method: 'POST',
      body: { to: 'ops@example.org', subject: 'Hello', body: 'Test' },
    })
    const metrics = await http<string>(`${app.url}/metrics`)
    assert.equal(metrics.status, 200)
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/)
    const text = metrics.body
    assert.match(text, /^failsoft_redis_up 1$/m)
    assert.match(text, /^failsoft_fallback_operations_total\{component="cache:projects"\} 0$/m)
    assert.match(text, /^failsoft_transitions_total\{to="up"\} 1$/m)
    assert.match(
      text,
      /^failsoft_channel_dropped_messages_total\{layer="default",reason="channel_full"\} 0$/m,
    )
    assert.match(text, /^app_task_dispatches_total\{task="send_email",mode="queued"\} 1$/m)
    assert.match(
      text,
      /app_http_request_duration_seconds_count\{method="POST",route="\/api\/notifications",status="202"\} 1/,
    )
  })

  test('the page is served with a strict CSP; nothing outside public/ is reachable', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const page = await fetch(`${app.url}/`)
    assert.equal(page.status, 200)
    assert.match(page.headers.get('content-type') ?? '', /text\/html/)
    const csp = page.headers.get('content-security-policy') ?? ''
    assert.match(csp, /script-src 'self'/)
    assert.doesNotMatch(csp, /unsafe-inline/)
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff')
    assert.match(await page.text(), /<script type="module" src="\/app.js">/)
    assert.equal((await fetch(`${app.url}/app.js`)).status, 200)
    for (const path of ['/../package.json', '/%2e%2e/package.json', '/main.ts', '/public/app.js']) {
      assert.equal((await fetch(`${app.url}${path}`)).status, 404, path)
    }
  })
})
