import { ChannelFullError, ClosedError, InvalidNameError, describeValue } from '../errors.js'
import type { FailsoftContext } from '../context.js'
import type { ComponentHandle, HealthMonitor } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { safeJsonParse } from '../util/json.js'
import type { ChannelLayerApi } from './api.js'
import { CrossProcess, type TopicKind } from './cross-process.js'
import { LocalChannels, type Sink } from './memory-layer.js'
import {
  parseEntry,
  serializeMessage,
  type ChannelMessage,
  type Entry,
  type WireMessage,
} from './message.js'
import {
  assertChannelName,
  assertChannelPrefix,
  assertGroupName,
  MAX_NAME_LENGTH,
  ownerOf,
  randomId,
} from './names.js'
import {
  resolveChannelLayerOptions,
  type ChannelLayerInput,
  type ChannelLayerOptions,
} from './options.js'
import type { ChannelLayerStatus } from './status.js'
import { tracing } from '../diagnostics/channels.js'
import { traceLayerOperation } from './tracing.js'
import {
  ChannelWebSocketServer,
  type ChannelWebSocketOptions,
  type LayerInternals,
} from './websocket.js'

export type { ChannelLayerStatus } from './status.js'

/** Which backend serves cross-process delivery right now. Local delivery never needs Redis. */
export type ChannelBackend = 'redis' | 'memory'

export interface ReceiveOptions {
  /** Abort the wait: the promise rejects with `signal.reason` (an AbortError by default). */
  signal?: AbortSignal
}

export interface GroupSendOptions {
  /** A member channel of this process that does not get the message (the sender's own). */
  except?: string
}

/** A push consumer's channel (`layer.listen`). */
export interface ChannelListener {
  /** The channel's name (`<prefix>.<processId>!<local>`): `send` to it, `groupAdd` it. */
  readonly channel: string
  /** Stop: the channel leaves its groups and is forgotten. Idempotent. */
  close(): void
}

/** A rate-limited warning: at most one line per this period, with a count of what it covers. */
const WARNING_INTERVAL_MS = 10_000

/**
 * The channel layer: Django Channels' layer API (`newChannel`, `send`, `receive`, `groupAdd`,
 * `groupDiscard`, `groupSend`, `flush`) across processes through Redis pub/sub, and within this
 * process through memory — also while Redis is down.
 *
 * - Group membership is held by each process in memory (as channels_redis'
 *   `RedisPubSubChannelLayer` does): it survives a Redis restart, even an empty one, by
 *   construction; recovery only re-subscribes.
 * - Local members are served first and synchronously; Redis carries only what other processes
 *   need (one PUBLISH per `groupSend`, per `send` to another process' channel).
 * - While Redis is unavailable, cross-process messages wait in a bounded outbox, flushed in
 *   order once this process has re-subscribed; a receiver that was not subscribed yet (or was
 *   cut off) asks for what it missed, from the sender's bounded retention (cross-process.ts).
 * - Message times are on Redis' clock (`monitor.clock`), so expiry does not depend on the
 *   hosts' clocks agreeing.
 */
export class ChannelLayer implements ChannelLayerApi {
  /** This layer's process identifier: the routing part of every channel `newChannel` returns. */
  readonly processId: string
  readonly name: string
  readonly #options: ChannelLayerOptions
  readonly #context: FailsoftContext
  readonly #monitor: HealthMonitor
  readonly #handle: ComponentHandle
  readonly #logger: Logger
  readonly #local: LocalChannels
  /** The cross-process half; null in memory-only mode (no other process to reach). */
  readonly #remote: CrossProcess | null
  readonly #expiryMs: number
  readonly #now: () => number
  readonly #namedInterest = new Set<string>()
  readonly #servers = new Set<ChannelWebSocketServer>()
  readonly #disposers: Array<() => void> = []
  #channelCounter = 0
  #sweepTimer: NodeJS.Timeout | null = null
  #closed = false
  #fullSinceWarning = 0
  #lastFullWarning = 0
  #errorsSinceLog = 0
  #lastErrorLog = 0
  readonly #counters = {
    sent: 0,
    groupSent: 0,
    expiredOnArrival: 0,
    malformed: 0,
    undeliverable: 0,
    safeGroupSendFailures: 0,
  }

  constructor(context: FailsoftContext, input?: ChannelLayerInput) {
    this.#options = resolveChannelLayerOptions(input)
    this.#context = context
    this.#monitor = context.monitor
    this.name = this.#options.name
    this.processId = randomId(12)
    this.#expiryMs = this.#options.expirySeconds * 1000
    // Redis' clock, as every process of the layer sees it: message times compare across hosts.
    this.#now = () => this.#monitor.clock.now()
    this.#local = new LocalChannels({
      capacity: this.#options.capacity,
      // What one publisher's outbox may hold can wait here for a receiver to take it.
      backlog: {
        messages: this.#options.outbox.maxMessages,
        bytes: this.#options.outbox.maxBytes,
      },
      expiryMs: this.#expiryMs,
      groupExpiryMs: this.#options.groupExpirySeconds * 1000,
      now: this.#now,
      toRedis: (localMs) => this.#monitor.clock.toRedis(localMs),
      hooks: {
        groupEmptied: (group) => this.#unwant('g', group),
        channelRemoved: (channel) => {
          if (this.#namedInterest.delete(channel)) this.#unwant('c', channel)
        },
        backlogSkipped: (count, channel) => this.#noteFull(count, channel),
      },
    })
    this.#remote =
      this.#monitor.target === null
        ? null
        : new CrossProcess({
            monitor: this.#monitor,
            options: this.#options,
            processId: this.processId,
            topicBase: `${context.prefix}:ch:${this.name}:`,
            connectionName: `channels:${this.name}`,
            deliver: (kind, name, wire) => this.#onRemote(kind, name, wire),
            onSendError: (error, where) => this.#logError(error, where),
            onFlushed: (report) =>
              this.#logger.info(
                { ...report, outbox: this.#remote?.outbox.counters },
                'channel layer delivered the cross-process messages buffered during the outage',
              ),
            onTransportError: (error, what) =>
              this.#logger.debug({ err: loggableError(error) }, `channel layer: ${what}`),
            onWillsSkipped: (skipped) =>
              this.#logger.warn(
                { willsSkipped: skipped },
                'more publishers closed while this process was cut off than it reads the kept messages of; the messages it missed from the others are lost',
              ),
          })
    this.#handle = this.#monitor.register({
      name: `channels:${this.name}`,
      fallback:
        'in-process channel layer (local groups keep working; cross-process messages wait in a bounded outbox)',
      recover: async (ctx) => {
        // Membership is local: a reset (Redis restarted empty) needs nothing beyond the
        // re-subscription every recovery does.
        if (this.#remote !== null && !this.#closed) await this.#remote.recover(ctx)
      },
      needsRecovery: () => this.#remote !== null && !this.#closed && this.#remote.behind,
      status: () => this.status(),
      close: () => this.close(),
    })
    this.#logger = this.#handle.logger
    const remote = this.#remote
    if (remote !== null) {
      this.#disposers.push(
        this.#monitor.on('down', ({ forced }) => remote.down(forced)).dispose,
        this.#monitor.on('up', () => remote.up()).dispose,
      )
    }
    const sweepMs = Math.min(
      10_000,
      Math.max(50, Math.min(this.#expiryMs, this.#options.groupExpirySeconds * 1000) / 2),
    )
    this.#sweepTimer = setInterval(() => this.#sweep(), sweepMs)
    this.#sweepTimer.unref()
  }

  /** True once `close()` ran (directly or through `failsoft.close()`). */
  get closed(): boolean {
    return this.#closed
  }

  /** 'redis' while cross-process delivery goes through Redis, 'memory' while on the fallback. */
  get backend(): ChannelBackend {
    return this.#monitor.available ? 'redis' : 'memory'
  }

  // ── Channels' layer API ────────────────────────────────────────────────────────────────────

  /**
   * A new unique channel name routable to this process: `<prefix>.<processId>!<local>`.
   * Only this process can `receive` on it; any process can `send` to it.
   */
  async newChannel(prefix = 'specific'): Promise<string> {
    return this.#newChannel(prefix)
  }

  #newChannel(prefix: string): string {
    this.#context.assertOpen()
    this.#assertOpen()
    assertChannelPrefix(prefix)
    const name = `${prefix}.${this.processId}!${(++this.#channelCounter).toString(36)}${randomId(6)}`
    if (name.length >= MAX_NAME_LENGTH) assertChannelName(name)
    this.#local.touch(name)
    return name
  }

  /**
   * A push consumer: a new channel of this process (named as `newChannel(prefix)` names it)
   * whose messages are handed to `onMessage` as they arrive, synchronously and in order, each
   * a fresh copy, instead of being buffered for `receive`. Like a WebSocket consumer's channel
   * it has no `capacity` bound (the handler is the consumer), is never swept as idle and its
   * group memberships do not expire. A handler that throws is logged (at most once per
   * second) and later messages are still delivered. `close()` (or the layer closing) ends it.
   */
  listen(onMessage: (message: ChannelMessage) => void, prefix = 'listen'): ChannelListener {
    const channel = this.#newChannel(prefix)
    this.#local.attach(channel, (entry) => {
      try {
        onMessage(parseEntry(entry))
      } catch (error) {
        this.#logError(error, channel, 'channel layer listener threw')
      }
    })
    let open = true
    return {
      channel,
      close: () => {
        if (!open) return
        open = false
        if (!this.#closed) this.#local.deleteChannel(channel)
      },
    }
  }

  /**
   * Send to one channel. A channel of this process (or a normal channel name) is served from
   * memory at once; a channel of another process is one PUBLISH (or the outbox while Redis is
   * down). Throws ChannelFullError when a local channel already holds `capacity` messages.
   */
  send(channel: string, message: ChannelMessage): Promise<void> {
    const t = tracing.channels.send
    if (t.active) {
      return traceLayerOperation(t, this.#monitor, this, channel, () =>
        this.#send(channel, message),
      )
    }
    return this.#send(channel, message)
  }

  async #send(channel: string, message: ChannelMessage): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertChannelName(channel)
    const entry = serializeMessage(message, this.#options.maxMessageBytes, this.#now())
    this.#counters.sent++
    if (!this.#monitor.available) this.#handle.recordFallback()
    const owner = ownerOf(channel)
    const remote = this.#remote
    if (owner === null || owner === this.processId) {
      if (!this.#local.deliver(channel, entry)) {
        throw new ChannelFullError(channel, this.#options.capacity)
      }
      if (owner === null) remote?.publish(remote.topic('c', channel), channel, entry)
    } else if (remote === null) {
      // Memory-only mode: there is no other process to reach.
      this.#counters.undeliverable++
    } else {
      remote.publish(remote.topic('p', owner), channel, entry)
    }
    if (remote !== null) await remote.backpressure()
  }

  /**
   * Next message on a channel, in order; waits until one arrives. Several concurrent receivers
   * on one channel are served first come, first served. Messages older than `expirySeconds`
   * are skipped. Only the owning process can receive on a specific (`!`) channel.
   */
  async receive(channel: string, options: ReceiveOptions = {}): Promise<ChannelMessage> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertChannelName(channel)
    const owner = ownerOf(channel)
    if (owner !== null && owner !== this.processId) {
      throw new InvalidNameError(
        'channel',
        channel,
        'it belongs to another process; only the process that created it can receive on it',
      )
    }
    if (owner === null && this.#remote !== null && !this.#namedInterest.has(channel)) {
      this.#namedInterest.add(channel)
      void this.#remote.want(this.#remote.topic('c', channel))
    }
    return parseEntry(await this.#local.receive(channel, options.signal))
  }

  /**
   * Add a channel to a group (refreshes its membership expiry if already in). The membership
   * is held by this process, so the channel must be one of this process' (from `newChannel`)
   * or a normal channel name. Resolves once other processes' messages for the group reach it.
   */
  async groupAdd(group: string, channel: string): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    const owner = ownerOf(channel)
    if (owner !== null && owner !== this.processId) {
      throw new InvalidNameError(
        'channel',
        channel,
        'it belongs to another process; group membership is held by the process that owns the channel',
      )
    }
    this.#local.groupAdd(group, channel)
    if (this.#remote !== null) await this.#remote.want(this.#remote.topic('g', group))
  }

  /** Remove a channel from a group; does nothing if it is not a member. */
  async groupDiscard(group: string, channel: string): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertGroupName(group)
    assertChannelName(channel)
    this.#local.groupDiscard(group, channel)
  }

  /**
   * Send to every member of a group, in every process. Local members are served in this call,
   * from memory; a full member is skipped and counted (status `skippedFull`, a WARNING at most
   * every 10 s). Never waits for Redis: one PUBLISH is handed to the connection (before the
   * local deliveries), or to the outbox while Redis is unavailable. `options.except` names one
   * channel of this process that is a member but should not get this message (a sender that
   * listens on the group itself, e.g. failsoft/socket.io's adapters).
   */
  groupSend(group: string, message: ChannelMessage, options?: GroupSendOptions): Promise<void> {
    const t = tracing.channels.groupSend
    if (t.active) {
      const send = (): Promise<void> => this.#groupSend(group, message, options)
      return traceLayerOperation(t, this.#monitor, this, group, send)
    }
    return this.#groupSend(group, message, options)
  }

  async #groupSend(
    group: string,
    message: ChannelMessage,
    options?: GroupSendOptions,
  ): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertGroupName(group)
    const entry = serializeMessage(message, this.#options.maxMessageBytes, this.#now())
    this.#counters.groupSent++
    if (!this.#monitor.available) this.#handle.recordFallback()
    // The PUBLISH is handed to the socket first (a non-blocking write, never a wait for
    // Redis): the other processes' members then do not also wait for this process to frame
    // and write to its own sockets.
    const remote = this.#remote
    remote?.publish(remote.topic('g', group), group, entry)
    const { full } = this.#local.groupDeliver(group, entry, { except: options?.except })
    if (full > 0) this.#noteFull(full, group)
    if (remote !== null) await remote.backpressure()
  }

  /**
   * `groupSend` that never throws: true when the message was accepted (delivered locally and
   * published, or kept in the outbox while Redis is unavailable), false otherwise (invalid
   * group or message, closed layer), with the failure logged at ERROR.
   */
  async safeGroupSend(group: string, message: ChannelMessage): Promise<boolean> {
    try {
      await this.groupSend(group, message)
      return true
    } catch (error) {
      this.#counters.safeGroupSendFailures++
      this.#logError(error, group)
      return false
    }
  }

  /**
   * Empty every buffer and group of this layer in this process and stop listening for them.
   * Nothing is stored in Redis (pub/sub only); buffered outbox messages are discarded too.
   */
  async flush(): Promise<void> {
    this.#assertOpen()
    this.#local.flush()
    this.#remote?.outbox.clear()
  }

  /**
   * Mount a WebSocket endpoint whose connections are channel-layer consumers (see
   * `ChannelWebSocketOptions`). Closed with the layer.
   */
  websocket(options: ChannelWebSocketOptions): ChannelWebSocketServer {
    this.#assertOpen()
    const internals: LayerInternals = {
      newChannel: (prefix: string) => this.#newChannel(prefix),
      attach: (channel: string, sink: Sink) => this.#local.attach(channel, sink),
      release: (channel: string) => this.#local.deleteChannel(channel),
      parse: (entry: Entry) => parseEntry(entry),
      onClose: (server: ChannelWebSocketServer) => this.#servers.delete(server),
      logger: this.#logger,
    }
    const server = new ChannelWebSocketServer(this, internals, options)
    this.#servers.add(server)
    return server
  }

  status(): ChannelLayerStatus {
    const remote = this.#remote
    const local = this.#local.counters
    let clients = 0
    for (const server of this.#servers) clients += server.clientCount
    const outbox = remote?.outbox
    const counters = remote?.counters
    const repair = remote?.repair
    return {
      backend: this.backend,
      processId: this.processId,
      channels: this.#local.channelCount,
      groups: this.#local.groupCount,
      buffered: this.#local.bufferedCount,
      subscriptions: remote?.transport.subscribedCount ?? 0,
      holding: remote?.holding ?? false,
      inFlight: remote?.inFlight ?? 0,
      sent: this.#counters.sent,
      groupSent: this.#counters.groupSent,
      published: counters?.published ?? 0,
      remoteReceived: counters?.remoteReceived ?? 0,
      skippedFull: local.full,
      expired: local.expired + this.#counters.expiredOnArrival,
      abandonedChannels: local.abandoned,
      membershipsExpired: local.membershipsExpired,
      joinedAfterSend: local.joinedAfterSend,
      crossProcessGaps: repair?.lost ?? 0,
      duplicatesSkipped: repair?.duplicates ?? 0,
      malformed: this.#counters.malformed + (counters?.malformed ?? 0),
      publishErrors: counters?.publishErrors ?? 0,
      undeliverable: this.#counters.undeliverable + (counters?.undeliverable ?? 0),
      safeGroupSendFailures: this.#counters.safeGroupSendFailures,
      outbox: {
        size: outbox?.size ?? 0,
        bytes: outbox?.bytes ?? 0,
        oldestAgeMs: outbox?.oldestAgeMs(this.#now()) ?? 0,
        buffered: outbox?.counters.buffered ?? 0,
        flushed: outbox?.counters.flushed ?? 0,
        droppedCount: outbox?.counters.droppedCount ?? 0,
        droppedBytes: outbox?.counters.droppedBytes ?? 0,
        droppedAge: outbox?.counters.droppedAge ?? 0,
        droppedAtClose: outbox?.counters.droppedAtClose ?? 0,
      },
      repair: {
        retained: remote?.retention.size ?? 0,
        retainedBytes: remote?.retention.bytes ?? 0,
        held: repair?.held ?? 0,
        requested: repair?.requested ?? 0,
        repaired: counters?.repaired ?? 0,
        resentToOthers: counters?.resentToOthers ?? 0,
        lost: repair?.lost ?? 0,
        willsLeft: counters?.willsLeft ?? 0,
        willsLoaded: counters?.willsLoaded ?? 0,
        willsSkipped: counters?.willsSkipped ?? 0,
        repairedFromWills: counters?.repairedFromWills ?? 0,
      },
      websocketClients: clients,
    }
  }

  /** Close the layer: WebSocket endpoints, subscriber, timers; pending receives reject. */
  async close(): Promise<void> {
    if (this.#closed) return
    const remote = this.#remote
    // Best effort: hand what is still buffered to Redis before leaving.
    if (remote !== null) {
      await remote.drain(1000)
      // What it sent, for receivers that come back after it (they cannot ask it any more).
      await remote.leaveWill(1000)
    }
    this.#closed = true
    for (const dispose of this.#disposers.splice(0)) dispose()
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    await Promise.all([...this.#servers].map((server) => server.close()))
    if (remote !== null) {
      const unsent = remote.unsentAtClose
      remote.close()
      if (unsent > 0) {
        this.#logger.warn(
          { unsent },
          'channel layer closed with cross-process messages still unsent',
        )
        remote.outbox.clear(true)
      }
    }
    this.#local.clear(new ClosedError('channel layer'))
    this.#handle.dispose()
  }

  // ── from other processes ───────────────────────────────────────────────────────────────────

  /** A message from another process, in its publisher's order: to this process' members. */
  #onRemote(kind: TopicKind, name: string, wire: WireMessage): void {
    if (this.#closed) return
    let parsed: unknown
    try {
      parsed = safeJsonParse(wire.entry.json)
    } catch {
      parsed = null // counted as malformed just below
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      Array.isArray(parsed) ||
      (parsed as { type?: unknown }).type !== wire.entry.type
    ) {
      this.#counters.malformed++
      return
    }
    // Both times are on Redis' clock: a host whose own clock is off does not expire them.
    if (this.#now() - wire.entry.sentAt > this.#expiryMs) {
      this.#counters.expiredOnArrival++
      return
    }
    // The first receiver gets this parse instead of making its own (parseEntry).
    wire.entry.parsed = parsed as ChannelMessage
    if (kind === 'g') {
      const { full } = this.#local.groupDeliver(name, wire.entry, { remote: true })
      if (full > 0) this.#noteFull(full, name)
    } else if (kind === 'p') {
      const target = wire.target
      try {
        assertChannelName(target)
      } catch {
        this.#counters.malformed++
        return
      }
      if (ownerOf(target) !== this.processId) {
        this.#counters.malformed++
        return
      }
      if (!this.#local.deliver(target, wire.entry, true)) {
        this.#local.counters.full++
        this.#noteFull(1, target)
      }
    } else if (this.#local.hasChannel(name)) {
      if (!this.#local.deliver(name, wire.entry, true)) {
        this.#local.counters.full++
        this.#noteFull(1, name)
      }
    }
  }

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  #unwant(kind: TopicKind, name: string): void {
    const remote = this.#remote
    if (remote !== null) remote.unwant(remote.topic(kind, name))
  }

  #noteFull(count: number, where: string): void {
    this.#fullSinceWarning += count
    const now = Date.now()
    if (now - this.#lastFullWarning < WARNING_INTERVAL_MS) return
    this.#logger.warn(
      {
        skipped: this.#fullSinceWarning,
        capacity: this.#options.capacity,
        example: where,
        skippedTotal: this.#local.counters.full,
      },
      'channel layer skipped messages to full channels (receivers too slow)',
    )
    this.#lastFullWarning = now
    this.#fullSinceWarning = 0
  }

  #logError(error: unknown, where: unknown, message = 'channel layer send failed'): void {
    this.#errorsSinceLog++
    const now = Date.now()
    if (now - this.#lastErrorLog < 1000) return
    this.#logger.error(
      {
        err: loggableError(error),
        where: typeof where === 'string' ? where : describeValue(where),
        failures: this.#errorsSinceLog,
      },
      message,
    )
    this.#lastErrorLog = now
    this.#errorsSinceLog = 0
  }

  #sweep(): void {
    const now = this.#now()
    this.#local.sweep(now)
    this.#remote?.sweep(Date.now() - Math.max(2 * this.#expiryMs, 120_000))
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('channel layer')
  }
}
