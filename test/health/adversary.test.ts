// The health monitor against an adversary's schedule: operator toggles in the middle of a
// recovery, a partition that starts while the probe is waiting for a reply, a slow but healthy
// link. Each case reproduces a break found by an outside review of the monitor.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft, type Failsoft, type FailsoftOptions } from '../../src/index.js'
import { startProxy, startRedis, waitFor, sleep } from '../support/fault-kit.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'

function open(t: { after(fn: () => unknown): void }, options: FailsoftOptions): Failsoft {
  const failsoft = createFailsoft({ prefix: uniquePrefix(), logger: false, ...options })
  t.after(() => failsoft.close())
  return failsoft
}

describe('health monitor under an adversary', () => {
  test('forceFallback(true) then (false) during a recovery step: every step runs again before up', async (t) => {
    const server = await startRedis(t)
    const failsoft = open(t, { redis: server.url, health: FAST_HEALTH })
    await failsoft.ready()
    const monitor = failsoft.context.monitor
    const events: string[] = []
    let slow = false
    monitor.register({
      name: 'test:slow',
      fallback: 'none',
      recover: async () => {
        events.push('slow:start')
        if (slow) await sleep(400)
        events.push('slow:end')
      },
    })
    monitor.register({
      name: 'test:second',
      fallback: 'none',
      recover: () => {
        events.push('second')
        return Promise.resolve()
      },
    })
    failsoft.health.on('up', () => events.push('up'))

    failsoft.health.forceFallback(true)
    assert.equal(failsoft.health.state, 'down')
    slow = true
    events.length = 0
    failsoft.health.forceFallback(false)
    await waitFor(() => events.includes('slow:start'), { message: 'the slow step started' })
    failsoft.health.forceFallback(true)
    failsoft.health.forceFallback(false)
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 5000, message: 'up again' })

    const up = events.lastIndexOf('up')
    const round = events.slice(events.lastIndexOf('slow:start', up), up)
    assert.ok(
      round.includes('slow:end') && round.includes('second'),
      `the round that led to 'up' ran every step: ${events.join(', ')}`,
    )
  })

  test('a partition that swallows a probe reply does not block later probes', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const prefix = uniquePrefix()
    const failsoft = open(t, { redis: proxy.urlFor(server), prefix, health: FAST_HEALTH })
    assert.equal(await failsoft.ready(), 'up')

    proxy.blackhole()
    await waitFor(() => failsoft.health.state === 'down', { message: 'down in the partition' })
    // Behind the partition: the epoch key is gone and writes are paused, so the next probe
    // finds the key missing and waits on its SET NX.
    await server.cli('DEL', `${prefix}:failsoft:epoch`)
    await server.cli('CLIENT', 'PAUSE', '60000', 'WRITE')
    t.after(() => server.cli('CLIENT', 'UNPAUSE').catch(() => undefined))
    proxy.pass()
    await sleep(800) // the probe (every 50 ms) is now waiting for the SET's reply
    // The partition comes back while it waits; the reply to that SET is swallowed by it.
    proxy.blackhole()
    await server.cli('CLIENT', 'UNPAUSE')
    await sleep(200)
    proxy.pass()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 5000,
      message: 'up once the path healed, without waiting for TCP to give up on the old socket',
    })
  })

  test('a steady 150 ms round trip is not an outage, and recovery over it takes few round trips', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    proxy.latency(75) // each way: 150 ms round trip
    // Default timings: the ones users run with.
    const failsoft = open(t, { redis: proxy.urlFor(server) })
    const downs: string[] = []
    failsoft.health.on('down', ({ error }) => downs.push(error.message))
    assert.equal(await failsoft.ready(), 'up')
    const cache = failsoft.cache({ namespace: 'slow' })
    const layer = failsoft.channels()
    const tasks = failsoft.tasks({ queue: 'slow' })
    const ran: string[] = []
    const task = tasks.define('noop', (args: { n: number }) => {
      ran.push(String(args.n))
    })
    tasks.work()
    const channel = await layer.newChannel()
    await layer.groupAdd('room', channel)
    // First use of every Lua script (EVALSHA → NOSCRIPT → EVAL: two round trips), a getOrSet,
    // deletes, publishes and enqueues, for a few seconds.
    for (let i = 0; i < 12; i++) {
      await cache.getOrSet(`k${i}`, () => i)
      await cache.set(`s${i}`, { i })
      await cache.delete(`k${i}`)
      await layer.groupSend('room', { type: 'tick', i })
      await task.dispatch({ n: i })
      await sleep(150)
    }
    await waitFor(() => ran.length === 12, { timeoutMs: 10_000, message: 'every task ran' })
    assert.deepEqual(downs, [], 'a slow, answering Redis never counts as an outage')

    // Recovery over the slow link: a restart of Redis (it keeps nothing).
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', { timeoutMs: 5000 })
    await server.start()
    const answering = Date.now()
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 10_000 })
    const recoveryMs = Date.now() - answering
    // ~20 sequential round trips took 3–6 s here before; a handful of them, pipelined, is the target.
    assert.ok(recoveryMs < 2500, `recovery over a 150 ms link took ${recoveryMs} ms`)
  })

  test('a command from before an outage that never settles does not take Redis down again after it', async (t) => {
    const server = await startRedis(t)
    const failsoft = open(t, { redis: server.url, health: FAST_HEALTH })
    await failsoft.ready()
    const downs: number[] = []
    failsoft.health.on('down', ({ at }) => downs.push(at))
    // A component's command whose promise never settles (a call built on a connection that
    // will not be ready again): to the watchdog it looks like a freeze — once.
    void failsoft.context.monitor
      .run(() => new Promise<never>(() => undefined))
      .catch(() => undefined)
    await waitFor(() => downs.length === 1, { message: 'taken for a freeze' })
    await waitFor(() => failsoft.health.state === 'up', { timeoutMs: 3000, message: 'back up' })
    await sleep(1000)
    assert.equal(failsoft.health.state, 'up', 'it stays up')
    assert.equal(downs.length, 1, 'one outage, not one per return of Redis')
  })
})
