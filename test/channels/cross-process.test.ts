// Cross-process delivery through a real redis-server: two failsoft instances in this process
// (separate connections, separate process ids) and a real second OS process.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { createFailsoft } from '../../src/index.js'
import { collect, FAST_HEALTH, makeLayer, receiveWithin, sleep, uniquePrefix } from './helpers.js'
import { Peer } from './peer.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('cross-process delivery (two instances, one Redis)', () => {
  test('groupSend reaches members in both processes, each exactly once, in order', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    assert.notEqual(a.layer.processId, b.layer.processId)
    const [a1, b1, b2] = [
      await a.layer.newChannel(),
      await b.layer.newChannel(),
      await b.layer.newChannel(),
    ]
    await a.layer.groupAdd('room', a1)
    await b.layer.groupAdd('room', b1)
    await b.layer.groupAdd('room', b2)
    const got = { a1: collect(a.layer, a1), b1: collect(b.layer, b1), b2: collect(b.layer, b2) }
    for (let n = 0; n < 20; n++) await a.layer.groupSend('room', { type: 'from.a', n })
    for (let n = 0; n < 20; n++) await b.layer.groupSend('room', { type: 'from.b', n })
    await waitFor(() => Object.values(got).every((c) => c.messages.length >= 40), {
      message: 'every member gets 40 messages',
    })
    await sleep(100) // a duplicate (our own publish echoed back) would arrive by now
    for (const c of Object.values(got)) {
      c.stop()
      assert.equal(c.messages.length, 40)
      const fromA = c.messages.filter((m) => m.type === 'from.a').map((m) => m.n)
      const fromB = c.messages.filter((m) => m.type === 'from.b').map((m) => m.n)
      assert.deepEqual(fromA, [...Array(20).keys()])
      assert.deepEqual(fromB, [...Array(20).keys()])
    }
    assert.equal(a.layer.status().crossProcessGaps, 0)
    assert.equal(b.layer.status().crossProcessGaps, 0)
  })

  test('a layer created after start-up (Redis already up) subscribes by itself', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const late = createFailsoft({ redis: server.url, prefix, logger: false, health: FAST_HEALTH })
    t.after(() => late.close())
    assert.equal(await late.ready(), 'up')
    const b = late.channels()
    const a = await makeLayer(t, server.url, { prefix })
    const channel = await b.newChannel()
    await b.groupAdd('room', channel)
    await a.layer.groupSend('room', { type: 'hello' })
    assert.equal((await receiveWithin(b, channel)).type, 'hello')
    await a.layer.send(channel, { type: 'direct' })
    assert.equal((await receiveWithin(b, channel)).type, 'direct')
  })

  test('send reaches a specific channel of another process with one publish', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const channel = await b.layer.newChannel()
    await a.layer.send(channel, { type: 'direct', text: 'hello' })
    assert.deepEqual(await receiveWithin(b.layer, channel), { type: 'direct', text: 'hello' })
    assert.equal(a.layer.status().published, 1)
  })

  test('a normal channel name is delivered to every process receiving on it', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const waiting = receiveWithin(b.layer, 'jobs')
    await waitFor(() => (b.layer.status().subscriptions as number) >= 2)
    await a.layer.send('jobs', { type: 'job', id: 7 })
    assert.deepEqual(await waiting, { type: 'job', id: 7 })
  })

  test('a send to a process that is gone is counted as undeliverable', async (t) => {
    const server = await startRedis(t)
    const { layer } = await makeLayer(t, server.url)
    await layer.send('specific.goneProcess!abc', { type: 'lost' })
    await waitFor(() => layer.status().undeliverable === 1)
  })

  test('a send to a process that is gone, kept in the outbox during an outage, is counted as undeliverable when flushed', async (t) => {
    const server = await startRedis(t)
    const { failsoft, layer } = await makeLayer(t, server.url)
    failsoft.health.forceFallback(true)
    await layer.send('specific.goneProcess!abc', { type: 'lost' })
    assert.equal(layer.status().outbox.size, 1)
    failsoft.health.forceFallback(false)
    await waitFor(() => layer.status().undeliverable === 1)
  })

  test('a remote send to a full channel waits in its backlog, then is dropped and counted at the receiver', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    // The backlog of a full channel is bounded by the receiver's outbox bounds: 1 here.
    const b = await makeLayer(t, server.url, { prefix, capacity: 2, outbox: { maxMessages: 1 } })
    const channel = await b.layer.newChannel()
    for (let n = 0; n < 5; n++) await a.layer.send(channel, { type: 'burst', n })
    await waitFor(() => b.layer.status().skippedFull === 2)
    assert.equal(b.layer.status().buffered, 3)
    for (const n of [0, 1, 2]) assert.equal((await receiveWithin(b.layer, channel)).n, n)
  })

  test('malformed payloads published by a stranger are dropped and counted, never parsed into objects', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const { layer } = await makeLayer(t, server.url, { prefix, maxMessageBytes: 1024 })
    const channel = await layer.newChannel()
    await layer.groupAdd('g', channel)
    const topic = `${prefix}:ch:default:g:g`
    const evil = [
      'not ours',
      'f1|x|1|1|0|g|3|bad{"type":"bad"',
      `f1|x|1|2|${Date.now()}|g|4|evil{"type":"other"}`,
      `f1|x|1|3|${Date.now()}|g|4|huge{"type":"huge","x":"${'y'.repeat(5000)}"}`,
    ]
    for (const payload of evil) await server.cli('PUBLISH', topic, payload)
    await server.cli(
      'PUBLISH',
      topic,
      `f1|x|1|4|${Date.now()}|g|4|safe{"type":"safe","__proto__":{"polluted":true}}`,
    )
    const message = await receiveWithin(layer, channel)
    assert.equal(message.type, 'safe')
    assert.equal(Object.hasOwn(message, '__proto__'), false)
    assert.equal(({} as { polluted?: boolean }).polluted, undefined)
    assert.equal(layer.status().malformed, 4)
  })
})

describe('cross-process delivery with a real second OS process', () => {
  test('group and direct messages flow both ways between two processes', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const peer = await Peer.start(t, { REDIS_URL: server.url, PREFIX: prefix })
    const { layer } = await makeLayer(t, server.url, { prefix })
    assert.notEqual(peer.processId, layer.processId)
    const peerChannel = await peer.join('room')
    const mine = await layer.newChannel()
    await layer.groupAdd('room', mine)
    const got = collect(layer, mine)
    t.after(() => got.stop())

    for (let n = 0; n < 25; n++) await layer.groupSend('room', { type: 'from.parent', n })
    await waitFor(() => peer.received.length >= 25, { message: 'peer got the group messages' })
    assert.deepEqual(
      peer.received.map((r) => r.message.n),
      [...Array(25).keys()],
    )
    // Our own member got them too, each once.
    await waitFor(() => got.messages.length >= 25)

    await peer.groupSend('room', 25, 'from.peer')
    await waitFor(() => got.messages.length >= 50, { message: 'parent got the peer messages' })
    assert.deepEqual(
      got.messages.filter((m) => m.type === 'from.peer').map((m) => m.n),
      [...Array(25).keys()],
    )

    await layer.send(peerChannel, { type: 'direct.to.peer' })
    await waitFor(() => peer.received.some((r) => r.message.type === 'direct.to.peer'))
    await peer.send(mine, { type: 'direct.to.parent' })
    await waitFor(() => got.messages.some((m) => m.type === 'direct.to.parent'))
    const status = await peer.status()
    assert.equal(status.health, 'up')
    assert.equal(status.layer.crossProcessGaps, 0)
  })
})
