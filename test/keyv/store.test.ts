// failsoft/keyv beyond Keyv's own suite: how TTLs, namespaces and Buffers map onto failsoft's
// cache (checked in Redis itself), the batch methods, errors as events, disconnect.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import Keyv, { type KeyvStoreAdapter } from 'keyv'
import { createFailsoft, type Failsoft } from '../../src/index.js'
import {
  decodeValue,
  encodeValue,
  failsoftNamespace,
  failsoftStore,
  textSerializer,
  type FailsoftKeyvStore,
} from '../../src/keyv.js'
import { startRedis, sleep, type RedisServer } from '../support/fault-kit.js'
import { uniquePrefix } from '../support/failsoft.js'

// Compile-time: the store fits Keyv's own type for a store, but for setMany, typed there as
// Promise<void>: it resolves to one boolean per entry, which keyv.setMany() passes on (and
// its own type, Promise<boolean[]>, promises).
const _typed: (store: FailsoftKeyvStore) => Omit<KeyvStoreAdapter, 'setMany'> = (store) => store

/** A Keyv on the store, with every 'error' event collected. */
function keyvOn(
  store: FailsoftKeyvStore,
  options: Record<string, unknown> = {},
): { keyv: Keyv; errors: Array<Error & { code?: string }> } {
  const keyv = new Keyv({ store, ...options })
  const errors: Array<Error & { code?: string }> = []
  keyv.on('error', (error: Error) => errors.push(error))
  return { keyv, errors }
}

function memoryOnly(t: { after(fn: () => unknown): void }): Failsoft {
  const failsoft = createFailsoft({ redis: null, logger: false })
  t.after(() => failsoft.close())
  return failsoft
}

describe('failsoft/keyv on Redis', () => {
  let server: RedisServer
  let failsoft: Failsoft
  let prefix: string
  const cleanups: Array<() => unknown> = []
  before(async () => {
    server = await startRedis({ after: (fn) => cleanups.push(fn) })
    prefix = uniquePrefix()
    failsoft = createFailsoft({ redis: server.url, prefix, logger: false })
    cleanups.push(() => failsoft.close())
    assert.equal(await failsoft.ready(), 'up')
  })
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })

  /** The Redis key of a Keyv key (Keyv prefixes keys with its namespace; the store keeps them). */
  function redisKey(store: FailsoftKeyvStore, keyvKey: string): string {
    const cache = store.cacheFor()
    const generation = cache.status().generation
    assert.ok(generation !== null, 'the cache has synced with Redis')
    return `${prefix}:cache:${cache.namespace}:d:${generation}:${keyvKey}`
  }

  test("no TTL from Keyv is stored without expiry, never with failsoft's 300 s default", async () => {
    const store = failsoftStore(failsoft)
    const { keyv, errors } = keyvOn(store)
    assert.equal(await keyv.set('forever', 'v'), true)
    assert.equal(await keyv.set('zero', 'v', 0), true)
    assert.equal(await server.cli('PTTL', redisKey(store, 'keyv:forever')), -1)
    assert.equal(await server.cli('PTTL', redisKey(store, 'keyv:zero')), -1)
    assert.equal(await store.set('keyv:direct', 'sv', 0), true, 'the store called directly, ttl 0')
    assert.equal(await server.cli('PTTL', redisKey(store, 'keyv:direct')), -1)
    assert.deepEqual(errors, [])
  })

  test('a TTL in ms from Keyv (per call, or its ttl option) becomes the Redis expiry', async () => {
    const store = failsoftStore(failsoft, { namespacePrefix: 'ttl' })
    const { keyv } = keyvOn(store, { namespace: 'a' })
    await keyv.set('minute', 'v', 60_000)
    const pttl = Number(await server.cli('PTTL', redisKey(store, 'a:minute')))
    assert.ok(pttl > 58_000 && pttl <= 60_000, `PTTL ${pttl}`)

    const defaulted = failsoftStore(failsoft, { namespacePrefix: 'ttl' })
    const { keyv: withDefault } = keyvOn(defaulted, { namespace: 'b', ttl: 5000 })
    await withDefault.set('k', 'v')
    const pttl2 = Number(await server.cli('PTTL', redisKey(defaulted, 'b:k')))
    assert.ok(pttl2 > 3000 && pttl2 <= 5000, `PTTL ${pttl2}`)
  })

  test('an entry expires by its TTL in Redis, not only by the expiry Keyv checks', async () => {
    const store = failsoftStore(failsoft)
    await store.set('keyv:short', 'v', 60)
    assert.equal(await store.get('keyv:short'), 'v')
    await sleep(150)
    assert.equal(await store.get('keyv:short'), undefined)
    assert.equal(await store.has('keyv:short'), false)
  })

  test('each Keyv namespace is its own failsoft cache; clear() empties only it', async () => {
    const one = keyvOn(failsoftStore(failsoft), { namespace: 'one' }).keyv
    const two = keyvOn(failsoftStore(failsoft), { namespace: 'two' }).keyv
    const own = failsoft.cache({ namespace: 'app' }) // the application's own cache
    await own.set('k', 'mine', { ttlSeconds: 60 })
    await one.set('k', 1)
    await two.set('k', 2)
    await one.clear()
    assert.equal(await one.get('k'), undefined)
    assert.equal(await two.get('k'), 2)
    assert.equal(await own.get('k'), 'mine')
    const components = Object.keys(failsoft.status().components)
    assert.ok(components.includes('cache:keyv.one') && components.includes('cache:keyv.two'))
    // Redis: only the namespaces' own keys, under the failsoft prefix; nothing flushed.
    const keys = (await server.cli('KEYS', `${prefix}:cache:keyv.two:d:*`)) as string[]
    assert.equal(keys.length, 1)
    assert.match(keys[0]!, /:two:k$/)
  })

  test('Buffers round-trip with Keyv serializing (default) and with serialize: undefined', async () => {
    const buf = Buffer.from([0, 1, 2, 255])
    const value = { buf, nested: [buf, '~b:not a buffer', '~tilde'], date: new Date(0) }
    const { keyv } = keyvOn(failsoftStore(failsoft), { namespace: 'buf' })
    await keyv.set('v', value)
    const read = (await keyv.get('v')) as typeof value
    assert.ok(Buffer.isBuffer(read.buf) && read.buf.equals(buf))
    assert.deepEqual(read.nested.slice(1), ['~b:not a buffer', '~tilde'])
    await keyv.set('b', buf)
    assert.ok(buf.equals((await keyv.get('b')) as Buffer))

    const rawStore = failsoftStore(failsoft)
    const raw = new Keyv({ store: rawStore, namespace: 'raw' })
    raw.serialize = undefined // as cache-manager does for its own Keyv
    raw.deserialize = undefined
    await raw.set('v', value, 60_000)
    const got = (await raw.get('v')) as typeof value
    assert.ok(Buffer.isBuffer(got.buf) && got.buf.equals(buf))
    assert.ok(Buffer.isBuffer(got.nested[0]))
    assert.deepEqual(got.nested.slice(1), ['~b:not a buffer', '~tilde'])
    assert.equal(got.date as unknown, '1970-01-01T00:00:00.000Z', 'a Date is JSON: its ISO string')
    // What Redis holds: the tag, then JSON with the Buffer as base64.
    const stored = (await server.cli('GET', redisKey(rawStore, 'raw:v'))) as string
    assert.ok(stored.startsWith('j{"value":{"buf":"~b:AAEC/w=="'), stored)
  })

  test('getMany / setMany / deleteMany / has / hasMany, through Keyv and directly', async () => {
    const store = failsoftStore(failsoft)
    const { keyv, errors } = keyvOn(store, { namespace: 'batch' })
    assert.deepEqual(
      await keyv.setMany([
        { key: 'a', value: 1 },
        { key: 'b', value: 'two', ttl: 60_000 },
      ]),
      [true, true],
    )
    assert.deepEqual(await keyv.getMany(['a', 'missing', 'b']), [1, undefined, 'two'])
    assert.deepEqual(await keyv.get(['a', 'b']), [1, 'two'])
    assert.deepEqual(await keyv.hasMany(['a', 'missing']), [true, false])
    assert.equal(await keyv.has('b'), true)
    assert.equal(await keyv.deleteMany(['missing']), false)
    assert.equal(await keyv.deleteMany(['a', 'missing']), true, 'true when one existed')
    assert.deepEqual(await keyv.getMany(['a', 'b']), [undefined, 'two'])
    assert.equal(await store.deleteMany(['batch:b']), true)
    assert.deepEqual(await store.getMany([]), [])
    assert.deepEqual(errors, [])
  })
})

describe('failsoft/keyv: errors are emitted, never thrown', () => {
  test("programmer errors reach Keyv's error listeners; the operation answers like a miss", async (t) => {
    const failsoft = memoryOnly(t)
    const store = failsoftStore(failsoft, { cache: { maxValueBytes: 1024 } })
    const { keyv, errors } = keyvOn(store)
    assert.equal(await keyv.set('x'.repeat(2000), 1), false)
    assert.equal(await keyv.get('x'.repeat(2000)), undefined)
    assert.equal(await keyv.has('x'.repeat(2000)), false)
    assert.equal(await keyv.set('big', 'y'.repeat(5000)), false)
    assert.equal(await keyv.set('ttl', 1, -5), false)
    assert.equal(await store.set('keyv:ttl', 's1', Number.NaN), false)
    assert.deepEqual(
      errors.map((e) => e.code),
      [
        'FAILSOFT_INVALID_KEY',
        'FAILSOFT_INVALID_KEY',
        'FAILSOFT_INVALID_KEY',
        'FAILSOFT_VALUE_TOO_LARGE',
        'FAILSOFT_INVALID_TTL',
        'FAILSOFT_INVALID_TTL',
      ],
    )
  })

  test('a value JSON cannot represent (serialize: undefined) is FAILSOFT_INVALID_VALUE', async (t) => {
    const store = failsoftStore(memoryOnly(t))
    const errors: Array<{ code?: string }> = []
    store.on('error', (error: { code?: string }) => errors.push(error))
    assert.equal(await store.set('k', { value: 1n }), false)
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    assert.equal(await store.set('k', { value: cyclic }), false)
    assert.equal(await store.set('k', undefined), false)
    assert.deepEqual(
      errors.map((e) => e.code),
      ['FAILSOFT_INVALID_VALUE', 'FAILSOFT_INVALID_VALUE', 'FAILSOFT_INVALID_VALUE'],
    )
  })

  test('a namespace the application already uses with other options is an error event', async (t) => {
    const failsoft = memoryOnly(t)
    failsoft.cache({ namespace: 'keyv.keyv' }) // JSON serializer, default TTL: not the store's
    const { keyv, errors } = keyvOn(failsoftStore(failsoft))
    assert.equal(await keyv.set('k', 1), false)
    assert.equal(errors.length, 1)
    assert.match(String(errors[0]), /already exists with other options/)
  })

  test('without any error listener nothing throws: one process warning per kind', async (t) => {
    const store = failsoftStore(memoryOnly(t))
    const warnings: Error[] = []
    const onWarning = (warning: Error): void => {
      warnings.push(warning)
    }
    process.on('warning', onWarning)
    t.after(() => process.off('warning', onWarning))
    assert.equal(await store.set('', 1), false)
    assert.equal(await store.get(''), undefined)
    assert.equal(await store.set('k', 's', -1), false)
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(warnings.length, 2)
    assert.match(warnings[0]!.message, /^failsoft\/keyv: Invalid cache key/)
  })

  test('the store refuses bad options at once (a TypeError or RangeError)', (t) => {
    const failsoft = memoryOnly(t)
    const cache = failsoft.cache({ namespace: 'given' })
    assert.throws(() => failsoftStore(failsoft, { nope: 1 } as never), TypeError)
    assert.throws(() => failsoftStore(failsoft, { namespacePrefix: 'a:b' }), RangeError)
    assert.throws(() => failsoftStore(failsoft, { cache: { namespace: 'x' } as never }), TypeError)
    assert.throws(() => failsoftStore(failsoft, { cache: { serializer: textSerializer } as never }))
    assert.throws(() => failsoftStore(cache, { cache: { maxKeyLength: 10 } }), TypeError)
    assert.throws(() => failsoftStore(42 as never), TypeError)
    assert.throws(() => failsoftStore({ redis: null, bogus: true } as never), TypeError)
  })
})

describe('failsoft/keyv: targets and disconnect()', () => {
  test('disconnect() leaves a failsoft instance passed in open', async (t) => {
    const failsoft = memoryOnly(t)
    const { keyv } = keyvOn(failsoftStore(failsoft))
    await keyv.set('k', 1)
    await keyv.disconnect()
    assert.equal(await failsoft.cache({ namespace: 'other' }).set('x', 1), true)
    assert.equal(await keyv.get('k'), 1, 'the store keeps working on the open instance')
  })

  test('from failsoft options the store owns its instance, and disconnect() closes it', async () => {
    const store = failsoftStore({ redis: null, logger: false })
    const { keyv, errors } = keyvOn(store)
    assert.equal(await keyv.set('k', 1), true)
    assert.equal(await keyv.get('k'), 1)
    await keyv.disconnect()
    assert.equal(await keyv.get('k'), undefined)
    assert.equal(errors[0]?.code, 'FAILSOFT_CLOSED')
  })

  test('with a cache, every Keyv namespace shares it: keys stay apart, clear() empties it all', async (t) => {
    const failsoft = memoryOnly(t)
    const cache = failsoft.cache({ namespace: 'shared' }) // JSON serializer: works too
    const a = keyvOn(failsoftStore(cache), { namespace: 'a' }).keyv
    const b = keyvOn(failsoftStore(cache), { namespace: 'b' }).keyv
    await a.set('k', { buf: Buffer.from('x') })
    await b.set('k', 'b')
    assert.ok(((await a.get('k')) as { buf: Buffer }).buf.equals(Buffer.from('x')))
    assert.equal(await b.get('k'), 'b')
    assert.equal(await cache.has('a:k'), true, "Keyv's prefixed key, as Keyv gives it")
    await a.clear()
    assert.equal(await b.get('k'), undefined)
    await a.disconnect()
    assert.equal(await cache.set('still', 'open'), true)
  })

  test('cacheFor() gives the failsoft cache behind a namespace', (t) => {
    const failsoft = memoryOnly(t)
    const store = failsoftStore(failsoft, { cache: { memory: { maxEntries: 50 } } })
    new Keyv({ store, namespace: 'sessions' })
    assert.equal(store.cacheFor().namespace, 'keyv.sessions')
    assert.equal(store.cacheFor('other').namespace, 'keyv.other')
    assert.equal(store.cacheFor().status().memory.maxEntries, 50)
  })
})

describe('failsoft/keyv: namespace mapping and value encoding', () => {
  test('valid namespaces map to <prefix>.<namespace>; others are escaped deterministically', () => {
    assert.equal(failsoftNamespace('keyv'), 'keyv.keyv')
    assert.equal(failsoftNamespace('sessions'), 'keyv.sessions')
    assert.equal(failsoftNamespace('sessions', ''), 'sessions')
    assert.equal(failsoftNamespace(undefined), 'keyv')
    assert.equal(failsoftNamespace(''), 'keyv')
    assert.equal(failsoftNamespace(undefined, ''), 'keyv')
    const escaped = failsoftNamespace('app:sessions')
    assert.match(escaped, /^keyv\.app_sessions--[0-9a-f]{16}$/)
    assert.equal(failsoftNamespace('app:sessions'), escaped, 'deterministic')
    assert.notEqual(failsoftNamespace('app sessions'), escaped, 'same readable part, other hash')
    for (const name of ['x'.repeat(100), 'é✓ 漢字', 'a/b', 'keyv.'.repeat(20)]) {
      for (const prefix of ['keyv', '', 'p'.repeat(40)]) {
        assert.match(failsoftNamespace(name, prefix), /^[A-Za-z0-9_.-]{1,64}$/, `${name} ${prefix}`)
      }
    }
    assert.throws(() => failsoftNamespace('x', 'bad prefix'), RangeError)
  })

  test('escaped namespaces work end to end and stay apart', async (t) => {
    const failsoft = memoryOnly(t)
    const a = keyvOn(failsoftStore(failsoft), { namespace: 'app:a b' }).keyv
    const b = keyvOn(failsoftStore(failsoft), { namespace: 'app:a:b' }).keyv
    await a.set('k', 'a')
    await b.set('k', 'b')
    await b.clear()
    assert.equal(await a.get('k'), 'a')
    assert.equal(await b.get('k'), undefined)
  })

  test('encodeValue / decodeValue', () => {
    for (const value of ['', 'plain', '~', '{"value":1}']) {
      assert.equal(encodeValue(value), `s${value}`)
      assert.equal(decodeValue(encodeValue(value)), value)
    }
    const value = { b: Buffer.from('hi'), s: ['~b:aGk=', '~~', 'x'], n: null, t: true }
    const decoded = decodeValue(encodeValue(value)) as typeof value
    assert.ok(Buffer.isBuffer(decoded.b) && decoded.b.equals(Buffer.from('hi')))
    assert.deepEqual(decoded.s, value.s)
    assert.deepEqual([decoded.n, decoded.t], [null, true])
    assert.ok(Buffer.from('x').equals(decodeValue(encodeValue(Buffer.from('x'))) as Buffer))
    const polluted = decodeValue('j{"__proto__":{"polluted":1},"a":1}') as Record<string, unknown>
    assert.deepEqual(Object.keys(polluted), ['a'])
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
    assert.equal(decodeValue('{"not":"ours"}'), undefined)
    assert.equal(decodeValue('j{broken'), undefined)
  })
})

test('failsoft/keyv loads and works with keyv not installed (nothing imported from it)', async () => {
  const fixture = fileURLToPath(new URL('./fixtures/without-keyv.ts', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fixture], {
    timeout: 30_000,
  })
  assert.match(stdout, /keyv blocked: yes; store ok: 1/)
})
