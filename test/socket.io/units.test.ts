// The parts of failsoft/socket.io that need no Socket.IO server: the binary encoding, the
// outage-aware liveness rule, pending requests, options and the shared layer.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft } from '../../src/index.js'
import { createAdapter, defaultAdapterOptions, groupFor } from '../../src/socket.io.js'
import {
  UnencodablePayloadError,
  decodeBinary,
  encodeBinary,
} from '../../src/socket.io/encoding.js'
import { layerFor } from '../../src/socket.io/layer-registry.js'
import { Liveness } from '../../src/socket.io/liveness.js'
import { resolveAdapterOptions } from '../../src/socket.io/options.js'
import { PendingRequests } from '../../src/socket.io/pending.js'

/** What the receiver sees: the JSON the layer carries, parsed, then restored. */
function roundTrip(value: unknown): unknown {
  const { value: encoded, marked } = encodeBinary(value)
  const parsed: unknown = JSON.parse(JSON.stringify(encoded))
  return marked ? decodeBinary(parsed) : parsed
}

describe('binary encoding', () => {
  test('Buffers, ArrayBuffers and typed arrays come back as Buffers, wherever they are', () => {
    const bytes = new Uint8Array([0, 1, 2, 255])
    const out = roundTrip({
      packet: { type: 2, data: ['ev', Buffer.from([3, 4]), { deep: [bytes.buffer] }] },
      view: new Uint16Array([1, 2]),
      slice: Buffer.from([9, 8, 7, 6]).subarray(1, 3),
    }) as { packet: { data: unknown[] }; view: Buffer; slice: Buffer }
    assert.ok(Buffer.isBuffer(out.packet.data[1]))
    assert.deepEqual([...(out.packet.data[1] as Buffer)], [3, 4])
    const deep = (out.packet.data[2] as { deep: Buffer[] }).deep[0]!
    assert.deepEqual([...deep], [0, 1, 2, 255])
    assert.deepEqual([...out.view], [1, 0, 2, 0]) // the view's bytes, little-endian
    assert.deepEqual([...out.slice], [8, 7])
  })

  test('values without binary are passed through as they are (no copy, nothing to restore)', () => {
    const value = { type: 2, data: ['ev', { a: [1, 'x', null] }], nsp: '/' }
    const { value: encoded, marked } = encodeBinary(value)
    assert.equal(encoded, value)
    assert.equal(marked, false)
  })

  test('the original is never modified (Socket.IO goes on to send it to local clients)', () => {
    const buffer = Buffer.from([1])
    const data = ['ev', { b: buffer }, 'tail']
    const value = { type: 2, data }
    encodeBinary(value)
    assert.equal(value.data, data)
    assert.equal((data[1] as { b: Buffer }).b, buffer)
    assert.equal(data.length, 3)
  })

  test('an application object that looks like a marker stays what it was', () => {
    const value = [{ '~b': 'aGVsbG8=' }, { '~o': { '~b': 'x' } }, { '~o': 1 }, { '~b': 'y', z: 1 }]
    assert.deepEqual(roundTrip(value), value)
  })

  test('follows JSON for everything else: Date as ISO string, undefined properties dropped', () => {
    const at = new Date('2026-01-02T03:04:05.000Z')
    assert.deepEqual(roundTrip({ at, gone: undefined, list: [undefined] }), {
      at: at.toISOString(),
      list: [null],
    })
  })

  test('a cyclic or absurdly deep payload is refused, not a stack overflow', () => {
    const cyclic: Record<string, unknown> = { type: 2 }
    cyclic.self = cyclic
    assert.throws(() => encodeBinary(cyclic), UnencodablePayloadError)
  })
})

describe('liveness', () => {
  test('a server silent for heartbeatTimeout is expired once, and forgotten', () => {
    const liveness = new Liveness()
    liveness.seen('a', 1000)
    liveness.seen('b', 1500)
    assert.deepEqual(liveness.expire(2000, 1000), [])
    assert.deepEqual(liveness.expire(2001, 1000), ['a'])
    assert.deepEqual(liveness.expire(2600, 1000), ['b'])
    assert.equal(liveness.size, 0)
  })

  test('time while Redis was unavailable does not count', () => {
    const liveness = new Liveness()
    liveness.seen('a', 1000)
    // down from 1500 to 9000: the caller does not expire meanwhile; then Redis is back
    liveness.resumed(9000)
    assert.deepEqual(liveness.expire(9500, 1000), [])
    assert.deepEqual(liveness.expire(10_001, 1000), ['a'])
  })

  test('an ADAPTER_CLOSE forgets at once', () => {
    const liveness = new Liveness()
    liveness.seen('a', 0)
    liveness.forget('a')
    assert.equal(liveness.size, 0)
  })
})

describe('pending requests', () => {
  test('failAll rejects a pending request with the failure; its later outcome is ignored', async () => {
    const pending = new PendingRequests()
    let settle!: (value: string) => void
    const request = new Promise<string>((resolve) => (settle = resolve))
    const raced = pending.race(request, async () => new Error('unavailable'))
    assert.equal(pending.size, 1)
    pending.failAll()
    await assert.rejects(raced, /unavailable/)
    settle('late')
    assert.equal(pending.size, 0)
  })

  test('a request that settles first is untracked', async () => {
    const pending = new PendingRequests()
    assert.equal(await pending.race(Promise.resolve(3), async () => new Error('x')), 3)
    await assert.rejects(
      pending.race(Promise.reject(new Error('timeout reached')), async () => new Error('x')),
      /timeout reached/,
    )
    assert.equal(pending.size, 0)
  })
})

describe('options', () => {
  test('defaults', () => {
    assert.deepEqual(resolveAdapterOptions(undefined), {
      key: 'socket.io',
      requestsTimeout: 5000,
      heartbeatInterval: 5000,
      heartbeatTimeout: 10_000,
      channels: { name: 'socket.io' },
    })
    assert.equal(defaultAdapterOptions.requestsTimeout, 5000)
  })

  test("redis-adapter's publishOnSpecificResponseChannel is accepted (a migration is a one-line change)", () => {
    assert.equal(resolveAdapterOptions({ publishOnSpecificResponseChannel: true }).key, 'socket.io')
  })

  test('invalid options name the option and the value', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ key: 'has space' }, /`key`/],
      [{ requestsTimeout: 0 }, /`requestsTimeout`/],
      [{ heartbeatInterval: Number.NaN }, /`heartbeatInterval`/],
      [{ heartbeatInterval: 1000, heartbeatTimeout: 500 }, /`heartbeatTimeout`/],
      [{ parser: {} }, /`parser`.*unknown option/],
      [{ channels: 'x' }, /`channels`/],
      ['x', /options/],
    ]
    for (const [input, message] of cases) {
      assert.throws(
        () => resolveAdapterOptions(input),
        (error: Error & { code?: string }) =>
          error.code === 'FAILSOFT_INVALID_OPTION' && message.test(error.message),
        JSON.stringify(input),
      )
    }
  })

  test('channel layer options are checked by the layer, at createAdapter', async () => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    try {
      assert.throws(() => createAdapter(failsoft, { channels: { maxMessageBytes: 1 } }), {
        code: 'FAILSOFT_INVALID_OPTION',
      })
    } finally {
      await failsoft.close()
    }
  })
})

describe('shared layer', () => {
  test('one layer per failsoft instance and name; the same options again reuse it, others are refused', async () => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    try {
      const options = { name: 'socket.io', maxMessageBytes: 4096, outbox: { maxMessages: 10 } }
      const layer = layerFor(failsoft, options)
      assert.equal(
        layerFor(failsoft, {
          outbox: { maxMessages: 10 },
          maxMessageBytes: 4096,
          name: 'socket.io',
        }),
        layer,
      )
      assert.equal(failsoft.channels({ name: 'socket.io' }), layer)
      assert.throws(
        () => layerFor(failsoft, { name: 'socket.io', maxMessageBytes: 8192 }),
        RangeError,
      )
      assert.notEqual(layerFor(failsoft, { name: 'other' }), layer)
    } finally {
      await failsoft.close()
    }
  })

  test('groups: one per key and namespace, valid channel-layer group names', () => {
    const names = ['/', '/custom', '/dynamic-101', '/ünïcode/ with spaces', '/' + 'x'.repeat(500)]
    const groups = names.map((name) => groupFor('socket.io', name))
    assert.equal(new Set(groups).size, names.length)
    for (const group of groups) assert.match(group, /^socket\.io\.[A-Za-z0-9_-]{22}$/)
    assert.notEqual(groupFor('a', '/'), groupFor('b', '/'))
  })
})
