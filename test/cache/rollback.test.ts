// The cache when Redis forgets writes it acknowledged: a restart from an older RDB snapshot,
// a Sentinel failover to a replica that had not received them. No value overwritten or deleted
// by an acknowledged write is served again — by the writer, or by another process that comes
// back first.
import assert from 'node:assert/strict'
import { readdirSync, statSync, truncateSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { createFailsoft, type Cache, type Failsoft, type FailsoftOptions } from '../../src/index.js'
import { sleep, startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { SentinelSet } from '../support/sentinel.js'
import { guardUnhandled } from './helpers.js'

guardUnhandled()

const HEALTH = {
  probeIntervalMs: 50,
  heartbeatIntervalMs: 50,
  heartbeatTimeoutMs: 150,
  commandTimeoutMs: 150,
}

let counter = 0

/** AOF with `appendfsync everysec`, as most production Redis runs; a torn tail is loaded. */
const AOF_EVERYSEC = [
  '--appendonly',
  'yes',
  '--appendfsync',
  'everysec',
  '--aof-load-truncated',
  'yes',
]

/** The AOF file Redis 7 appends to (multi-part AOF: appendonlydir/<name>.<n>.incr.aof). */
function incrAof(dataDir: string): string {
  const dir = join(dataDir, 'appendonlydir')
  const file = readdirSync(dir).find((name) => name.endsWith('.incr.aof'))
  if (file === undefined) throw new Error(`no incremental AOF in ${dir}`)
  return join(dir, file)
}

function instance(
  t: { after(fn: () => unknown): void },
  redis: FailsoftOptions['redis'],
  prefix: string,
): { failsoft: Failsoft; cache: Cache; rollbacks: number[] } {
  const failsoft = createFailsoft({ redis, prefix, logger: false, health: HEALTH })
  t.after(() => failsoft.close())
  const rollbacks: number[] = []
  failsoft.health.on('rollback', (event) => rollbacks.push(event.seen))
  return { failsoft, cache: failsoft.cache({ namespace: 'ns' }), rollbacks }
}

function onRedis(cache: Cache): boolean {
  return cache.backend === 'redis' && !cache.status().peerWait.waiting
}

/** Two processes of one namespace (A through `redisA`, B through `redisB`), both on Redis. */
async function twoOnRedis(
  t: { after(fn: () => unknown): void },
  prefix: string,
  redisA: FailsoftOptions['redis'],
  redisB: FailsoftOptions['redis'] = redisA,
): Promise<{ a: ReturnType<typeof instance>; b: ReturnType<typeof instance> }> {
  const a = instance(t, redisA, prefix)
  const b = instance(t, redisB, prefix)
  await Promise.all([a.failsoft.ready(), b.failsoft.ready()])
  await waitFor(() => onRedis(a.cache) && onRedis(b.cache))
  return { a, b }
}

/** Read every key from every cache until `ms` have passed on Redis; returns the stale reads. */
async function staleReads(
  caches: Cache[],
  stale: Record<string, unknown>,
  ms: number,
): Promise<string[]> {
  const found: string[] = []
  const until = performance.now() + ms
  while (performance.now() < until) {
    for (const [i, cache] of caches.entries()) {
      for (const [key, old] of Object.entries(stale)) {
        const value = await cache.get(key)
        if (value === old) found.push(`${i}:${key}=${String(value)} (${cache.backend})`)
      }
    }
    await sleep(5)
  }
  return found
}

describe('cache: Redis forgot acknowledged writes', () => {
  for (const confirmed of [true, false]) {
    test(`a restart from an older snapshot serves no overwritten or deleted value (writes ${confirmed ? 'confirmed' : 'not yet confirmed'}; the other process comes back first)`, async (t) => {
      const server = await startRedis(t)
      const prefix = `rb${process.pid}x${++counter}`
      const proxyA = await startProxy(t, server)
      const { a, b } = await twoOnRedis(t, prefix, proxyA.urlFor(server), server.url)
      assert.equal(await a.cache.set('K', 'old'), true)
      assert.equal(await a.cache.set('D', 'old'), true)
      assert.equal(await b.cache.get('K'), 'old')
      // Let both list each other as peers (a tenth of their periodic marks).
      await sleep(2500)
      const snapshot = await server.snapshot()

      // Acknowledged writes the snapshot does not have.
      assert.equal(await a.cache.set('K', 'new'), true)
      assert.equal(await a.cache.delete('D'), true)
      if (confirmed) await sleep(300) // the writer's heartbeat confirms them
      // The writer is cut off a moment longer than the restart: the other process recovers
      // first, from a Redis holding the old values and the old members set.
      proxyA.blackhole()
      await server.restartFromSnapshot(snapshot)
      await waitFor(() => b.failsoft.health.available, { message: 'B back' })
      // B reads while A is still cut off.
      const early = await staleReads([b.cache], { K: 'old', D: 'old' }, 300)
      proxyA.pass()
      await waitFor(() => onRedis(a.cache) && onRedis(b.cache), {
        timeoutMs: 10_000,
        message: 'both back on Redis',
      })
      const late = await staleReads([a.cache, b.cache], { K: 'old', D: 'old' }, 1500)
      assert.deepEqual({ early, late }, { early: [], late: [] })
      if (confirmed) {
        assert.equal(a.rollbacks.length, 1, 'the writer saw a deep rollback')
        assert.equal(a.failsoft.status().redis.transitions.rollback, 1)
      }
      assert.ok(a.cache.status().rollbacks >= 1, 'the writer reconciled the rollback')
    })
  }

  test('a process the snapshot never knew is waited for by the one that comes back first', async (t) => {
    const server = await startRedis(t)
    const prefix = `rb${process.pid}x${++counter}`
    const b = instance(t, server.url, prefix)
    await b.failsoft.ready()
    await waitFor(() => onRedis(b.cache))
    assert.equal(await b.cache.set('K', 'old'), true)
    await sleep(300) // confirmed: the snapshot holds all B knows of, B sees no rollback
    const snapshot = await server.snapshot()
    // The writer starts after the snapshot: its clean marks are not in it.
    const proxyA = await startProxy(t, server)
    const a = instance(t, proxyA.urlFor(server), prefix)
    await a.failsoft.ready()
    await waitFor(() => onRedis(a.cache))
    assert.equal(await a.cache.set('K', 'new'), true)
    await sleep(2500) // B lists A among its peers
    proxyA.blackhole()
    await server.restartFromSnapshot(snapshot)
    await waitFor(() => b.failsoft.health.available, { message: 'B back' })
    const early = await staleReads([b.cache], { K: 'old' }, 300)
    proxyA.pass()
    await waitFor(() => onRedis(a.cache) && onRedis(b.cache), { timeoutMs: 10_000 })
    const late = await staleReads([a.cache, b.cache], { K: 'old' }, 1000)
    assert.deepEqual({ early, late }, { early: [], late: [] })
    assert.deepEqual(b.rollbacks, [])
  })

  test('a restart that kept every write is no rollback', async (t) => {
    const server = await startRedis(t)
    const a = instance(t, server.url, `rb${process.pid}x${++counter}`)
    await a.failsoft.ready()
    await waitFor(() => onRedis(a.cache))
    assert.equal(await a.cache.set('K', 'v1'), true)
    await sleep(300)
    await server.restart({ keepData: true })
    await waitFor(() => a.failsoft.status().redis.transitions.up >= 2 && onRedis(a.cache), {
      timeoutMs: 10_000,
    })
    assert.equal(await a.cache.get('K'), 'v1', 'nothing was invalidated')
    assert.deepEqual(a.rollbacks, [])
    assert.equal(a.cache.status().rollbacks, 0)
  })

  test('a Sentinel failover to a replica that missed acknowledged writes serves no stale value', async (t) => {
    const set = await SentinelSet.start(t, { replicas: 1 })
    const prefix = `rb${process.pid}x${++counter}`
    const { a, b } = await twoOnRedis(t, prefix, set.options)
    assert.equal(await a.cache.set('K', 'old'), true)
    assert.equal(await a.cache.set('D', 'old'), true)
    await sleep(500) // replicated
    await set.isolateReplicas()
    assert.equal(await a.cache.set('K', 'new'), true)
    assert.equal(await a.cache.delete('D'), true)
    await sleep(300)
    // The primary dies; the replicas, thawed, never received the last writes.
    const old = await set.primary()
    await old.kill()
    set.resumeReplicas()
    await set.waitForNewPrimary(old.port)
    await waitFor(() => onRedis(a.cache) && onRedis(b.cache), {
      timeoutMs: 15_000,
      message: 'both back on the new primary',
    })
    assert.deepEqual(await staleReads([a.cache, b.cache], { K: 'old', D: 'old' }, 1500), [])
    assert.equal(a.rollbacks.length, 1, 'the writer saw a deep rollback')
  })

  test('a clean Sentinel failover is no rollback, and the cache keeps its values', async (t) => {
    const set = await SentinelSet.start(t, { replicas: 1 })
    const a = instance(t, set.options, `rb${process.pid}x${++counter}`)
    await a.failsoft.ready()
    await waitFor(() => onRedis(a.cache))
    assert.equal(await a.cache.set('K', 'v1'), true)
    await sleep(500)
    const { promoted } = await set.killPrimary()
    await waitFor(() => onRedis(a.cache) && a.failsoft.status().redis.transitions.up >= 2, {
      timeoutMs: 15_000,
    })
    assert.equal(await a.cache.get('K'), 'v1')
    assert.deepEqual(a.rollbacks, [])
    assert.equal(a.cache.status().rollbacks, 0)
    const status = a.failsoft.status().redis
    assert.equal(status.primary, `127.0.0.1:${promoted.port}`, 'status names the new primary')
    assert.equal(status.topology, 'sentinel')
    assert.match(
      String(status.target),
      /^sentinel:[\w.-]+@127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}\/0$/,
    )
  })

  test('AOF everysec, Redis SIGKILLed: nothing acknowledged is lost, no rollback, values kept', async (t) => {
    const server = await startRedis(t, { args: AOF_EVERYSEC })
    const a = instance(t, server.url, `rb${process.pid}x${++counter}`)
    await a.failsoft.ready()
    await waitFor(() => onRedis(a.cache))
    assert.equal(await a.cache.set('K', 'v1'), true)
    await sleep(300)
    await server.kill() // the process dies; what it wrote to the AOF is in the OS's page cache
    await server.start()
    await waitFor(() => a.failsoft.status().redis.transitions.up >= 2 && onRedis(a.cache), {
      timeoutMs: 10_000,
    })
    assert.equal(await a.cache.get('K'), 'v1')
    assert.deepEqual(a.rollbacks, [])
  })

  test('AOF everysec, the host loses the AOF tail not yet fsynced: the rollback is detected, no stale value', async (t) => {
    const server = await startRedis(t, { args: AOF_EVERYSEC })
    const prefix = `rb${process.pid}x${++counter}`
    const { a, b } = await twoOnRedis(t, prefix, server.url)
    assert.equal(await a.cache.set('K', 'old'), true)
    assert.equal(await a.cache.set('D', 'old'), true)
    await sleep(1500) // fsynced (everysec)
    const aof = incrAof(server.dataDir)
    const synced = statSync(aof).size
    assert.equal(await a.cache.set('K', 'new'), true)
    assert.equal(await a.cache.delete('D'), true)
    await sleep(300) // the writer's heartbeat confirms them
    // A host crash: the process dies and the unsynced tail of the AOF never reached the disk.
    await server.kill()
    truncateSync(aof, synced)
    await server.start()
    await waitFor(
      () => onRedis(a.cache) && onRedis(b.cache) && a.failsoft.status().redis.transitions.up >= 2,
      {
        timeoutMs: 10_000,
        message: 'both back on Redis',
      },
    )
    assert.deepEqual(await staleReads([a.cache, b.cache], { K: 'old', D: 'old' }, 1000), [])
    assert.equal(a.rollbacks.length, 1, 'the writer saw the rollback')
  })

  test('SENTINEL FAILOVER (a planned switch, nothing lost) is no rollback and serves no stale value', async (t) => {
    const set = await SentinelSet.start(t, { replicas: 1 })
    const prefix = `rb${process.pid}x${++counter}`
    const { a, b } = await twoOnRedis(t, prefix, set.options)
    assert.equal(await a.cache.set('K', 'v1'), true)
    assert.equal(await a.cache.set('D', 'v1'), true)
    assert.equal(await a.cache.set('K', 'v2'), true)
    assert.equal(await b.cache.delete('D'), true)
    await sleep(300)
    const before = await set.primary()
    await set.failover()
    await waitFor(
      () =>
        a.failsoft.status().redis.primary !== `127.0.0.1:${before.port}` &&
        onRedis(a.cache) &&
        onRedis(b.cache),
      {
        timeoutMs: 15_000,
        message: 'both on the new primary',
      },
    )
    assert.deepEqual(await staleReads([a.cache, b.cache], { K: 'v1', D: 'v1' }, 500), [])
    assert.equal(await b.cache.get('K'), 'v2')
    assert.deepEqual([a.rollbacks, b.rollbacks], [[], []])
  })

  // Regression (second outside review, break 1): the writer closed before Redis forgot its
  // writes; no process still running had written anything, so none saw a rollback, and every
  // read after the restart served the overwritten and the deleted value (2 of 2 per case).
  for (const fault of ['an older snapshot', 'a failover to a lagging replica'] as const) {
    test(`Redis forgets the writes of a process that has left (${fault}): the others serve none of its replaced values`, async (t) => {
      const prefix = `rb${process.pid}x${++counter}`
      let redis: FailsoftOptions['redis']
      let forget: () => Promise<void>
      let before: () => Promise<void>
      if (fault === 'an older snapshot') {
        const server = await startRedis(t)
        redis = server.url
        let snapshot = ''
        forget = async () => server.restartFromSnapshot(snapshot)
        before = async (): Promise<void> => {
          snapshot = await server.snapshot()
        }
      } else {
        const set = await SentinelSet.start(t, { replicas: 1 })
        redis = set.options
        forget = async () => {
          const old = await set.primary()
          await old.kill()
          set.resumeReplicas()
          await set.waitForNewPrimary(old.port)
        }
        before = async (): Promise<void> => {
          await sleep(500) // replicated
          await set.isolateReplicas()
        }
      }
      const { a, b } = await twoOnRedis(t, prefix, redis)
      assert.equal(await a.cache.set('K', 'old'), true)
      assert.equal(await a.cache.set('D', 'old'), true)
      assert.equal(await b.cache.get('K'), 'old')
      await before()
      assert.equal(await a.cache.set('K', 'new'), true)
      assert.equal(await a.cache.delete('D'), true)
      await sleep(600) // counted by A's heartbeat, seen by B's
      await a.failsoft.close()
      await sleep(2000) // A is gone from B's peers
      await forget()
      await waitFor(() => b.failsoft.status().redis.transitions.up >= 2 && onRedis(b.cache), {
        timeoutMs: 20_000,
        message: 'B back on Redis',
      })
      assert.deepEqual(await staleReads([b.cache], { K: 'old', D: 'old' }, 1000), [])
      assert.ok(b.cache.status().rollbacks >= 1, 'B saw the namespace roll back')
    })
  }
})
