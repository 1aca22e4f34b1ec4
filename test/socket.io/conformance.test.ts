// Conformance: the cases of the official Socket.IO Redis adapter's own test suite
// (socketio/socket.io-redis-adapter, test/index.ts "common" and test/specifics.ts), written
// again here against failsoft/socket.io: three in-process Socket.IO servers, each with its own
// failsoft instance (own processId), on one standalone redis-server started for this file.
// Every test names the upstream case it covers; "adapted:" says what differs and why.
// Not applicable (no test here): specifics "allRooms" (a RedisAdapter-only method, not part of
// socket.io-adapter's Adapter/ClusterAdapter API), and test/custom-parser.ts's `parser` option
// (the channel layer carries JSON; binary is encoded by the adapter) — its case, an array
// argument, is covered below.
import assert from 'node:assert/strict'
import { after, afterEach, before, beforeEach, describe, test } from 'node:test'
import { ClusterUnavailableError } from '../../src/socket.io.js'
import { RedisServer } from '../support/fault-kit.js'
import { counter, setup, sleep, within, type Cluster } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

let redis: RedisServer
let cluster: Cluster
before(async () => {
  redis = await RedisServer.start()
})
after(() => redis.stop())

const shouldNotHappen = (fail: (e: Error) => void) => () => fail(new Error('should not happen'))

/** The private request maps of socket.io-adapter's cluster adapter, as upstream inspects them. */
function requestMaps(i: number): { requests: number; customRequests: number; ackRequests: number } {
  const adapter = cluster.adapter(i) as unknown as Record<string, Map<string, unknown>>
  return {
    requests: adapter.requests!.size,
    customRequests: adapter.customRequests!.size,
    ackRequests: adapter.ackRequests!.size,
  }
}

describe('socket.io-redis-adapter common suite on failsoft/socket.io', () => {
  beforeEach(async () => {
    cluster = await setup(redis.url)
  })
  afterEach(() => cluster.cleanup())

  describe('broadcast', () => {
    test('broadcasts to all clients (upstream: common › broadcast › broadcasts to all clients)', async () => {
      const { servers, clientSockets } = cluster
      const all = counter(3)
      for (const client of clientSockets) {
        client.on('test', (arg1: unknown, arg2: unknown, arg3: unknown) => {
          try {
            assert.equal(arg1, 1)
            assert.equal(arg2, '2')
            assert.ok(Buffer.isBuffer(arg3))
            assert.deepEqual([...(arg3 as Buffer)], [3, 4])
            all.hit()
          } catch (error) {
            all.fail(error as Error)
          }
        })
      }
      servers[0]!.emit('test', 1, '2', Buffer.from([3, 4]))
      await within(all.done, 3000, 'three clients')
    })

    test('broadcasts to all clients in a namespace (upstream: … broadcasts to all clients in a namespace)', async () => {
      const { servers, clientSockets } = cluster
      const all = counter(3)
      for (const server of servers) server.of('/custom')
      const connected = counter(3)
      for (const client of clientSockets) {
        const socket = client.io.socket('/custom')
        socket.on('connect', connected.hit)
        socket.on('test', () => {
          socket.disconnect()
          all.hit()
        })
        socket.connect()
      }
      await within(connected.done, 3000, 'three /custom connections')
      await sleep(200)
      servers[0]!.of('/custom').emit('test')
      await within(all.done, 3000, 'three /custom clients')
    })

    test('broadcasts to all clients in a room (upstream: … broadcasts to all clients in a room)', async () => {
      const { servers, serverSockets, clientSockets } = cluster
      const result = counter(1)
      void serverSockets[1]!.join('room1')
      clientSockets[0]!.on('test', shouldNotHappen(result.fail))
      clientSockets[1]!.on('test', result.hit)
      clientSockets[2]!.on('test', shouldNotHappen(result.fail))
      setTimeout(() => servers[0]!.to('room1').emit('test'), 50)
      await within(result.done, 3000, 'the room member')
      await sleep(100) // a delivery to a non-member would fail the test meanwhile
    })

    test('broadcasts to all clients except in room (upstream: … broadcasts to all clients except in room)', async () => {
      const { servers, serverSockets, clientSockets } = cluster
      const result = counter(2)
      void serverSockets[1]!.join('room1')
      clientSockets[0]!.on('test', result.hit)
      clientSockets[1]!.on('test', shouldNotHappen(result.fail))
      clientSockets[2]!.on('test', result.hit)
      servers[0]!.of('/').except('room1').emit('test')
      await within(result.done, 3000, 'the two non-members')
      await sleep(100)
    })

    test('broadcasts to all clients once (upstream: … broadcasts to all clients once)', async () => {
      const { servers, serverSockets, clientSockets } = cluster
      const result = counter(2)
      void serverSockets[0]!.join(['room1', 'room2'])
      void serverSockets[1]!.join(['room1', 'room2', 'room3'])
      void serverSockets[2]!.join('room1')
      clientSockets[0]!.on('test', result.hit)
      clientSockets[1]!.on('test', shouldNotHappen(result.fail))
      clientSockets[2]!.on('test', result.hit)
      servers[0]!.of('/').to('room1').to('room2').except('room3').emit('test')
      await within(result.done, 3000, 'two clients, once each')
      await sleep(100)
    })

    test('broadcasts to local clients only (upstream: … broadcasts to local clients only)', async () => {
      const { servers, clientSockets } = cluster
      const result = counter(1)
      clientSockets[0]!.on('test', result.hit)
      clientSockets[1]!.on('test', shouldNotHappen(result.fail))
      clientSockets[2]!.on('test', shouldNotHappen(result.fail))
      servers[0]!.local.emit('test')
      await within(result.done, 3000, 'the local client')
      await sleep(100)
    })

    test('broadcasts to a single client (upstream: … broadcasts to a single client)', async () => {
      const { servers, serverSockets, clientSockets } = cluster
      const result = counter(1)
      clientSockets[0]!.on('test', shouldNotHappen(result.fail))
      clientSockets[1]!.on('test', result.hit)
      clientSockets[2]!.on('test', shouldNotHappen(result.fail))
      servers[0]!.to(serverSockets[1]!.id).emit('test')
      await within(result.done, 3000, 'that client')
      await sleep(100)
    })

    test('broadcasts with multiple acknowledgements (upstream: … broadcasts with multiple acknowledgements)', async () => {
      const { servers, clientSockets } = cluster
      clientSockets[0]!.on('test', (cb: (n: number) => void) => cb(1))
      clientSockets[1]!.on('test', (cb: (n: number) => void) => cb(2))
      clientSockets[2]!.on('test', (cb: (n: number) => void) => cb(3))
      const responses = await within(servers[0]!.timeout(500).emitWithAck('test'), 2000, 'acks')
      assert.deepEqual([...(responses as number[])].sort(), [1, 2, 3])
      await sleep(500)
      assert.equal(requestMaps(0).ackRequests, 0, 'ackRequests cleaned up')
    })

    test('broadcasts with multiple acknowledgements, binary content (upstream: … (binary content))', async () => {
      const { servers, clientSockets } = cluster
      clientSockets[0]!.on('test', (cb: (b: Buffer) => void) => cb(Buffer.from([1])))
      clientSockets[1]!.on('test', (cb: (b: Buffer) => void) => cb(Buffer.from([2])))
      clientSockets[2]!.on('test', (cb: (b: Buffer) => void) => cb(Buffer.from([3])))
      const responses = (await within(
        servers[0]!.timeout(500).emitWithAck('test'),
        2000,
        'acks',
      )) as unknown[]
      assert.equal(responses.length, 3)
      for (const response of responses) assert.ok(Buffer.isBuffer(response))
      assert.deepEqual(responses.map((b) => (b as Buffer)[0]).sort(), [1, 2, 3])
    })

    test('broadcasts with multiple acknowledgements, no client (upstream: … (no client))', async () => {
      const responses = await within(
        cluster.servers[0]!.to('abc').timeout(500).emitWithAck('test'),
        2000,
        'acks',
      )
      assert.deepEqual(responses, [])
    })

    test('broadcasts with multiple acknowledgements, timeout (upstream: … (timeout))', async () => {
      const { servers, clientSockets } = cluster
      clientSockets[0]!.on('test', (cb: (n: number) => void) => cb(1))
      clientSockets[1]!.on('test', (cb: (n: number) => void) => cb(2))
      clientSockets[2]!.on('test', () => undefined)
      const { error, responses } = await within(
        new Promise<{ error: unknown; responses: unknown[] }>((resolve) =>
          servers[0]!
            .timeout(500)
            .emit('test', (error: unknown, responses: unknown[]) => resolve({ error, responses })),
        ),
        2000,
        'the timeout',
      )
      assert.ok(error instanceof Error)
      assert.ok(responses.includes(1))
      assert.ok(responses.includes(2))
    })

    test('broadcasts an array argument (upstream: test/custom-parser.ts › broadcasts; adapted: no parser option)', async () => {
      const { servers, clientSockets } = cluster
      const all = counter(3)
      for (const client of clientSockets) {
        client.on('test', (arg1: unknown, arg2: unknown, arg3: unknown) => {
          try {
            assert.deepEqual([arg1, arg2, arg3], [1, '2', [3]])
            all.hit()
          } catch (error) {
            all.fail(error as Error)
          }
        })
      }
      servers[0]!.emit('test', 1, '2', [3])
      await within(all.done, 3000, 'three clients')
    })

    test('broadcasts to a numeric room (upstream: specifics › broadcast › broadcasts to a numeric room)', async () => {
      const { servers, serverSockets, clientSockets } = cluster
      const result = counter(1)
      void serverSockets[0]!.join(123 as unknown as string)
      clientSockets[0]!.on('test', result.hit)
      clientSockets[1]!.on('test', shouldNotHappen(result.fail))
      clientSockets[2]!.on('test', shouldNotHappen(result.fail))
      servers[1]!.to(123 as unknown as string).emit('test')
      await within(result.done, 3000, 'the member of room 123')
      await sleep(100)
    })
  })

  describe('socketsJoin', () => {
    test('makes all socket instances join the specified room (upstream: common › socketsJoin › …)', async () => {
      const { servers, serverSockets } = cluster
      servers[0]!.socketsJoin('room1')
      await sleep(200)
      for (const socket of serverSockets) assert.ok(socket.rooms.has('room1'))
    })

    test('makes the matching socket instances join the specified room (upstream: common › socketsJoin › …)', async () => {
      const { servers, serverSockets } = cluster
      void serverSockets[0]!.join('room1')
      void serverSockets[2]!.join('room1')
      servers[0]!.in('room1').socketsJoin('room2')
      await sleep(200)
      assert.equal(serverSockets[0]!.rooms.has('room2'), true)
      assert.equal(serverSockets[1]!.rooms.has('room2'), false)
      assert.equal(serverSockets[2]!.rooms.has('room2'), true)
    })

    test('makes the given socket instance join the specified room (upstream: common › socketsJoin › …)', async () => {
      const { servers, serverSockets } = cluster
      servers[0]!.in(serverSockets[1]!.id).socketsJoin('room3')
      await sleep(200)
      assert.equal(serverSockets[0]!.rooms.has('room3'), false)
      assert.equal(serverSockets[1]!.rooms.has('room3'), true)
      assert.equal(serverSockets[2]!.rooms.has('room3'), false)
    })
  })

  describe('socketsLeave', () => {
    test('makes all socket instances leave the specified room (upstream: common › socketsLeave › …)', async () => {
      const { servers, serverSockets } = cluster
      void serverSockets[0]!.join('room1')
      void serverSockets[2]!.join('room1')
      servers[0]!.socketsLeave('room1')
      await sleep(200)
      for (const socket of serverSockets) assert.equal(socket.rooms.has('room1'), false)
    })

    test('makes the matching socket instances leave the specified room (upstream: common › socketsLeave › …)', async () => {
      const { servers, serverSockets } = cluster
      void serverSockets[0]!.join(['room1', 'room2'])
      void serverSockets[1]!.join(['room1', 'room2'])
      void serverSockets[2]!.join(['room2'])
      servers[0]!.in('room1').socketsLeave('room2')
      await sleep(200)
      assert.equal(serverSockets[0]!.rooms.has('room2'), false)
      assert.equal(serverSockets[1]!.rooms.has('room2'), false)
      assert.equal(serverSockets[2]!.rooms.has('room2'), true)
    })

    test('makes the given socket instance leave the specified room (upstream: common › socketsLeave › …)', async () => {
      const { servers, serverSockets } = cluster
      for (const socket of serverSockets) void socket.join('room3')
      servers[0]!.in(serverSockets[1]!.id).socketsLeave('room3')
      await sleep(200)
      assert.equal(serverSockets[0]!.rooms.has('room3'), true)
      assert.equal(serverSockets[1]!.rooms.has('room3'), false)
      assert.equal(serverSockets[2]!.rooms.has('room3'), true)
    })
  })

  describe('disconnectSockets', () => {
    test('makes all socket instances disconnect (upstream: common › disconnectSockets › …)', async () => {
      const { servers, clientSockets } = cluster
      const all = counter(3)
      for (const client of clientSockets) {
        client.on('disconnect', (reason) => {
          if (reason === 'io server disconnect') all.hit()
          else all.fail(new Error(`disconnect reason ${reason}`))
        })
      }
      servers[0]!.disconnectSockets()
      await within(all.done, 3000, 'three disconnections')
    })
  })

  describe('fetchSockets', () => {
    test('returns all socket instances (upstream: common › fetchSockets › …; adapted: also checks customRequests, the map ClusterAdapterWithHeartbeat uses)', async () => {
      const sockets = await cluster.servers[0]!.fetchSockets()
      assert.ok(Array.isArray(sockets))
      assert.equal(sockets.length, 3)
      assert.equal(requestMaps(0).requests, 0)
      assert.equal(requestMaps(0).customRequests, 0)
    })

    test('returns a single socket instance (upstream: common › fetchSockets › …; adapted: handshake compared as JSON, as it travels)', async () => {
      const { servers, serverSockets } = cluster
      serverSockets[1]!.data = 'test'
      const [remote] = await servers[0]!.in(serverSockets[1]!.id).fetchSockets()
      assert.ok(remote)
      assert.deepEqual(remote.handshake, JSON.parse(JSON.stringify(serverSockets[1]!.handshake)))
      assert.equal(remote.data, 'test')
      assert.equal(remote.rooms.size, 1)
    })

    test('returns only local socket instances (upstream: common › fetchSockets › …)', async () => {
      const sockets = await cluster.servers[0]!.local.fetchSockets()
      assert.equal(sockets.length, 1)
    })
  })

  describe('serverSideEmit', () => {
    test('sends an event to other server instances (upstream: common › serverSideEmit › …)', async () => {
      const { servers } = cluster
      const result = counter(2)
      servers[0]!.on('hello', shouldNotHappen(result.fail))
      servers[1]!.on('hello', (arg1: unknown, arg2: unknown, arg3: unknown) => {
        if (arg1 === 'world' && arg2 === 1 && arg3 === '2') result.hit()
        else result.fail(new Error(`arguments ${String([arg1, arg2, arg3])}`))
      })
      servers[2]!.of('/').on('hello', result.hit)
      servers[0]!.serverSideEmit('hello', 'world', 1, '2')
      await within(result.done, 3000, 'two servers')
      await sleep(100)
    })

    test('sends an event and receives a response from the other server instances (upstream: common › serverSideEmit › …)', async () => {
      const { servers } = cluster
      let echoed = false
      servers[0]!.on('hello', () => (echoed = true))
      servers[1]!.on('hello', (cb: (v: unknown) => void) => cb(2))
      servers[2]!.on('hello', (cb: (v: unknown) => void) => cb('3'))
      const { error, responses } = await within(
        new Promise<{ error: unknown; responses: unknown[] }>((resolve) =>
          servers[0]!.serverSideEmit('hello', (error: unknown, responses: unknown[]) =>
            resolve({ error, responses }),
          ),
        ),
        3000,
        'the responses',
      )
      assert.equal(error, null)
      assert.equal(echoed, false, 'the emitting server does not receive its own event')
      assert.ok(Array.isArray(responses))
      assert.ok(responses.includes(2))
      assert.ok(responses.includes('3'))
    })

    test("sends an event but timeout if one server does not respond (upstream: common › serverSideEmit › …; adapted: ClusterAdapterWithHeartbeat's wording, 'missing 1 responses')", async () => {
      const { servers } = cluster
      let echoed = false
      servers[0]!.on('hello', () => (echoed = true))
      servers[1]!.on('hello', (cb: (v: unknown) => void) => cb(2))
      servers[2]!.on('hello', () => undefined)
      const started = Date.now()
      const { error, responses } = await within(
        new Promise<{ error: unknown; responses: unknown[] }>((resolve) =>
          servers[0]!.serverSideEmit('hello', (error: unknown, responses: unknown[]) =>
            resolve({ error, responses }),
          ),
        ),
        6000,
        'the timeout',
      )
      assert.equal(echoed, false, 'the emitting server does not receive its own event')
      assert.ok(error instanceof Error)
      assert.ok(!(error instanceof ClusterUnavailableError))
      assert.equal(error.message, 'timeout reached: missing 1 responses')
      assert.deepEqual(responses, [2])
      assert.ok(Date.now() - started < 2500, 'requestsTimeout (1000 ms) applies')
    })
  })

  describe('specifics', () => {
    test('ignores messages from unknown channels (upstream: specifics › ignores messages from unknown channels; adapted: foreign messages on the namespace group and on the server channel)', async () => {
      const { servers, clientSockets, failsofts } = cluster
      const adapter = cluster.adapter(0)
      const layer = failsofts[2]!.channels({ name: 'socket.io' })
      const group = adapter.status().group
      const before = adapter.status().malformed
      await layer.groupSend(group, { type: 'foo', m: 'bar' })
      await layer.groupSend(group, { type: 'sio', m: { uid: 'x', nsp: '/other', type: 3 } })
      await layer.send(adapter.status().uid, { type: 'sio', m: 'toow' })
      await sleep(100)
      assert.equal(adapter.status().malformed, before + 3)
      const result = counter(3)
      for (const client of clientSockets) client.on('still', result.hit)
      servers[0]!.emit('still')
      await within(result.done, 3000, 'broadcasts still work')
    })

    test('unsubscribes when close is called (upstream: specifics › unsubscribes when close is called, skipped there; adapted: the layer groups and Redis subscriptions)', async () => {
      const { servers, failsofts } = cluster
      const layer = failsofts[2]!.channels({ name: 'socket.io' })
      const before = layer.status()
      assert.equal(before.groups, 1)
      servers[2]!.of('/').adapter.close()
      await sleep(100)
      const afterClose = layer.status()
      assert.equal(afterClose.groups, 0)
      assert.ok(afterClose.subscriptions < before.subscriptions)
      // the other servers no longer wait for it
      assert.equal(await servers[0]!.of('/').adapter.serverCount(), 2)
    })
  })
})
