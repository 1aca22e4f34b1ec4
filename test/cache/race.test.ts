// getOrSet racing a delete or set: a loader that read the old data must never store it after
// the key was invalidated (the chaos run's "stale list after an acknowledged edit").
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Cache } from '../../src/index.js'
import { isLease } from '../../src/cache/redis-store.js'
import { startRedis, waitFor, type RedisServer } from '../support/fault-kit.js'
import { guardUnhandled, open } from './helpers.js'

guardUnhandled()

/** A loader that reports when it started and returns `value` only when released. */
function slowLoader<T>(value: T): {
  loader: () => Promise<T>
  started: Promise<void>
  release: () => void
  calls: () => number
} {
  let calls = 0
  let markStarted!: () => void
  const started = new Promise<void>((resolve) => (markStarted = resolve))
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  return {
    loader: async () => {
      calls++
      markStarted()
      await gate
      return value
    },
    started,
    release,
    calls: () => calls,
  }
}

/** Fail (rather than hang) when something expected does not happen within 5 s. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`not within 5 s: ${what}`)), 5000)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** Every Redis key of this test's prefix, data and leases. */
/**
 * The cache's keys in Redis holding a value, or holding the lease of a load in flight (a
 * lease lives in the key itself, as a marker: see LEASE_MARK).
 */
async function keysOf(
  server: RedisServer,
  prefix: string,
  kind: 'value' | 'lease',
): Promise<string[]> {
  const keys = (await server.cli('KEYS', `${prefix}:cache:*:d:*`)) as string[]
  const out: string[] = []
  for (const key of keys) {
    const text = (await server.cli('GET', key)) as string | null
    if (text !== null && isLease(text) === (kind === 'lease')) out.push(key)
  }
  return out
}

async function twoInstances(t: { after(fn: () => unknown): void }, server: RedisServer) {
  const one = open(t, { redis: server.url })
  const two = open(t, { redis: server.url, prefix: one.prefix })
  await Promise.all([one.failsoft.ready(), two.failsoft.ready()])
  const a = one.failsoft.cache({ namespace: 'race' })
  const b = two.failsoft.cache({ namespace: 'race' })
  await waitFor(() => a.backend === 'redis' && b.backend === 'redis', { message: 'synced' })
  return { a, b, prefix: one.prefix }
}

describe('getOrSet racing delete and set (real redis-server)', () => {
  test('same process: a delete while the loader runs wins; the old value is never stored', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })

    const old = slowLoader('old')
    const first = cache.getOrSet('projects:list', old.loader)
    await old.started
    // A caller that joins the load before the delete.
    const joinedBefore = cache.getOrSet('projects:list', () => 'unused')
    assert.equal(await cache.delete('projects:list'), false)
    // After the acknowledged delete, a new caller does not join the old load.
    const fresh = slowLoader('new')
    const after = cache.getOrSet('projects:list', fresh.loader)
    await within(fresh.started, 'a caller after the delete starts its own load')
    old.release()
    assert.equal(await first, 'old', 'the caller that started the load gets what it loaded')
    fresh.release()
    assert.equal(await after, 'new')
    assert.equal(await joinedBefore, 'new', 'a joined caller loads again rather than take old')
    assert.equal(await cache.get('projects:list'), 'new')
    assert.equal(cache.status().fillsSuperseded, 1)
    assert.deepEqual(await keysOf(server, prefix, 'lease'), [], 'no lease left behind')
  })

  test('same process: with no other caller, the next read after the race is a miss', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })
    await cache.set('k', 'older')
    await cache.delete('k')

    const old = slowLoader('old')
    const pending = cache.getOrSet('k', old.loader)
    await old.started
    await cache.delete('k')
    old.release()
    assert.equal(await pending, 'old')
    assert.equal(await cache.get('k'), undefined)
    assert.deepEqual(await keysOf(server, prefix, 'value'), [])
  })

  test('two instances: B loads, A deletes meanwhile → no stale value stored, anywhere', async (t) => {
    const server = await startRedis(t)
    const { a, b, prefix } = await twoInstances(t, server)

    const old = slowLoader(['p1', 'p2'])
    const loading = b.getOrSet('projects:list', old.loader)
    await old.started
    // B's other request joins B's load before A's edit.
    const fresh = slowLoader(['p1', 'p2 renamed'])
    const joined = b.getOrSet('projects:list', fresh.loader)
    // Process A: UPDATE projects …; then invalidate.
    await a.delete('projects:list')
    old.release()
    assert.deepEqual(await loading, ['p1', 'p2'])
    // B's joined caller loads again (its own loader, after A's delete) rather than take the old.
    await within(fresh.started, "B's joined caller loads again")
    assert.equal(await a.get('projects:list'), undefined, 'A: no stale list')
    assert.equal(await b.get('projects:list'), undefined, 'B: no stale list')
    assert.deepEqual(await keysOf(server, prefix, 'value'), [], 'nothing stored in Redis')
    fresh.release()
    assert.deepEqual(await joined, ['p1', 'p2 renamed'])
    assert.deepEqual(await a.get('projects:list'), ['p1', 'p2 renamed'])
    assert.equal(b.status().fillsSuperseded, 1)
    assert.equal(fresh.calls(), 1)
  })

  test('two instances: without an edit, the load is stored and its lease removed', async (t) => {
    const server = await startRedis(t)
    const { a, b, prefix } = await twoInstances(t, server)
    const both = await Promise.all([b.getOrSet('k', () => 'v1'), a.getOrSet('k', () => 'v2')])
    // Each loaded under the same lease; the first fill lands and ends the lease.
    assert.ok(both.every((v) => v === 'v1' || v === 'v2'))
    const stored = await a.get('k')
    assert.ok(stored === 'v1' || stored === 'v2')
    assert.equal(await b.get('k'), stored)
    assert.deepEqual(await keysOf(server, prefix, 'lease'), [])
  })

  test('a set() while the loader runs wins, in the same process and from another', async (t) => {
    const server = await startRedis(t)
    const { a, b } = await twoInstances(t, server)

    const same = slowLoader('old')
    const p1 = b.getOrSet('same', same.loader)
    await same.started
    assert.equal(await b.set('same', 'newer'), true)
    same.release()
    assert.equal(await p1, 'old')
    assert.equal(await b.get('same'), 'newer')
    assert.equal(await a.get('same'), 'newer')

    const cross = slowLoader('old')
    const p2 = b.getOrSet('cross', cross.loader)
    await cross.started
    assert.equal(await a.set('cross', 'newer'), true)
    cross.release()
    assert.equal(await p2, 'old')
    assert.equal(await b.get('cross'), 'newer')
    assert.equal(await a.get('cross'), 'newer')
  })

  test('clear() while the loader runs: the old value is not stored', async (t) => {
    const server = await startRedis(t)
    const { a, b } = await twoInstances(t, server)
    const old = slowLoader('old')
    const pending = b.getOrSet('k', old.loader)
    await old.started
    await b.clear()
    old.release()
    assert.equal(await pending, 'old')
    assert.equal(await b.get('k'), undefined)
    await waitFor(() => a.status().generation === b.status().generation, { message: 'gen' })
    assert.equal(await a.get('k'), undefined)
  })

  test('a lease lost while loading (Redis lost it, or it expired) counts as changed', async (t) => {
    const server = await startRedis(t)
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })
    const old = slowLoader('old')
    const pending = cache.getOrSet('k', old.loader)
    await old.started
    const leases = await keysOf(server, prefix, 'lease')
    assert.equal(leases.length, 1)
    await server.cli('DEL', ...leases) // what an expiry, or Redis losing its data, does
    old.release()
    assert.equal(await pending, 'old')
    assert.equal(await cache.get('k'), undefined)
  })

  test('program order holds in a tick: set then delete without awaiting leaves no value', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })
    const set = cache.set('k', 'v')
    const removed = cache.delete('k')
    assert.deepEqual(await Promise.all([set, removed]), [true, true])
    assert.equal(await cache.get('k'), undefined)
  })
})

describe('getOrSet racing delete and set while Redis is unavailable', () => {
  async function degraded(cache: Cache): Promise<void> {
    const old = slowLoader('old')
    const pending = cache.getOrSet('k', old.loader)
    await old.started
    await cache.delete('k')
    old.release()
    assert.equal(await pending, 'old')
    assert.equal(await cache.get('k'), undefined, 'a delete during the load is honoured in memory')

    const again = slowLoader('old')
    const p2 = cache.getOrSet('s', again.loader)
    await again.started
    await cache.set('s', 'newer')
    again.release()
    assert.equal(await p2, 'old')
    assert.equal(await cache.get('s'), 'newer', 'a set during the load wins in memory')
  }

  test('Redis killed: the same-process race is honoured by the memory tier', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })
    await waitFor(() => cache.backend === 'redis', { message: 'synced' })
    await server.kill()
    await cache.get('probe')
    await waitFor(() => cache.backend === 'memory', { message: 'degraded' })
    await degraded(cache)
  })

  test('memory-only instance: same guarantee', async (t) => {
    const { failsoft } = open(t, { redis: null })
    await degraded(failsoft.cache({ namespace: 'race' }))
  })

  test('a load that started on Redis and finishes while degraded never reaches Redis stale', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { failsoft, prefix } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'race' })
    await waitFor(() => cache.backend === 'redis', { message: 'synced' })
    const old = slowLoader('old')
    const pending = cache.getOrSet('k', old.loader)
    await old.started
    await server.kill()
    await cache.get('probe')
    await waitFor(() => cache.backend === 'memory', { message: 'degraded' })
    await cache.delete('k')
    old.release()
    assert.equal(await pending, 'old')
    assert.equal(await cache.get('k'), undefined)
    await server.start()
    await waitFor(() => cache.backend === 'redis', { message: 'back', timeoutMs: 5000 })
    assert.equal(await cache.get('k'), undefined)
    assert.deepEqual(await keysOf(server, prefix, 'value'), [])
  })
})
