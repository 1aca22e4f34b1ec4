import { ChannelFullError, ClosedError, InvalidNameError, describeValue } from '../errors.js'
import type { FailsoftContext } from '../context.js'
import type { ComponentHandle, HealthMonitor } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError } from '../redis/connection.js'
import { safeJsonParse } from '../util/json.js'
import { LocalChannels, type Sink } from './memory-layer.js'
import {
  decodeWire,
  encodeWire,
  parseEntry,
  serializeMessage,
  type ChannelMessage,
  type Entry,
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
import { Outbox } from './outbox.js'
import { RedisTransport } from './redis-transport.js'
import { PublisherSequences, ReceiverSequences } from './sequence.js'
import {
  ChannelWebSocketServer,
  type ChannelWebSocketOptions,
  type LayerInternals,
} from './websocket.js'

/** Which backend serves cross-process delivery right now. Local delivery never needs Redis. */
export type ChannelBackend = 'redis' | 'memory'

export interface ReceiveOptions {
  /** Abort the wait: the promise rejects with `signal.reason` (an AbortError by default). */
  signal?: AbortSignal
}

/** A rate-limited warning: at most one line per this period, with a count of what it covers. */
const WARNING_INTERVAL_MS = 10_000
/** Outbox items per PUBLISH pipeline when flushing after recovery. */
const FLUSH_BATCH = 256

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
 *   order once this process has re-subscribed and a settle delay has let the others do so.
 */
export class ChannelLayer {
  /** This layer's process identifier: the routing part of every channel `newChannel` returns. */
  readonly processId: string
  readonly name: string
  readonly #options: ChannelLayerOptions
  readonly #context: FailsoftContext
  readonly #monitor: HealthMonitor
  readonly #handle: ComponentHandle
  readonly #logger: Logger
  readonly #local: LocalChannels
  readonly #transport: RedisTransport | null
  readonly #outbox: Outbox
  readonly #publisherSeq = new PublisherSequences()
  readonly #receiverSeq = new ReceiverSequences()
  readonly #topicBase: string
  readonly #processTopic: string
  readonly #expiryMs: number
  readonly #namedInterest = new Set<string>()
  readonly #servers = new Set<ChannelWebSocketServer>()
  readonly #disposers: Array<() => void> = []
  #channelCounter = 0
  #order = 0
  #inFlight = 0
  #drainWaiters: Array<() => void> = []
  /** After a recovery, publishes go to the outbox until it has been flushed (see settleMs). */
  #holding = false
  #settleUntil = 0
  #flushTimer: NodeJS.Timeout | null = null
  #flushing = false
  #sweepTimer: NodeJS.Timeout | null = null
  #closed = false
  #fullSinceWarning = 0
  #lastFullWarning = 0
  #errorsSinceLog = 0
  #lastErrorLog = 0
  #outageFlushReport = { flushed: 0, dropped: 0 }
  readonly #counters = {
    sent: 0,
    groupSent: 0,
    published: 0,
    remoteReceived: 0,
    duplicatesSkipped: 0,
    malformed: 0,
    expiredOnArrival: 0,
    publishErrors: 0,
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
    this.#topicBase = `${context.prefix}:ch:${this.name}:`
    this.#processTopic = `${this.#topicBase}p:${this.processId}`
    this.#outbox = new Outbox(this.#options.outbox)
    this.#local = new LocalChannels({
      capacity: this.#options.capacity,
      expiryMs: this.#expiryMs,
      groupExpiryMs: this.#options.groupExpirySeconds * 1000,
      hooks: {
        groupEmptied: (group) => this.#unwant(this.#groupTopic(group)),
        channelRemoved: (channel) => {
          if (this.#namedInterest.delete(channel)) this.#unwant(this.#namedTopic(channel))
        },
      },
    })
    this.#transport =
      this.#monitor.target === null
        ? null
        : new RedisTransport({
            monitor: this.#monitor,
            connectionName: `channels:${this.name}`,
            onMessage: (topic, payload) => this.#onRemote(topic, payload),
            onError: (error, what) =>
              this.#logger.debug({ err: loggableError(error) }, `channel layer: ${what}`),
          })
    this.#handle = this.#monitor.register({
      name: `channels:${this.name}`,
      fallback:
        'in-process channel layer (local groups keep working; cross-process messages wait in a bounded outbox)',
      recover: async (ctx) => {
        if (this.#transport === null || this.#closed) return
        // Membership is local: a reset (Redis restarted empty) needs nothing beyond the
        // re-subscription every recovery does.
        await this.#transport.recover(ctx)
        if (ctx.downtimeMs > 0 || this.#outbox.size > 0) {
          this.#holding = true
          this.#settleUntil = Date.now() + (ctx.downtimeMs > 0 ? this.#options.settleMs : 0)
          if (this.#monitor.available) this.#scheduleFlush()
        }
      },
      needsRecovery: () => this.#transport !== null && !this.#closed && this.#transport.behind,
      status: () => this.status(),
      close: () => this.close(),
    })
    this.#logger = this.#handle.logger
    if (this.#transport !== null) {
      void this.#transport.want(this.#processTopic)
      // Created after start-up while Redis is up: no recovery step will run for us.
      this.#transport.start()
      this.#disposers.push(
        this.#monitor.on('down', ({ forced }) => {
          this.#transport?.detach(!forced)
          if (this.#flushTimer) clearTimeout(this.#flushTimer)
          this.#flushTimer = null
        }).dispose,
        this.#monitor.on('up', () => {
          if (this.#holding || this.#outbox.size > 0) this.#scheduleFlush()
        }).dispose,
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
   * Send to one channel. A channel of this process (or a normal channel name) is served from
   * memory at once; a channel of another process is one PUBLISH (or the outbox while Redis is
   * down). Throws ChannelFullError when a local channel already holds `capacity` messages.
   */
  async send(channel: string, message: ChannelMessage): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertChannelName(channel)
    const entry = serializeMessage(message, this.#options.maxMessageBytes)
    this.#counters.sent++
    if (!this.#monitor.available) this.#handle.recordFallback()
    const owner = ownerOf(channel)
    if (owner === null || owner === this.processId) {
      if (!this.#local.deliver(channel, entry)) {
        throw new ChannelFullError(channel, this.#options.capacity)
      }
      if (owner === null) this.#publish(this.#namedTopic(channel), channel, entry)
    } else {
      this.#publish(`${this.#topicBase}p:${owner}`, channel, entry)
    }
    if (this.#inFlight >= this.#options.maxInFlight) await this.#drained()
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
    if (owner === null && this.#transport !== null && !this.#namedInterest.has(channel)) {
      this.#namedInterest.add(channel)
      void this.#transport.want(this.#namedTopic(channel))
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
    if (this.#transport !== null) await this.#transport.want(this.#groupTopic(group))
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
   * local deliveries), or to the outbox while Redis is unavailable.
   */
  async groupSend(group: string, message: ChannelMessage): Promise<void> {
    this.#context.assertOpen()
    this.#assertOpen()
    assertGroupName(group)
    const entry = serializeMessage(message, this.#options.maxMessageBytes)
    this.#counters.groupSent++
    if (!this.#monitor.available) this.#handle.recordFallback()
    // The PUBLISH is handed to the socket first (a non-blocking write, never a wait for
    // Redis): the other processes' members then do not also wait for this process to frame
    // and write to its own sockets.
    this.#publish(this.#groupTopic(group), group, entry)
    const { full } = this.#local.groupDeliver(group, entry)
    if (full > 0) this.#noteFull(full, group)
    if (this.#inFlight >= this.#options.maxInFlight) await this.#drained()
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
    this.#outbox.clear()
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

  status(): Record<string, unknown> {
    const outbox = this.#outbox
    const local = this.#local.counters
    let clients = 0
    for (const server of this.#servers) clients += server.clientCount
    return {
      backend: this.backend,
      processId: this.processId,
      channels: this.#local.channelCount,
      groups: this.#local.groupCount,
      buffered: this.#local.bufferedCount,
      subscriptions: this.#transport?.subscribedCount ?? 0,
      holding: this.#holding,
      inFlight: this.#inFlight,
      sent: this.#counters.sent,
      groupSent: this.#counters.groupSent,
      published: this.#counters.published,
      remoteReceived: this.#counters.remoteReceived,
      skippedFull: local.full,
      expired: local.expired + this.#counters.expiredOnArrival,
      abandonedChannels: local.abandoned,
      membershipsExpired: local.membershipsExpired,
      crossProcessGaps: this.#receiverSeq.gaps,
      duplicatesSkipped: this.#receiverSeq.duplicates,
      malformed: this.#counters.malformed,
      publishErrors: this.#counters.publishErrors,
      undeliverable: this.#counters.undeliverable,
      safeGroupSendFailures: this.#counters.safeGroupSendFailures,
      outbox: {
        size: outbox.size,
        bytes: outbox.bytes,
        oldestAgeMs: outbox.oldestAgeMs(),
        ...outbox.counters,
      },
      websocketClients: clients,
    }
  }

  /** Close the layer: WebSocket endpoints, subscriber, timers; pending receives reject. */
  async close(): Promise<void> {
    if (this.#closed) return
    if (this.#outbox.size > 0 && this.#monitor.available && this.#transport !== null) {
      // Best effort: hand what is still buffered to Redis before leaving.
      this.#holding = true
      await Promise.race([this.#flush(), delay(1000)])
    }
    this.#closed = true
    for (const dispose of this.#disposers.splice(0)) dispose()
    if (this.#flushTimer) clearTimeout(this.#flushTimer)
    if (this.#sweepTimer) clearInterval(this.#sweepTimer)
    await Promise.all([...this.#servers].map((server) => server.close()))
    this.#transport?.close()
    if (this.#outbox.size > 0) {
      this.#logger.warn(
        { unsent: this.#outbox.size },
        'channel layer closed with cross-process messages still unsent',
      )
      this.#outbox.clear()
    }
    this.#local.clear(new ClosedError('channel layer'))
    for (const resolve of this.#drainWaiters.splice(0)) resolve()
    this.#handle.dispose()
  }

  // ── the one degradation path ───────────────────────────────────────────────────────────────

  /**
   * Cross-process half of a send: Redis when it is available and nothing older is waiting,
   * the outbox otherwise (order is preserved either way). Never throws, never waits.
   */
  #publish(topic: string, target: string, entry: Entry): void {
    const transport = this.#transport
    if (transport === null) {
      // Memory-only mode: there is no other process to reach.
      if (ownerOf(target) !== null) this.#counters.undeliverable++
      return
    }
    const payload = encodeWire(
      this.processId,
      this.#publisherSeq.next(topic, entry.sentAt),
      target,
      entry,
    )
    const order = ++this.#order
    if (this.#monitor.available && !this.#holding && this.#outbox.size === 0) {
      this.#inFlight++
      this.#counters.published++
      const direct = topic.charCodeAt(this.#topicBase.length) === 112 // 'p': a specific channel
      transport.publish(topic, payload).then(
        (receivers) => {
          this.#settled()
          if (direct && receivers === 0) this.#counters.undeliverable++
        },
        (error: unknown) => {
          this.#settled()
          this.#publishFailed(topic, payload, order, entry.sentAt, error)
        },
      )
      return
    }
    this.#outbox.push({ topic, payload, order, at: entry.sentAt })
    if (this.#monitor.available) this.#scheduleFlush()
  }

  #publishFailed(topic: string, payload: string, order: number, at: number, error: unknown): void {
    if (this.#closed) return
    if (isConnectivityError(error)) {
      // The monitor has already been told. The publish may or may not have landed (a timeout
      // is ambiguous): send it again after recovery; receivers skip a duplicate by its number.
      this.#counters.published--
      this.#outbox.push({ topic, payload, order, at })
      if (this.#monitor.available) this.#scheduleFlush()
      return
    }
    this.#counters.publishErrors++
    this.#logError(error, topic)
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== null || this.#flushing || this.#closed) return
    const wait = Math.max(0, this.#settleUntil - Date.now())
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null
      void this.#flush()
    }, wait)
    this.#flushTimer.unref()
  }

  /** Publish the outbox in order, in pipelines; stops (keeping the rest) if Redis fails again. */
  async #flush(): Promise<void> {
    const transport = this.#transport
    if (this.#flushing || transport === null) return
    this.#flushing = true
    const droppedBefore = this.#outbox.dropped
    let flushed = 0
    try {
      while (this.#monitor.available && !this.#closed) {
        const batch = this.#outbox.peek(FLUSH_BATCH)
        if (batch.length === 0) {
          this.#holding = false
          break
        }
        try {
          const { replyErrors } = await transport.publishBatch(batch)
          this.#outbox.commit(batch.length)
          flushed += batch.length
          this.#counters.published += batch.length - replyErrors
          this.#counters.publishErrors += replyErrors
        } catch (error) {
          // Connectivity: the monitor is going down; the next recovery flushes the rest.
          if (!isConnectivityError(error)) {
            this.#outbox.commit(batch.length)
            this.#counters.publishErrors += batch.length
            this.#logError(error, 'outbox')
          }
          break
        }
      }
    } finally {
      this.#flushing = false
    }
    this.#outageFlushReport.flushed += flushed
    this.#outageFlushReport.dropped += this.#outbox.dropped - droppedBefore
    if (!this.#holding) {
      const report = this.#outageFlushReport
      if (report.flushed > 0 || report.dropped > 0) {
        this.#logger.info(
          { flushed: report.flushed, dropped: report.dropped, outbox: this.#outbox.counters },
          'channel layer delivered the cross-process messages buffered during the outage',
        )
      }
      this.#outageFlushReport = { flushed: 0, dropped: 0 }
    } else if (this.#monitor.available && !this.#closed && this.#outbox.size > 0) {
      this.#scheduleFlush()
    }
  }

  #settled(): void {
    this.#inFlight--
    if (this.#inFlight <= this.#options.maxInFlight / 2 && this.#drainWaiters.length > 0) {
      for (const resolve of this.#drainWaiters.splice(0)) resolve()
    }
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => this.#drainWaiters.push(resolve))
  }

  // ── from other processes ───────────────────────────────────────────────────────────────────

  #onRemote(topic: string, payload: string): void {
    if (this.#closed) return
    // Size-checked before anything is parsed: a UTF-16 length above the byte limit (plus the
    // header) cannot be one of ours.
    if (payload.length > this.#options.maxMessageBytes + 512) {
      this.#counters.malformed++
      return
    }
    const wire = decodeWire(payload)
    if (wire === null) {
      this.#counters.malformed++
      return
    }
    if (wire.origin === this.processId) return // our own publish: local members already have it
    const now = Date.now()
    if (this.#receiverSeq.observe(topic, wire.origin, wire.stream, wire.seq, now) === 'duplicate')
      return
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
    if (now - wire.entry.sentAt > this.#expiryMs) {
      this.#counters.expiredOnArrival++
      return
    }
    this.#counters.remoteReceived++
    const kind = topic.charCodeAt(this.#topicBase.length)
    const name = topic.slice(this.#topicBase.length + 2)
    if (kind === 103 /* g */) {
      const { full } = this.#local.groupDeliver(name, wire.entry)
      if (full > 0) this.#noteFull(full, name)
    } else if (kind === 112 /* p */) {
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
      if (!this.#local.deliver(target, wire.entry)) {
        this.#local.counters.full++
        this.#noteFull(1, target)
      }
    } else if (kind === 99 /* c */ && this.#local.hasChannel(name)) {
      if (!this.#local.deliver(name, wire.entry)) {
        this.#local.counters.full++
        this.#noteFull(1, name)
      }
    }
  }

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  #groupTopic(group: string): string {
    return `${this.#topicBase}g:${group}`
  }

  #namedTopic(channel: string): string {
    return `${this.#topicBase}c:${channel}`
  }

  #unwant(topic: string): void {
    if (this.#transport === null) return
    this.#transport.unwant(topic)
    this.#receiverSeq.forget(topic)
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

  #logError(error: unknown, where: unknown): void {
    this.#errorsSinceLog++
    const now = Date.now()
    if (now - this.#lastErrorLog < 1000) return
    this.#logger.error(
      {
        err: loggableError(error),
        where: typeof where === 'string' ? where : describeValue(where),
        failures: this.#errorsSinceLog,
      },
      'channel layer send failed',
    )
    this.#lastErrorLog = now
    this.#errorsSinceLog = 0
  }

  #sweep(): void {
    const now = Date.now()
    this.#local.sweep(now)
    const idleBefore = now - Math.max(2 * this.#expiryMs, 120_000)
    this.#publisherSeq.prune(idleBefore)
    this.#receiverSeq.prune(idleBefore)
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('channel layer')
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
