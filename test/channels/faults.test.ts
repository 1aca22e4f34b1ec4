// The channel layer through real faults: redis-server killed, frozen, restarted empty or with
// its data, its pub/sub connection killed, down at start-up. Local delivery must never stop;
// cross-process delivery must come back by itself, with what was sent meanwhile delivered
// from the outbox (or counted when a bound dropped it).
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { ChannelLayer } from '../../src/index.js'
import { startProxy, startRedis, waitFor, type RedisServer } from '../support/fault-kit.js'
import { collect, makeLayer, sleep, uniquePrefix, type LayerSetup } from './helpers.js'
import { Peer } from './peer.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

interface Pair {
  server: RedisServer
  a: LayerSetup
  b: LayerSetup
  a1: ReturnType<typeof collect>
  b1: ReturnType<typeof collect>
}

/** Two instances on one Redis, each with one member of 'room'. */
async function pair(
  t: Parameters<typeof startRedis>[0],
  options: Parameters<typeof makeLayer>[2] = {},
  server?: RedisServer,
): Promise<Pair> {
  server ??= await startRedis(t)
  const prefix = uniquePrefix()
  const a = await makeLayer(t, server.url, { prefix, ...options })
  const b = await makeLayer(t, server.url, { prefix, ...options })
  const ca = await a.layer.newChannel()
  const cb = await b.layer.newChannel()
  await a.layer.groupAdd('room', ca)
  await b.layer.groupAdd('room', cb)
  const a1 = collect(a.layer, ca)
  const b1 = collect(b.layer, cb)
  t.after(() => {
    a1.stop()
    b1.stop()
  })
  return { server, a, b, a1, b1 }
}

const down = (layer: ChannelLayer) =>
  waitFor(() => layer.backend === 'memory', { message: 'layer on its fallback' })
const up = (layer: ChannelLayer) =>
  waitFor(() => layer.backend === 'redis', { message: 'layer back on Redis', timeoutMs: 5000 })

/**
 * Same-process delivery is synchronous; the collecting loop only needs a few microtasks to
 * catch up. A short deadline proves nothing waited for Redis (which is down or frozen here).
 */
const local = (collector: { messages: unknown[] }, count: number) =>
  waitFor(() => collector.messages.length >= count, {
    timeoutMs: 200,
    intervalMs: 1,
    message: `${count} messages delivered locally`,
  })

function ns(messages: Array<{ type: string; n?: unknown }>, type: string): unknown[] {
  return messages.filter((m) => m.type === type).map((m) => m.n)
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from }, (_, i) => from + i)

describe('Redis killed, then restarted', () => {
  for (const keepData of [false, true]) {
    test(`restarted ${keepData ? 'with its data' : 'EMPTY'}: local loss 0, outbox delivered, memberships back`, async (t) => {
      const { server, a, b, a1, b1 } = await pair(t)
      const restarting = server.restart({ keepData, delayMs: 800 })
      await down(a.layer)
      await down(b.layer)

      // While down: local members are served at once, from memory.
      for (let n = 0; n < 20; n++) await a.layer.groupSend('room', { type: 'outage', n })
      await local(a1, 20)
      assert.deepEqual(ns(a1.messages, 'outage'), range(0, 20), 'same-process loss 0')
      assert.equal(b1.messages.length, 0)
      assert.equal((a.layer.status().outbox as { size: number }).size, 20)

      await restarting
      const restartedAt = Date.now()
      await waitFor(() => b1.messages.length >= 20, {
        timeoutMs: 5000,
        message: 'the outbox reached the other process',
      })
      assert.ok(Date.now() - restartedAt < 3000, 'cross-process delivery back within 3 s')
      assert.deepEqual(ns(b1.messages, 'outage'), range(0, 20), 'in order, nothing lost')

      // Memberships were re-asserted (an empty Redis knew nothing of them): both ways.
      await up(b.layer)
      await a.layer.groupSend('room', { type: 'after', n: 0 })
      await b.layer.groupSend('room', { type: 'after', n: 1 })
      await waitFor(
        () => ns(b1.messages, 'after').length === 2 && ns(a1.messages, 'after').length === 2,
      )
      assert.equal(b.layer.status().crossProcessGaps, 0)
      assert.equal(b.layer.status().duplicatesSkipped, 0)
    })
  }

  test('a real second OS process gets the outage messages after an empty restart', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const peer = await Peer.start(t, { REDIS_URL: server.url, PREFIX: prefix })
    const { layer } = await makeLayer(t, server.url, { prefix })
    await peer.join('room')
    const mine = await layer.newChannel()
    await layer.groupAdd('room', mine)
    const got = collect(layer, mine)
    t.after(() => got.stop())

    await server.kill()
    await down(layer)
    for (let n = 0; n < 30; n++) await layer.groupSend('room', { type: 'outage', n })
    await local(got, 30)
    assert.equal(got.messages.length, 30, 'same-process loss 0')
    await sleep(500)
    await server.restart({ keepData: false })
    const restartedAt = Date.now()
    await waitFor(() => peer.received.length >= 30, { timeoutMs: 5000 })
    assert.ok(Date.now() - restartedAt < 3000)
    assert.deepEqual(
      peer.received.map((r) => r.message.n),
      range(0, 30),
    )
    // The peer's membership and ours were re-asserted on the empty server.
    await up(layer)
    await waitFor(async () => (await peer.status()).health === 'up')
    await peer.groupSend('room', 5, 'peer.after')
    await waitFor(() => ns(got.messages, 'peer.after').length === 5)
  })
})

describe('Redis frozen (SIGSTOP)', () => {
  test('local delivery is unaffected; publishes caught by the freeze are re-sent once, in order', async (t) => {
    const { server, a, a1, b1 } = await pair(t)
    server.freeze()
    t.after(() => server.thaw())
    // Sent before the freeze is detected: these publishes hang, then time out.
    for (let n = 0; n < 5; n++) await a.layer.groupSend('room', { type: 'frozen', n })
    await local(a1, 5) // local members never wait for Redis, even before the freeze is noticed
    await down(a.layer)
    for (let n = 5; n < 10; n++) await a.layer.groupSend('room', { type: 'frozen', n })
    await local(a1, 10)
    assert.deepEqual(ns(a1.messages, 'frozen'), range(0, 10))
    await sleep(300)
    server.thaw()
    await waitFor(() => b1.messages.length >= 10, { timeoutMs: 5000 })
    await sleep(200) // a duplicate would show up by now
    assert.deepEqual(ns(b1.messages, 'frozen'), range(0, 10), 'exactly once, in order')
    await up(a.layer)
  })
})

describe('one process partitioned from Redis (blackhole)', () => {
  test('the cut-off process keeps its own room; its messages reach the others after, and theirs reach it', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, proxy.urlFor(server), { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const [ca, cb] = [await a.layer.newChannel(), await b.layer.newChannel()]
    await a.layer.groupAdd('room', ca)
    await b.layer.groupAdd('room', cb)
    const a1 = collect(a.layer, ca)
    const b1 = collect(b.layer, cb)
    t.after(() => {
      a1.stop()
      b1.stop()
    })
    await b.layer.groupSend('room', { type: 'from.b', n: 0 })
    await waitFor(() => a1.messages.length === 1)

    proxy.blackhole()
    await down(a.layer)
    assert.equal(b.layer.backend, 'redis', 'only the partitioned process degrades')
    for (let n = 0; n < 10; n++) await a.layer.groupSend('room', { type: 'from.a', n })
    await local(a1, 11)
    for (let n = 1; n < 4; n++) await b.layer.groupSend('room', { type: 'from.b', n })

    proxy.pass()
    await up(a.layer)
    await waitFor(() => ns(b1.messages, 'from.a').length === 10, { timeoutMs: 5000 })
    assert.deepEqual(ns(b1.messages, 'from.a'), range(0, 10))
    await b.layer.groupSend('room', { type: 'from.b', n: 4 })
    await waitFor(() => ns(a1.messages, 'from.b').includes(4))
    // The three B published while A was cut off came back from B's retention, in order.
    assert.deepEqual(ns(a1.messages, 'from.b'), [0, 1, 2, 3, 4])
    assert.equal(a.layer.status().crossProcessGaps, 0)
  })
})

describe('the subscriber connection alone is killed', () => {
  test('the layer notices, recovers and delivers across processes again', async (t) => {
    const { server, a, b, b1 } = await pair(t)
    await server.cli('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await waitFor(
      async () => {
        await a.layer.groupSend('room', { type: 'probe' })
        return b1.messages.some((m) => m.type === 'probe')
      },
      { timeoutMs: 5000, intervalMs: 50 },
    )
    assert.equal(b.layer.backend, 'redis')
  })
})

describe('losses are counted, never hidden', () => {
  test('messages missed while a process was not listening and no longer kept by the sender are counted as crossProcessGaps', async (t) => {
    // The sender keeps its last two messages only (the outbox bounds are the retention's).
    const { a, b, b1 } = await pair(t, { outbox: { maxMessages: 2 } })
    // A gap is a jump from a number already seen: B must have heard A once before.
    await a.layer.groupSend('room', { type: 'seen', n: 0 })
    await waitFor(() => b1.messages.length === 1)
    b.failsoft.health.forceFallback(true)
    await down(b.layer)
    for (let n = 0; n < 5; n++) await a.layer.groupSend('room', { type: 'missed', n })
    await sleep(100)
    b.failsoft.health.forceFallback(false)
    await up(b.layer)
    // Back, B says hello; A's heads show the gap and B asks for it. Only then does A send
    // again: a send before the ask arrives would push one more kept message out of A's two.
    await waitFor(() => b1.messages.length === 3, { message: 'the kept two repaired' })
    await a.layer.groupSend('room', { type: 'seen', n: 6 })
    await waitFor(() => b1.messages.length === 4)
    assert.deepEqual(ns(b1.messages, 'missed'), [3, 4], 'the two still kept are repaired')
    assert.equal(b.layer.status().crossProcessGaps, 3, 'the three no longer kept are counted')
  })

  test('a full outbox drops its oldest messages and counts them', async (t) => {
    const { server, a, b1 } = await pair(t, { outbox: { maxMessages: 5 } })
    await server.kill()
    await down(a.layer)
    for (let n = 0; n < 12; n++) await a.layer.groupSend('room', { type: 'burst', n })
    const outbox = a.layer.status().outbox as { size: number; droppedCount: number }
    assert.deepEqual([outbox.size, outbox.droppedCount], [5, 7])
    await server.start()
    await waitFor(() => b1.messages.length >= 5, { timeoutMs: 5000 })
    await sleep(100)
    assert.deepEqual(ns(b1.messages, 'burst'), range(7, 12), 'the newest five')
  })

  test('outbox messages older than outbox.maxAgeMs are dropped, not sent late', async (t) => {
    // Old batch ~3.7 s old at the flush (3 s + restart + probe + settle), new batch ~0.7 s.
    const { server, a, b1 } = await pair(t, { outbox: { maxAgeMs: 2000 } })
    await server.kill()
    await down(a.layer)
    for (let n = 0; n < 3; n++) await a.layer.groupSend('room', { type: 'stale', n })
    await sleep(3000)
    for (let n = 3; n < 5; n++) await a.layer.groupSend('room', { type: 'stale', n })
    await server.start()
    await waitFor(() => b1.messages.length >= 2, { timeoutMs: 5000 })
    await sleep(100)
    assert.deepEqual(ns(b1.messages, 'stale'), [3, 4])
    assert.equal((a.layer.status().outbox as { droppedAge: number }).droppedAge, 3)
  })
})

describe('Redis down at start-up', () => {
  test('a layer created while Redis is down serves locally, then joins the others', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const b = await makeLayer(t, server.url, { prefix })
    const cb = await b.layer.newChannel()
    await b.layer.groupAdd('room', cb)
    const b1 = collect(b.layer, cb)
    t.after(() => b1.stop())
    await server.kill()
    await down(b.layer)

    const a = await makeLayer(t, server.url, { prefix })
    assert.equal(a.layer.backend, 'memory')
    const ca = await a.layer.newChannel()
    await a.layer.groupAdd('room', ca)
    await a.layer.groupSend('room', { type: 'cold', n: 0 })
    const local = collect(a.layer, ca)
    t.after(() => local.stop())
    await waitFor(() => local.messages.length === 1)

    await server.start()
    await waitFor(() => b1.messages.some((m) => m.type === 'cold'), { timeoutMs: 5000 })
    await up(a.layer)
    await b.layer.groupSend('room', { type: 'back', n: 1 })
    await waitFor(() => local.messages.some((m) => m.type === 'back'))
  })
})

describe('memory-only mode', () => {
  test('groups work in-process and nothing is buffered for other processes', async (t) => {
    const { layer, failsoft } = await makeLayer(t, null)
    const channel = await layer.newChannel()
    await layer.groupAdd('room', channel)
    const got = collect(layer, channel)
    t.after(() => got.stop())
    for (let n = 0; n < 100; n++) await layer.groupSend('room', { type: 'm', n })
    await waitFor(() => got.messages.length === 100)
    assert.equal((layer.status().outbox as { size: number }).size, 0)
    assert.equal(failsoft.status().components['channels:default']?.backend, 'memory')
  })
})
