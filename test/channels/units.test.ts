// Pure unit tests of the channel layer's building blocks (no Redis involved).
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decodeWire, encodeWire, serializeMessage } from '../../src/channels/message.js'
import { assertChannelName, ownerOf } from '../../src/channels/names.js'
import { Outbox } from '../../src/channels/outbox.js'
import { PublisherSequences, ReceiverSequences } from '../../src/channels/sequence.js'

describe('wire format', () => {
  test('round-trips a message, including a type containing the separator', () => {
    const entry = serializeMessage({ type: 'a|b', text: 'x|y', n: 1 }, 1024)
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

describe('sequences', () => {
  test('a receiver counts gaps, skips duplicates and follows a new stream', () => {
    const publisher = new PublisherSequences()
    const receiver = new ReceiverSequences()
    const seen = (n: { stream: number; seq: number }) =>
      receiver.observe('t', 'p', n.stream, n.seq, 0)
    const numbers = Array.from({ length: 6 }, () => ({ ...publisher.next('t', 0) }))
    assert.equal(seen(numbers[0]!), 'new')
    assert.equal(seen(numbers[1]!), 'new')
    assert.equal(seen(numbers[4]!), 'new') // 3 and 4 lost
    assert.equal(receiver.gaps, 2)
    assert.equal(seen(numbers[1]!), 'duplicate') // re-sent from an outbox
    assert.equal(receiver.duplicates, 1)
    publisher.prune(1) // idle: forgotten
    const restarted = publisher.next('t', 2)
    assert.equal(restarted.seq, 1)
    assert.equal(seen(restarted), 'new', 'a new stream is not a duplicate')
    assert.equal(receiver.gaps, 2)
  })
})

describe('outbox', () => {
  const item = (order: number, at = 0, payload = 'x'.repeat(10)) => ({
    topic: 't',
    payload,
    order,
    at,
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
