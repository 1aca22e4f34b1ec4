import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, test, type TestContext } from 'node:test'
import { Redis } from 'ioredis'
import type { Cache, Failsoft } from '../../src/index.js'
import { sleep, startProxy, startRedis, waitFor } from '../support/fault-kit.js'
import { LEVEL } from '../support/log-capture.js'
import { guardUnhandled, open, timed } from './helpers.js'

guardUnhandled()

const reader = fileURLToPath(new URL('./fixtures/reader.ts', import.meta.url))

/** Another process's view: a fresh node process with its own failsoft instance. */
async function readFromAnotherProcess(
  url: string,
  prefix: string,
  namespace: string,
  keys: string[],
): Promise<{ state: string; backend: string; values: Record<string, unknown> }> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', reader, url, prefix, namespace, ...keys],
    { timeout: 20_000 },
  )
  return JSON.parse(stdout) as { state: string; backend: string; values: Record<string, unknown> }
}

/**
 * Drive traffic against the cache for `ms`: a get, a set and a delete per round, each timed.
 * Returns every latency and every error (there must be none).
 */
async function traffic(
  cache: Cache,
  ms: number,
): Promise<{ latencies: number[]; errors: unknown[]; slowest: number }> {
  const latencies: number[] = []
  const errors: unknown[] = []
  const end = performance.now() + ms
  let i = 0
  while (performance.now() < end) {
    for (const op of [
      () => cache.get(`t${i % 50}`),
      () => cache.set(`t${i % 50}`, { i }),
      () => cache.delete(`t${(i + 25) % 50}`),
    ]) {
      try {
        const [, took] = await timed(op)
        latencies.push(took)
      } catch (error) {
        errors.push(error)
      }
    }
    i++
    // Yield to timers and I/O like a real request loop would.
    if (i % 20 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  return { latencies, errors, slowest: latencies.reduce((a, b) => Math.max(a, b), 0) }
}

function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0
}

async function waitForBackend(cache: Cache, backend: 'redis' | 'memory', timeoutMs = 3000) {
  await waitFor(() => cache.backend === backend, {
    timeoutMs,
    message: `cache backend ${backend}`,
  })
}

describe('cache through Redis outages (real redis-server)', () => {
  test('killed: serves from memory at once, zero errors, back on Redis after restart', async (t) => {
    const server = await startRedis(t, { persistence: true })
    const { failsoft, logs } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'kill' })
    await cache.set('warm', { v: 1 })

    await server.kill()
    const during = await traffic(cache, 1500)
    assert.deepEqual(during.errors, [])
    assert.equal(cache.backend, 'memory')
    assert.ok(during.slowest < 500, `slowest op ${during.slowest.toFixed(1)} ms`)
    // After detection every operation is a memory operation.
    assert.ok(p99(during.latencies.slice(10)) < 2, `p99 ${p99(during.latencies.slice(10))} ms`)
    // The warm tier had a copy of what was read/written before the outage.
    assert.deepEqual(await cache.get('warm'), { v: 1 })

    const restartedAt = performance.now()
    await server.start()
    await waitForBackend(cache, 'redis')
    const backAfter = performance.now() - restartedAt
    assert.ok(backAfter < 1500, `back on Redis ${backAfter.toFixed(0)} ms after restart`)
    assert.equal(cache.status().journal.keys, 0)

    const warns = logs.records.filter(
      (r) => r.level === LEVEL.warn && r.component === 'cache:kill' && /fallback/.test(r.msg),
    )
    assert.equal(warns.length, 1, 'one WARNING when the cache switched to memory')
    const infos = logs.records.filter(
      (r) => r.level === LEVEL.info && r.component === 'cache:kill' && /back on Redis/.test(r.msg),
    )
    assert.equal(infos.length, 1, 'one INFO when it is back on Redis')
    assert.ok((infos[0]?.servedFromMemory as number) > 0)
    assert.ok((infos[0]?.reconciledKeys as number) > 0)
  })

  test('frozen (SIGSTOP): no operation waits for the frozen server, zero errors', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'freeze' })
    await cache.set('k', 'before')
    server.freeze()
    const during = await traffic(cache, 1500)
    assert.deepEqual(during.errors, [])
    assert.equal(cache.backend, 'memory')
    assert.ok(during.slowest < 500, `slowest op ${during.slowest.toFixed(1)} ms`)
    server.thaw()
    await waitForBackend(cache, 'redis')
  })

  test('blackholed network path: served from memory, back on Redis when it heals', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft } = open(t, { redis: proxy.urlFor(server) })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'blackhole' })
    await cache.set('k', 'before')
    proxy.blackhole()
    const during = await traffic(cache, 1500)
    assert.deepEqual(during.errors, [])
    assert.ok(during.slowest < 500, `slowest op ${during.slowest.toFixed(1)} ms`)
    proxy.pass()
    await waitForBackend(cache, 'redis', 4000)
    assert.equal(await cache.set('k', 'after'), true)
    assert.equal(await server.cli('GET', `${cacheKeyPrefix(failsoft, cache)}k`), '"after"')
  })

  test('cold start: Redis down at start-up, no operation waits, reconciled when it appears', async (t) => {
    const server = await startRedis(t)
    // Leave a value in Redis from "before", then stop Redis before the app starts.
    const first = open(t, { redis: server.url })
    await first.failsoft.ready()
    const old = first.failsoft.cache({ namespace: 'cold' })
    await old.set('a', 'old-a')
    const prefix = first.prefix
    await first.failsoft.close()
    await server.kill()

    const { failsoft } = open(t, { redis: server.url, prefix })
    const cache = failsoft.cache({ namespace: 'cold' })
    const [, firstOp] = await timed(() => cache.set('a', 'new-a'))
    assert.ok(firstOp < 100, `first op took ${firstOp.toFixed(1)} ms`)
    assert.equal(await failsoft.ready(), 'down')
    assert.equal(await cache.get('a'), 'new-a')
    await server.start() // not persistent: comes back empty
    await waitForBackend(cache, 'redis', 4000)
    assert.equal(await cache.get('a'), undefined, 'reads are served by Redis again')
  })

  test('restarted empty: a new generation, no errors, and writes work at once', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'empty' })
    await cache.set('k', 'v')
    const generation = cache.status().generation
    await server.restart({ keepData: false })
    await waitFor(() => failsoft.health.available && cache.status().generation !== generation, {
      timeoutMs: 4000,
      message: 'a new generation after the restart',
    })
    assert.equal(await cache.get('k'), undefined)
    assert.equal(await cache.set('k', 'v2'), true)
    assert.equal(await cache.get('k'), 'v2')
  })
})

describe('coming back clean', () => {
  test('after an outage in which A was deleted and B overwritten, nobody reads the old A or B', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const url = proxy.urlFor(server)
    const one = open(t, { redis: url })
    await one.failsoft.ready()
    const cache = one.failsoft.cache({ namespace: 'stale' })
    // A second process, alive through the outage, that never wrote anything.
    const two = open(t, { redis: url, prefix: one.prefix })
    await two.failsoft.ready()
    const other = two.failsoft.cache({ namespace: 'stale' })
    await cache.set('A', 'A-old')
    await cache.set('B', 'B-old')
    assert.equal(await other.get('A'), 'A-old')

    proxy.blackhole() // a partition: Redis keeps its data
    await waitForBackend(cache, 'memory')
    assert.equal(await cache.delete('A'), true)
    assert.equal(await cache.set('B', 'B-new'), true)
    assert.equal(await cache.get('A'), undefined)
    assert.equal(await cache.get('B'), 'B-new')
    assert.equal(await server.cli('EXISTS', `${cacheKeyPrefix(one.failsoft, cache)}A`), 1)

    proxy.pass()
    await waitForBackend(cache, 'redis', 4000)
    // Same instance.
    assert.equal(await cache.get('A'), undefined)
    assert.notEqual(await cache.get('B'), 'B-old')
    // The other process that lived through the outage.
    await waitForBackend(other, 'redis', 4000)
    assert.equal(await other.get('A'), undefined)
    assert.notEqual(await other.get('B'), 'B-old')
    // A fresh process.
    const fresh = await readFromAnotherProcess(server.url, one.prefix, 'stale', ['A', 'B'])
    assert.equal(fresh.state, 'up')
    assert.deepEqual(fresh.values, { A: null, B: null })
  })

  /**
   * Two processes cut off from Redis together, each through its own network path; B's path
   * heals first. A deleted K during the outage (in its memory, journaled); until A's recovery
   * deletes K in Redis, Redis still holds the old value.
   */
  async function skewedRecovery(
    t: TestContext,
    peerWaitMs: number,
  ): Promise<{
    a: { failsoft: Failsoft; cache: Cache; proxy: { pass(): void } }
    b: { failsoft: Failsoft; cache: Cache; logs: ReturnType<typeof open>['logs'] }
  }> {
    const server = await startRedis(t)
    const [proxyA, proxyB] = [await startProxy(t, server), await startProxy(t, server)]
    const a = open(t, { redis: proxyA.urlFor(server) })
    const b = open(t, { redis: proxyB.urlFor(server), prefix: a.prefix })
    await Promise.all([a.failsoft.ready(), b.failsoft.ready()])
    const cacheA = a.failsoft.cache({ namespace: 'skew', peerWaitMs })
    const cacheB = b.failsoft.cache({ namespace: 'skew', peerWaitMs })
    await cacheA.set('K', 'K-old')
    assert.equal(await cacheB.get('K'), 'K-old')
    // Both have marked themselves clean at least once (generationCheckMs: 200 ms).
    await sleep(450)

    proxyA.blackhole()
    proxyB.blackhole()
    await Promise.all([waitForBackend(cacheA, 'memory'), waitForBackend(cacheB, 'memory')])
    assert.equal(await cacheA.delete('K'), true)
    proxyB.pass()
    await waitFor(() => b.failsoft.health.state === 'up', { timeoutMs: 4000, message: 'B up' })
    return {
      a: { failsoft: a.failsoft, cache: cacheA, proxy: proxyA },
      b: { failsoft: b.failsoft, cache: cacheB, logs: b.logs },
    }
  }

  test('a process back first does not read, from Redis, what another changed during the outage', async (t) => {
    const { a, b } = await skewedRecovery(t, 5000)
    // B is up, but A has not reconciled: B's reads stay off Redis (a miss, never 'K-old').
    for (let i = 0; i < 10; i++) {
      assert.equal(b.cache.backend, 'memory')
      assert.equal(await b.cache.get('K'), undefined)
      await sleep(30)
    }
    assert.equal(b.cache.status().peerWait.waiting, true)
    a.proxy.pass()
    await waitForBackend(a.cache, 'redis', 4000)
    await waitForBackend(b.cache, 'redis', 2000)
    assert.equal(await b.cache.get('K'), undefined)
    assert.deepEqual(b.cache.status().peerWait, { waiting: false, waits: 1, timeouts: 0 })
  })

  test('without the peer wait (peerWaitMs: 0) the process back first reads the old value', async (t) => {
    // The window the peer wait closes, shown with the same faults.
    const { a, b } = await skewedRecovery(t, 0)
    await waitForBackend(b.cache, 'redis', 2000)
    assert.equal(await b.cache.get('K'), 'K-old')
    a.proxy.pass()
    await waitForBackend(a.cache, 'redis', 4000)
    assert.equal(await b.cache.get('K'), undefined)
  })

  test('a peer that stays cut off holds reads off Redis for peerWaitMs at most, with one WARNING', async (t) => {
    const { b } = await skewedRecovery(t, 300)
    await waitForBackend(b.cache, 'redis', 2000)
    assert.deepEqual(b.cache.status().peerWait, { waiting: false, waits: 1, timeouts: 1 })
    const warnings = b.logs.records.filter(
      (r) => r.level === LEVEL.warn && r.msg.includes('not confirmed their reconciliation'),
    )
    assert.equal(warnings.length, 1)
    assert.equal(warnings[0]?.unconfirmedPeers, 1)
  })

  test('an instance that closed is not waited for', async (t) => {
    const { a, b } = await skewedRecovery(t, 5000)
    a.proxy.pass()
    await waitForBackend(a.cache, 'redis', 4000)
    await waitForBackend(b.cache, 'redis', 2000)
    await a.failsoft.close()
    const before = b.cache.status().peerWait.waits
    b.failsoft.health.forceFallback(true)
    await waitForBackend(b.cache, 'memory')
    b.failsoft.health.forceFallback(false)
    await waitForBackend(b.cache, 'redis', 1000)
    assert.deepEqual(b.cache.status().peerWait, { waiting: false, waits: before + 1, timeouts: 0 })
  })

  /**
   * A SET sent just before an outage, held on the way (a middlebox, a TCP retransmission after
   * a partition heals) and delivered to Redis after the cache has recovered and a newer value
   * was written. Returns the cache and what Redis holds once the held bytes have arrived.
   */
  async function heldWrite(
    t: TestContext,
    options: { clientKill: boolean },
  ): Promise<{ cache: Cache; keys: Record<string, unknown> }> {
    const server = await startRedis(t, { aclUser: { username: 'app', password: 'app-secret-1' } })
    if (!options.clientKill) await server.cli('ACL', 'SETUSER', 'app', '-client|kill')
    const proxy = await startProxy(t, server)
    const app = open(t, {
      redis: proxy.urlFor({ url: server.aclUrl ?? '' }),
      health: { commandTimeoutMs: 100, heartbeatTimeoutMs: 100 },
    })
    await app.failsoft.ready()
    const cache = app.failsoft.cache({ namespace: 'late' })
    await cache.set('K', 'before')

    proxy.deliverAfterClientClose(true)
    proxy.latency(1500) // this SET reaches Redis 1.5 s from now, whatever happens meanwhile
    assert.equal(await cache.set('K', 'sent-before-the-outage'), true) // from memory, journaled
    assert.equal(cache.backend, 'memory')
    proxy.pass()
    await waitForBackend(cache, 'redis', 4000)
    assert.equal(await cache.set('K', 'newest'), true)
    await sleep(1800) // the held SET has reached Redis by now
    const keys: Record<string, unknown> = {}
    for (const key of (await server.cli('KEYS', `${app.prefix}:cache:late:d:*`)) as string[]) {
      keys[key] = await server.cli('GET', key)
    }
    assert.equal(await cache.get('K'), 'newest')
    return { cache, keys }
  }

  test('a write held on the way and delivered after recovery never lands (old connection killed)', async (t) => {
    const { cache, keys } = await heldWrite(t, { clientKill: true })
    // Redis freed the old connection with what it had not run: the late SET ran nowhere.
    assert.deepEqual(Object.values(keys), ['"newest"'])
    assert.equal(cache.status().generationBumps, 0)
  })

  test('without CLIENT KILL (ACL), the generation is bumped: the held write lands where nobody reads', async (t) => {
    const { cache, keys } = await heldWrite(t, { clientKill: false })
    assert.equal(cache.status().generationBumps, 1)
    // The hazard was real: the late SET did run, in the old generation.
    assert.deepEqual(Object.values(keys).sort(), ['"newest"', '"sent-before-the-outage"'])
  })

  test('journal overflow bumps the generation: nothing written before is reachable, anywhere', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const url = proxy.urlFor(server)
    const one = open(t, { redis: url })
    await one.failsoft.ready()
    const cache = one.failsoft.cache({ namespace: 'overflow', journalMaxKeys: 10 })
    const two = open(t, { redis: server.url, prefix: one.prefix })
    await two.failsoft.ready()
    const other = two.failsoft.cache({ namespace: 'overflow', journalMaxKeys: 10 })
    for (let i = 0; i < 30; i++) await cache.set(`k${i}`, `old${i}`)
    const before = cache.status().generation

    proxy.blackhole()
    await waitForBackend(cache, 'memory')
    for (let i = 0; i < 30; i++) await cache.set(`k${i}`, `new${i}`)
    assert.equal(cache.status().journal.pendingGenerationBump, true)
    // The other process (not partitioned) still reads the old values meanwhile.
    assert.equal(await other.get('k3'), 'old3')

    proxy.pass()
    await waitForBackend(cache, 'redis', 4000)
    const status = cache.status()
    assert.notEqual(status.generation, before)
    assert.equal(status.generationBumps, 1)
    assert.equal(status.journal.overflows, 1)
    for (let i = 0; i < 30; i += 7) assert.equal(await cache.get(`k${i}`), undefined)
    // The other process learns the new generation within its check period.
    await waitFor(() => other.status().generation === status.generation, {
      timeoutMs: 2000,
      message: 'the other process adopts the new generation',
    })
    assert.equal(await other.get('k3'), undefined)
    // The old generation's keys are swept from Redis in the background.
    await waitFor(
      async () =>
        ((await server.cli('KEYS', `${one.prefix}:cache:overflow:d:${before}:*`)) as string[])
          .length === 0,
      { timeoutMs: 3000, message: 'old generation swept' },
    )
  })

  test('a write in flight when Redis froze never resurfaces after recovery', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'late' })
    await cache.set('k', 'v1')
    server.freeze()
    // Sent to the frozen server: it sits in its socket buffer and executes on thaw.
    const inFlight = cache.set('k', 'v2-late')
    await waitForBackend(cache, 'memory')
    assert.equal(await inFlight, true) // served by memory once the timeout fired
    assert.equal(await cache.set('k', 'v3-during-outage'), true)
    server.thaw()
    await waitForBackend(cache, 'redis')
    await sleep(100)
    const value = await cache.get('k')
    assert.ok(value === undefined, `read ${JSON.stringify(value)} after recovery`)
    assert.equal(await server.cli('EXISTS', `${cacheKeyPrefix(failsoft, cache)}k`), 0)
  })

  test('a write refused by Redis (OOM at maxmemory) returns false and never leaves the old value', async (t) => {
    const server = await startRedis(t, {
      args: ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction'],
    })
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({ namespace: 'oom' })
    assert.equal(await cache.set('victim', 'old'), true)
    const blob = 'x'.repeat(50_000)
    let refused = 0
    for (let i = 0; i < 200 && refused === 0; i++) {
      if (!(await cache.set(`fill${i}`, blob))) refused++
    }
    assert.equal(refused, 1, 'Redis reached maxmemory')
    // A write at least as large as the one just refused is refused too.
    assert.equal(await cache.set('victim', `new${blob}`), false)
    assert.equal(await cache.get('victim'), undefined, 'the old value is not served')
    assert.equal(failsoft.health.available, true, 'an OOM reply is not an outage')
    assert.ok(cache.status().replyErrors >= 2)
  })
})

describe('Redis at maxmemory when a cache starts', () => {
  // Regression (the long checker run, seed 100): a process restarted while Redis was at
  // maxmemory failed its cache's recovery step on the clean mark (a script write refused with
  // OOM), and the whole process went down — every component on its fallback — for as long.
  test('the clean mark refused (OOM) does not take the process off Redis', async (t) => {
    const server = await startRedis(t, {
      args: ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction'],
    })
    // The namespace exists (its generation key): the new process's sync writes nothing.
    const first = open(t, { redis: server.url })
    const firstCache = first.failsoft.cache({ namespace: 'oom-start' })
    await first.failsoft.ready()
    await firstCache.get('k')
    const filler = new Redis(server.url)
    t.after(() => filler.quit())
    const blob = 'x'.repeat(50_000)
    for (let i = 0; i < 400; i++) {
      const full = await filler.set(`fill${i}`, blob).then(
        () => false,
        () => true,
      )
      if (full) break
    }
    const { failsoft } = open(t, { redis: server.url, prefix: first.prefix })
    const cache = failsoft.cache({ namespace: 'oom-start' })
    assert.equal(await failsoft.ready(), 'up')
    await sleep(1000)
    assert.equal(failsoft.health.available, true, 'still up')
    assert.equal(failsoft.status().redis.transitions.down, 0, 'never went down')
    assert.equal(await cache.get('k'), undefined)
  })
})

describe('bounds hold through a long outage', () => {
  test('memory entries, bytes and journal stay within their limits', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const cache = failsoft.cache({
      namespace: 'bounds',
      journalMaxKeys: 500,
      memory: { maxEntries: 200, maxBytes: 256 * 1024 },
    })
    await server.kill()
    await waitForBackend(cache, 'memory')
    for (let i = 0; i < 20_000; i++) {
      await cache.set(`k${i}`, { i, pad: 'y'.repeat(i % 10 === 0 ? 4000 : 100) })
      if (i % 500 === 0) {
        const { memory, journal } = cache.status()
        assert.ok(memory.entries <= 200 && memory.bytes <= 256 * 1024, JSON.stringify(memory))
        assert.ok(journal.keys <= 500, JSON.stringify(journal))
      }
    }
    assert.equal(cache.status().journal.pendingGenerationBump, true)
  })
})

/** The Redis key prefix of a cache's current generation. */
function cacheKeyPrefix(failsoft: Failsoft, cache: Cache): string {
  return `${failsoft.context.prefix}:cache:${cache.namespace}:d:${cache.status().generation}:`
}
