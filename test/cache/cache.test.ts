import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { FailsoftError } from '../../src/index.js'
import { sleep, startRedis } from '../support/fault-kit.js'
import { guardUnhandled, open } from './helpers.js'

guardUnhandled()

describe('cache with Redis up', () => {
  test('get, set, has, delete round-trip JSON values through Redis', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'api' })
    assert.equal(cache.backend, 'redis')
    const value = { id: 7, tags: ['a', 'b'], nested: { ok: true }, nothing: null }
    assert.equal(await cache.set('project:7', value), true)
    assert.deepEqual(await cache.get('project:7'), value)
    assert.equal(await cache.has('project:7'), true)
    assert.equal(await cache.get('missing'), undefined)
    assert.equal(await cache.get('missing', 'fallback'), 'fallback')
    assert.equal(await cache.has('missing'), false)
    assert.equal(await cache.delete('project:7'), true)
    assert.equal(await cache.delete('project:7'), false)
    assert.equal(await cache.get('project:7'), undefined)
    // The value really is in Redis, under the instance prefix and the namespace.
    await cache.set('shared', 'yes')
    const keys = (await server.cli('KEYS', '*')) as string[]
    assert.ok(
      keys.some((k) => k.startsWith(`${prefix}:cache:api:d:`) && k.endsWith(':shared')),
      keys.join(', '),
    )
    for (const key of keys) assert.ok(key.startsWith(`${prefix}:`), key)
  })

  test('each read returns a fresh copy: mutating a result does not change the cache', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache()
    await cache.set('k', { n: 1 })
    const first = await cache.get<{ n: number }>('k')
    first!.n = 99
    assert.deepEqual(await cache.get('k'), { n: 1 })
  })

  test('default TTL is 300 s, a per-call TTL wins, and null means no expiry', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'ttl' })
    await cache.set('default', 1)
    await cache.set('custom', 1, { ttlSeconds: 10 })
    await cache.set('forever', 1, { ttlSeconds: null })
    await cache.set('short', 1, { ttlSeconds: 0.05 })
    const keys = (await server.cli('KEYS', '*:cache:ttl:d:*')) as string[]
    const ttl = async (suffix: string): Promise<number> =>
      Number(
        await server.cli(
          'PTTL',
          keys.find((k) => k.endsWith(`:${suffix}`))!,
        ),
      )
    assert.ok((await ttl('default')) > 299_000 && (await ttl('default')) <= 300_000)
    assert.ok((await ttl('custom')) > 9_000 && (await ttl('custom')) <= 10_000)
    assert.equal(await ttl('forever'), -1)
    await sleep(120)
    assert.equal(await cache.get('short'), undefined)
  })

  test('clear() empties its namespace only (SCAN + UNLINK), never other keys', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const a = failsoft.cache({ namespace: 'a' })
    const b = failsoft.cache({ namespace: 'b' })
    for (let i = 0; i < 1200; i++) await a.set(`k${i}`, i)
    await b.set('k1', 'kept')
    await server.cli('SET', 'unrelated', 'kept')
    await a.clear()
    assert.equal(await a.get('k1'), undefined)
    assert.equal(await b.get('k1'), 'kept')
    assert.equal(await server.cli('GET', 'unrelated'), 'kept')
    const left = (await server.cli('KEYS', `${prefix}:cache:a:d:*`)) as string[]
    assert.deepEqual(left, [])
    await a.set('k1', 'after')
    assert.equal(await a.get('k1'), 'after')
  })

  test('concurrent writes (one script call per tick) all land, in order, each with its TTL', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'batch' })
    const results = await Promise.all(
      Array.from({ length: 600 }, (_, i) =>
        cache.set(`b${i % 200}`, i, { ttlSeconds: i % 2 === 0 ? null : 60 }),
      ),
    )
    assert.ok(results.every((r) => r === true))
    for (let k = 0; k < 200; k++) assert.equal(await cache.get(`b${k}`), 400 + k)
    const generation = cache.status().generation
    assert.equal(await server.cli('PTTL', `${prefix}:cache:batch:d:${generation}:b0`), -1)
    const ttl = Number(await server.cli('PTTL', `${prefix}:cache:batch:d:${generation}:b1`))
    assert.ok(ttl > 59_000 && ttl <= 60_000, String(ttl))
  })

  test('the same namespace returns the same cache; other options for it are refused', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const first = failsoft.cache({ namespace: 'x', defaultTtlSeconds: 60 })
    assert.equal(failsoft.cache({ namespace: 'x', defaultTtlSeconds: 60 }), first)
    assert.throws(() => failsoft.cache({ namespace: 'x', defaultTtlSeconds: 61 }), RangeError)
  })
})

describe('getOrSet', () => {
  test('100 concurrent callers of a missing key share one loader call', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache()
    let calls = 0
    const loader = async (): Promise<{ v: number }> => {
      calls++
      await sleep(50)
      return { v: 42 }
    }
    const results = await Promise.all(
      Array.from({ length: 100 }, () => cache.getOrSet('hot', loader, { ttlSeconds: 30 })),
    )
    assert.equal(calls, 1)
    for (const r of results) assert.deepEqual(r, { v: 42 })
    // Every caller got its own copy.
    assert.equal(new Set(results).size, 100)
    assert.deepEqual(await cache.get('hot'), { v: 42 })
    assert.deepEqual(await cache.getOrSet('hot', loader), { v: 42 })
    assert.equal(calls, 1)
  })

  test('single-flight holds while Redis is unavailable too (memory-only instance)', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache()
    let calls = 0
    const results = await Promise.all(
      Array.from({ length: 100 }, () =>
        cache.getOrSet('k', async () => {
          calls++
          await sleep(20)
          return 'v'
        }),
      ),
    )
    assert.equal(calls, 1)
    assert.ok(results.every((r) => r === 'v'))
  })

  test('a loader error reaches every waiting caller and is not cached', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache()
    let calls = 0
    const failing = async (): Promise<string> => {
      calls++
      await sleep(10)
      throw new Error('database down')
    }
    const settled = await Promise.allSettled(
      Array.from({ length: 10 }, () => cache.getOrSet('k', failing)),
    )
    assert.equal(calls, 1)
    assert.ok(
      settled.every((s) => s.status === 'rejected' && /database down/.test(String(s.reason))),
    )
    assert.equal(await cache.has('k'), false)
    assert.equal(await cache.getOrSet('k', () => 'ok'), 'ok')
    assert.equal(calls, 1)
  })

  test('a loader that throws synchronously is handled like an async failure', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache()
    await assert.rejects(
      cache.getOrSet('k', () => {
        throw new Error('sync')
      }),
      /sync/,
    )
    assert.equal(await cache.getOrSet('k', () => 'later'), 'later')
  })
})

describe('programmer errors are typed, with stable codes, and never about Redis', () => {
  test('keys, values and TTLs are validated', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache({ maxKeyLength: 10, maxValueBytes: 100 })
    const code = async (p: Promise<unknown>): Promise<string> => {
      const error = await p.then(
        () => assert.fail('expected a rejection'),
        (e: unknown) => e,
      )
      assert.ok(error instanceof FailsoftError, String(error))
      return error.code
    }
    assert.equal(await code(cache.get('')), 'FAILSOFT_INVALID_KEY')
    assert.equal(await code(cache.get('x'.repeat(11))), 'FAILSOFT_INVALID_KEY')
    assert.equal(await code(cache.set(42 as unknown as string, 1)), 'FAILSOFT_INVALID_KEY')
    assert.equal(await code(cache.set('k', undefined)), 'FAILSOFT_INVALID_VALUE')
    assert.equal(await code(cache.set('k', () => 1)), 'FAILSOFT_INVALID_VALUE')
    assert.equal(await code(cache.set('k', 10n)), 'FAILSOFT_INVALID_VALUE')
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    assert.equal(await code(cache.set('k', cyclic)), 'FAILSOFT_INVALID_VALUE')
    assert.equal(await code(cache.set('k', 'é'.repeat(60))), 'FAILSOFT_VALUE_TOO_LARGE')
    assert.equal(await code(cache.set('k', 1, { ttlSeconds: 0 })), 'FAILSOFT_INVALID_TTL')
    assert.equal(await code(cache.set('k', 1, { ttlSeconds: -5 })), 'FAILSOFT_INVALID_TTL')
    assert.equal(await code(cache.set('k', 1, { ttlSeconds: NaN })), 'FAILSOFT_INVALID_TTL')
    assert.equal(
      await code(cache.set('k', 1, { ttlSeconds: '60' as unknown as number })),
      'FAILSOFT_INVALID_TTL',
    )
    assert.equal(await code(cache.getOrSet('k', () => undefined)), 'FAILSOFT_INVALID_VALUE')
  })

  test('options are validated at creation, naming the option', (t) => {
    const { failsoft } = open(t, { redis: null })
    assert.throws(() => failsoft.cache({ namespace: 'has space' }), /cache\.namespace/)
    assert.throws(() => failsoft.cache({ defaultTtlSeconds: 0 }), /cache\.defaultTtlSeconds/)
    assert.throws(
      () => failsoft.cache({ memory: { maxEntries: 0 } }),
      (e: Error) => e instanceof RangeError && /cache\.memory\.maxEntries/.test(e.message),
    )
    assert.throws(
      () => failsoft.cache({ memory: { mode: 'lru' as 'warm' } }),
      (e: Error) => e instanceof TypeError && /cache\.memory\.mode/.test(e.message),
    )
    assert.throws(() => failsoft.cache({ nope: 1 } as object), /cache\.nope/)
  })

  test('a closed instance refuses operations with FAILSOFT_CLOSED', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache()
    await failsoft.close()
    await assert.rejects(cache.get('k'), { code: 'FAILSOFT_CLOSED' })
  })
})

describe('values are parsed safely', () => {
  test('a __proto__ key stored in Redis by anyone pollutes nothing', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'p' })
    await cache.set('evil', 'placeholder')
    const keys = (await server.cli('KEYS', `${prefix}:cache:p:d:*`)) as string[]
    // Written by someone else straight into Redis, including the \u-escaped spelling.
    await server.cli(
      'SET',
      keys[0]!,
      '{"__proto__":{"polluted":true},"a":{"\\u005f_proto__":{"polluted":true}},"ok":1}',
    )
    const value = await cache.get<Record<string, unknown>>('evil')
    assert.equal(value?.ok, 1)
    const merged = Object.assign({}, value, value?.a)
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
    assert.equal((merged as Record<string, unknown>).polluted, undefined)
    assert.equal(Object.hasOwn(value!, '__proto__'), false)
  })

  test('corrupt text in Redis reads as a miss (or the default), never a throw', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'corrupt' })
    await cache.set('k', 1)
    const keys = (await server.cli('KEYS', `${prefix}:cache:corrupt:d:*`)) as string[]
    await server.cli('SET', keys[0]!, '{not json')
    assert.equal(await cache.get('k'), undefined)
    assert.equal(await cache.get('k', 'dflt'), 'dflt')
    assert.equal(cache.status().decodeErrors, 2)
  })

  test('a pluggable serializer is used for both stores', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache({
      serializer: {
        serialize: (v) => `v1:${JSON.stringify(v)}`,
        deserialize: (text) => JSON.parse(text.slice(3)) as unknown,
      },
    })
    await cache.set('k', { a: 1 })
    assert.deepEqual(await cache.get('k'), { a: 1 })
  })
})

describe('memory-only instance (redis: null)', () => {
  test('works fully in memory and reports the memory backend', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache({ namespace: 'mem' })
    assert.equal(cache.backend, 'memory')
    assert.equal(await cache.set('k', [1, 2]), true)
    assert.deepEqual(await cache.get('k'), [1, 2])
    assert.equal(await cache.delete('k'), true)
    await cache.set('a', 1)
    await cache.clear()
    assert.equal(await cache.has('a'), false)
    const status = failsoft.status().components['cache:mem']
    assert.equal(status?.backend, 'memory')
    assert.equal(status?.journal.keys, 0)
  })

  test('the memory tier never exceeds maxEntries or maxBytes', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache({ memory: { maxEntries: 100, maxBytes: 64 * 1024 } })
    for (let i = 0; i < 5000; i++) {
      await cache.set(`k${i}`, 'x'.repeat(i % 7 === 0 ? 2000 : 50))
      const { memory } = cache.status()
      assert.ok(memory.entries <= 100, `entries ${memory.entries}`)
      assert.ok(memory.bytes <= 64 * 1024, `bytes ${memory.bytes}`)
    }
    assert.ok(cache.status().memory.evictions > 0)
    // The most recent keys are the ones kept.
    assert.equal(await cache.get('k4999'), 'x'.repeat(50))
    assert.equal(await cache.get('k0'), undefined)
  })

  test('a value larger than the memory byte bound is refused (false), not stored', async (t) => {
    const { failsoft } = open(t, { redis: null })
    const cache = failsoft.cache({ memory: { maxBytes: 4096 } })
    await cache.set('k', 'small')
    assert.equal(await cache.set('k', 'x'.repeat(5000)), false)
    assert.equal(await cache.get('k'), undefined)
  })
})
