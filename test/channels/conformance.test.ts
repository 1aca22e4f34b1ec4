// The Channels layer semantics, run against both backends: memory-only mode and a layer on a
// real redis-server. Same assertions, same expectations.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { RedisServer } from '../support/fault-kit.js'
import { makeLayer, receiveWithin, sleep } from './helpers.js'

let server: RedisServer | undefined

const backends: Array<{ name: string; url: () => string | null; backend: 'memory' | 'redis' }> = [
  { name: 'memory-only layer', url: () => null, backend: 'memory' },
  { name: 'Redis-backed layer', url: () => server!.url, backend: 'redis' },
]

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

for (const { name, url, backend } of backends) {
  describe(`conformance: ${name}`, () => {
    before(async () => {
      if (backend === 'redis' && server === undefined) server = await RedisServer.start()
    })
    after(async () => {
      await server?.stop()
      server = undefined
    })

    test(`reports its backend as '${backend}'`, async (t) => {
      const { layer } = await makeLayer(t, url())
      assert.equal(layer.backend, backend)
    })

    test('newChannel returns unique names routable to this process', async (t) => {
      const { layer } = await makeLayer(t, url())
      const names = new Set<string>()
      for (let i = 0; i < 200; i++) names.add(await layer.newChannel())
      assert.equal(names.size, 200)
      for (const channel of names) {
        assert.match(channel, /^specific\.[a-zA-Z0-9]+![a-zA-Z0-9]+$/)
        assert.ok(channel.includes(`.${layer.processId}!`))
      }
      assert.match(await layer.newChannel('chat'), /^chat\./)
    })

    test('send then receive delivers messages in order', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      for (let i = 0; i < 50; i++) await layer.send(channel, { type: 'test.message', n: i })
      for (let i = 0; i < 50; i++) {
        assert.deepEqual(await receiveWithin(layer, channel), { type: 'test.message', n: i })
      }
    })

    test('receive waits for the next message; a normal channel name works too', async (t) => {
      const { layer } = await makeLayer(t, url())
      const pending = receiveWithin(layer, 'worker-queue')
      await sleep(20)
      await layer.send('worker-queue', { type: 'job', id: 1 })
      assert.deepEqual(await pending, { type: 'job', id: 1 })
    })

    test('concurrent receivers on one channel are served first come, first served', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const first = receiveWithin(layer, channel)
      const second = receiveWithin(layer, channel)
      await layer.send(channel, { type: 'a' })
      await layer.send(channel, { type: 'b' })
      assert.equal((await first).type, 'a')
      assert.equal((await second).type, 'b')
    })

    test('aborting a receive rejects with an AbortError and loses no message', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const controller = new AbortController()
      const waiting = layer.receive(channel, { signal: controller.signal })
      controller.abort()
      await assert.rejects(waiting, { name: 'AbortError' })
      await layer.send(channel, { type: 'after.abort' })
      assert.equal((await receiveWithin(layer, channel)).type, 'after.abort')
      await assert.rejects(layer.receive(channel, { signal: AbortSignal.abort() }), {
        name: 'AbortError',
      })
    })

    test('every receiver gets its own copy of a message', async (t) => {
      const { layer } = await makeLayer(t, url())
      const [a, b] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd('copies', a)
      await layer.groupAdd('copies', b)
      const message = { type: 'shared', list: [1, 2] }
      await layer.groupSend('copies', message)
      message.list.push(3)
      const first = await receiveWithin(layer, a)
      ;(first.list as number[]).push(99)
      assert.deepEqual(await receiveWithin(layer, b), { type: 'shared', list: [1, 2] })
    })

    test('send to a full channel throws ChannelFullError (FAILSOFT_CHANNEL_FULL)', async (t) => {
      const { layer } = await makeLayer(t, url(), { capacity: 3 })
      const channel = await layer.newChannel()
      for (let i = 0; i < 3; i++) await layer.send(channel, { type: 'fill', i })
      await assert.rejects(layer.send(channel, { type: 'fill', i: 3 }), {
        name: 'ChannelFullError',
        code: 'FAILSOFT_CHANNEL_FULL',
      })
      assert.equal((await receiveWithin(layer, channel)).i, 0)
      await layer.send(channel, { type: 'fill', i: 4 }) // room again
    })

    test('groupSend skips full members, serves the others and counts the skips', async (t) => {
      const { layer } = await makeLayer(t, url(), { capacity: 2 })
      const [slow, fast] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd('room', slow)
      await layer.groupAdd('room', fast)
      for (let i = 0; i < 5; i++) {
        await layer.groupSend('room', { type: 'tick', i })
        assert.equal((await receiveWithin(layer, fast)).i, i)
      }
      assert.equal(layer.status().skippedFull, 3)
      assert.equal((await receiveWithin(layer, slow)).i, 0)
      assert.equal((await receiveWithin(layer, slow)).i, 1)
    })

    test('messages older than expirySeconds are dropped at receive', async (t) => {
      const { layer } = await makeLayer(t, url(), { expirySeconds: 0.1 })
      const channel = await layer.newChannel()
      await layer.send(channel, { type: 'old' })
      await sleep(150)
      await layer.send(channel, { type: 'fresh' })
      assert.equal((await receiveWithin(layer, channel)).type, 'fresh')
      assert.ok((layer.status().expired as number) >= 1)
    })

    test('expired messages do not count against capacity', async (t) => {
      const { layer } = await makeLayer(t, url(), { expirySeconds: 0.1, capacity: 1 })
      const channel = await layer.newChannel()
      await layer.send(channel, { type: 'old' })
      await sleep(150)
      await layer.send(channel, { type: 'fresh' })
      assert.equal((await receiveWithin(layer, channel)).type, 'fresh')
    })

    test('groupAdd / groupDiscard control who receives a groupSend', async (t) => {
      const { layer } = await makeLayer(t, url())
      const [a, b] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd('poll.42', a)
      await layer.groupAdd('poll.42', b)
      await layer.groupAdd('poll.42', b) // idempotent
      await layer.groupSend('poll.42', { type: 'poll.results', counts: [1] })
      assert.deepEqual(await receiveWithin(layer, a), { type: 'poll.results', counts: [1] })
      assert.deepEqual(await receiveWithin(layer, b), { type: 'poll.results', counts: [1] })
      await layer.groupDiscard('poll.42', b)
      await layer.groupDiscard('poll.42', b) // not a member: no error
      await layer.groupDiscard('never-created', a)
      await layer.groupSend('poll.42', { type: 'poll.results', counts: [2] })
      assert.deepEqual(await receiveWithin(layer, a), { type: 'poll.results', counts: [2] })
      await assert.rejects(receiveWithin(layer, b, 100), { name: 'TimeoutError' })
      await layer.groupSend('empty-group', { type: 'nobody' }) // no members: fine
    })

    test('memberships expire after groupExpirySeconds unless refreshed', async (t) => {
      const { layer } = await makeLayer(t, url(), { groupExpirySeconds: 0.15 })
      const [stale, refreshed] = [await layer.newChannel(), await layer.newChannel()]
      await layer.groupAdd('g', stale)
      await layer.groupAdd('g', refreshed)
      await sleep(100)
      await layer.groupAdd('g', refreshed)
      await sleep(100)
      await layer.groupSend('g', { type: 'late' })
      assert.equal((await receiveWithin(layer, refreshed)).type, 'late')
      await assert.rejects(receiveWithin(layer, stale, 100), { name: 'TimeoutError' })
      assert.ok((layer.status().membershipsExpired as number) >= 1)
    })

    test('flush empties buffers and groups; the layer stays usable', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      await layer.groupAdd('g', channel)
      await layer.send(channel, { type: 'before' })
      await layer.flush()
      assert.equal(layer.status().groups, 0)
      assert.equal(layer.status().buffered, 0)
      await layer.groupSend('g', { type: 'to.nobody' })
      await layer.send(channel, { type: 'after' })
      assert.equal((await receiveWithin(layer, channel)).type, 'after')
    })

    test('invalid names are rejected with FAILSOFT_INVALID_NAME', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const bad = ['', 'has space', 'ünicode', 'a'.repeat(100), 'two!bangs!', 'colon:name']
      for (const name of bad) {
        await assert.rejects(layer.send(name, { type: 'x' }), { code: 'FAILSOFT_INVALID_NAME' })
        await assert.rejects(layer.groupAdd(name, channel), { code: 'FAILSOFT_INVALID_NAME' })
      }
      await assert.rejects(layer.groupAdd('g!x', channel), { code: 'FAILSOFT_INVALID_NAME' })
      await assert.rejects(layer.groupSend(42 as unknown as string, { type: 'x' }), {
        name: 'InvalidNameError',
        code: 'FAILSOFT_INVALID_NAME',
      })
      await layer.send('a'.repeat(99), { type: 'ok' }) // 99 characters: fine
      await assert.rejects(layer.newChannel('bad prefix'), { code: 'FAILSOFT_INVALID_NAME' })
    })

    test('a specific channel of another process cannot be received on or grouped here', async (t) => {
      const { layer } = await makeLayer(t, url())
      await assert.rejects(layer.receive('specific.otherProcess!abc'), {
        code: 'FAILSOFT_INVALID_NAME',
      })
      await assert.rejects(layer.groupAdd('g', 'specific.otherProcess!abc'), {
        code: 'FAILSOFT_INVALID_NAME',
      })
    })

    test('invalid messages are rejected with FAILSOFT_INVALID_MESSAGE', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const cyclic: Record<string, unknown> = { type: 'cyclic' }
      cyclic.self = cyclic
      const bad: unknown[] = [
        null,
        'text',
        [{ type: 'x' }],
        {},
        { type: 42 },
        { type: '' },
        new (class Custom {
          type = 'x'
        })(),
        cyclic,
        { type: 'big', n: 10n },
      ]
      for (const message of bad) {
        await assert.rejects(layer.send(channel, message as { type: string }), {
          name: 'InvalidMessageError',
          code: 'FAILSOFT_INVALID_MESSAGE',
        })
      }
    })

    test('messages over maxMessageBytes are rejected with FAILSOFT_MESSAGE_TOO_LARGE', async (t) => {
      const { layer } = await makeLayer(t, url(), { maxMessageBytes: 1024 })
      const channel = await layer.newChannel()
      await assert.rejects(layer.groupSend('g', { type: 'big', text: 'x'.repeat(2000) }), {
        name: 'MessageTooLargeError',
        code: 'FAILSOFT_MESSAGE_TOO_LARGE',
      })
      // Multi-byte characters count as their UTF-8 size.
      await assert.rejects(layer.send(channel, { type: 'big', text: 'é'.repeat(600) }), {
        code: 'FAILSOFT_MESSAGE_TOO_LARGE',
      })
      await layer.send(channel, { type: 'ok', text: 'é'.repeat(400) })
    })

    test('a __proto__ key in a message never reaches a prototype', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const message = JSON.parse('{"type":"evil","__proto__":{"polluted":true}}') as {
        type: string
      }
      await layer.send(channel, message)
      const received = await receiveWithin(layer, channel)
      assert.equal(received.type, 'evil')
      assert.equal(({} as { polluted?: boolean }).polluted, undefined)
      assert.equal(Object.getPrototypeOf(received), Object.prototype)
    })

    test('safeGroupSend resolves true, or false (never throws) on invalid input', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      await layer.groupAdd('g', channel)
      assert.equal(await layer.safeGroupSend('g', { type: 'ok' }), true)
      assert.equal(await layer.safeGroupSend('bad name', { type: 'ok' }), false)
      assert.equal(await layer.safeGroupSend('g', { nope: 1 } as never), false)
      assert.equal((await receiveWithin(layer, channel)).type, 'ok')
    })

    test('close rejects pending receives and later calls with FAILSOFT_CLOSED', async (t) => {
      const { layer } = await makeLayer(t, url())
      const channel = await layer.newChannel()
      const pending = layer.receive(channel)
      await layer.close()
      await assert.rejects(pending, { code: 'FAILSOFT_CLOSED' })
      await assert.rejects(layer.send(channel, { type: 'x' }), { code: 'FAILSOFT_CLOSED' })
      assert.equal(await layer.safeGroupSend('g', { type: 'x' }), false)
    })
  })
}
