/**
 * One WebSocket server process of the channels benchmark, driven by its parent over IPC.
 * IMPL chooses the stack; every connection joins the group/room 'room'; the parent asks it
 * to send messages to the room (a burst, or at a steady rate). Messages carry a sequence
 * number `n` and the send time `t` (ms, performance.timeOrigin-based) for latency.
 *
 *   failsoft      failsoft channel layer + its ws consumer API
 *   sio-redis     Socket.IO + @socket.io/redis-adapter (pub/sub), ioredis clients
 *   sio-streams   Socket.IO + @socket.io/redis-streams-adapter, ioredis client
 *   sio-memory    Socket.IO with its default in-memory adapter (one process)
 *   sio-failsoft  Socket.IO + failsoft/socket.io (failsoft's channel layer), failsoft defaults
 *
 * With FAIL_FAST=1 the Socket.IO stacks' ioredis clients use the settings a careful user picks
 * to fail fast (no offline queue, no retries per command, a command timeout, reconnects
 * capped at 1 s) instead of ioredis' defaults; the streams adapter keeps two defaults (below).
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setImmediate as yieldToIo } from 'node:timers/promises'
import { Redis, type RedisOptions } from 'ioredis'
import { Server as SocketIoServer } from 'socket.io'
import { createAdapter as createPubSubAdapter } from '@socket.io/redis-adapter'
import { createAdapter as createStreamsAdapter } from '@socket.io/redis-streams-adapter'
import { createFailsoft } from '../../../src/index.js'
import { createAdapter as createFailsoftAdapter } from '../../../src/socket.io.js'

type Impl = 'failsoft' | 'sio-redis' | 'sio-streams' | 'sio-memory' | 'sio-failsoft'
const impl = (process.env.IMPL ?? 'failsoft') as Impl
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:1'
const FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 250,
  connectTimeout: 1000,
  retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
}
/**
 * The streams adapter cannot take the whole set, measured here: its poll loop re-issues XREAD
 * at once after an error, so without an offline queue every XREAD issued before the socket is
 * ready fails at once and the loop spins on microtasks (100 % CPU, the server never listens);
 * and a command timeout cuts every blocking XREAD (BLOCK 5000). It keeps the offline queue and
 * no command timeout, with the rest of the fail-fast settings.
 */
const STREAMS_FAIL_FAST: RedisOptions = {
  ...FAIL_FAST,
  enableOfflineQueue: true,
  commandTimeout: undefined,
}
const clientOptions: RedisOptions =
  process.env.FAIL_FAST !== '1' ? {} : impl === 'sio-streams' ? STREAMS_FAIL_FAST : FAIL_FAST
/** Failures a stack let escape (unhandled rejections / uncaught errors): reported, not fatal. */
let escaped = 0
process.on('unhandledRejection', () => void escaped++)
process.on('uncaughtException', () => void escaped++)

const now = (): number => performance.timeOrigin + performance.now()
const http = createServer((_req, res) => res.end('bench'))

let emit: (message: { n: number; t: number }) => Promise<void> | void
let shutdown: () => Promise<void>
let describe: () => Record<string, unknown> = () => ({})

if (impl === 'failsoft') {
  const failsoft = createFailsoft({ redis: redisUrl, prefix: 'benchch', logger: false })
  const layer = failsoft.channels()
  const ws = layer.websocket({
    server: http,
    path: '/ws',
    consumer: (ctx) => ({ connect: () => ctx.groupAdd('room') }),
  })
  emit = (message) => layer.groupSend('room', { type: 'bench', ...message })
  shutdown = async () => {
    await failsoft.close()
  }
  describe = () => ({ layer: layer.status(), ws: ws.status() })
  await failsoft.ready()
} else {
  const io = new SocketIoServer(http, { transports: ['websocket'], serveClient: false })
  const clients: Redis[] = []
  let closeFailsoft = async (): Promise<void> => undefined
  const redis = (): Redis => {
    // The adapters' documented setup (default options), or the fail-fast settings.
    const client = new Redis(redisUrl, clientOptions)
    client.on('error', () => undefined) // without it ioredis would crash the process
    clients.push(client)
    return client
  }
  if (impl === 'sio-redis') {
    const pub = redis()
    const sub = pub.duplicate()
    sub.on('error', () => undefined)
    clients.push(sub)
    io.adapter(createPubSubAdapter(pub, sub))
  } else if (impl === 'sio-streams') {
    io.adapter(createStreamsAdapter(redis()))
  } else if (impl === 'sio-failsoft') {
    // failsoft's defaults: the fail-fast settings are what failsoft does anyway.
    const failsoft = createFailsoft({ redis: redisUrl, prefix: 'benchsio', logger: false })
    io.adapter(createFailsoftAdapter(failsoft))
    closeFailsoft = () => failsoft.close()
    describe = () => ({
      adapter: (io.of('/').adapter as unknown as { status(): unknown }).status(),
      layer: failsoft.channels({ name: 'socket.io' }).status(),
    })
    await failsoft.ready()
  }
  io.on('connection', (socket) => void socket.join('room'))
  emit = (message) => void io.to('room').emit('bench', message)
  shutdown = async () => {
    await io.close()
    await closeFailsoft()
    for (const client of clients) client.disconnect()
  }
}

let steady: NodeJS.Timeout | null = null
let sent = 0

async function burst(count: number, batch: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const pending = emit({ n: sent++, t: now() })
    if (pending) await pending
    if (i % batch === batch - 1) await yieldToIo()
  }
}

function startSteady(perSecond: number): void {
  const tickMs = 5
  const started = now()
  let due = 0
  steady = setInterval(() => {
    const target = Math.floor(((now() - started) / 1000) * perSecond)
    for (; due < target; due++) void emit({ n: sent++, t: now() })
  }, tickMs)
}

type Command =
  | { id: number; cmd: 'burst'; count: number; batch: number }
  | { id: number; cmd: 'steady'; perSecond: number }
  | { id: number; cmd: 'stop' }
  | { id: number; cmd: 'reset' }
  | { id: number; cmd: 'status' }
  | { id: number; cmd: 'close' }

async function handle(command: Command): Promise<unknown> {
  switch (command.cmd) {
    case 'burst':
      await burst(command.count, command.batch)
      return { sent }
    case 'steady':
      startSteady(command.perSecond)
      return {}
    case 'stop':
      if (steady) clearInterval(steady)
      steady = null
      return { sent }
    case 'reset':
      sent = 0
      return {}
    case 'status':
      return { escaped, ...describe() }
    case 'close':
      if (steady) clearInterval(steady)
      await shutdown()
      http.closeAllConnections()
      http.close()
      setImmediate(() => process.exit(0))
      return {}
  }
}

process.on('message', (command: Command) => {
  handle(command).then(
    (result) => process.send?.({ id: command.id, ok: true, result }),
    (error: unknown) => process.send?.({ id: command.id, ok: false, error: String(error) }),
  )
})

http.listen(0, '127.0.0.1', () => {
  process.send?.({ event: 'listening', port: (http.address() as AddressInfo).port })
})
