// One contract, two stores: the same behaviour is required of the Redis store (the shared
// store while Redis is up) and the memory store (the fallback while it is down).
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Redis } from 'ioredis'
import { MemoryStore } from '../../src/cache/memory-store.js'
import { RedisStore, type Runner } from '../../src/cache/redis-store.js'
import type { CacheStore } from '../../src/cache/store.js'
import { RedisServer, sleep } from '../support/fault-kit.js'

interface Harness {
  /** A fresh, empty store for one namespace. */
  create(namespace: string): Promise<CacheStore>
}

function conformance(name: string, harness: () => Harness): void {
  describe(`cache store contract: ${name}`, () => {
    let n = 0
    const fresh = (): Promise<CacheStore> => harness().create(`ns${++n}`)

    test('a value that was set is read back exactly', async () => {
      const store = await fresh()
      assert.equal(await store.set('k', '{"a":1}', 60_000), true)
      assert.equal(await store.get('k'), '{"a":1}')
    })

    test('a missing key reads as undefined and does not exist', async () => {
      const store = await fresh()
      assert.equal(await store.get('nope'), undefined)
      assert.equal(await store.has('nope'), false)
    })

    test('set overwrites the previous value', async () => {
      const store = await fresh()
      await store.set('k', 'one', 60_000)
      await store.set('k', 'two', 60_000)
      assert.equal(await store.get('k'), 'two')
    })

    test('delete removes the key and says whether it existed', async () => {
      const store = await fresh()
      await store.set('k', 'v', 60_000)
      assert.equal(await store.has('k'), true)
      assert.equal(await store.delete('k'), true)
      assert.equal(await store.get('k'), undefined)
      assert.equal(await store.has('k'), false)
      assert.equal(await store.delete('k'), false)
    })

    test('an entry expires after its TTL', async () => {
      const store = await fresh()
      await store.set('short', 'v', 40)
      await store.set('long', 'v', 60_000)
      assert.equal(await store.get('short'), 'v')
      await sleep(80)
      assert.equal(await store.get('short'), undefined)
      assert.equal(await store.has('short'), false)
      assert.equal(await store.get('long'), 'v')
    })

    test('a null TTL never expires', async () => {
      const store = await fresh()
      await store.set('forever', 'v', null)
      await sleep(20)
      assert.equal(await store.get('forever'), 'v')
    })

    test('keys are opaque: unicode, spaces, colons and glob characters are fine', async () => {
      const store = await fresh()
      const keys = ['é✓ 漢字', 'a:b:c', 'user:*', '[x]?', ' ', 'x'.repeat(1000)]
      for (const [i, key] of keys.entries()) await store.set(key, `v${i}`, 60_000)
      for (const [i, key] of keys.entries()) assert.equal(await store.get(key), `v${i}`)
    })

    test('large and unicode values round-trip', async () => {
      const store = await fresh()
      const big = 'ü'.repeat(200_000)
      await store.set('big', big, 60_000)
      assert.equal(await store.get('big'), big)
    })

    test('clear empties this namespace and nothing else', async () => {
      const h = harness()
      const a = await h.create(`clear-a-${++n}`)
      const b = await h.create(`clear-b-${n}`)
      await a.set('k1', 'a1', 60_000)
      await a.set('k2', 'a2', null)
      await b.set('k1', 'b1', 60_000)
      await a.clear()
      assert.equal(await a.get('k1'), undefined)
      assert.equal(await a.get('k2'), undefined)
      assert.equal(await b.get('k1'), 'b1')
      await a.set('k1', 'again', 60_000)
      assert.equal(await a.get('k1'), 'again')
    })
  })
}

conformance('memory', () => ({
  create: async () => new MemoryStore({ maxEntries: 1000, maxBytes: 16 * 1024 * 1024 }),
}))

let server: RedisServer
let redis: Redis
const run: Runner = (fn) => fn(redis)
before(async () => {
  server = await RedisServer.start()
  redis = new Redis(server.url)
})
after(async () => {
  redis.disconnect()
  await server.stop()
})

conformance('redis', () => ({
  create: async (namespace) => {
    const store = new RedisStore({
      base: `conformance:cache:${namespace}`,
      instanceId: `test-${namespace}`,
      run,
      bus: false,
    })
    await store.sync()
    return store
  },
}))

describe('redis store specifics', () => {
  test('every key it writes starts with its base', async () => {
    const store = new RedisStore({
      base: 'specific:cache:ns',
      instanceId: 'i1',
      run,
      bus: false,
    })
    await store.sync()
    await store.set('k', 'v', 60_000)
    await store.heartbeat()
    const keys = (await redis.keys('specific:*')).sort()
    assert.ok(keys.length >= 3)
    for (const key of keys) assert.ok(key.startsWith('specific:cache:ns:'), key)
  })

  test("a load's lease lives in the key itself: a miss for readers, replaced by any write", async () => {
    const store = new RedisStore({ base: 'lease:cache:ns', instanceId: 'i2', run, bus: false })
    await store.sync()
    const acquired = await store.acquire('k', 60_000)
    assert.ok('lease' in acquired)
    // Readers see a miss, not the marker.
    assert.equal(await store.get('k'), undefined)
    assert.equal(await store.has('k'), false)
    assert.equal(await store.delete('k'), false, 'a lease is not a value')
    // Another load of the same key shares the lease instead of taking a second one.
    const again = await store.acquire('k2', 60_000)
    assert.ok('lease' in again)
    assert.deepEqual(await store.acquire('k2', 60_000), again)
    // A plain set replaces the lease: the load's fill is refused and the set value stays.
    await store.set('k2', 'newer', 60_000)
    assert.equal(await store.fill('k2', 'loaded-before', 60_000, again.lease), false)
    assert.equal(await store.get('k2'), 'newer')
  })

  test('a fill lands only while its own lease is intact', async () => {
    const store = new RedisStore({ base: 'fill:cache:ns', instanceId: 'i3', run, bus: false })
    await store.sync()
    const first = await store.acquire('k', 60_000)
    assert.ok('lease' in first)
    assert.equal(await store.fill('k', 'wrong token', 60_000, 'not-the-lease'), false)
    assert.equal(await store.fill('k', 'loaded', 60_000, first.lease), true)
    assert.equal(await store.get('k'), 'loaded')
    // A later load finds the value instead of a lease.
    const second = await store.acquire('k', 60_000)
    assert.ok('text' in second && second.text === 'loaded')
    // Deleted during a load: the fill does not resurrect anything.
    await store.delete('k')
    const third = await store.acquire('k', 60_000)
    assert.ok('lease' in third)
    await store.delete('k')
    assert.equal(await store.fill('k', 'stale', 60_000, third.lease), false)
    assert.equal(await store.get('k'), undefined)
  })

  test('a missing generation key yields a new random generation, never an old one', async () => {
    const store = new RedisStore({
      base: 'gen:cache:ns',
      instanceId: 'i4',
      run,
      bus: false,
    })
    await store.sync()
    const first = store.generation
    await store.set('k', 'old', null)
    await redis.del(store.generationKey) // evicted or flushed
    assert.equal((await store.heartbeat()).changed, true)
    assert.notEqual(store.generation, first)
    assert.equal(await store.get('k'), undefined)
  })
})
