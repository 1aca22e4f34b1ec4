// The WebSocket consumer API end to end, with real `ws` clients over real sockets.
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, test } from 'node:test'
import { WebSocket, type ClientOptions } from 'ws'
import type {
  ChannelLayer,
  ChannelWebSocketOptions,
  ChannelWebSocketServer,
} from '../../src/index.js'
import { startRedis, waitFor, type AfterHook } from '../support/fault-kit.js'
import { makeLayer, sleep, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

interface Mounted {
  http: Server
  ws: ChannelWebSocketServer
  url: string
}

async function mount(
  t: AfterHook,
  layer: ChannelLayer,
  options: Omit<ChannelWebSocketOptions, 'server'>,
): Promise<Mounted> {
  const http = createServer((_req, res) => res.end('ok'))
  const ws = layer.websocket({ server: http, ...options })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    await ws.close()
    http.closeAllConnections()
    await new Promise((resolve) => http.close(resolve))
  })
  const { port } = http.address() as AddressInfo
  return { http, ws, url: `ws://127.0.0.1:${port}${options.path ?? '/ws'}` }
}

interface Client {
  socket: WebSocket
  messages: Array<Record<string, unknown>>
  closed: Promise<{ code: number; reason: string }>
}

async function connect(t: AfterHook, url: string, options: ClientOptions = {}): Promise<Client> {
  const socket = new WebSocket(url, options)
  const messages: Array<Record<string, unknown>> = []
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as Record<string, unknown>))
  socket.on('error', () => undefined) // the close code is what the tests assert on
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  )
  t.after(() => socket.terminate())
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('unexpected-response', (_req, res) =>
      reject(new Error(`HTTP ${res.statusCode ?? '?'}`)),
    )
    socket.once('error', reject)
  })
  return { socket, messages, closed }
}

/** A chat consumer: joins 'chat' on connect, relays 'chat.message' frames to the group. */
function chat(layer: ChannelLayer): ChannelWebSocketOptions['consumer'] {
  return (ctx) => ({
    connect: () => ctx.groupAdd('chat'),
    receive: {
      'chat.message': (message) =>
        layer.groupSend('chat', { type: 'chat.message', text: message.text, from: ctx.id }),
    },
  })
}

const received = (client: Client, count: number) =>
  waitFor(() => client.messages.length >= count, { message: `${count} messages on a client` })

describe('WebSocket consumers', () => {
  test('chat: a frame from one client reaches every client in the group', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url } = await mount(t, layer, { consumer: chat(layer) })
    const alice = await connect(t, url)
    const bob = await connect(t, url)
    await waitFor(() => layer.status().groups === 1)
    alice.socket.send(JSON.stringify({ type: 'chat.message', text: 'hello' }))
    await received(alice, 1)
    await received(bob, 1)
    assert.deepEqual(bob.messages[0], { type: 'chat.message', text: 'hello', from: 1 })
  })

  test('layer messages go to a handler by type, other types are forwarded as JSON', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url } = await mount(t, layer, {
      consumer: (ctx) => ({
        connect: () => ctx.groupAdd('polls'),
        handlers: {
          'poll.results': (message) => {
            const counts = message.counts as number[]
            ctx.send({ type: 'poll.total', total: counts.reduce((a, b) => a + b, 0) })
          },
        },
      }),
    })
    const client = await connect(t, url)
    await waitFor(() => layer.status().groups === 1)
    await layer.groupSend('polls', { type: 'poll.results', counts: [1, 2, 3] })
    await layer.groupSend('polls', { type: 'poll.closed', id: 42 })
    await received(client, 2)
    assert.deepEqual(client.messages, [
      { type: 'poll.total', total: 6 },
      { type: 'poll.closed', id: 42 },
    ])
  })

  test("layer.send to a connection's channel reaches its client", async (t) => {
    const { layer } = await makeLayer(t, null)
    const channels: string[] = []
    const { url } = await mount(t, layer, {
      consumer: (ctx) => ({ connect: () => void channels.push(ctx.channel) }),
    })
    const client = await connect(t, url)
    await waitFor(() => channels.length === 1)
    await layer.send(channels[0]!, { type: 'direct', text: 'just you' })
    await received(client, 1)
    assert.deepEqual(client.messages[0], { type: 'direct', text: 'just you' })
  })

  test('closing a socket discards its groups and runs disconnect once', async (t) => {
    const { layer } = await makeLayer(t, null)
    const disconnects: Array<{ code: number; reason: string }> = []
    const { url, ws } = await mount(t, layer, {
      consumer: (ctx) => ({
        connect: async () => {
          await ctx.groupAdd('a')
          await ctx.groupAdd('b')
        },
        disconnect: (info) => void disconnects.push(info),
      }),
    })
    const client = await connect(t, url)
    await waitFor(() => layer.status().groups === 2)
    client.socket.close(1000, 'bye')
    await waitFor(() => disconnects.length === 1)
    assert.deepEqual(disconnects, [{ code: 1000, reason: 'bye' }])
    assert.equal(layer.status().groups, 0)
    assert.equal(ws.clientCount, 0)
    await layer.groupSend('a', { type: 'to.nobody' })
  })

  test('heartbeat: a client that stops answering pings is terminated; a live one stays', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url, ws } = await mount(t, layer, { consumer: chat(layer), heartbeatMs: 100 })
    const dead = await connect(t, url, { autoPong: false })
    const live = await connect(t, url)
    const { code } = await dead.closed
    assert.equal(code, 1006, 'terminated without a close frame')
    assert.equal(ws.status().heartbeatTimeouts, 1)
    await sleep(300)
    assert.equal(live.socket.readyState, WebSocket.OPEN)
    assert.equal(ws.clientCount, 1)
  })

  test('backpressure: a client that stops reading is closed; memory stays bounded', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url, ws } = await mount(t, layer, {
      consumer: chat(layer),
      maxBufferedBytes: 256 * 1024,
      closeGraceMs: 200,
    })
    const slow = await connect(t, url)
    const fast = await connect(t, url)
    await waitFor(() => ws.clientCount === 2 && layer.status().groups === 1)
    // The slow client's socket stops reading: the kernel buffers fill, then ws' buffer grows.
    ;(slow.socket as unknown as { _socket: { pause(): void } })._socket.pause()
    const text = 'x'.repeat(32 * 1024)
    let sent = 0
    while (ws.status().closedSlow === 0 && sent < 4000) {
      await layer.groupSend('chat', { type: 'bulk', n: sent++, text })
      if (sent % 20 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    assert.equal(ws.status().closedSlow, 1, `closed after ${sent} messages`)
    await waitFor(() => ws.clientCount === 1, { message: 'slow client gone' })
    // The fast client got everything.
    await waitFor(() => fast.messages.length === sent, { timeoutMs: 10_000 })
  })

  describe('malformed or abusive client frames close the socket with a clear code', () => {
    const cases: Array<{
      name: string
      frame: string | Buffer
      binary?: boolean
      code: number
      options?: Partial<ChannelWebSocketOptions>
    }> = [
      { name: 'a binary frame → 1003', frame: Buffer.from([1, 2, 3]), binary: true, code: 1003 },
      { name: 'text that is not JSON → 1007', frame: 'not json', code: 1007 },
      { name: 'JSON that is not an object → 1007', frame: '[1,2]', code: 1007 },
      { name: 'an object without a string type → 1007', frame: '{"text":"x"}', code: 1007 },
      { name: 'a type with no handler → 1003', frame: '{"type":"nope"}', code: 1003 },
      {
        name: 'an inherited property name as type → 1003',
        frame: '{"type":"constructor"}',
        code: 1003,
      },
      {
        name: 'a frame over maxPayloadBytes → 1009',
        frame: JSON.stringify({ type: 'chat.message', text: 'x'.repeat(2000) }),
        code: 1009,
        options: { maxPayloadBytes: 1024 },
      },
    ]
    for (const c of cases) {
      test(c.name, async (t) => {
        const { layer } = await makeLayer(t, null)
        const { url, ws } = await mount(t, layer, { consumer: chat(layer), ...c.options })
        const client = await connect(t, url)
        const bystander = await connect(t, url)
        client.socket.send(c.frame, { binary: c.binary === true })
        const { code } = await client.closed
        assert.equal(code, c.code)
        // The server and the other connections are unaffected.
        bystander.socket.send(JSON.stringify({ type: 'chat.message', text: 'still here' }))
        await received(bystander, 1)
        await waitFor(() => ws.clientCount === 1)
      })
    }

    test('over the rate limit → 1008', async (t) => {
      const { layer } = await makeLayer(t, null)
      const { url, ws } = await mount(t, layer, {
        consumer: chat(layer),
        rateLimit: { messages: 5, intervalMs: 60_000 },
      })
      const client = await connect(t, url)
      for (let i = 0; i < 10; i++) {
        client.socket.send(JSON.stringify({ type: 'chat.message', text: String(i) }))
      }
      const { code, reason } = await client.closed
      assert.deepEqual([code, reason], [1008, 'rate limit exceeded'])
      assert.equal(ws.status().rateLimited, 1)
    })
  })

  test('a __proto__ key in a client frame never reaches a prototype', async (t) => {
    const { layer } = await makeLayer(t, null)
    const seen: unknown[] = []
    const { url } = await mount(t, layer, {
      consumer: () => ({ receive: (message) => void seen.push(message) }),
    })
    const client = await connect(t, url)
    client.socket.send('{"type":"x","__proto__":{"polluted":true}}')
    await waitFor(() => seen.length === 1)
    assert.equal(Object.hasOwn(seen[0] as object, '__proto__'), false)
    assert.equal(({} as { polluted?: boolean }).polluted, undefined)
  })

  test('a hook that throws closes its socket with 1011, and only that one', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url } = await mount(t, layer, {
      consumer: () => ({
        receive: {
          boom: () => {
            throw new Error('handler bug')
          },
          async slowBoom() {
            await sleep(5)
            throw new Error('async handler bug')
          },
        },
      }),
    })
    for (const type of ['boom', 'slowBoom']) {
      const client = await connect(t, url)
      client.socket.send(JSON.stringify({ type }))
      assert.equal((await client.closed).code, 1011)
    }
  })

  test('connect can refuse a connection', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url } = await mount(t, layer, {
      consumer: (ctx) => ({
        connect: () => {
          if (ctx.request.url?.includes('token=ok') !== true) ctx.close(4001, 'unauthorized')
        },
      }),
    })
    const refused = await connect(t, url)
    assert.deepEqual(await refused.closed, { code: 4001, reason: 'unauthorized' })
    const accepted = await connect(t, `${url}?token=ok`)
    await sleep(50)
    assert.equal(accepted.socket.readyState, WebSocket.OPEN)
  })

  test('verifyOrigin refuses a handshake with HTTP 403', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url, ws } = await mount(t, layer, {
      consumer: chat(layer),
      verifyOrigin: (origin) => origin === 'https://app.example',
    })
    await assert.rejects(connect(t, url, { origin: 'https://evil.example' }), /HTTP 403/)
    await connect(t, url, { origin: 'https://app.example' })
    assert.equal(ws.status().originRefused, 1)
  })

  test('another path is answered 404 when no other upgrade listener exists', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url } = await mount(t, layer, { consumer: chat(layer) })
    await assert.rejects(connect(t, url.replace('/ws', '/other')), /HTTP 404/)
  })

  test('closing the server closes every client with 1001', async (t) => {
    const { layer } = await makeLayer(t, null)
    const { url, ws } = await mount(t, layer, { consumer: chat(layer) })
    const client = await connect(t, url)
    await ws.close()
    assert.equal((await client.closed).code, 1001)
  })
})

describe('WebSocket consumers across processes and through an outage', () => {
  test('clients on two servers chat through Redis; while it is down each server keeps its own room', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const a = await makeLayer(t, server.url, { prefix })
    const b = await makeLayer(t, server.url, { prefix })
    const ma = await mount(t, a.layer, { consumer: chat(a.layer) })
    const mb = await mount(t, b.layer, { consumer: chat(b.layer) })
    const [a1, a2, b1] = [
      await connect(t, ma.url),
      await connect(t, ma.url),
      await connect(t, mb.url),
    ]
    await waitFor(() => a.layer.status().groups === 1 && b.layer.status().groups === 1)
    b1.socket.send(JSON.stringify({ type: 'chat.message', text: 'from b' }))
    await received(a1, 1)
    await received(a2, 1)

    await server.kill()
    await waitFor(() => a.layer.backend === 'memory' && b.layer.backend === 'memory')
    a1.socket.send(JSON.stringify({ type: 'chat.message', text: 'during outage' }))
    await waitFor(() => a2.messages.length === 2, { timeoutMs: 500 }) // same server: at once
    assert.equal(b1.messages.length, 1)

    await server.start()
    await waitFor(() => b1.messages.length === 2, { timeoutMs: 5000 }) // from the outbox
    assert.equal(b1.messages[1]?.text, 'during outage')
  })
})
