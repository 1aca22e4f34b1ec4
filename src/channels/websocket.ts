import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type RawData, type WebSocket } from 'ws'
import { invalidOption } from '../errors.js'
import { loggableError, type Logger } from '../logger.js'
import { safeJsonParse } from '../util/json.js'
import type { ChannelLayerApi } from './api.js'
import type { Sink } from './memory-layer.js'
import type { ChannelMessage, Entry } from './message.js'

/** A message from a WebSocket client: a JSON object with a string `type`. */
export interface ClientMessage {
  type: string
  [key: string]: unknown
}

type MaybePromise<T> = T | Promise<T>

/**
 * One connection's behaviour, returned by the `consumer` factory (Channels' consumer class).
 * Every hook runs in order, one at a time per connection: a `receive` handler never overlaps
 * `connect`, another handler or `disconnect`.
 */
export interface Consumer {
  /** Runs first. Throw (or call `context.close()`) to refuse the connection. */
  connect?(): MaybePromise<void>
  /**
   * Client frames. A map from `type` to handler (a frame whose type has no handler closes the
   * socket with 1003), or one function for every frame.
   */
  receive?:
    | ((message: ClientMessage) => MaybePromise<void>)
    | Record<string, (message: ClientMessage) => MaybePromise<void>>
  /**
   * Channel-layer messages for this connection's channel (group sends, sends to its channel),
   * by `type`. A type without a handler is forwarded to the client as JSON unchanged — the
   * JSON text the sender serialized, never re-encoded.
   */
  handlers?: Record<string, (message: ChannelMessage) => MaybePromise<void>>
  /** Runs once, after the socket closed (groups are already discarded). */
  disconnect?(info: { code: number; reason: string }): MaybePromise<void>
}

/** What a consumer can do with its connection. */
export interface ConsumerContext {
  /** Per-server connection number, from 1. */
  readonly id: number
  /** This connection's channel name on the layer (`layer.send(channel, …)` reaches it). */
  readonly channel: string
  readonly request: IncomingMessage
  readonly layer: ChannelLayerApi
  /** Groups joined through `groupAdd` (discarded automatically on close). */
  readonly groups: ReadonlySet<string>
  /**
   * Send a JSON message to this client. Returns false if the socket is closing or was just
   * closed for being too slow (its send buffer passed `maxBufferedBytes`).
   */
  send(message: unknown): boolean
  groupAdd(group: string): Promise<void>
  groupDiscard(group: string): Promise<void>
  /** Close the socket (default 1000). */
  close(code?: number, reason?: string): void
}

export interface ChannelWebSocketOptions {
  /**
   * HTTP(S) server to mount on: an 'upgrade' listener handles requests for `path`. Omit it to
   * route upgrades yourself through `handleUpgrade`.
   */
  server?: HttpServer | HttpsServer
  /** Exact URL path (query string ignored). Default '/ws'. */
  path?: string
  /** Called once per connection; returns its hooks. */
  consumer: (context: ConsumerContext) => MaybePromise<Consumer>
  /** Largest client frame, in bytes; larger ones close the socket with 1009. Default 65536. */
  maxPayloadBytes?: number
  /**
   * Ping period, in ms: a socket that has not answered the previous ping (nor sent anything)
   * when the next one is due is terminated. 0 disables. Default 30000.
   */
  heartbeatMs?: number
  /**
   * Bytes queued for one client (ws `bufferedAmount`) above which it is closed with 1013
   * instead of growing memory without limit. Default 1048576 (1 MiB).
   */
  maxBufferedBytes?: number
  /**
   * Per-socket rate limit on client frames (token bucket: `messages` per `intervalMs`, bursts
   * up to `messages`); over it the socket is closed with 1008. `false` disables.
   * Default { messages: 100, intervalMs: 1000 }.
   */
  rateLimit?: { messages: number; intervalMs: number } | false
  /** Client frames waiting while a handler runs; over it the socket is closed with 1013. Default 100. */
  maxPendingMessages?: number
  /** Accept or refuse a handshake by its Origin header (refused: HTTP 403). Default: accept all. */
  verifyOrigin?: (origin: string | undefined, request: IncomingMessage) => MaybePromise<boolean>
  /** Prefix of each connection's channel name. Default 'ws'. */
  channelPrefix?: string
  /** After a server-initiated close, ms before the socket is destroyed if the client does not answer. Default 1000. */
  closeGraceMs?: number
}

/** @internal What the layer lends its WebSocket servers. */
/** `server.status()`: the endpoint's path, clients connected now, and its counters. */
export type ChannelWebSocketStatus = { path: string; clients: number } & ChannelWebSocketCounters

export interface LayerInternals {
  /** `newChannel` without the promise. */
  newChannel(prefix: string): string
  attach(channel: string, sink: Sink): void
  release(channel: string): void
  parse(entry: Entry): ChannelMessage
  onClose(server: ChannelWebSocketServer): void
  readonly logger: Logger
}

/** Close codes (RFC 6455 §7.4.1 and the IANA registry). */
export const CloseCode = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  unsupportedData: 1003,
  invalidPayload: 1007,
  policyViolation: 1008,
  tooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013,
})

/** Forwarded JSON goes out as a text frame even when passed as bytes. */
const TEXT_FRAME = { binary: false } as const

const defaults = {
  path: '/ws',
  maxPayloadBytes: 64 * 1024,
  heartbeatMs: 30_000,
  maxBufferedBytes: 1024 * 1024,
  rateLimit: { messages: 100, intervalMs: 1000 },
  maxPendingMessages: 100,
  channelPrefix: 'ws',
  closeGraceMs: 1000,
} as const

interface Resolved {
  path: string
  maxPayloadBytes: number
  heartbeatMs: number
  maxBufferedBytes: number
  rateLimit: { messages: number; intervalMs: number } | false
  maxPendingMessages: number
  channelPrefix: string
  closeGraceMs: number
}

function resolve(options: ChannelWebSocketOptions): Resolved {
  if (typeof options !== 'object' || options === null) {
    throw invalidOption('websocket', 'an options object', options)
  }
  if (typeof options.consumer !== 'function') {
    throw invalidOption(
      'websocket.consumer',
      'a function returning the consumer hooks',
      options.consumer,
    )
  }
  const int = (name: keyof Resolved, value: unknown, fallback: number, min: number): number => {
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw invalidOption(`websocket.${name}`, 'an integer', value)
    }
    if (value < min) throw invalidOption(`websocket.${name}`, `at least ${min}`, value, 'range')
    return value
  }
  const path = options.path ?? defaults.path
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw invalidOption('websocket.path', 'a path starting with "/"', path)
  }
  let rateLimit: Resolved['rateLimit'] = { ...defaults.rateLimit }
  if (options.rateLimit === false) rateLimit = false
  else if (options.rateLimit !== undefined) {
    const { messages, intervalMs } = options.rateLimit
    rateLimit = {
      messages: int('rateLimit', messages, 0, 1),
      intervalMs: int('rateLimit', intervalMs, 0, 1),
    }
  }
  const prefix = options.channelPrefix ?? defaults.channelPrefix
  if (typeof prefix !== 'string' || !/^[a-zA-Z0-9\-_.]{1,40}$/.test(prefix)) {
    throw invalidOption(
      'websocket.channelPrefix',
      '1-40 ASCII letters, digits, "-", "_" or "."',
      prefix,
    )
  }
  if (options.verifyOrigin !== undefined && typeof options.verifyOrigin !== 'function') {
    throw invalidOption('websocket.verifyOrigin', 'a function', options.verifyOrigin)
  }
  return {
    path,
    maxPayloadBytes: int('maxPayloadBytes', options.maxPayloadBytes, defaults.maxPayloadBytes, 1),
    heartbeatMs: int('heartbeatMs', options.heartbeatMs, defaults.heartbeatMs, 0),
    maxBufferedBytes: int(
      'maxBufferedBytes',
      options.maxBufferedBytes,
      defaults.maxBufferedBytes,
      1,
    ),
    rateLimit,
    maxPendingMessages: int(
      'maxPendingMessages',
      options.maxPendingMessages,
      defaults.maxPendingMessages,
      1,
    ),
    channelPrefix: prefix,
    closeGraceMs: int('closeGraceMs', options.closeGraceMs, defaults.closeGraceMs, 0),
  }
}

/**
 * Runs one connection's hooks one at a time, in arrival order, without a promise per message
 * when a hook is synchronous (the common "forward to the client" path runs inline).
 */
class SerialQueue {
  readonly #tasks: Array<() => unknown> = []
  #busy = false
  readonly #onError: (error: unknown) => void

  constructor(onError: (error: unknown) => void) {
    this.#onError = onError
  }

  get pending(): number {
    return this.#tasks.length
  }

  get idle(): boolean {
    return !this.#busy && this.#tasks.length === 0
  }

  run(task: () => unknown): void {
    this.#tasks.push(task)
    if (!this.#busy) this.#drain()
  }

  #drain(): void {
    while (this.#tasks.length > 0) {
      const task = this.#tasks.shift() as () => unknown
      let result: unknown
      try {
        result = task()
      } catch (error) {
        this.#onError(error)
        continue
      }
      if (isThenable(result)) {
        this.#busy = true
        result.then(
          () => this.#resume(),
          (error: unknown) => {
            this.#onError(error)
            this.#resume()
          },
        )
        return
      }
    }
  }

  #resume(): void {
    this.#busy = false
    this.#drain()
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

/** The part of ws' underlying net.Socket used to batch frames (`cork` / `uncork`). */
interface Corkable {
  cork(): void
  uncork(): void
}

/**
 * Frames sent to one socket within a tick are handed to the kernel together (one writev
 * instead of one per frame: a group send to 50 sockets in a burst was syscall-bound), but
 * never more than this many bytes are held back before a flush. The first frame of a tick is
 * written at once: a lone message is not delayed by the batching.
 */
const CORK_FLUSH_BYTES = 64 * 1024

class Connection {
  readonly groups = new Set<string>()
  /** ws' underlying socket if reachable (ws' `_socket`), for write batching; null otherwise. */
  readonly raw: Corkable | null
  /** A frame was sent to this socket in the current tick. */
  touched = false
  corked = false
  corkedBytes = 0
  hooks: Consumer | null = null
  connected = false
  closing = false
  closed = false
  alive = true
  tokens: number
  lastRefill: number
  graceTimer: NodeJS.Timeout | null = null
  readonly queue: SerialQueue
  readonly context: ConsumerContext

  constructor(
    readonly id: number,
    readonly socket: WebSocket,
    readonly channel: string,
    tokens: number,
    queueError: (error: unknown) => void,
    makeContext: (connection: Connection) => ConsumerContext,
  ) {
    this.tokens = tokens
    this.lastRefill = Date.now()
    const raw = (socket as unknown as { _socket?: Partial<Corkable> })._socket
    this.raw =
      raw !== undefined && typeof raw.cork === 'function' && typeof raw.uncork === 'function'
        ? (raw as Corkable)
        : null
    this.queue = new SerialQueue(queueError)
    this.context = makeContext(this)
  }
}

export interface ChannelWebSocketCounters {
  connections: number
  closedSlow: number
  heartbeatTimeouts: number
  malformed: number
  rateLimited: number
  handlerErrors: number
  originRefused: number
  forwarded: number
  /**
   * Client connections that ended with a TCP reset or a broken pipe (ECONNRESET, EPIPE…): a
   * tab closed, a network lost. Normal for a WebSocket endpoint: counted, logged at debug.
   */
  clientResets: number
  /** Other errors on a client's socket: counted, logged at WARNING (at most one line per second). */
  socketErrors: number
}

/** Socket error codes that only mean the client went away. */
const CLIENT_GONE = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ETIMEDOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_STREAM_DESTROYED',
])

/**
 * WebSocket endpoint (on `ws`) whose connections are channel-layer consumers: each gets its
 * own channel, joins groups, receives the layer's messages (forwarded to the client, or to a
 * handler by type) and has its client frames dispatched by type. Bounded per socket: frame
 * size, send buffer, pending frames, frame rate; dead sockets are found by ping/pong.
 */
export class ChannelWebSocketServer {
  readonly #layer: ChannelLayerApi
  readonly #internals: LayerInternals
  readonly #options: Resolved
  readonly #factory: ChannelWebSocketOptions['consumer']
  readonly #verifyOrigin: ChannelWebSocketOptions['verifyOrigin']
  readonly #wss: WebSocketServer
  readonly #connections = new Set<Connection>()
  /** Connections that were sent a frame in the current tick. */
  #touched: Connection[] = []
  readonly #logger: Logger
  readonly #server: HttpServer | HttpsServer | undefined
  readonly #onUpgrade: ((req: IncomingMessage, socket: Duplex, head: Buffer) => void) | null
  #heartbeat: NodeJS.Timeout | null = null
  #nextId = 0
  #closed = false
  #lastErrorLog = 0
  #errorsSinceLog = 0
  readonly counters: ChannelWebSocketCounters = {
    connections: 0,
    closedSlow: 0,
    heartbeatTimeouts: 0,
    malformed: 0,
    rateLimited: 0,
    handlerErrors: 0,
    originRefused: 0,
    forwarded: 0,
    clientResets: 0,
    socketErrors: 0,
  }

  constructor(layer: ChannelLayerApi, internals: LayerInternals, options: ChannelWebSocketOptions) {
    this.#options = resolve(options)
    this.#layer = layer
    this.#internals = internals
    this.#factory = options.consumer
    this.#verifyOrigin = options.verifyOrigin
    this.#logger = internals.logger
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.#options.maxPayloadBytes,
      perMessageDeflate: false,
      clientTracking: false,
    })
    this.#server = options.server
    if (this.#server) {
      const server = this.#server
      this.#onUpgrade = (req, socket, head) => {
        if (this.handleUpgrade(req, socket, head)) return
        // Not our path: leave it to another 'upgrade' listener if there is one.
        if (server.listenerCount('upgrade') <= 1) refuse(socket, 404, 'Not Found')
      }
      server.on('upgrade', this.#onUpgrade)
    } else {
      this.#onUpgrade = null
    }
    if (this.#options.heartbeatMs > 0) {
      this.#heartbeat = setInterval(() => this.#ping(), this.#options.heartbeatMs)
      this.#heartbeat.unref()
    }
  }

  get clientCount(): number {
    return this.#connections.size
  }

  get path(): string {
    return this.#options.path
  }

  /**
   * Take over an HTTP upgrade request if its path is ours; returns false (and leaves the
   * socket alone) otherwise. For servers mounted without the `server` option.
   */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (pathOf(request.url) !== this.#options.path) return false
    if (this.#closed) {
      refuse(socket, 503, 'Service Unavailable')
      return true
    }
    socket.on('error', (error: unknown) => this.#onSocketError(error))
    const accept = (): void =>
      this.#wss.handleUpgrade(request, socket, head, (ws) => this.#onConnection(ws, request))
    const verify = this.#verifyOrigin
    if (verify === undefined) {
      accept()
      return true
    }
    let verdict: MaybePromise<boolean>
    try {
      verdict = verify(request.headers.origin, request)
    } catch (error) {
      this.#logError(error, 'verifyOrigin threw; handshake refused')
      verdict = false
    }
    const decide = (ok: boolean): void => {
      if (ok === true && !this.#closed) accept()
      else {
        this.counters.originRefused++
        refuse(socket, 403, 'Forbidden')
      }
    }
    if (isThenable(verdict)) {
      Promise.resolve(verdict).then(decide, (error: unknown) => {
        this.#logError(error, 'verifyOrigin rejected; handshake refused')
        decide(false)
      })
    } else decide(verdict)
    return true
  }

  status(): ChannelWebSocketStatus {
    return { path: this.#options.path, clients: this.clientCount, ...this.counters }
  }

  /** Stop accepting, close every client with 1001 and wait for them (up to closeGraceMs). */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#server && this.#onUpgrade) this.#server.off('upgrade', this.#onUpgrade)
    if (this.#heartbeat) clearInterval(this.#heartbeat)
    const closing = [...this.#connections].map(
      (connection) =>
        new Promise<void>((done) => {
          if (connection.closed) return done()
          connection.socket.once('close', () => done())
          this.#closeConnection(connection, CloseCode.goingAway, 'server shutting down')
        }),
    )
    await Promise.all(closing)
    await new Promise<void>((done) => this.#wss.close(() => done()))
    this.#internals.onClose(this)
  }

  // ── connections ────────────────────────────────────────────────────────────────────────────

  #onConnection(socket: WebSocket, request: IncomingMessage): void {
    if (this.#closed) {
      socket.terminate()
      return
    }
    const id = ++this.#nextId
    this.counters.connections++
    // Synchronously, so no frame can arrive before the connection exists.
    let channel: string
    try {
      channel = this.#internals.newChannel(this.#options.channelPrefix)
    } catch (error) {
      this.#logError(error, 'could not create a channel for a connection')
      socket.close(CloseCode.internalError, 'channel layer unavailable')
      return
    }
    const rate = this.#options.rateLimit
    const connection = new Connection(
      id,
      socket,
      channel,
      rate === false ? 0 : rate.messages,
      (error) => this.#handlerFailed(connection, error),
      (c) => this.#context(c, request),
    )
    this.#connections.add(connection)

    socket.on('error', (error: unknown) => {
      // ws reports protocol violations (bad UTF-8, oversized frame, bad opcode) here and closes
      // the socket itself with the matching code (1007, 1009, 1002).
      this.counters.malformed++
      this.#logError(error, 'websocket protocol error', 'debug')
    })
    socket.on('pong', () => {
      connection.alive = true
    })
    socket.on('message', (data, isBinary) => this.#onFrame(connection, data, isBinary))
    socket.on('close', (code, reason) => this.#onClosed(connection, code, reason.toString()))

    connection.queue.run(async () => {
      const hooks = await this.#factory(connection.context)
      if (connection.closing) return
      connection.hooks = hooks ?? {}
      await connection.hooks.connect?.()
      if (connection.closing) return
      connection.connected = true
      this.#internals.attach(channel, (entry) => this.#deliver(connection, entry))
    })
  }

  #context(connection: Connection, request: IncomingMessage): ConsumerContext {
    const layer = this.#layer
    return {
      id: connection.id,
      channel: connection.channel,
      request,
      layer,
      groups: connection.groups,
      send: (message: unknown) => this.#sendText(connection, JSON.stringify(message)),
      groupAdd: async (group: string) => {
        await layer.groupAdd(group, connection.channel)
        if (connection.closing) {
          await layer.groupDiscard(group, connection.channel)
          return
        }
        connection.groups.add(group)
      },
      groupDiscard: async (group: string) => {
        connection.groups.delete(group)
        await layer.groupDiscard(group, connection.channel)
      },
      close: (code = CloseCode.normal, reason = '') =>
        this.#closeConnection(connection, code, reason),
    }
  }

  /** A layer message for this connection: to its handler by type, or to the client as is. */
  #deliver(connection: Connection, entry: Entry): void {
    if (connection.closing) return
    const handler = connection.hooks?.handlers
    if (handler !== undefined && Object.hasOwn(handler, entry.type)) {
      const fn = handler[entry.type]
      if (typeof fn === 'function') {
        connection.queue.run(() => {
          if (connection.closing) return undefined
          return fn(this.#internals.parse(entry))
        })
        return
      }
    }
    if (connection.queue.idle) this.#forward(connection, entry)
    else connection.queue.run(() => this.#forward(connection, entry))
  }

  #forward(connection: Connection, entry: Entry): void {
    entry.bytes ??= Buffer.from(entry.json)
    if (this.#sendText(connection, entry.bytes)) this.counters.forwarded++
  }

  /** Send a text frame; `text` may be its UTF-8 bytes, already encoded. */
  #sendText(connection: Connection, text: string | Buffer): boolean {
    if (connection.closing) return false
    const socket = connection.socket
    if (socket.readyState !== socket.OPEN) return false
    if (socket.bufferedAmount + text.length > this.#options.maxBufferedBytes) {
      this.counters.closedSlow++
      this.#closeConnection(
        connection,
        CloseCode.tryAgainLater,
        'client too slow: send buffer full',
      )
      return false
    }
    const raw = connection.raw
    if (raw !== null) {
      if (!connection.touched) {
        connection.touched = true
        this.#touched.push(connection)
        if (this.#touched.length === 1) process.nextTick(this.#endOfTick)
      } else if (!connection.corked) {
        raw.cork()
        connection.corked = true
      } else if (connection.corkedBytes > CORK_FLUSH_BYTES) {
        raw.uncork()
        raw.cork()
        connection.corkedBytes = 0
      }
      if (connection.corked) connection.corkedBytes += text.length
    }
    socket.send(text, TEXT_FRAME)
    return true
  }

  /** Runs once per tick in which frames were sent: hands the held ones to the kernel. */
  readonly #endOfTick = (): void => {
    const touched = this.#touched
    this.#touched = []
    for (const connection of touched) {
      connection.touched = false
      if (!connection.corked) continue
      connection.corked = false
      connection.corkedBytes = 0
      connection.raw?.uncork()
    }
  }

  #onFrame(connection: Connection, data: RawData, isBinary: boolean): void {
    connection.alive = true
    if (connection.closing) return
    if (isBinary) {
      this.counters.malformed++
      this.#closeConnection(
        connection,
        CloseCode.unsupportedData,
        'binary frames are not supported',
      )
      return
    }
    const rate = this.#options.rateLimit
    if (rate !== false) {
      const now = Date.now()
      connection.tokens = Math.min(
        rate.messages,
        connection.tokens + ((now - connection.lastRefill) * rate.messages) / rate.intervalMs,
      )
      connection.lastRefill = now
      if (connection.tokens < 1) {
        this.counters.rateLimited++
        this.#closeConnection(connection, CloseCode.policyViolation, 'rate limit exceeded')
        return
      }
      connection.tokens -= 1
    }
    if (connection.queue.pending >= this.#options.maxPendingMessages) {
      this.#closeConnection(connection, CloseCode.tryAgainLater, 'too many pending messages')
      return
    }
    const text = Array.isArray(data)
      ? Buffer.concat(data).toString('utf8')
      : Buffer.isBuffer(data)
        ? data.toString('utf8')
        : Buffer.from(data).toString('utf8')
    let message: unknown
    try {
      message = safeJsonParse(text)
    } catch {
      this.counters.malformed++
      this.#closeConnection(connection, CloseCode.invalidPayload, 'invalid JSON')
      return
    }
    if (
      typeof message !== 'object' ||
      message === null ||
      Array.isArray(message) ||
      typeof (message as { type?: unknown }).type !== 'string'
    ) {
      this.counters.malformed++
      this.#closeConnection(
        connection,
        CloseCode.invalidPayload,
        'a message must be a JSON object with a string "type"',
      )
      return
    }
    const clientMessage = message as ClientMessage
    connection.queue.run(() => {
      if (connection.closing) return undefined
      const receive = connection.hooks?.receive
      if (typeof receive === 'function') return receive(clientMessage)
      const handler =
        receive !== undefined && Object.hasOwn(receive, clientMessage.type)
          ? receive[clientMessage.type]
          : undefined
      if (typeof handler !== 'function') {
        this.counters.malformed++
        this.#closeConnection(
          connection,
          CloseCode.unsupportedData,
          truncateReason(`no handler for message type "${clientMessage.type}"`),
        )
        return undefined
      }
      return handler(clientMessage)
    })
  }

  #handlerFailed(connection: Connection, error: unknown): void {
    this.counters.handlerErrors++
    this.#logError(error, 'a consumer hook threw; the connection is closed')
    this.#closeConnection(connection, CloseCode.internalError, 'internal error')
  }

  #closeConnection(connection: Connection, code: number, reason: string): void {
    if (connection.closing) return
    connection.closing = true
    const socket = connection.socket
    try {
      socket.close(code, truncateReason(reason))
    } catch (error) {
      // An invalid application code from context.close(): close normally instead.
      this.#logError(error, 'invalid close code', 'debug')
      socket.close(CloseCode.internalError, 'internal error')
    }
    // The close frame may wait behind a full send buffer (a slow client) or never be answered
    // (a dead one): destroy the socket after a grace period.
    connection.graceTimer = setTimeout(() => socket.terminate(), this.#options.closeGraceMs)
    connection.graceTimer.unref()
  }

  #onClosed(connection: Connection, code: number, reason: string): void {
    connection.closing = true
    connection.closed = true
    if (connection.graceTimer) clearTimeout(connection.graceTimer)
    this.#connections.delete(connection)
    // Groups first: nothing more is delivered to a closed socket.
    connection.groups.clear()
    if (!this.#layer.closed) this.#internals.release(connection.channel)
    connection.queue.run(() => {
      if (connection.hooks === null) return undefined
      return connection.hooks.disconnect?.({ code, reason })
    })
  }

  #ping(): void {
    for (const connection of this.#connections) {
      if (connection.closing) continue
      if (!connection.alive) {
        this.counters.heartbeatTimeouts++
        connection.closing = true
        connection.socket.terminate()
        continue
      }
      connection.alive = false
      connection.socket.ping()
    }
  }

  /**
   * An error on a client's TCP socket. A reset or a broken pipe is a client going away (a tab
   * closed): counted and logged at debug. Anything else is the client's connection failing,
   * not the service: a WARNING. ERROR stays for what breaks the service (Redis, a hook).
   */
  #onSocketError(error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code
    if (typeof code === 'string' && CLIENT_GONE.has(code)) {
      this.counters.clientResets++
      this.#logError(error, 'client connection reset', 'debug')
      return
    }
    this.counters.socketErrors++
    this.#logError(error, 'client socket error', 'warn')
  }

  #logError(error: unknown, message: string, level: 'error' | 'warn' | 'debug' = 'error'): void {
    if (level === 'debug') {
      this.#logger.debug({ err: loggableError(error) }, message)
      return
    }
    this.#errorsSinceLog++
    const now = Date.now()
    if (now - this.#lastErrorLog < 1000) return
    this.#logger[level]({ err: loggableError(error), errors: this.#errorsSinceLog }, message)
    this.#lastErrorLog = now
    this.#errorsSinceLog = 0
  }
}

function pathOf(url: string | undefined): string {
  if (url === undefined) return '/'
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

function refuse(socket: Duplex, status: number, text: string): void {
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  }
  socket.destroy()
}

/** A close reason is at most 123 bytes of UTF-8. */
function truncateReason(reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason
  let out = reason.slice(0, 120)
  while (Buffer.byteLength(out) > 120) out = out.slice(0, -1)
  return `${out}...`
}
