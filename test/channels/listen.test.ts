// layer.listen(): a push consumer's channel (what failsoft/socket.io receives on), in memory-only
// mode and across two processes' layers on a real redis-server.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { ChannelMessage } from '../../src/index.js'
import { RedisServer, waitFor } from '../support/fault-kit.js'
import { makeLayer, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('layer.listen', () => {
  let server: RedisServer
  before(async () => {
    server = await RedisServer.start()
  })
  after(() => server.stop())

  test('hands every message to the handler synchronously, in order, past capacity', async (t) => {
    const { layer } = await makeLayer(t, null, { capacity: 5 })
    const got: ChannelMessage[] = []
    const listener = layer.listen((message) => got.push(message), 'sio')
    assert.match(listener.channel, new RegExp(`^sio\\.${layer.processId}!`))
    await layer.groupAdd('g', listener.channel)
    for (let n = 0; n < 50; n++) void layer.groupSend('g', { type: 'm', n })
    // synchronous: every message is there before anything was awaited
    assert.deepEqual(
      got.map((m) => m.n),
      Array.from({ length: 50 }, (_, n) => n),
    )
    for (let n = 0; n < 20; n++) await layer.send(listener.channel, { type: 'direct', n })
    assert.equal(got.length, 70)
    assert.equal(layer.status().skippedFull, 0)
  })

  test('each message is a copy; a throwing handler does not stop later deliveries', async (t) => {
    const { layer } = await makeLayer(t, null)
    const got: ChannelMessage[] = []
    const listener = layer.listen((message) => {
      got.push(message)
      if (message.n === 0) throw new Error('handler bug')
    })
    const sent = { type: 'm', n: 0, nested: { a: 1 } }
    await layer.send(listener.channel, sent)
    await layer.send(listener.channel, { type: 'm', n: 1 })
    assert.equal(got.length, 2)
    assert.notEqual(got[0], sent)
    assert.deepEqual(got[0], sent)
  })

  test('close() leaves the groups and stops deliveries; idempotent', async (t) => {
    const { layer } = await makeLayer(t, null)
    let count = 0
    const listener = layer.listen(() => count++)
    await layer.groupAdd('g', listener.channel)
    await layer.groupSend('g', { type: 'm' })
    listener.close()
    listener.close()
    await layer.groupSend('g', { type: 'm' })
    assert.equal(count, 1)
    assert.equal(layer.status().groups, 0)
  })

  test('memberships of a listener do not expire and its channel is never swept', async (t) => {
    const { layer } = await makeLayer(t, null, { expirySeconds: 0.05, groupExpirySeconds: 0.05 })
    let count = 0
    const listener = layer.listen(() => count++)
    await layer.groupAdd('g', listener.channel)
    await new Promise((resolve) => setTimeout(resolve, 300)) // several sweeps
    await layer.groupSend('g', { type: 'm' })
    assert.equal(count, 1)
    assert.equal(layer.status().membershipsExpired, 0)
  })

  test('groupSend with except leaves out that member here, not elsewhere', async (t) => {
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const got = { self: 0, peer: 0, remote: 0 }
    const self = a.layer.listen(() => got.self++)
    const peer = a.layer.listen(() => got.peer++)
    const remote = b.layer.listen(() => got.remote++)
    for (const [layer, listener] of [
      [a.layer, self],
      [a.layer, peer],
      [b.layer, remote],
    ] as const) {
      await layer.groupAdd('room', listener.channel)
    }
    await a.layer.groupSend('room', { type: 'm' }, { except: self.channel })
    await waitFor(() => got.remote === 1)
    assert.deepEqual(got, { self: 0, peer: 1, remote: 1 })
  })

  test('receives group messages and direct sends from another process, through Redis', async (t) => {
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const got: ChannelMessage[] = []
    const listener = b.layer.listen((message) => got.push(message))
    await b.layer.groupAdd('room', listener.channel)
    for (let n = 0; n < 300; n++) await a.layer.groupSend('room', { type: 'g', n })
    await a.layer.send(listener.channel, { type: 'direct' })
    await waitFor(() => got.length === 301, { message: `got ${got.length} of 301` })
    assert.deepEqual(
      got.slice(0, 300).map((m) => m.n),
      Array.from({ length: 300 }, (_, n) => n),
    )
    assert.equal(got[300]!.type, 'direct')
  })
})
