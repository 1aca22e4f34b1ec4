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
      fenceTtlMs: 60_000,
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
      fenceTtlMs: 60_000,
      bus: false,
    })
    await store.sync()
    await store.set('k', 'v', 60_000)
    const keys = (await redis.keys('specific:*')).sort()
    assert.ok(keys.length >= 3)
    for (const key of keys) assert.ok(key.startsWith('specific:cache:ns:'), key)
  })

  test('a write carrying a rotated-out fence token is refused (late writes cannot land)', async () => {
    const store = new RedisStore({
      base: 'fence:cache:ns',
      instanceId: 'i2',
      run,
      fenceTtlMs: 60_000,
      bus: false,
    })
    await store.sync()
    // What a write sent before an outage looks like when Redis executes it afterwards: the
    // fence now holds another token.
    await redis.set(store.fenceKey, 'rotated-by-a-later-recovery')
    await assert.rejects(store.set('k', 'late', 60_000), { name: 'FenceLostError' })
    assert.equal(await store.get('k'), undefined)
  })

  test('a fence that vanished (expired, evicted) is re-created and the write lands', async () => {
    const store = new RedisStore({
      base: 'fence2:cache:ns',
      instanceId: 'i3',
      run,
      fenceTtlMs: 60_000,
      bus: false,
    })
    await store.sync()
    await redis.del(store.fenceKey)
    assert.equal(await store.set('k', 'v', 60_000), true)
    assert.equal(await store.get('k'), 'v')
  })

  test('a missing generation key yields a new random generation, never an old one', async () => {
    const store = new RedisStore({
      base: 'gen:cache:ns',
      instanceId: 'i4',
      run,
      fenceTtlMs: 60_000,
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
