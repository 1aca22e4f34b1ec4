import type { HealthMonitor } from '../health/monitor.js'
import type { RecoveryContext } from '../health/types.js'
import { isConnectivityError } from '../redis/connection.js'
import { sleep } from '../util/sleep.js'
import {
  CONTROL_CHUNK,
  decodeControl,
  decodeRepair,
  encodeControl,
  encodeRepair,
  isControl,
  isRepair,
  type Control,
  type HeadTuple,
  type RangeTuple,
} from './control.js'
import { decodeHeader, decodeWire, encodeWire, type Entry, type WireMessage } from './message.js'
import type { ChannelLayerOptions } from './options.js'
import { Outbox, type OutboxItem } from './outbox.js'
import { RedisTransport } from './redis-transport.js'
import { Reassembly } from './repair.js'
import { Retention } from './retention.js'
import { PublisherSequences } from './sequence.js'
import { Wills } from './will.js'

/** Outbox items per PUBLISH pipeline when flushing after recovery. */
const FLUSH_BATCH = 256
/** How often unanswered repair ranges are looked at (asked again, or given up). */
const REPAIR_TICK_MS = 250

/** What stands for a message received too large to parse: delivered as malformed, in order. */
const TOMBSTONE: Entry = Object.freeze({ type: '', json: '', sentAt: 0 })

/** The kinds of topic: a group, a process' specific channels, a named (normal) channel. */
export type TopicKind = 'g' | 'p' | 'c'

export interface CrossProcessDeps {
  readonly monitor: HealthMonitor
  readonly options: ChannelLayerOptions
  readonly processId: string
  /** `<prefix>:ch:<layer>:`: every topic of the layer starts with it. */
  readonly topicBase: string
  readonly connectionName: string
  /** A message from another process, in publisher order, for this process' members. */
  readonly deliver: (kind: TopicKind, name: string, wire: WireMessage) => void
  /** A failure that concerns one send (not Redis being down): counted and logged by the layer. */
  readonly onSendError: (error: unknown, where: string) => void
  /** The outbox was flushed after an outage: what it delivered and dropped (logged once). */
  readonly onFlushed: (report: { flushed: number; dropped: number }) => void
  /** Something that failed on the subscriber side (debug level: the outage itself is logged once). */
  readonly onTransportError: (error: unknown, what: string) => void
  /** More closed publishers' wills than one receiver reads: their messages are not repaired. */
  readonly onWillsSkipped: (skipped: number) => void
}

/** Counters of the cross-process half, for the layer's status. */
export interface CrossProcessCounters {
  published: number
  remoteReceived: number
  malformed: number
  publishErrors: number
  undeliverable: number
  /** Repair: messages received again at this process' request, control messages exchanged. */
  repaired: number
  repairRequests: number
  resentToOthers: number
  /** Wills: left in Redis at close, read after a re-subscription, messages repaired from them. */
  willsLeft: number
  willsLoaded: number
  repairedFromWills: number
  /** Wills beyond MAX_WILLS, not read: their publishers' missed messages are lost here. */
  willsSkipped: number
}

/**
 * The cross-process half of the channel layer: publishing to Redis (or to the bounded outbox
 * while it is unavailable), the subscriber (RedisTransport), and the guarantee that a message
 * sent to a process that was a member when it was sent arrives there once, in publisher
 * order — whichever process recovers first:
 *
 * - every message this process sends is kept (Retention, the outbox's bounds);
 * - a receiver that sees a gap, or hears a publisher's `heads` saying it sent more, asks for
 *   the missing range (Reassembly), and the publisher sends it again to that receiver alone;
 * - a process whose subscription was interrupted says `hello` once it is subscribed again
 *   (every publisher answers with its heads) and announces its own heads.
 *
 * Nothing here waits on a timer to guess when the others are back: receivers confirm what
 * they have. The outbox is flushed as soon as this process has re-subscribed (after
 * `settleMs`, 0 by default).
 */
export class CrossProcess {
  readonly transport: RedisTransport
  readonly outbox: Outbox
  readonly retention: Retention
  readonly counters: CrossProcessCounters = {
    published: 0,
    remoteReceived: 0,
    malformed: 0,
    publishErrors: 0,
    undeliverable: 0,
    repaired: 0,
    repairRequests: 0,
    resentToOthers: 0,
    willsLeft: 0,
    willsLoaded: 0,
    repairedFromWills: 0,
    willsSkipped: 0,
  }
  readonly #deps: CrossProcessDeps
  readonly #monitor: HealthMonitor
  readonly #publisherSeq = new PublisherSequences()
  readonly #reassembly: Reassembly
  readonly #wills: Wills
  readonly #controlTopic: string
  readonly #processTopic: string
  /**
   * Topics listened to: since when (this process' clock: converted to Redis' clock when used,
   * with the offset known then — a process that joins before it ever reached Redis does not
   * know it yet), and whether the subscription stayed unbroken since.
   */
  readonly #topics = new Map<string, { joinedLocal: number; clean: boolean }>()
  /** Repair ranges to ask for, per publisher, sent together at the end of the tick. */
  readonly #requests = new Map<string, RangeTuple[]>()
  #requestsScheduled = false
  #order = 0
  #inFlight = 0
  #drainWaiters: Array<() => void> = []
  /** After a recovery, publishes go to the outbox until it has been flushed. */
  #holding = false
  #settleUntil = 0
  #flushTimer: NodeJS.Timeout | null = null
  /** The flush in progress (null: none); close() waits for it rather than start another. */
  #flushing: Promise<void> | null = null
  /** Items of the batch whose PUBLISH pipeline is written and not yet answered. */
  #publishing = 0
  #repairTimer: NodeJS.Timeout | null = null
  /** The subscription was interrupted: say `hello` and announce heads once back. */
  #resync = false
  /** Heads to announce once the outbox is flushed (after an interruption). */
  #announcePending = false
  #flushReport = { flushed: 0, dropped: 0 }
  #closed = false

  constructor(deps: CrossProcessDeps) {
    this.#deps = deps
    this.#monitor = deps.monitor
    this.#controlTopic = `${deps.topicBase}x`
    this.#processTopic = `${deps.topicBase}p:${deps.processId}`
    this.outbox = new Outbox(deps.options.outbox)
    this.retention = new Retention(deps.options.outbox)
    this.#wills = new Wills(deps.topicBase, deps.options.outbox)
    this.#reassembly = new Reassembly({
      deliver: (topic, wire) => this.#deliver(topic, wire),
      request: (origin, range) => this.#request(origin, range),
      topicInfo: (topic) => {
        const info = this.#topics.get(topic)
        if (info === undefined) return null
        return { joinedAt: this.#monitor.clock.toRedis(info.joinedLocal), clean: info.clean }
      },
      canAsk: () => this.#monitor.available && !this.transport.behind,
      // Nothing older than the outbox's age bound is kept by a publisher.
      giveUpMs: deps.options.outbox.maxAgeMs + 1000,
    })
    this.transport = new RedisTransport({
      monitor: deps.monitor,
      connectionName: deps.connectionName,
      onMessage: (topic, payload) => this.#onMessage(topic, payload),
      onError: deps.onTransportError,
    })
    void this.want(this.#processTopic)
    void this.want(this.#controlTopic)
    // Created after start-up while Redis is up: no recovery step will run for us.
    this.transport.start()
    this.#repairTimer = setInterval(() => this.#reassembly.tick(), REPAIR_TICK_MS)
    this.#repairTimer.unref()
  }

  get holding(): boolean {
    return this.#holding
  }

  get inFlight(): number {
    return this.#inFlight
  }

  get repair(): { held: number; lost: number; duplicates: number; requested: number } {
    const c = this.#reassembly.counters
    return {
      held: this.#reassembly.held,
      lost: c.lost,
      duplicates: c.duplicates,
      requested: c.requested,
    }
  }

  /** True when some wanted topic is not subscribed: the recovery step must run (again). */
  get behind(): boolean {
    return this.transport.behind
  }

  topic(kind: TopicKind, name: string): string {
    return `${this.#deps.topicBase}${kind}:${name}`
  }

  /** Listen on a topic; resolves once subscribed while Redis is up (see RedisTransport.want). */
  want(topic: string): Promise<void> {
    if (!this.#topics.has(topic)) {
      // While Redis is up the caller waits for the subscription, so nothing published after
      // it returns is missed: clean. While it is unavailable the membership starts now but the
      // subscription only at recovery: what others publish in between (their outboxes flushed
      // before this process is back) is repaired then, from the join time — and `hello` must
      // be said even if this process never saw an outage (it started cut off).
      // (Before the first connection is settled, 'starting', the first subscription is the
      // start itself: nothing was missed.)
      const cutOff = this.#monitor.state === 'down'
      this.#topics.set(topic, { joinedLocal: Date.now(), clean: !cutOff })
      if (cutOff) this.#resync = true
    }
    return this.transport.want(topic)
  }

  unwant(topic: string): void {
    this.#topics.delete(topic)
    this.transport.unwant(topic)
    this.#reassembly.forget(topic)
  }

  /** Waits while too many publishes are unanswered (backpressure for tight loops). */
  async backpressure(): Promise<void> {
    if (this.#inFlight >= this.#deps.options.maxInFlight) {
      await new Promise<void>((resolve) => this.#drainWaiters.push(resolve))
    }
  }

  // ── sending ────────────────────────────────────────────────────────────────────────────────

  /**
   * Cross-process half of a send: Redis when it is available and nothing older is waiting,
   * the outbox otherwise (order is preserved either way). Kept for repair in both cases.
   * Never throws, never waits.
   */
  publish(topic: string, target: string, entry: Entry): void {
    const { stream, seq } = this.#publisherSeq.next(topic, entry.sentAt)
    const payload = encodeWire(this.#deps.processId, { stream, seq }, target, entry)
    const order = ++this.#order
    const item = { topic, payload, order, at: entry.sentAt, stream, seq }
    if (this.#monitor.available && !this.#holding && this.outbox.size === 0) {
      // Kept once it goes out: heads and repairs speak of what reached Redis, not of what
      // still waits here (the flush will send that to everyone).
      this.retention.keep(item)
      this.#inFlight++
      this.counters.published++
      const direct = this.#isDirect(topic)
      this.transport.publish(topic, payload).then(
        (receivers) => {
          this.#settled()
          if (direct && receivers === 0) this.counters.undeliverable++
        },
        (error: unknown) => {
          this.#settled()
          this.#publishFailed(item, error)
        },
      )
      return
    }
    this.outbox.push(item)
    if (this.#monitor.available) this.#scheduleFlush()
  }

  /** A specific channel's topic ('p'), as opposed to a group or a normal name. */
  #isDirect(topic: string): boolean {
    return topic.charCodeAt(this.#deps.topicBase.length) === 112
  }

  #publishFailed(item: OutboxItem, error: unknown): void {
    if (this.#closed) return
    if (isConnectivityError(error)) {
      // The monitor has already been told. The publish may or may not have landed (a timeout
      // is ambiguous): send it again after recovery; receivers skip a duplicate by its number.
      this.counters.published--
      this.outbox.push(item)
      if (this.#monitor.available) this.#scheduleFlush()
      return
    }
    this.counters.publishErrors++
    this.#deps.onSendError(error, item.topic)
  }

  #settled(): void {
    this.#inFlight--
    if (this.#inFlight <= this.#deps.options.maxInFlight / 2 && this.#drainWaiters.length > 0) {
      for (const resolve of this.#drainWaiters.splice(0)) resolve()
    }
  }

  // ── outage and recovery ────────────────────────────────────────────────────────────────────

  /** Redis went down: stop listening (the subscriber is re-created on recovery). */
  down(forced: boolean): void {
    this.transport.detach(!forced)
    for (const info of this.#topics.values()) info.clean = false
    this.#resync = true
    if (this.#flushTimer) clearTimeout(this.#flushTimer)
    this.#flushTimer = null
  }

  /** The recovery step: subscribed again to every topic; publishes are held until the flush. */
  async recover(ctx: RecoveryContext): Promise<void> {
    if (this.#closed) return
    // A subscription that dropped while the monitor stayed up missed messages too: say hello.
    if (this.transport.behind) this.#resync = true
    await this.transport.recover(ctx)
    if (ctx.downtimeMs > 0 || this.outbox.size > 0 || this.#resync) {
      this.#holding = true
      this.#settleUntil = Date.now() + (ctx.downtimeMs > 0 ? this.#deps.options.settleMs : 0)
      if (this.#monitor.available) this.#scheduleFlush()
    }
  }

  /**
   * Back on Redis: say `hello` if we were cut off (the others answer with what they sent),
   * flush the outbox, then announce our heads — after the flush, so that receivers already
   * subscribed have had the flushed messages first and only those that missed them ask.
   */
  up(): void {
    if (this.#resync) {
      this.#resync = false
      this.#announcePending = true
      this.#sendControl(this.#controlTopic, { k: 'hello', o: this.#deps.processId })
      this.#reassembly.resubscribed()
      this.#loadWills()
    }
    if (this.#holding || this.outbox.size > 0) this.#scheduleFlush()
    else this.#announceIfPending()
  }

  /**
   * After an interruption: the publishers that closed meanwhile cannot answer `hello`; their
   * wills (will.ts) say what they sent, and answer the repair requests made to them.
   */
  #loadWills(): void {
    const giveUpMs = this.#deps.options.outbox.maxAgeMs + 1000
    this.#wills
      .load(
        (fn) => this.#monitor.run(fn),
        this.#deps.processId,
        this.#monitor.clock.now(),
        giveUpMs,
      )
      .then(
        ({ loaded, malformed, skipped }) => {
          if (this.#closed) return
          this.counters.malformed += malformed
          if (skipped > 0) {
            this.counters.willsSkipped += skipped
            this.#deps.onWillsSkipped(skipped)
          }
          for (const { origin, kept } of loaded) {
            this.counters.willsLoaded++
            this.#reassembly.heads(
              origin,
              kept.heads().map((h) => [h.topic, h.stream, h.seq, h.first] as HeadTuple),
            )
          }
        },
        (error: unknown) => this.#deps.onTransportError(error, 'reading the closed publishers'),
      )
  }

  /** Answer repair ranges asked of a closed publisher from its will; false: no will here. */
  #answerFromWill(origin: string, ranges: readonly RangeTuple[]): boolean {
    const kept = this.#wills.get(origin)
    if (kept === null) return false
    for (const [topic, stream, after, before, since] of ranges) {
      for (const message of kept.range(topic, stream, after, before, since)) {
        const wire = decodeWire(message.payload)
        if (wire === null) {
          this.counters.malformed++
          continue
        }
        this.counters.repairedFromWills++
        this.#reassembly.accept(topic, wire, true)
      }
    }
    // Whatever the will does not hold is not kept anywhere: the ranges are closed.
    this.#reassembly.resent(origin, ranges)
    return true
  }

  /**
   * Closing: leave what this process still keeps in Redis for the receivers that come back
   * after it (see will.ts). Best effort, bounded by `ms`.
   */
  async leaveWill(ms: number): Promise<void> {
    if (this.#closed || !this.#monitor.available) return
    const now = this.#monitor.clock.now()
    this.retention.expire(now)
    if (this.retention.size === 0) return
    try {
      const left = await Promise.race([
        this.#wills
          .leave((fn) => this.#monitor.run(fn), this.#deps.processId, this.retention, now)
          .then(() => true),
        sleep(ms, undefined, true).then(() => false),
      ])
      if (left) this.counters.willsLeft++
    } catch (error) {
      this.#deps.onTransportError(error, 'leaving the kept messages')
    }
  }

  #announceIfPending(): void {
    if (!this.#announcePending || !this.#monitor.available) return
    this.#announcePending = false
    this.#announceHeads(this.#controlTopic)
  }

  #scheduleFlush(): void {
    if (this.#flushTimer !== null || this.#flushing !== null || this.#closed) return
    const wait = Math.max(0, this.#settleUntil - Date.now())
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null
      void this.flush()
    }, wait)
    this.#flushTimer.unref()
  }

  /** Publish the outbox in order, in pipelines; stops (keeping the rest) if Redis fails again. */
  flush(): Promise<void> {
    if (this.#flushing !== null) return this.#flushing
    // (then-callbacks run later, so #flushing is set before they clear it)
    const run = this.#flushBatches().then(
      () => {
        this.#flushing = null
        this.#afterFlush()
      },
      (error: unknown) => {
        this.#flushing = null
        throw error
      },
    )
    this.#flushing = run
    return run
  }

  async #flushBatches(): Promise<void> {
    const droppedBefore = this.outbox.dropped
    let flushed = 0
    while (this.#monitor.available && !this.#closed) {
      const batch = this.outbox.peek(FLUSH_BATCH, this.#monitor.clock.now())
      if (batch.length === 0) {
        this.#holding = false
        break
      }
      try {
        this.#publishing = batch.length
        const { replyErrors, receivers } = await this.transport.publishBatch(batch).finally(() => {
          this.#publishing = 0
        })
        batch.forEach((item, i) => {
          this.retention.keep(item)
          // A send to a specific channel whose process is gone, as for a direct publish.
          if (receivers[i] === 0 && this.#isDirect(item.topic)) this.counters.undeliverable++
        })
        this.outbox.commit(batch.length)
        flushed += batch.length
        this.counters.published += batch.length - replyErrors
        this.counters.publishErrors += replyErrors
      } catch (error) {
        // Connectivity: the monitor is going down; the next recovery flushes the rest.
        if (!isConnectivityError(error)) {
          this.outbox.commit(batch.length)
          this.counters.publishErrors += batch.length
          this.#deps.onSendError(error, 'outbox')
        }
        break
      }
    }
    this.#flushReport.flushed += flushed
    this.#flushReport.dropped += this.outbox.dropped - droppedBefore
  }

  /** A flush ended: report it once nothing is held, or schedule the next one. */
  #afterFlush(): void {
    if (!this.#holding) {
      const report = this.#flushReport
      this.#flushReport = { flushed: 0, dropped: 0 }
      if (report.flushed > 0 || report.dropped > 0) this.#deps.onFlushed(report)
      this.#announceIfPending()
    } else if (this.#monitor.available && !this.#closed && this.outbox.size > 0) {
      this.#scheduleFlush()
    }
  }

  // ── receiving ──────────────────────────────────────────────────────────────────────────────

  #onMessage(topic: string, payload: string): void {
    if (this.#closed) return
    // Size-checked before anything is parsed: a UTF-16 length above the byte limit (plus the
    // header) cannot be one of ours.
    if (payload.length > this.#deps.options.maxMessageBytes + 1024) {
      // Too large to be one of ours: not parsed. Its number still counts, or the messages
      // after it would wait for a repair of one that will never be acceptable.
      const header = decodeHeader(payload)
      if (header !== null && header.origin !== this.#deps.processId) {
        this.#reassembly.accept(topic, { ...header, target: '', entry: TOMBSTONE }, false)
      } else this.counters.malformed++
      return
    }
    if (isControl(payload)) {
      this.#onControl(topic, payload)
      return
    }
    let repaired = false
    if (isRepair(payload)) {
      const inner = topic === this.#processTopic ? decodeRepair(payload) : null
      if (inner === null) {
        this.counters.malformed++
        return
      }
      topic = this.#deps.topicBase + inner.topic
      payload = inner.payload
      repaired = true
      this.counters.repaired++
    }
    const wire = decodeWire(payload)
    if (wire === null) {
      this.counters.malformed++
      return
    }
    if (wire.origin === this.#deps.processId) return // our own publish: local members have it
    this.#reassembly.accept(topic, wire, repaired)
  }

  /** In publisher order, from Reassembly: hand the message to the layer's local members. */
  #deliver(topic: string, wire: WireMessage): void {
    this.counters.remoteReceived++
    const base = this.#deps.topicBase.length
    const kind = topic.charAt(base)
    if (kind !== 'g' && kind !== 'p' && kind !== 'c') return
    this.#deps.deliver(kind, topic.slice(base + 2), wire)
  }

  #onControl(topic: string, payload: string): void {
    const message = decodeControl(payload)
    if (message === null) {
      this.counters.malformed++
      return
    }
    if (message.o === this.#deps.processId) return
    const base = this.#deps.topicBase
    switch (message.k) {
      case 'hello':
        // Another process re-subscribed: tell it what we sent, so it can ask for what it missed
        // (and it receives our asks again).
        if (topic === this.#controlTopic) {
          this.#reassembly.hello(message.o)
          this.#announceHeads(`${base}p:${message.o}`)
        }
        return
      case 'heads':
        this.#reassembly.heads(
          message.o,
          message.h.map(([t, stream, seq, first]) => [base + t, stream, seq, first] as HeadTuple),
        )
        return
      case 'resend':
        if (topic === this.#processTopic) this.#resend(message.o, message.r)
        return
      case 'resent':
        if (topic !== this.#processTopic) return
        this.#reassembly.resent(
          message.o,
          message.r.map(
            ([t, stream, after, before, since]) =>
              [base + t, stream, after, before, since] as RangeTuple,
          ),
        )
        return
    }
  }

  /** Collect a repair range for `origin`; sent with the others at the end of the tick. */
  #request(origin: string, range: RangeTuple): void {
    const list = this.#requests.get(origin)
    if (list === undefined) this.#requests.set(origin, [range])
    else list.push(range)
    if (this.#requestsScheduled) return
    this.#requestsScheduled = true
    process.nextTick(() => {
      this.#requestsScheduled = false
      const base = this.#deps.topicBase.length
      // Taken first: answering from a will can ask for more (collected for the next tick).
      const requests = [...this.#requests]
      this.#requests.clear()
      for (const [to, ranges] of requests) {
        if (this.#answerFromWill(to, ranges)) continue
        for (let i = 0; i < ranges.length; i += CONTROL_CHUNK) {
          this.counters.repairRequests++
          this.#sendControl(`${this.#deps.topicBase}p:${to}`, {
            k: 'resend',
            o: this.#deps.processId,
            r: ranges
              .slice(i, i + CONTROL_CHUNK)
              .map(
                ([t, stream, after, before, since]) =>
                  [t.slice(base), stream, after, before, since] as const,
              ),
          })
        }
      }
    })
  }

  /** Send kept messages again to one receiver, each range closed by a `resent` notice. */
  #resend(to: string, ranges: readonly RangeTuple[]): void {
    if (!this.#monitor.available) return
    const base = this.#deps.topicBase
    const target = `${base}p:${to}`
    this.retention.expire(this.#monitor.clock.now())
    const items: Array<{ topic: string; payload: string }> = []
    for (const [t, stream, after, before, since] of ranges) {
      for (const kept of this.retention.range(base + t, stream, after, before, since)) {
        items.push({ topic: target, payload: encodeRepair(t, kept.payload) })
      }
    }
    this.counters.resentToOthers += items.length
    for (let i = 0; i < ranges.length; i += CONTROL_CHUNK) {
      items.push({
        topic: target,
        payload: encodeControl({
          k: 'resent',
          o: this.#deps.processId,
          r: ranges.slice(i, i + CONTROL_CHUNK),
        }),
      })
    }
    // One pipeline, in order: the messages, then the notices that close their ranges.
    this.transport
      .publishBatch(items)
      .catch((error: unknown) => this.#deps.onTransportError(error, 'resend'))
  }

  #announceHeads(topic: string): void {
    const base = this.#deps.topicBase.length
    this.retention.expire(this.#monitor.clock.now())
    // What was sent, not only what is still kept: a receiver told of a tail the retention no
    // longer holds asks for it, gets nothing, and counts it lost (`first` past `seq`: nothing
    // kept) — else a receiver cut off beyond the age bound lost it uncounted (outside review 4).
    const kept = new Map(this.retention.heads().map((h) => [h.topic, h]))
    const heads: Array<{ topic: string; stream: number; seq: number; first: number }> = []
    for (const sent of this.#publisherSeq.heads()) {
      const head = kept.get(sent.topic)
      heads.push(
        head !== undefined && head.stream === sent.stream ? head : { ...sent, first: sent.seq + 1 },
      )
    }
    for (let i = 0; i < heads.length; i += CONTROL_CHUNK) {
      this.#sendControl(topic, {
        k: 'heads',
        o: this.#deps.processId,
        h: heads
          .slice(i, i + CONTROL_CHUNK)
          .map((h) => [h.topic.slice(base), h.stream, h.seq, h.first] as const),
      })
    }
  }

  #sendControl(topic: string, message: Control): void {
    if (!this.#monitor.available || this.#closed) return
    this.transport
      .publish(topic, encodeControl(message))
      .catch((error: unknown) => this.#deps.onTransportError(error, 'control message'))
  }

  // ── housekeeping ───────────────────────────────────────────────────────────────────────────

  /** Periodic: expire kept messages, forget idle publishers. */
  sweep(idleBefore: number): void {
    // Messages past the outbox's age bound are dropped (and counted) now, not only at the
    // next flush: during a long outage they must not count as waiting.
    this.outbox.peek(0, this.#monitor.clock.now())
    this.retention.expire(this.#monitor.clock.now())
    this.#wills.prune()
    this.#publisherSeq.prune(idleBefore)
    this.#reassembly.prune(performance.now() - (Date.now() - idleBefore))
  }

  /**
   * Publishes still buffered (closing): handed to Redis while it answers, within `ms` — the
   * flush in progress is waited for, not taken for done, and one that stopped is not retried
   * (Redis failed again: what is left stays counted at close).
   */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms
    this.outbox.peek(0, this.#monitor.clock.now())
    while (this.outbox.size > 0 && this.#monitor.available && !this.#closed) {
      const left = deadline - Date.now()
      if (left <= 0) return
      this.#holding = true
      if (this.#flushTimer !== null) clearTimeout(this.#flushTimer)
      this.#flushTimer = null
      const before = this.outbox.counters.flushed
      const settled = await Promise.race([
        this.flush().then(() => true),
        sleep(left, undefined, true).then(() => false),
      ])
      if (!settled || this.outbox.counters.flushed === before) return
    }
  }

  /**
   * What close() drops: the outbox less the batch already written to Redis (its replies not
   * awaited — it was handed over, and is not counted as dropped).
   */
  get unsentAtClose(): number {
    return Math.max(0, this.outbox.size - this.#publishing)
  }

  close(): void {
    this.#closed = true
    if (this.#flushTimer) clearTimeout(this.#flushTimer)
    if (this.#repairTimer) clearInterval(this.#repairTimer)
    this.transport.close()
    this.retention.clear()
    for (const resolve of this.#drainWaiters.splice(0)) resolve()
  }
}
