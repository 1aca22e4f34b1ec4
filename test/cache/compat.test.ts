import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import {
  closeDefault,
  configureDefault,
  safeCacheDelete,
  safeCacheGet,
  safeCacheSet,
} from '../../src/compat.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { captureLogs, LEVEL } from '../support/log-capture.js'
import { guardUnhandled } from './helpers.js'

guardUnhandled()
// Never let the default instance fall back to REDIS_URL / the machine's own Redis.
after(() => closeDefault())

describe("the seed's safeCache* functions (failsoft/compat)", () => {
  test('get, set and delete through the default instance', async (t) => {
    const server = await startRedis(t)
    const failsoft = await configureDefault({
      redis: server.url,
      prefix: 'compat1',
      logger: false,
      health: { probeIntervalMs: 50 },
    })
    t.after(() => closeDefault())
    await failsoft.ready()
    assert.deepEqual(await safeCacheGet('projects', []), [])
    assert.equal(await safeCacheSet('projects', [{ id: 1 }]), true)
    assert.deepEqual(await safeCacheGet('projects'), [{ id: 1 }])
    assert.equal(await safeCacheSet('short', 'v', 60), true)
    const keys = (await server.cli('KEYS', 'compat1:cache:default:d:*')) as string[]
    const short = keys.find((k) => k.endsWith(':short'))!
    assert.ok(Number(await server.cli('PTTL', short)) <= 60_000)
    assert.equal(await safeCacheDelete('projects'), true)
    assert.equal(await safeCacheGet('projects', 'gone'), 'gone')
  })

  test('never throw: bad keys, values and TTLs return the default or false, and are logged', async (t) => {
    const logs = captureLogs()
    await configureDefault({ redis: null, prefix: 'compat2', logger: logs.logger })
    t.after(() => closeDefault())
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    assert.equal(await safeCacheGet('', 'dflt'), 'dflt')
    assert.equal(await safeCacheGet(42 as unknown as string, 'dflt'), 'dflt')
    assert.equal(await safeCacheGet('x'.repeat(5000)), undefined)
    assert.equal(await safeCacheSet('k', () => 1), false)
    assert.equal(await safeCacheSet('k', 10n), false)
    assert.equal(await safeCacheSet('k', cyclic), false)
    assert.equal(await safeCacheSet('k', undefined), false)
    assert.equal(await safeCacheSet('k', 1, -1), false)
    assert.equal(await safeCacheSet('k', 1, Number.NaN), false)
    assert.equal(await safeCacheDelete(null as unknown as string), false)
    const errors = logs.records.filter((r) => r.level === LEVEL.error)
    assert.ok(errors.length >= 3, `${errors.length} error lines`)
    assert.ok(errors.every((r) => typeof r.err?.message === 'string'))
    // Rate-limited: the same mistake in a loop does not flood the log.
    const before = logs.records.length
    for (let i = 0; i < 100; i++) await safeCacheGet('')
    assert.ok(logs.records.length - before <= 1)
  })

  test('never throw while Redis is down, and never after the default instance is closed', async (t) => {
    const server = await startRedis(t)
    const failsoft = await configureDefault({
      redis: server.url,
      prefix: 'compat3',
      logger: false,
      health: { probeIntervalMs: 50 },
    })
    t.after(() => closeDefault())
    await failsoft.ready()
    await safeCacheSet('k', 'v')
    await server.kill()
    await waitFor(() => failsoft.cache().backend === 'memory', { message: 'on memory' })
    assert.equal(await safeCacheGet('k'), 'v')
    assert.equal(await safeCacheSet('k2', 'v2'), true)
    assert.equal(await safeCacheDelete('k'), true)
    // A closed default instance: the compat call must still not throw.
    await failsoft.close()
    assert.equal(await safeCacheGet('k2', 'dflt'), 'dflt')
    assert.equal(await safeCacheSet('k2', 'v'), false)
    assert.equal(await safeCacheDelete('k2'), false)
  })
})
