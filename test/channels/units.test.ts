// Pure unit tests of the channel layer's building blocks (no Redis involved).
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decodeWire, encodeWire, serializeMessage } from '../../src/channels/message.js'
import { assertChannelName, ownerOf } from '../../src/channels/names.js'
import { Outbox } from '../../src/channels/outbox.js'
import type { RangeTuple } from '../../src/channels/control.js'
import type { WireMessage } from '../../src/channels/message.js'
import { Reassembly } from '../../src/channels/repair.js'
import { Retention } from '../../src/channels/retention.js'
import { LocalChannels } from '../../src/channels/memory-layer.js'

describe('wire format', () => {
  test('round-trips a message, including a type containing the separator', () => {
    const entry = serializeMessage({ type: 'a|b', text: 'x|y', n: 1 }, 1024, Date.now())
    const wire = decodeWire(encodeWire('proc1', { stream: 3, seq: 42 }, 'room', entry))
    assert.deepEqual(wire, { origin: 'proc1', stream: 3, seq: 42, target: 'room', entry })
  })

  test('anything malformed decodes to null, never throws', () => {
    for (const text of [
      '',
      'f1|',
      'f1|a|1|2|3|t',
      'f1|a|x|1|0|g|1|t{}',
      'f1|a|1|1|0|g|9|t{}',
      'f1|a|1|1|0|g|1|t[1]',
      'xx|a|1|1|0|g|1|t{}',
    ]) {
      assert.equal(decodeWire(text), null, text)
    }
  })
})

describe('names', () => {
  test('the owner of a specific channel is the segment before the "!"', () => {
    assert.equal(ownerOf('specific.abc123!xyz'), 'abc123')
    assert.equal(ownerOf('my.prefix.abc123!xyz'), 'abc123')
    assert.equal(ownerOf('abc!'), 'abc')
    assert.equal(ownerOf('plain.channel'), null)
  })

  test("Channels' rule: a trailing '!' is valid, a second one is not", () => {
    assertChannelName('specific.abc!')
    assert.throws(() => assertChannelName('a!b!c'), { code: 'FAILSOFT_INVALID_NAME' })
  })
})

describe('reassembly (receiver side of gap repair)', () => {
  const wire = (seq: number, stream = 1, origin = 'p'): WireMessage => ({
    origin,
    stream,
    seq,
    target: 'room',
    entry: { type: 'm', json: `{"type":"m","n":${seq}}`, sentAt: 0 },
  })
  function setup(clean = true) {
    const delivered: number[] = []
    const requests: RangeTuple[] = []
    const reassembly = new Reassembly({
      deliver: (_topic, w) => delivered.push(w.seq),
      request: (_origin, range) => requests.push(range),
      topicInfo: () => ({ joinedAt: 100, clean }),
      canAsk: () => true,
      giveUpMs: 31_000,
    })
    return { reassembly, delivered, requests }
  }

  test('in order, duplicates skipped; a gap is held, asked for, and filled in order', () => {
    const { reassembly, delivered, requests } = setup()
    reassembly.accept('t', wire(1), false)
    reassembly.accept('t', wire(2), false)
    reassembly.accept('t', wire(2), false) // re-sent from an outbox
    reassembly.accept('t', wire(5), false) // 3 and 4 missing
    assert.deepEqual(delivered, [1, 2])
    assert.deepEqual(requests, [['t', 1, 2, 5, 0]])
    reassembly.accept('t', wire(3), true)
    reassembly.accept('t', wire(4), true)
    reassembly.resent('p', [['t', 1, 2, 5, 0]])
    assert.deepEqual(delivered, [1, 2, 3, 4, 5])
    assert.equal(reassembly.counters.duplicates, 1)
    assert.equal(reassembly.counters.lost, 0)
    assert.equal(reassembly.counters.repaired, 2)
  })

  test('what the publisher no longer keeps is counted lost, and the rest goes on', () => {
    const { reassembly, delivered } = setup()
    reassembly.accept('t', wire(1), false)
    reassembly.accept('t', wire(6), false)
    reassembly.accept('t', wire(5), true) // 2, 3, 4 are gone
    reassembly.resent('p', [['t', 1, 1, 6, 0]])
    assert.deepEqual(delivered, [1, 5, 6])
    assert.equal(reassembly.counters.lost, 3)
  })

  test('a heads notice reveals a tail that never arrived; a first contact after an interruption is repaired from join time', () => {
    const { reassembly, delivered, requests } = setup(false)
    reassembly.heads('p', [['t', 1, 3, 1]])
    assert.deepEqual(requests, [['t', 1, 0, 4, 100]])
    reassembly.accept('t', wire(2), true)
    reassembly.accept('t', wire(3), true)
    reassembly.resent('p', [['t', 1, 0, 4, 100]])
    assert.deepEqual(delivered, [2, 3], 'seq 1 was sent before this process joined')
    reassembly.heads('p', [['t', 1, 3, 1]])
    assert.equal(requests.length, 1, 'up to date: nothing asked')
  })

  test('a range just asked is not asked again when the publisher shows up: that ask is on its way', async () => {
    const { reassembly, requests } = setup(false)
    reassembly.heads('p', [['t', 1, 3, 1]]) // asks [0, 4)
    reassembly.heads('p', [['t', 1, 3, 1]]) // the publisher's second notice, right after
    reassembly.resubscribed()
    assert.equal(requests.length, 1, 'one ask: the publisher would send the range twice')
    await new Promise((resolve) => setTimeout(resolve, 300))
    reassembly.heads('p', [['t', 1, 3, 1]])
    assert.equal(requests.length, 2, 'an older ask may have been lost: asked again')
  })

  test('a new stream from the same publisher starts over; a late answer nobody waits for is dropped', () => {
    const { reassembly, delivered } = setup()
    reassembly.accept('t', wire(1), false)
    reassembly.accept('t', wire(1, 2), false)
    reassembly.accept('t', wire(7, 1), true)
    assert.deepEqual(delivered, [1, 1])
  })
})

describe('retention (sender side of gap repair)', () => {
  const kept = (seq: number, at: number, topic = 't', payload = 'x'.repeat(10)) => ({
    topic,
    stream: 1,
    seq,
    payload,
    at,
  })

  test('keeps per topic, drops the oldest at each bound, and answers ranges and heads', () => {
    const retention = new Retention({ maxMessages: 4, maxBytes: 1000, maxAgeMs: 100 })
    for (let seq = 1; seq <= 5; seq++) retention.keep(kept(seq, seq * 10))
    retention.keep(kept(1, 55, 'u'))
    assert.equal(retention.size, 4)
    assert.deepEqual(retention.evicted, { count: 2, bytes: 0, age: 0 })
    assert.deepEqual(
      retention.range('t', 1, 3, 6, 0).map((m) => m.seq),
      [4, 5],
    )
    assert.deepEqual(
      retention.range('t', 0, 0, 0, 45).map((m) => m.seq),
      [5],
      'stream 0: any, filtered by time',
    )
    assert.deepEqual(retention.heads(), [
      { topic: 't', stream: 1, seq: 5, first: 3 },
      { topic: 'u', stream: 1, seq: 1, first: 1 },
    ])
    retention.expire(145) // older than 45 goes
    assert.deepEqual(retention.heads(), [
      { topic: 't', stream: 1, seq: 5, first: 5 },
      { topic: 'u', stream: 1, seq: 1, first: 1 },
    ])
  })
})

describe('outbox', () => {
  const item = (order: number, at = 0, payload = 'x'.repeat(10)) => ({
    topic: 't',
    payload,
    order,
    at,
    stream: 1,
    seq: order,
  })

  test('keeps publish order, also for a failed publish that comes back late', () => {
    const outbox = new Outbox({ maxMessages: 10, maxBytes: 1000, maxAgeMs: 1000 })
    outbox.push(item(2))
    outbox.push(item(3))
    outbox.push(item(1))
    assert.deepEqual(
      outbox.peek(10, 0).map((i) => i.order),
      [1, 2, 3],
    )
  })

  test('drops the oldest at the count, size and age bounds, and counts each', () => {
    const outbox = new Outbox({ maxMessages: 3, maxBytes: 35, maxAgeMs: 100 })
    for (let order = 1; order <= 5; order++) outbox.push(item(order, order * 10))
    assert.deepEqual(outbox.counters.droppedCount, 2)
    outbox.push(item(6, 60, 'x'.repeat(20))) // 4 items > 3: drop 3; 40 bytes > 35: drop 4
    assert.deepEqual([outbox.counters.droppedCount, outbox.counters.droppedBytes], [3, 1])
    assert.equal(outbox.bytes, 30)
    assert.deepEqual(
      outbox.peek(10, 155).map((i) => i.order), // 5 (at 50) is older than 155 - 100
      [6],
    )
    assert.equal(outbox.counters.droppedAge, 1)
    outbox.commit(1)
    assert.deepEqual([outbox.size, outbox.bytes, outbox.counters.flushed], [0, 0, 1])
  })
})

describe('local channels: the backlog of messages from other processes', () => {
  const hooks = { groupEmptied: () => undefined, channelRemoved: () => undefined }
  const entry = (n: number): ReturnType<typeof serializeMessage> =>
    serializeMessage({ type: 'm', n }, 1024, Date.now())
  const n = (e: { json: string }): unknown => (JSON.parse(e.json) as { n: unknown }).n

  test('a full channel keeps remote messages in order behind its buffer, up to the bound', async () => {
    const local = new LocalChannels({
      capacity: 2,
      backlog: { messages: 3, bytes: 1 << 20 },
      expiryMs: 60_000,
      groupExpiryMs: 60_000,
      hooks,
    })
    local.touch('c')
    const accepted = [0, 1, 2, 3, 4, 5].map((i) => local.deliver('c', entry(i), true))
    assert.deepEqual(
      accepted,
      [true, true, true, true, true, false],
      '2 buffered, 3 waiting, 1 skipped',
    )
    assert.equal(local.bufferedCount, 5)
    // A local send still meets the capacity: it is the sender's to handle (ChannelFullError).
    assert.equal(local.deliver('c', entry(9)), false)
    const got: unknown[] = []
    for (let i = 0; i < 5; i++) got.push(n(await local.receive('c', undefined)))
    assert.deepEqual(got, [0, 1, 2, 3, 4])
    assert.equal(local.bufferedCount, 0)
  })

  test('without a backlog bound a remote message to a full channel is skipped, as before', () => {
    const local = new LocalChannels({ capacity: 1, expiryMs: 60_000, groupExpiryMs: 60_000, hooks })
    assert.equal(local.deliver('c', entry(0), true), true)
    assert.equal(local.deliver('c', entry(1), true), false)
  })
})
