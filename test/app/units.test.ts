// Pure pieces of the reference app: configuration, the local embedding, the impact score and
// the secret scrubbing of status messages. No Redis, no server.
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { ConfigError, defaultDatabasePath, loadConfig } from '../../app/config.js'
import { impactScore } from '../../app/db.js'
import { DIMENSIONS, embed, nearest, similarity, tokenize } from '../../app/embedding.js'
import { prettyLine, resolveLogFormat } from '../../app/log-format.js'
import { logStartTarget, redisTargetLabel } from '../../app/services.js'
import { redactSecrets } from '../../app/status.js'
import { captureLogs, findChromium } from './helpers.js'

describe('configuration', () => {
  test('defaults: port 3000, local Redis, database under app/data, worker on', () => {
    const config = loadConfig({})
    assert.equal(config.port, 3000)
    assert.equal(config.redisUrl, 'redis://127.0.0.1:6379')
    assert.equal(config.databasePath, defaultDatabasePath)
    assert.match(config.databasePath, /app\/data\/app\.db$/)
    assert.match(config.spoolPath, /app\/data\/spool\.jsonl$/)
    assert.equal(config.runWorker, true)
    assert.equal(config.adminToken, null)
    assert.deepEqual(config.allowedOrigins, [])
  })

  test('REDIS_URL=none runs memory-only; lists and flags are parsed', () => {
    const config = loadConfig({
      REDIS_URL: 'none',
      RUN_WORKER: '0',
      ALLOWED_ORIGINS: 'https://a.example, http://b.example:8080',
      ADMIN_TOKEN: 'a-long-enough-token',
      PORT: '0',
    })
    assert.equal(config.redisUrl, null)
    assert.equal(config.runWorker, false)
    assert.deepEqual(config.allowedOrigins, ['https://a.example', 'http://b.example:8080'])
    assert.equal(config.port, 0)
  })

  test('bad values are refused with the variable named, never echoing a Redis URL', () => {
    assert.throws(() => loadConfig({ PORT: '70000' }), ConfigError)
    assert.throws(() => loadConfig({ PORT: 'abc' }), /PORT/)
    assert.throws(() => loadConfig({ ADMIN_TOKEN: 'short' }), /ADMIN_TOKEN/)
    assert.throws(() => loadConfig({ ALLOWED_ORIGINS: 'evil.example/path' }), /ALLOWED_ORIGINS/)
    assert.throws(() => loadConfig({ RUN_WORKER: 'maybe' }), /RUN_WORKER/)
    assert.throws(
      () => loadConfig({ REDIS_URL: 'http://user:hunter2@host' }),
      (error: Error) => error instanceof ConfigError && !error.message.includes('hunter2'),
    )
  })
})

describe('local embedding', () => {
  test('is deterministic, normalised, and ranks related texts first', () => {
    const a = embed('Bike repair workshop with shared tools')
    assert.equal(a.length, DIMENSIONS)
    assert.deepEqual(a, embed('Bike repair workshop with shared tools'))
    assert.ok(Math.abs(similarity(a, a) - 1) < 1e-5)
    const candidates = [
      { name: 'tools', vector: embed('A tool library: borrow tools, repair them together') },
      { name: 'bikes', vector: embed('Repair your bikes at the weekly bike workshop') },
      { name: 'solar', vector: embed('Solar panels on public rooftops') },
    ]
    const ranked = nearest(a, candidates, 3).map((entry) => entry.item.name)
    assert.equal(ranked[0], 'bikes')
    assert.ok(!ranked.includes('solar'))
  })

  test('tokenizes accents, plurals and stop words away', () => {
    assert.deepEqual(tokenize('The Cafés and the bikes!'), ['cafe', 'bike'])
    assert.deepEqual([...embed('')], new Array(DIMENSIONS).fill(0))
  })
})

describe('impact score (compost batch)', () => {
  test('grows with content and support, halves every 30 days without an edit', () => {
    const now = Date.parse('2026-06-30T00:00:00Z')
    const fresh = {
      description: 'one two three four',
      supporters: 0,
      updatedAt: '2026-06-30T00:00:00Z',
    }
    assert.equal(impactScore(fresh, now), 20)
    assert.ok(impactScore({ ...fresh, supporters: 3 }, now) > 20)
    const old = { ...fresh, updatedAt: '2026-05-31T00:00:00Z' }
    assert.equal(impactScore(old, now), 10)
  })
})

describe('status messages', () => {
  test('credentials in an error message are scrubbed', () => {
    assert.equal(
      redactSecrets('connect to redis://admin:s3cret@10.0.0.1:6379 failed'),
      'connect to redis://[redacted]@10.0.0.1:6379 failed',
    )
    assert.equal(redactSecrets('bad password=hunter2 here'), 'bad password=[redacted] here')
    assert.equal(redactSecrets('x'.repeat(1000)).length, 300)
  })
})

describe('the browser tests find Chromium', () => {
  test('on PATH under any of its usual names, or at CHROMIUM_PATH; null when absent', () => {
    const dir = mkdtempSync(join(tmpdir(), 'failsoft-chromium-'))
    try {
      const fake = join(dir, 'chromium-browser')
      writeFileSync(fake, '#!/bin/sh\n')
      assert.equal(findChromium({ PATH: dir }), null, 'not executable: not a browser')
      chmodSync(fake, 0o755)
      assert.equal(findChromium({ PATH: `/nonexistent:${dir}` }), fake)
      assert.equal(findChromium({ PATH: '', CHROMIUM_PATH: fake }), fake)
      assert.equal(findChromium({ PATH: dir, CHROMIUM_PATH: join(dir, 'missing') }), null)
      assert.equal(findChromium({ PATH: '/nonexistent' }), null)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('log output', () => {
  test('LOG_FORMAT: pretty on a terminal, JSON on a pipe, unless set; anything else refused', () => {
    assert.equal(resolveLogFormat(undefined, true), 'pretty')
    assert.equal(resolveLogFormat(undefined, false), 'json')
    assert.equal(resolveLogFormat('auto', undefined), 'json')
    assert.equal(resolveLogFormat('json', true), 'json')
    assert.equal(resolveLogFormat('pretty', false), 'pretty')
    assert.equal(loadConfig({}, true).logFormat, 'pretty')
    assert.equal(loadConfig({}, false).logFormat, 'json')
    assert.throws(
      () => loadConfig({ LOG_FORMAT: 'yaml' }),
      /LOG_FORMAT must be auto, pretty or json/,
    )
  })

  test('a pretty line: time, level, component, message, then the other fields', () => {
    const at = new Date(2026, 0, 2, 3, 4, 5, 67)
    const line = JSON.stringify({
      level: 50,
      time: at.getTime(),
      pid: 1,
      hostname: 'h',
      name: 'failsoft-app',
      lib: 'failsoft',
      component: 'health',
      err: { type: 'Error', message: 'connect ECONNREFUSED 127.0.0.1:6379', stack: 'x' },
      target: '127.0.0.1:6379/0',
      msg: 'Redis unavailable',
    })
    assert.equal(
      prettyLine(line, false),
      '03:04:05.067 ERROR [health] Redis unavailable  err="connect ECONNREFUSED 127.0.0.1:6379" target=127.0.0.1:6379/0\n',
    )
    assert.ok(prettyLine(line, true).includes('\x1b[31mERROR\x1b[0m'), 'the level in red')
    assert.equal(prettyLine('not json', false), 'not json\n')
  })

  test('the start line shows host:port/db of REDIS_URL, never its credentials', () => {
    assert.equal(redisTargetLabel('redis://u:secret@cache.example:6380/2'), 'cache.example:6380/2')
    assert.equal(redisTargetLabel('rediss://cache.example'), 'cache.example:6379/0')
    assert.equal(redisTargetLabel('redis://[::1]:7000'), '[::1]:7000/0')
    assert.equal(redisTargetLabel('redis://u:p#w@host:1'), null)
  })

  test('the start line of plain `npm start` says it uses the default Redis', () => {
    const logs = captureLogs()
    logStartTarget(loadConfig({}), logs.logger, 'web-1', 'reference app')
    logStartTarget(loadConfig({ REDIS_URL: 'none' }), logs.logger, 'web-1', 'reference app')
    assert.deepEqual(
      logs.records().map((r) => r.msg),
      [
        'reference app starting: Redis at 127.0.0.1:6379/0 (the default: REDIS_URL is unset), every key under "failsoft-app:"',
        'reference app starting without Redis (memory-only: REDIS_URL=none, no socket is opened)',
      ],
    )
  })
})
