import type { Entry } from './message.js'
import { BACKLOG_WAIT_MS, JOIN_MARGIN_MS, LATE_ARRIVAL_MS } from '../tunables.js'

/** Pushes entries to a live consumer (a WebSocket) instead of buffering them for `receive`. */
export type Sink = (entry: Entry) => void

interface Waiter {
  resolve(entry: Entry): void
  reject(error: unknown): void
}

/** A message from another process waiting for room in a full channel, since `at` (monotonic ms). */
interface Waiting {
  readonly entry: Entry
  readonly at: number
}

/**
 * One channel's receive buffer: a FIFO bounded by the layer's capacity, and behind it the
 * backlog of messages from other processes that found it full (see LocalChannels).
 */
class ChannelBuffer {
  entries: Entry[] = []
  head = 0
  backlog: Waiting[] = []
  backlogHead = 0
  backlogBytes = 0
  readonly waiters: Waiter[] = []
  sink: Sink | null = null
  /** Groups this channel belongs to (the reverse index of LocalChannels.groups). */
  readonly groups = new Set<string>()
  lastUsed: number

  constructor(
    readonly name: string,
    now: number,
  ) {
    this.lastUsed = now
  }

  get size(): number {
    return this.entries.length - this.head
  }

  get backlogSize(): number {
    return this.backlog.length - this.backlogHead
  }

  pushBacklog(entry: Entry, at: number): void {
    this.backlog.push({ entry, at })
    this.backlogBytes += entry.json.length
  }

  peekBacklog(): Waiting | undefined {
    return this.backlog[this.backlogHead]
  }

  shiftBacklog(): Waiting | undefined {
    if (this.backlogHead >= this.backlog.length) return undefined
    const waiting = this.backlog[this.backlogHead]!
    this.backlogHead++
    this.backlogBytes -= waiting.entry.json.length
    if (this.backlogHead >= 64 && this.backlogHead * 2 >= this.backlog.length) {
      this.backlog = this.backlog.slice(this.backlogHead)
      this.backlogHead = 0
    }
    return waiting
  }

  push(entry: Entry): void {
    this.entries.push(entry)
  }

  shift(): Entry | undefined {
    if (this.head >= this.entries.length) return undefined
    const entry = this.entries[this.head]
    this.head++
    // Compact now and then instead of Array#shift (O(n) per call).
    if (this.head >= 64 && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.head = 0
    }
    return entry
  }

  peek(): Entry | undefined {
    return this.entries[this.head]
  }

  clear(): void {
    this.entries = []
    this.head = 0
    this.backlog = []
    this.backlogHead = 0
    this.backlogBytes = 0
  }
}

export interface LocalCounters {
  /** Messages dropped because they were older than `expirySeconds` when received. */
  expired: number
  /**
   * Deliveries skipped because the receiving channel was full (for a message from another
   * process: full, and its backlog full or its wait over).
   */
  full: number
  /** Channels dropped from their groups because their messages expired unread (Channels' rule). */
  abandoned: number
  /** Group memberships that expired (`groupExpirySeconds`). */
  membershipsExpired: number
  /** Deliveries skipped: a message from another process sent before the member joined. */
  joinedAfterSend: number
}

export interface LocalHooks {
  /** A group lost its last local member: stop listening for it. */
  groupEmptied(group: string): void
  /** A channel buffer was deleted (idle, abandoned or discarded). */
  channelRemoved(channel: string): void
  /** Messages from other processes waited in a full channel's backlog too long and were skipped. */
  backlogSkipped?(count: number, channel: string): void
}

/**
 * The in-process channel layer: per-channel receive buffers and group memberships. It is the
 * whole layer in memory-only mode and while Redis is unavailable, and the local half of the
 * layer when Redis is up (local members are always served from here, synchronously, without
 * waiting for Redis). Membership lives here, never in Redis, so it survives a Redis restart.
 */
export class LocalChannels {
  readonly #channels = new Map<string, ChannelBuffer>()
  readonly #groups = new Map<string, Map<string, number>>()
  /**
   * When each member joined, on this process' own clock (`Date.now()`), per group: turned into
   * Redis' clock with the offset known when it is used (a member added before this process
   * ever reached Redis joined at a time its clock could not place yet).
   */
  readonly #joinedLocal = new Map<string, Map<string, number>>()
  readonly #toRedis: (localMs: number) => number
  readonly #capacity: number
  readonly #backlogMax: { readonly messages: number; readonly bytes: number }
  readonly #expiryMs: number
  readonly #groupExpiryMs: number
  readonly #hooks: LocalHooks
  /** The layer's clock (Redis' clock as estimated here): message times are on it. */
  readonly #now: () => number
  readonly counters: LocalCounters = {
    expired: 0,
    full: 0,
    abandoned: 0,
    membershipsExpired: 0,
    joinedAfterSend: 0,
  }

  constructor(options: {
    capacity: number
    /**
     * Bounds of each channel's backlog: messages from other processes that found it full and
     * wait (BACKLOG_WAIT_MS at most) for its receiver to make room. Defaults: none (0, 0).
     */
    backlog?: { messages: number; bytes: number }
    expiryMs: number
    groupExpiryMs: number
    hooks: LocalHooks
    now?: () => number
    /** A `Date.now()` time on the layer's clock (default: as is). */
    toRedis?: (localMs: number) => number
  }) {
    this.#capacity = options.capacity
    this.#backlogMax = options.backlog ?? { messages: 0, bytes: 0 }
    this.#expiryMs = options.expiryMs
    this.#groupExpiryMs = options.groupExpiryMs
    this.#hooks = options.hooks
    this.#now = options.now ?? Date.now
    this.#toRedis = options.toRedis ?? ((localMs) => localMs)
  }

  get channelCount(): number {
    return this.#channels.size
  }

  get groupCount(): number {
    return this.#groups.size
  }

  /** Messages held for receivers: in channel buffers and their backlogs. */
  get bufferedCount(): number {
    let n = 0
    for (const buffer of this.#channels.values()) n += buffer.size + buffer.backlogSize
    return n
  }

  hasChannel(channel: string): boolean {
    return this.#channels.has(channel)
  }

  hasGroup(group: string): boolean {
    return this.#groups.has(group)
  }

  groupNames(): IterableIterator<string> {
    return this.#groups.keys()
  }

  /** Make sure a buffer exists (newChannel, receive); returns true if it was created. */
  touch(channel: string, now = this.#now()): boolean {
    const existing = this.#channels.get(channel)
    if (existing) {
      existing.lastUsed = now
      return false
    }
    this.#channels.set(channel, new ChannelBuffer(channel, now))
    return true
  }

  /**
   * Deliver to one channel: to its waiting receiver, its sink, or its buffer. Returns false
   * when the buffer is full (the caller decides: throw for `send`, skip and count for groups).
   *
   * `remote`: the message comes from another process. Its sender cannot be told the channel is
   * full, and such messages arrive in bursts that a receiver awaiting `receive` in a loop cannot
   * take one by one (one socket read, an outbox flushed at recovery, a gap repaired): one that
   * finds the buffer full waits in the channel's backlog, in order, and moves into the buffer
   * as the receiver takes messages. It is skipped (false) only when the backlog is full, and
   * later if it waited BACKLOG_WAIT_MS (counted by the sweep).
   */
  deliver(channel: string, entry: Entry, remote = false): boolean {
    let buffer = this.#channels.get(channel)
    if (!buffer) {
      buffer = new ChannelBuffer(channel, entry.sentAt)
      this.#channels.set(channel, buffer)
    }
    return this.#deliverTo(buffer, entry, remote)
  }

  #deliverTo(buffer: ChannelBuffer, entry: Entry, remote: boolean): boolean {
    if (buffer.sink !== null) {
      buffer.sink(entry)
      return true
    }
    const waiter = buffer.waiters.shift()
    if (waiter !== undefined) {
      waiter.resolve(entry)
      return true
    }
    // Behind messages already waiting: the backlog keeps the order of arrival.
    if (remote && buffer.backlogSize > 0) return this.#wait(buffer, entry)
    if (buffer.size >= this.#capacity) {
      // Expired messages do not count against capacity.
      this.#dropExpired(buffer, this.#now())
      if (buffer.size >= this.#capacity) return remote && this.#wait(buffer, entry)
    }
    buffer.push(entry)
    return true
  }

  #wait(buffer: ChannelBuffer, entry: Entry): boolean {
    const now = performance.now()
    this.#dropWaited(buffer, now - BACKLOG_WAIT_MS)
    const max = this.#backlogMax
    if (buffer.backlogSize >= max.messages || buffer.backlogBytes + entry.json.length > max.bytes)
      return false
    buffer.pushBacklog(entry, now)
    return true
  }

  /** Skip (and count) the backlog messages that arrived before `before` (monotonic ms). */
  #dropWaited(buffer: ChannelBuffer, before: number): void {
    let skipped = 0
    for (let w = buffer.peekBacklog(); w !== undefined && w.at <= before;) {
      buffer.shiftBacklog()
      skipped++
      w = buffer.peekBacklog()
    }
    if (skipped === 0) return
    this.counters.full += skipped
    this.#hooks.backlogSkipped?.(skipped, buffer.name)
  }

  /** Room was made in the buffer: messages from the backlog move in, oldest first. */
  #refill(buffer: ChannelBuffer): void {
    while (buffer.backlogSize > 0 && buffer.size < this.#capacity) {
      const waiting = buffer.shiftBacklog()
      if (waiting !== undefined) buffer.push(waiting.entry)
    }
  }

  /** Take the next entry from the buffer, making room for the backlog. */
  #take(buffer: ChannelBuffer): Entry | undefined {
    const entry = buffer.shift()
    if (entry !== undefined && buffer.backlogSize > 0) this.#refill(buffer)
    return entry
  }

  /**
   * Deliver to every local member but `except`; counts (and returns) the members skipped
   * because full. `remote`: from another process (see `deliver`).
   */
  groupDeliver(
    group: string,
    entry: Entry,
    { remote = false, except }: { remote?: boolean; except?: string | undefined } = {},
  ): { delivered: number; full: number } {
    const members = this.#groups.get(group)
    if (!members) return { delivered: 0, full: 0 }
    let delivered = 0
    let full = 0
    const expiredBefore = entry.sentAt - this.#groupExpiryMs
    for (const [channel, joinedAt] of members) {
      if (channel === except) continue
      if (remote && this.#joinedAfter(group, channel, entry.sentAt)) {
        this.counters.joinedAfterSend++
        continue
      }
      const buffer = this.#channels.get(channel)
      if (joinedAt < expiredBefore && buffer?.sink == null) {
        this.#removeMember(group, members, channel)
        this.counters.membershipsExpired++
        continue
      }
      if (this.#deliverTo(buffer ?? this.#create(channel, entry.sentAt), entry, remote)) delivered++
      else full++
    }
    if (full > 0) this.counters.full += full
    return { delivered, full }
  }

  #create(channel: string, now: number): ChannelBuffer {
    const buffer = new ChannelBuffer(channel, now)
    this.#channels.set(channel, buffer)
    return buffer
  }

  /** Next unexpired entry, or a promise for the next delivered one. */
  receive(channel: string, signal: AbortSignal | undefined): Promise<Entry> {
    const now = this.#now()
    let buffer = this.#channels.get(channel)
    if (!buffer) buffer = this.#create(channel, now)
    buffer.lastUsed = now
    if (buffer.waiters.length === 0) {
      this.#dropExpired(buffer, now)
      const entry = this.#take(buffer)
      if (entry !== undefined) return Promise.resolve(entry)
    }
    if (signal?.aborted) return Promise.reject(abortReason(signal))
    const target = buffer
    return new Promise<Entry>((resolve, reject) => {
      const onAbort = (): void => {
        const index = target.waiters.indexOf(waiter)
        if (index >= 0) target.waiters.splice(index, 1)
        reject(abortReason(signal as AbortSignal))
      }
      const waiter: Waiter = {
        resolve: (entry) => {
          signal?.removeEventListener('abort', onAbort)
          target.lastUsed = this.#now()
          resolve(entry)
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort)
          reject(error)
        },
      }
      target.waiters.push(waiter)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Attach a push consumer; entries already buffered are handed over first, in order. */
  attach(channel: string, sink: Sink): void {
    const now = this.#now()
    const buffer = this.#channels.get(channel) ?? this.#create(channel, now)
    buffer.sink = sink
    this.#dropExpired(buffer, now)
    for (let entry = this.#take(buffer); entry !== undefined; entry = this.#take(buffer))
      sink(entry)
  }

  groupAdd(group: string, channel: string, now = this.#now()): boolean {
    let members = this.#groups.get(group)
    const created = members === undefined
    if (!members) {
      members = new Map()
      this.#groups.set(group, members)
    }
    // Re-adding refreshes the join time (and so the membership expiry), as in Channels — but
    // not the membership's start: a message sent before a refresh, delivered late, is still
    // owed to the member (see #joinedAfter).
    const member = members.delete(channel)
    members.set(channel, now)
    let joined = this.#joinedLocal.get(group)
    if (joined === undefined) this.#joinedLocal.set(group, (joined = new Map()))
    if (!member || !joined.has(channel)) joined.set(channel, Date.now())
    const buffer = this.#channels.get(channel) ?? this.#create(channel, now)
    buffer.groups.add(group)
    return created
  }

  /**
   * A message from another process that arrives late (its outbox flushed, a repair) is not for
   * the members that joined after it was sent (both on Redis' clock), by more than the two
   * processes' estimates of that clock can differ (JOIN_MARGIN_MS). A live message (arriving
   * within LATE_ARRIVAL_MS) reaches every member.
   */
  #joinedAfter(group: string, channel: string, sentAt: number): boolean {
    if (this.#now() - sentAt <= LATE_ARRIVAL_MS) return false
    const local = this.#joinedLocal.get(group)?.get(channel)
    return local !== undefined && this.#toRedis(local) > sentAt + JOIN_MARGIN_MS
  }

  groupDiscard(group: string, channel: string): void {
    const members = this.#groups.get(group)
    if (members) this.#removeMember(group, members, channel)
  }

  #removeMember(group: string, members: Map<string, number>, channel: string): void {
    if (!members.delete(channel)) return
    this.#joinedLocal.get(group)?.delete(channel)
    this.#channels.get(channel)?.groups.delete(group)
    if (members.size === 0) {
      this.#groups.delete(group)
      this.#joinedLocal.delete(group)
      this.#hooks.groupEmptied(group)
    }
  }

  /** Forget a channel: out of every group, buffer dropped (a consumer closed). */
  deleteChannel(channel: string): void {
    const buffer = this.#channels.get(channel)
    if (!buffer) return
    for (const group of [...buffer.groups]) this.groupDiscard(group, channel)
    buffer.sink = null
    this.#channels.delete(channel)
    this.#hooks.channelRemoved(channel)
  }

  detach(channel: string): void {
    const buffer = this.#channels.get(channel)
    if (buffer) buffer.sink = null
  }

  /**
   * Drop every buffered message and every membership. Waiting receivers and attached
   * consumers stay attached: the channel names remain valid.
   */
  flush(): void {
    const groups = [...this.#groups.keys()]
    this.#groups.clear()
    this.#joinedLocal.clear()
    for (const [channel, buffer] of this.#channels) {
      buffer.groups.clear()
      buffer.clear()
      if (buffer.waiters.length === 0 && buffer.sink === null) {
        this.#channels.delete(channel)
        this.#hooks.channelRemoved(channel)
      }
    }
    for (const group of groups) this.#hooks.groupEmptied(group)
  }

  /**
   * Periodic clean-up, with Channels' rules: expired messages are dropped (and only those); a
   * channel that had a message expire unread, with nobody receiving, is removed from its
   * groups ("abandoned": its consumer is gone); a buffer is deleted once it is empty and
   * idle. Expired memberships go too. Keeps memory bounded when consumers vanish without
   * discarding.
   */
  sweep(now = this.#now()): void {
    const waitedBefore = performance.now() - BACKLOG_WAIT_MS
    for (const [channel, buffer] of this.#channels) {
      // Backlog messages whose wait is over: the receiver is not keeping up.
      this.#dropWaited(buffer, waitedBefore)
      const live = buffer.sink !== null || buffer.waiters.length > 0
      if (live) continue
      if (this.#dropExpired(buffer, now) > 0 && buffer.groups.size > 0) {
        this.counters.abandoned++
        for (const group of [...buffer.groups]) this.groupDiscard(group, channel)
      }
      if (
        buffer.size === 0 &&
        buffer.backlogSize === 0 &&
        buffer.groups.size === 0 &&
        now - buffer.lastUsed > this.#expiryMs
      ) {
        this.#channels.delete(channel)
        this.#hooks.channelRemoved(channel)
      }
    }
    const expiredBefore = now - this.#groupExpiryMs
    for (const [group, members] of this.#groups) {
      for (const [channel, joinedAt] of members) {
        if (joinedAt >= expiredBefore) break // insertion order = join order
        if (this.#channels.get(channel)?.sink != null) continue
        this.#removeMember(group, members, channel)
        this.counters.membershipsExpired++
      }
    }
  }

  /** Drop all state and reject every pending receive with `error` (the layer closed). */
  clear(error: unknown): void {
    for (const buffer of this.#channels.values()) {
      for (const waiter of buffer.waiters.splice(0)) waiter.reject(error)
      buffer.sink = null
    }
    this.#channels.clear()
    this.#groups.clear()
    this.#joinedLocal.clear()
  }

  #dropExpired(buffer: ChannelBuffer, now: number): number {
    const before = now - this.#expiryMs
    let dropped = 0
    for (let entry = buffer.peek(); entry !== undefined && entry.sentAt < before;) {
      buffer.shift()
      dropped++
      entry = buffer.peek()
    }
    if (dropped > 0) {
      this.counters.expired += dropped
      this.#refill(buffer)
    }
    return dropped
  }
}

export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('The operation was aborted', 'AbortError')
}
