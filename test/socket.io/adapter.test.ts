// failsoft/socket.io beyond the upstream suite: memory-only mode, two Socket.IO servers on one
// failsoft instance, a message above the layer's maxMessageBytes, binary in socket.data.
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { Server } from 'socket.io'
import { io as ioc } from 'socket.io-client'
import { createFailsoft, type Logger } from '../../src/index.js'
import { createAdapter, type FailsoftAdapter } from '../../src/socket.io.js'
import { RedisServer, waitFor } from '../support/fault-kit.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'
import { setup, sleep, within } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

let redis: RedisServer
before(async () => {
  redis = await RedisServer.start()
})
after(() => redis.stop())

async function serve(io: Server): Promise<{ url: string; close: () => Promise<void> }> {
  const http = createServer()
  io.attach(http)
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    close: async () => {
      await io.close()
    },
  }
}

describe('failsoft/socket.io', () => {
  test('memory-only failsoft (redis: null): one server, as with the in-memory adapter', async (t) => {
    const failsoft = createFailsoft({ redis: null, logger: false })
    t.after(() => failsoft.close())
    const io = new Server({ adapter: createAdapter(failsoft) })
    const { url, close } = await serve(io)
    t.after(close)
    const client = ioc(url, { forceNew: true, transports: ['websocket'] })
    t.after(() => client.disconnect())
    await new Promise((resolve) => io.once('connection', resolve))
    const got = new Promise((resolve) => client.once('hi', resolve))
    io.emit('hi', 1)
    assert.equal(await within(got, 2000, 'the broadcast'), 1)
    assert.equal((await io.fetchSockets()).length, 1)
    const answer = await new Promise<[unknown, unknown]>((resolve) =>
      io.serverSideEmit('ask', (error: unknown, responses: unknown) => resolve([error, responses])),
    )
    assert.deepEqual(answer, [null, []])
  })

  test('two Socket.IO servers on one failsoft instance reach each other (in memory)', async () => {
    const prefix = uniquePrefix()
    const failsoft = createFailsoft({
      redis: redis.url,
      prefix,
      logger: false,
      health: FAST_HEALTH,
    })
    await failsoft.ready()
    const ios = [0, 1].map(() => new Server({ adapter: createAdapter(failsoft) }))
    const served = await Promise.all(ios.map(serve))
    const clients = served.map(({ url }) => ioc(url, { forceNew: true, transports: ['websocket'] }))
    try {
      await Promise.all(ios.map((io) => new Promise((resolve) => io.once('connection', resolve))))
      await sleep(100)
      const got = clients.map((client) => new Promise((resolve) => client.once('hi', resolve)))
      ios[0]!.emit('hi', 'both')
      assert.deepEqual(await within(Promise.all(got), 2000, 'both clients'), ['both', 'both'])
      assert.equal((await ios[1]!.fetchSockets()).length, 2)
    } finally {
      for (const client of clients) client.disconnect()
      await Promise.all(served.map(({ close }) => close()))
      await failsoft.close()
    }
  })

  test('a broadcast above maxMessageBytes reaches local clients only; counted and logged', async () => {
    const warnings: string[] = []
    const logger: Logger = {
      error: () => undefined,
      warn: (_fields, message) => void warnings.push(message),
      info: () => undefined,
      debug: () => undefined,
      child: () => logger,
    }
    const cluster = await setup(redis.url, {
      count: 2,
      transports: ['websocket'],
      adapter: { channels: { maxMessageBytes: 4096 } },
      failsoft: { logger },
    })
    try {
      const got: Array<[number, number]> = []
      cluster.clientSockets.forEach((client, i) =>
        client.on('big', (payload: string) => got.push([i, payload.length])),
      )
      cluster.servers[0]!.emit('big', 'x'.repeat(10_000))
      await sleep(300)
      assert.deepEqual(got, [[0, 10_000]])
      assert.equal(cluster.adapter(0).status().notPublished, 1)
      assert.ok(warnings.includes('a Socket.IO cluster message was not sent to the other servers'))
      cluster.servers[0]!.emit('big', 'small')
      await waitFor(() => got.length === 3)
    } finally {
      await cluster.cleanup()
    }
  })

  test('binary and nested data in socket.data survive fetchSockets', async () => {
    const cluster = await setup(redis.url, { count: 2, transports: ['websocket'] })
    try {
      cluster.serverSockets[1]!.data = { avatar: Buffer.from([1, 2, 3]), tags: ['a'], n: 1 }
      const [remote] = await cluster.servers[0]!.in(cluster.serverSockets[1]!.id).fetchSockets()
      const data = remote!.data as { avatar: Buffer; tags: string[]; n: number }
      assert.ok(Buffer.isBuffer(data.avatar))
      assert.deepEqual([...data.avatar], [1, 2, 3])
      assert.deepEqual(data.tags, ['a'])
      // a remote socket acts through the adapter
      const got = new Promise((resolve) => cluster.clientSockets[1]!.once('direct', resolve))
      remote!.emit('direct', 42)
      assert.equal(await within(got, 2000, 'RemoteSocket.emit'), 42)
      const status = (cluster.adapter(0) as FailsoftAdapter).status()
      assert.equal(status.otherServers, 1)
      assert.equal(status.backend, 'redis')
    } finally {
      await cluster.cleanup()
    }
  })
})
