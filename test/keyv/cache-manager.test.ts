// cache-manager v7 on failsoft/keyv: its API with TTLs, and a real outage of the test's own
// redis-server (killed, then restarted with its data).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createCache } from 'cache-manager'
import Keyv from 'keyv'
import { createFailsoft, type Failsoft } from '../../src/index.js'
import { failsoftStore, type FailsoftKeyvStore } from '../../src/keyv.js'
import { sleep, startRedis, waitFor, type RedisServer } from '../support/fault-kit.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'

function open(
  t: { after(fn: () => unknown): void },
  server: RedisServer,
  prefix: string,
): { failsoft: Failsoft; store: FailsoftKeyvStore; cache: ReturnType<typeof createCache> } {
  const failsoft = createFailsoft({ redis: server.url, prefix, logger: false, health: FAST_HEALTH })
  t.after(() => failsoft.close())
  const store = failsoftStore(failsoft)
  const keyv = new Keyv({ store, namespace: 'cm' })
  keyv.on('error', (error: unknown) => assert.fail(`unexpected error event: ${String(error)}`))
  return { failsoft, store, cache: createCache({ stores: [keyv] }) }
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now()
  const value = await fn()
  return [value, performance.now() - start]
}

test('cache-manager v7 on failsoft/keyv: get/set/del/ttl/mset/mget/mdel/wrap/clear', async (t) => {
  const server = await startRedis(t)
  const prefix = uniquePrefix()
  const { failsoft, store, cache } = open(t, server, prefix)
  assert.equal(await failsoft.ready(), 'up')

  assert.deepEqual(await cache.set('project:7', { id: 7 }, 60_000), { id: 7 })
  assert.deepEqual(await cache.get('project:7'), { id: 7 })
  const expires = await cache.ttl('project:7')
  assert.ok(typeof expires === 'number' && expires - Date.now() > 55_000, `ttl ${expires}`)
  const generation = store.cacheFor().status().generation
  const redisKey = `${prefix}:cache:keyv.cm:d:${generation}:cm:project:7`
  const pttl = Number(await server.cli('PTTL', redisKey))
  assert.ok(pttl > 55_000 && pttl <= 60_000, `the expiry is in Redis: PTTL ${pttl}`)

  await cache.set('forever', 'v') // no ttl: no expiry at all
  assert.equal(await server.cli('PTTL', redisKey.replace('project:7', 'forever')), -1)

  assert.equal(await cache.del('project:7'), true)
  assert.equal(await cache.get('project:7'), undefined)

  await cache.mset([
    { key: 'm1', value: 1 },
    { key: 'm2', value: 2, ttl: 60_000 },
  ])
  assert.deepEqual(await cache.mget(['m1', 'm2', 'm3']), [1, 2, undefined])
  await cache.mdel(['m1', 'm2'])
  assert.deepEqual(await cache.mget(['m1', 'm2']), [undefined, undefined])

  let loads = 0
  const load = async (): Promise<string> => `loaded ${++loads}`
  assert.equal(await cache.wrap('w', load, 100), 'loaded 1')
  assert.equal(await cache.wrap('w', load, 100), 'loaded 1', 'served from the cache')
  await sleep(200)
  assert.equal(await cache.wrap('w', load, 100), 'loaded 2', 'expired after its ttl, loaded again')

  await cache.clear()
  assert.equal(await cache.get('forever'), undefined)
  assert.equal(failsoft.status().components['cache:keyv.cm']?.fallbackOps, 0)
})

test('cache-manager through a Redis outage: keeps answering; a key deleted meanwhile is never served again', async (t) => {
  const server = await startRedis(t, { persistence: true })
  const prefix = uniquePrefix()
  const { failsoft, store, cache } = open(t, server, prefix)
  assert.equal(await failsoft.ready(), 'up')

  await cache.set('A', 'A-old')
  await cache.set('B', 'B-old', 60_000)
  await cache.set('C', 'C-kept', 60_000)
  assert.equal(await cache.get('A'), 'A-old')
  // Confirmed by a heartbeat: a write not yet confirmed when Redis restarts is uncertain to
  // failsoft (Redis may have forgotten it) and is invalidated, a miss rather than C-kept.
  await sleep(300)

  await server.kill()
  const slowest: number[] = []
  const op = async <T>(fn: () => Promise<T>): Promise<T> => {
    const [value, ms] = await timed(fn)
    slowest.push(ms)
    return value
  }
  // The first operation meets the dead socket; it and every later one answer from memory.
  assert.equal(await op(() => cache.get('C')), 'C-kept', 'a warm copy, served while down')
  await waitFor(() => store.cacheFor().backend === 'memory', { message: 'on memory' })
  assert.equal(await op(() => cache.del('A')), true)
  assert.equal(await op(() => cache.set('B', 'B-new', 60_000)), 'B-new')
  assert.equal(await op(() => cache.get('A')), undefined)
  assert.equal(await op(() => cache.get('B')), 'B-new')
  assert.equal(
    await op(() => cache.wrap('W', async () => 'loaded while down', 60_000)),
    'loaded while down',
  )
  assert.equal(await op(() => cache.get('W')), 'loaded while down')
  assert.ok(
    Math.max(...slowest) < 500,
    `slowest operation during the outage: ${Math.max(...slowest)} ms`,
  )
  assert.ok(store.cacheFor().status().journal.keys >= 2, 'the outage writes are journaled')

  await server.start() // with its data: A-old and B-old are still in Redis
  await waitFor(
    () => store.cacheFor().backend === 'redis' && store.cacheFor().status().journal.keys === 0,
    { timeoutMs: 10_000, message: 'back on Redis, reconciled' },
  )
  assert.equal(await cache.get('A'), undefined, 'the key deleted during the outage stays deleted')
  assert.notEqual(
    await cache.get('B'),
    'B-old',
    'the old value of an overwritten key never returns',
  )
  assert.equal(await cache.get('C'), 'C-kept')

  // Another process's view: a fresh instance reading Redis.
  const fresh = open(t, server, prefix)
  assert.equal(await fresh.failsoft.ready(), 'up')
  await waitFor(() => fresh.store.cacheFor().backend === 'redis', { message: 'fresh on Redis' })
  assert.equal(await fresh.cache.get('A'), undefined)
  assert.notEqual(await fresh.cache.get('B'), 'B-old')
  assert.equal(await fresh.cache.get('C'), 'C-kept')
})
