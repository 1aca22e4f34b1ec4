import { createHash, randomBytes } from 'node:crypto'
import type { Namespace, Socket } from 'socket.io'
import {
  ClusterAdapterWithHeartbeat,
  MessageType,
  type BroadcastOptions,
  type ClusterMessage,
  type ClusterResponse,
  type Offset,
  type ServerId,
} from 'socket.io-adapter'
import type { ChannelLayer, ChannelListener } from '../channels/layer.js'
import type { ChannelMessage } from '../channels/message.js'
import { ClosedError } from '../errors.js'
import type { Failsoft } from '../failsoft.js'
import type { Disposable } from '../health/events.js'
import { loggableError, type Logger } from '../logger.js'
import { decodeBinary, encodeBinary } from './encoding.js'
import { ClusterUnavailableError } from './errors.js'
import { Liveness } from './liveness.js'
import type { ResolvedAdapterOptions } from './options.js'
import { PendingRequests } from './pending.js'

/** The channel-layer message type of every Socket.IO cluster message and response. */
const WIRE_TYPE = 'sio'
/** socket.io-adapter's id for messages published by `@socket.io/*-emitter` (never a server). */
const EMITTER_UID = 'emitter'
/** socket.io-adapter's ClusterAdapterWithHeartbeat gives up on `serverSideEmit` after this. */
const BASE_REQUEST_TIMEOUT_MS = 5000
const LIVENESS_TICK_MS = 1000
const WARNING_INTERVAL_MS = 10_000

/** A cluster message as it travels on the channel layer. */
interface WireMessage extends ChannelMessage {
  type: typeof WIRE_TYPE
  /** The ClusterMessage / ClusterResponse, binary values replaced (see encoding.ts). */
  m: unknown
  /** 1 when `m` holds binary markers to restore. */
  b?: 1
}

export interface AdapterDeps {
  readonly failsoft: Failsoft
  readonly layer: ChannelLayer
  readonly options: ResolvedAdapterOptions
}

/** Counters of one namespace's adapter (`adapter.status()`). */
export interface FailsoftAdapterStatus {
  /** This adapter's server id: its channel on the layer, where responses are sent. */
  uid: string
  /** The layer group every server's adapter for this namespace is a member of. */
  group: string
  /** 'redis' while the other servers are reachable, 'memory' while Redis is unavailable. */
  backend: 'redis' | 'memory'
  /** Other servers of this namespace currently known alive. */
  otherServers: number
  /** Cluster messages and responses handed to the layer (delivered or kept in its outbox). */
  published: number
  /** Cluster messages that could not be handed to the layer (too large, unencodable, closed). */
  notPublished: number
  /** Messages from the other servers, and their responses, received. */
  received: number
  /** Received messages that were not Socket.IO cluster messages of this namespace (ignored). */
  malformed: number
  /** Requests answered with a ClusterUnavailableError. */
  unavailableRequests: number
  /** Requests waiting for other servers' answers. */
  pendingRequests: number
}

/**
 * The group of a namespace: the key, then a digest of the namespace name (namespace names are
 * free text; group names are ASCII letters, digits, `-`, `_`, `.`).
 */
export function groupFor(key: string, namespace: string): string {
  return `${key}.${createHash('sha256').update(namespace).digest('base64url').slice(0, 22)}`
}

type ServerSideAck = (error: Error | null, responses: unknown[]) => void

interface TrackedEmit {
  readonly responses: unknown[]
}

/**
 * Socket.IO's cluster adapter (socket.io-adapter's `ClusterAdapterWithHeartbeat`: request and
 * response semantics, heartbeats, message types) with failsoft's channel layer as the
 * transport:
 *
 * - every server's adapter for a namespace is a member of one layer group (`groupFor`); a
 *   cluster message (broadcast, socketsJoin/Leave, disconnectSockets, fetchSockets and
 *   serverSideEmit requests, heartbeats) is one `groupSend` to it;
 * - each adapter's server id is its own channel on the layer (`layer.listen`), so a response
 *   is one `send` to the requester's id.
 *
 * The layer serves this process' other members from memory, keeps what the other processes
 * need in its bounded outbox while Redis is unavailable and repairs gaps afterwards, so a
 * broadcast made during a short outage reaches every server once, in order. What cannot wait
 * for Redis — the answers to `fetchSockets()` and to `serverSideEmit()` with an
 * acknowledgement — fails fast with a ClusterUnavailableError. See docs/socket.io.md.
 */
export class FailsoftAdapter extends ClusterAdapterWithHeartbeat {
  readonly #failsoft: Failsoft
  readonly #layer: ChannelLayer
  readonly #options: ResolvedAdapterOptions
  readonly #listener: ChannelListener
  readonly #group: string
  readonly #joined: Promise<void>
  readonly #logger: Logger
  /** `createFailsoft({ redis: null })`: one server, no cluster to be cut off from. */
  readonly #memoryOnly: boolean
  readonly #liveness = new Liveness()
  readonly #pending = new PendingRequests()
  /** serverSideEmit requests with an acknowledgement, by request id: responses so far. */
  readonly #emits = new Map<string, TrackedEmit>()
  /** Set while the base class publishes a serverSideEmit: learns its request id. */
  #capture: ((requestId: string) => void) | null = null
  readonly #subscriptions: Disposable[] = []
  readonly #livenessTimer: NodeJS.Timeout
  #closed = false
  #lastWarning = 0
  #warningsSkipped = 0
  readonly #counters = {
    published: 0,
    notPublished: 0,
    received: 0,
    malformed: 0,
    unavailableRequests: 0,
  }

  constructor(nsp: Namespace, deps: AdapterDeps) {
    // Liveness is judged here (Liveness: outage time does not count), so the base class' own
    // wall-clock rule is switched off; removals reach it as an ADAPTER_CLOSE of that server.
    super(nsp, {
      heartbeatInterval: deps.options.heartbeatInterval,
      heartbeatTimeout: Number.POSITIVE_INFINITY,
    })
    this.#failsoft = deps.failsoft
    this.#layer = deps.layer
    this.#options = deps.options
    this.#memoryOnly = deps.failsoft.status().redis.mode === 'memory-only'
    this.#logger = deps.failsoft.context.logger.child({
      component: 'socket.io',
      namespace: nsp.name,
    })
    this.#listener = this.#layer.listen((message) => this.#onLayerMessage(message), 'sio')
    // The server id is the channel responses are sent to: no directory of servers is needed.
    ;(this as unknown as { uid: ServerId }).uid = this.#listener.channel
    this.#group = groupFor(this.#options.key, nsp.name)
    this.#joined = this.#layer.groupAdd(this.#group, this.#listener.channel).catch((error) => {
      this.#warn(error, 'could not join the namespace group')
    })
    const health = this.#failsoft.health
    this.#subscriptions.push(
      health.on('down', () => this.#pending.failAll()),
      health.on('up', ({ at }) => this.#liveness.resumed(at)),
    )
    this.#livenessTimer = setInterval(() => this.#expireSilentServers(), LIVENESS_TICK_MS)
    this.#livenessTimer.unref()
  }

  /** Joins the namespace group first, so the other servers' answers to the hello arrive. */
  override async init(): Promise<void> {
    await this.#joined
    if (!this.#closed) super.init()
  }

  override close(): void {
    if (this.#closed) return
    this.#closed = true
    // ADAPTER_CLOSE first (the other servers stop waiting for this one), then leave.
    super.close()
    clearInterval(this.#livenessTimer)
    for (const subscription of this.#subscriptions.splice(0)) subscription.dispose()
    this.#pending.failAll()
    this.#listener.close()
  }

  status(): FailsoftAdapterStatus {
    return {
      uid: this.uid,
      group: this.#group,
      backend: this.#layer.backend,
      otherServers: this.#liveness.size,
      ...this.#counters,
      pendingRequests: this.#pending.size,
    }
  }

  // ── requests that need the other servers ─────────────────────────────────────────────────

  override async fetchSockets(opts: BroadcastOptions): Promise<unknown[]> {
    if (opts.flags?.local) return super.fetchSockets(opts)
    const local = async (): Promise<Socket[]> =>
      (await super.fetchSockets({ ...opts, flags: { local: true } })) as Socket[]
    const unavailable = async (): Promise<Error> => {
      this.#counters.unavailableRequests++
      return this.#closed
        ? new ClosedError('Socket.IO adapter')
        : new ClusterUnavailableError('fetchSockets', await local())
    }
    await this.#decided()
    if (this.#cutOff()) throw await unavailable()
    const request = super.fetchSockets({
      ...opts,
      flags: { ...opts.flags, timeout: opts.flags?.timeout ?? this.#options.requestsTimeout },
    })
    return this.#pending.race(request, unavailable)
  }

  override async serverSideEmit(packet: unknown[]): Promise<unknown> {
    const ack = packet[packet.length - 1]
    if (typeof ack !== 'function') return super.serverSideEmit(packet)
    packet.pop()
    await this.#decided()
    if (this.#cutOff()) {
      // The event still reaches the other servers once Redis is back (the outbox keeps it, in
      // order with the broadcasts); with a request id their handlers get the callback they
      // expect, and their late answers are ignored (no pending request has that id).
      if (!this.#closed) {
        this.publish({
          type: MessageType.SERVER_SIDE_EMIT,
          data: { requestId: randomBytes(8).toString('hex'), packet },
        })
      }
      this.#counters.unavailableRequests++
      ;(ack as ServerSideAck)(
        this.#closed
          ? new ClosedError('Socket.IO adapter')
          : new ClusterUnavailableError('serverSideEmit'),
        [],
      )
      return undefined
    }
    const expected = (await this.serverCount()) - 1
    const tracked: TrackedEmit = { responses: [] }
    let requestId: string | null = null
    let settled = false
    const finish: ServerSideAck = (error, responses) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      untrack()
      if (requestId !== null) this.#emits.delete(requestId)
      ;(ack as ServerSideAck)(error, responses)
    }
    const untrack = this.#pending.track(() => {
      this.#counters.unavailableRequests++
      finish(
        this.#closed
          ? new ClosedError('Socket.IO adapter')
          : new ClusterUnavailableError('serverSideEmit'),
        [...tracked.responses],
      )
    })
    // socket.io-adapter gives up after its fixed 5 s; requestsTimeout can only be shorter.
    const timer = setTimeout(
      () =>
        finish(
          new Error(
            `timeout reached: missing ${Math.max(0, expected - tracked.responses.length)} responses`,
          ),
          [...tracked.responses],
        ),
      Math.min(this.#options.requestsTimeout, BASE_REQUEST_TIMEOUT_MS + 1),
    )
    this.#capture = (id) => {
      requestId = id
      this.#emits.set(id, tracked)
    }
    try {
      void super.serverSideEmit([...packet, finish])
    } finally {
      this.#capture = null
    }
    return undefined
  }

  override onResponse(response: ClusterResponse): void {
    if (response.type === MessageType.SERVER_SIDE_EMIT_RESPONSE) {
      this.#emits.get(response.data.requestId)?.responses.push(response.data.packet)
    }
    super.onResponse(response)
  }

  override onMessage(message: ClusterMessage, offset?: string): void {
    if (message.uid !== this.uid && message.uid !== EMITTER_UID) {
      if (message.type === MessageType.ADAPTER_CLOSE) this.#liveness.forget(message.uid)
      else this.#liveness.seen(message.uid, Date.now())
    }
    super.onMessage(message, offset)
  }

  // ── transport ──────────────────────────────────────────────────────────────────────────────

  protected override doPublish(message: ClusterMessage): Promise<Offset> {
    if (
      this.#capture !== null &&
      message.type === MessageType.SERVER_SIDE_EMIT &&
      message.data.requestId !== undefined
    ) {
      this.#capture(message.data.requestId)
    }
    return this.#hand(message, null)
  }

  protected override doPublishResponse(
    requesterUid: ServerId,
    response: ClusterResponse,
  ): Promise<void> {
    return this.#hand(response, requesterUid).then(() => undefined)
  }

  /**
   * One cluster message to the layer: to the namespace group, or to one server's channel.
   * Never rejects: a message that cannot be sent is counted and logged, and Socket.IO still
   * serves this server's own clients (older socket.io-adapter versions skipped that when the
   * publish failed). Redis being down is not a failure: the layer keeps the message.
   */
  async #hand(message: ClusterMessage | ClusterResponse, to: string | null): Promise<Offset> {
    try {
      const { value, marked } = encodeBinary(message)
      const wire: WireMessage = marked
        ? { type: WIRE_TYPE, m: value, b: 1 }
        : { type: WIRE_TYPE, m: value }
      // Not to this adapter itself: it is a member of its group (to receive the others').
      if (to === null) await this.#layer.groupSend(this.#group, wire, { except: this.uid })
      else await this.#layer.send(to, wire)
      this.#counters.published++
    } catch (error) {
      this.#counters.notPublished++
      // A closed layer (failsoft closed before Socket.IO) is a shutdown, not a problem to report.
      if (!this.#layer.closed) {
        this.#warn(error, 'a Socket.IO cluster message was not sent to the other servers', {
          messageType: MessageType[message.type],
        })
      }
    }
    // No offsets: connection state recovery needs a persistent log (as with the Redis
    // pub/sub adapter, it is not supported across servers).
    return ''
  }

  #onLayerMessage(message: ChannelMessage): void {
    const wire = message as Partial<WireMessage>
    const inner = wire.m as { uid?: unknown; nsp?: unknown; type?: unknown } | undefined
    if (
      wire.type !== WIRE_TYPE ||
      typeof inner !== 'object' ||
      inner === null ||
      typeof inner.uid !== 'string' ||
      typeof inner.type !== 'number'
    ) {
      this.#counters.malformed++
      return
    }
    // Never its own (groupSend skips this adapter); should one come back, it is not counted.
    if (inner.uid === this.uid) return
    if (inner.nsp !== this.nsp.name) {
      this.#counters.malformed++
      return
    }
    this.#counters.received++
    const decoded = (wire.b === 1 ? decodeBinary(inner) : inner) as ClusterMessage
    // Responses arrive on the same channel: socket.io-adapter's onMessage hands them on to
    // onResponse.
    this.onMessage(decoded)
  }

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  /** True when the other servers cannot be reached now (Redis unavailable, or closed). */
  #cutOff(): boolean {
    return this.#closed || (!this.#memoryOnly && !this.#failsoft.health.available)
  }

  /** Before the first health decision, wait for it (bounded by the connect timeout). */
  async #decided(): Promise<void> {
    if (this.#failsoft.health.state === 'starting') await this.#failsoft.ready()
  }

  #expireSilentServers(): void {
    if (this.#closed || !this.#failsoft.health.available) return
    for (const uid of this.#liveness.expire(Date.now(), this.#options.heartbeatTimeout)) {
      this.#logger.debug({ server: uid }, 'Socket.IO server silent too long: no longer awaited')
      // socket.io-adapter's own removal path: pending requests stop waiting for that server.
      super.onMessage({ uid, nsp: this.nsp.name as string, type: MessageType.ADAPTER_CLOSE })
    }
  }

  #warn(error: unknown, message: string, fields: Record<string, unknown> = {}): void {
    const now = Date.now()
    if (now - this.#lastWarning < WARNING_INTERVAL_MS) {
      this.#warningsSkipped++
      return
    }
    this.#logger.warn(
      { ...fields, err: loggableError(error), similarSkipped: this.#warningsSkipped },
      message,
    )
    this.#lastWarning = now
    this.#warningsSkipped = 0
  }
}
