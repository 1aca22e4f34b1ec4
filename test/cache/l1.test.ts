// memory.mode 'l1': reads served from memory while Redis is up, kept correct across
// processes by the pub/sub bus.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { sleep, startRedis, waitFor, type RedisServer } from '../support/fault-kit.js'
import { guardUnhandled, open } from './helpers.js'

guardUnhandled()

async function pair(t: { after(fn: () => unknown): void }, server: RedisServer) {
  const one = open(t, { redis: server.url })
  const two = open(t, { redis: server.url, prefix: one.prefix })
  await Promise.all([one.failsoft.ready(), two.failsoft.ready()])
  const options = { namespace: 'l1', memory: { mode: 'l1' as const } }
  const a = one.failsoft.cache(options)
  const b = two.failsoft.cache(options)
  await waitFor(() => a.status().busConnected === true && b.status().busConnected === true, {
    message: 'both buses connected',
  })
  return { a, b }
}

describe("memory mode 'l1'", () => {
  test('repeated reads are served from memory while Redis is up', async (t) => {
    const server = await startRedis(t)
    const { a } = await pair(t, server)
    await a.set('k', { v: 1 })
    for (let i = 0; i < 10; i++) assert.deepEqual(await a.get('k'), { v: 1 })
    assert.ok(a.status().memoryHits >= 9, `memoryHits ${a.status().memoryHits}`)
  })

  test("another process's write, delete and clear invalidate this process's memory", async (t) => {
    const server = await startRedis(t)
    const { a, b } = await pair(t, server)
    await a.set('k', 'v1')
    assert.equal(await b.get('k'), 'v1')
    assert.equal(await b.get('k'), 'v1') // now an L1 hit in b
    await a.set('k', 'v2')
    await waitFor(async () => (await b.get('k')) === 'v2', { message: 'b sees v2' })
    await a.delete('k')
    await waitFor(async () => (await b.get('k')) === undefined, { message: 'b sees the delete' })
    await a.set('x', 1)
    assert.equal(await b.get('x'), 1)
    await a.clear()
    await waitFor(async () => (await b.get('x')) === undefined, { message: 'b sees the clear' })
  })

  test('a memory copy never outlives the TTL the key has in Redis', async (t) => {
    const server = await startRedis(t)
    const { a, b } = await pair(t, server)
    await a.set('short', 'v', { ttlSeconds: 0.3 })
    assert.equal(await b.get('short'), 'v')
    assert.equal(await b.get('short'), 'v')
    await sleep(400)
    assert.equal(await b.get('short'), undefined)
    assert.equal(await a.get('short'), undefined)
  })

  test('while the bus is disconnected nothing is served from memory; it reconnects by itself', async (t) => {
    const server = await startRedis(t)
    const { a, b } = await pair(t, server)
    await a.set('k', 'v1')
    assert.equal(await b.get('k'), 'v1')
    await server.cli('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await waitFor(() => b.status().busConnected === false, { message: 'bus down' })
    // Changed behind b's back while it cannot hear about it.
    await a.set('k', 'v2')
    assert.equal(await b.get('k'), 'v2')
    await waitFor(() => b.status().busConnected === true, {
      timeoutMs: 3000,
      message: 'bus reconnected',
    })
    await a.set('k', 'v3')
    await waitFor(async () => (await b.get('k')) === 'v3', { message: 'b sees v3' })
  })
})
