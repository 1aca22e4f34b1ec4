import type { Redis } from 'ioredis'
import { isReplyError } from '../redis/replies.js'
import { withDeadline } from '../util/async.js'
import { RedisUnavailableError } from '../errors.js'
import type { HealthMonitor, RecoveryContext } from '../health/monitor.js'

/**
 * How long a SUBSCRIBE / UNSUBSCRIBE or the subscriber's connect may take, in ms. Only a
 * backstop: a frozen Redis is noticed by the health monitor first (its heartbeat, ≤ 350 ms by
 * default), which brings the layer down and drops the subscriber, rejecting what waits on it.
 */
const SUBSCRIBER_DEADLINE_MS = 2000
/** Topics per SUBSCRIBE command when re-subscribing many groups at once. */
const SUBSCRIBE_CHUNK = 500

/**
 * Redis pub/sub for the channel layer: a subscriber connection (its own, since a subscribed
 * connection can run nothing else) holding one topic per group with local members, one per
 * named channel with a local receiver and one for this process' specific channels; publishes
 * go through the health monitor's command connection, so a frozen Redis is noticed there.
 *
 * The subscriber is never reconnected by ioredis: when Redis fails the layer drops it, and the
 * recovery step opens a fresh one and subscribes every wanted topic before the layer returns
 * to Redis (a fresh connection rather than a reconnect: a socket to a frozen server can take
 * seconds to finish closing, and a new one needs no state from the old).
 */
export class RedisTransport {
  readonly #monitor: HealthMonitor
  readonly #connectionName: string
  readonly #onMessage: (topic: string, payload: string) => void
  readonly #onError: (error: unknown, what: string) => void
  readonly #wanted = new Set<string>()
  readonly #subscribed = new Set<string>()
  #sub: Redis | null = null
  /** A subscriber detached after a failure, whose already-received messages still count. */
  #draining: Redis | null = null
  #starting: Promise<void> | null = null
  #batch: Array<{
    topic: string
    payload: string
    resolve(receivers: number): void
    reject(error: unknown): void
  }> = []
  /** A publish was written in the current tick: the next ones wait for its end, together. */
  #tickBusy = false
  #closed = false
  /** Subscriber connections opened (1 + one per recovery after an outage). */
  connections = 0

  constructor(options: {
    monitor: HealthMonitor
    connectionName: string
    onMessage: (topic: string, payload: string) => void
    onError: (error: unknown, what: string) => void
  }) {
    this.#monitor = options.monitor
    this.#connectionName = options.connectionName
    this.#onMessage = options.onMessage
    this.#onError = options.onError
  }

  get subscribedCount(): number {
    return this.#subscribed.size
  }

  get wantedCount(): number {
    return this.#wanted.size
  }

  /** True when some wanted topic is not subscribed: the recovery step must run (again). */
  get behind(): boolean {
    if (this.#sub === null || this.#sub.status !== 'ready') return true
    if (this.#subscribed.size < this.#wanted.size) return true
    for (const topic of this.#wanted) if (!this.#subscribed.has(topic)) return true
    return false
  }

  isSubscribed(topic: string): boolean {
    return this.#subscribed.has(topic)
  }

  /**
   * Listen on a topic. While Redis is up this waits for the SUBSCRIBE reply, so a message
   * published by another process after it resolves is received; while down it only records
   * the topic, which the recovery step subscribes. Never rejects.
   */
  async want(topic: string): Promise<void> {
    this.#wanted.add(topic)
    if (this.#starting !== null) await this.#starting
    if (this.#subscribed.has(topic) || !this.#monitor.available) return
    const sub = this.#sub
    if (sub === null || sub.status !== 'ready') return
    try {
      await withDeadline(sub.subscribe(topic), SUBSCRIBER_DEADLINE_MS, 'subscribe')
      if (sub !== this.#sub) return
      this.#subscribed.add(topic)
      if (!this.#wanted.has(topic)) this.unwant(topic)
    } catch (error) {
      this.#failed(sub, error)
    }
  }

  /**
   * Open the subscriber for a layer created while Redis is already up (the monitor runs
   * recovery steps only on the way up, so nobody else would). A failure is reported to the
   * monitor, whose next recovery retries through `recover`.
   */
  start(): void {
    if (this.#sub !== null || this.#starting !== null || this.#closed) return
    if (!this.#monitor.available) return
    const sub = this.#open()
    const attempt = sub.connect()
    this.#starting = (async () => {
      try {
        await withDeadline(attempt, SUBSCRIBER_DEADLINE_MS, 'subscriber connect')
        // Topics wanted meanwhile are included: loop until none is missing.
        for (;;) {
          const missing = [...this.#wanted].filter((topic) => !this.#subscribed.has(topic))
          if (missing.length === 0 || sub !== this.#sub) break
          await withDeadline(sub.subscribe(...missing), SUBSCRIBER_DEADLINE_MS, 'subscribe')
          if (sub !== this.#sub) break
          for (const topic of missing) this.#subscribed.add(topic)
        }
      } catch (error) {
        attempt.catch(() => undefined) // settled by the disconnect in #failed; handled here
        this.#failed(sub, error)
      } finally {
        this.#starting = null
      }
    })()
  }

  /** Stop listening on a topic (fire and forget: an unneeded subscription is harmless). */
  unwant(topic: string): void {
    this.#wanted.delete(topic)
    const sub = this.#sub
    if (!this.#subscribed.has(topic) || sub === null || sub.status !== 'ready') return
    this.#subscribed.delete(topic)
    withDeadline(sub.unsubscribe(topic), SUBSCRIBER_DEADLINE_MS, 'unsubscribe').catch(
      (error: unknown) => this.#failed(sub, error),
    )
  }

  /**
   * PUBLISH through the monitor (tracked for freeze detection). The first publish of a tick is
   * written at once (no added latency for a lone message); the others issued in the same tick
   * go out together at its end as one pipeline — one write instead of one per message. Issue
   * order is kept. Resolves with the number of receiving connections.
   */
  publish(topic: string, payload: string): Promise<number> {
    if (!this.#tickBusy) {
      this.#tickBusy = true
      process.nextTick(this.#endOfTick)
      return this.#monitor.run((redis) => redis.publish(topic, payload))
    }
    return new Promise<number>((resolve, reject) => {
      this.#batch.push({ topic, payload, resolve, reject })
    })
  }

  readonly #endOfTick = (): void => {
    this.#tickBusy = false
    if (this.#batch.length === 0) return
    const batch = this.#batch
    this.#batch = []
    this.#monitor
      .run((redis) => {
        const pipeline = redis.pipeline()
        for (const item of batch) pipeline.publish(item.topic, item.payload)
        return pipeline.exec()
      })
      .then(
        (results) => {
          for (const [index, item] of batch.entries()) {
            const result = results?.[index]
            if (result === undefined) item.reject(new RedisUnavailableError('pipeline aborted'))
            else if (result[0]) item.reject(result[0])
            else item.resolve(result[1] as number)
          }
        },
        (error: unknown) => {
          for (const item of batch) item.reject(error)
        },
      )
  }

  /** Publish a batch in one pipeline; resolves with how many commands Redis answered with an error. */
  async publishBatch(
    items: ReadonlyArray<{ topic: string; payload: string }>,
  ): Promise<{ replyErrors: number; receivers: number[] }> {
    const results = await this.#monitor.run((redis) => {
      const pipeline = redis.pipeline()
      for (const item of items) pipeline.publish(item.topic, item.payload)
      return pipeline.exec()
    })
    if (results === null || results.length < items.length) {
      throw new RedisUnavailableError('the publish pipeline was aborted')
    }
    let replyErrors = 0
    // How many subscribers each publish reached (-1: a reply error).
    const receivers = results.map(([error, count]) => {
      if (error) {
        replyErrors++
        return -1
      }
      return Number(count)
    })
    return { replyErrors, receivers }
  }

  /**
   * Redis went down: drop the subscriber; the recovery step opens a new one. With
   * `keepReading` (a real failure, not the operator's switch) what the socket already received
   * is still delivered until it closes: when Redis dies, the last messages it sent can sit
   * unread in this socket while another connection's close brings the state down. They are
   * genuine and older than anything a new subscriber gets, and a receiver skips a duplicate by
   * its sequence number. The socket is being closed, so nothing is read on it for long.
   */
  detach(keepReading = false): void {
    const sub = this.#sub
    this.#sub = null
    this.#draining = keepReading ? sub : null
    this.#subscribed.clear()
    if (sub !== null) sub.disconnect()
  }

  /**
   * The recovery step's half: a ready subscriber with every wanted topic subscribed.
   * Idempotent; throws (so the monitor retries) if Redis fails meanwhile.
   */
  async recover(context: RecoveryContext): Promise<void> {
    if (this.#closed) return
    let sub = this.#sub
    if (sub === null || sub.status !== 'ready') {
      if (sub !== null) this.detach()
      sub = this.#open()
      const attempt = sub.connect()
      try {
        await withDeadline(attempt, SUBSCRIBER_DEADLINE_MS, 'subscriber connect', context.signal)
      } catch (error) {
        attempt.catch(() => undefined) // settled by the disconnect below; already handled here
        if (sub === this.#sub) this.detach()
        throw error
      }
    }
    const missing = [...this.#wanted].filter((topic) => !this.#subscribed.has(topic))
    for (let i = 0; i < missing.length; i += SUBSCRIBE_CHUNK) {
      const chunk = missing.slice(i, i + SUBSCRIBE_CHUNK)
      try {
        await withDeadline(
          sub.subscribe(...chunk),
          SUBSCRIBER_DEADLINE_MS,
          'subscribe',
          context.signal,
        )
      } catch (error) {
        // Unanswered (a partition swallowed it) or refused: this connection's replies can no
        // longer be trusted to match its commands. The next attempt starts on a fresh one —
        // reusing it kept one process' recovery failing for ever (found by npm run check).
        if (sub === this.#sub) this.detach()
        throw error
      }
      if (sub !== this.#sub) throw new RedisUnavailableError('subscriber closed during recovery')
      for (const topic of chunk) this.#subscribed.add(topic)
    }
    // Topics dropped while we were subscribing them.
    for (const topic of [...this.#subscribed]) if (!this.#wanted.has(topic)) this.unwant(topic)
  }

  close(): void {
    this.#closed = true
    this.#wanted.clear()
    this.detach()
  }

  #open(): Redis {
    const sub = this.#monitor.createConnection('subscriber', this.#connectionName)
    this.connections++
    this.#sub = sub
    sub.on('message', (topic: string, payload: string) => {
      if (!this.#closed && (sub === this.#sub || sub === this.#draining)) {
        this.#onMessage(topic, payload)
      }
    })
    sub.on('close', () => {
      if (sub === this.#draining) this.#draining = null
      if (sub !== this.#sub) return
      this.#sub = null
      this.#subscribed.clear()
      // Only this connection died (e.g. CLIENT KILL): the layer can no longer hear other
      // processes, so it must leave Redis and recover like after any outage.
      if (!this.#closed && this.#monitor.available) {
        this.#monitor.reportFailure(
          new RedisUnavailableError('the channel layer subscriber connection closed'),
        )
      }
    })
    return sub
  }

  #failed(sub: Redis, error: unknown): void {
    if (sub !== this.#sub || this.#closed) return
    this.#onError(error, 'subscriber command failed')
    // Whatever failed (timeout, closed socket) the subscriber can no longer be trusted.
    this.detach()
    if (this.#monitor.available) this.#monitor.reportFailure(asConnectivityError(error))
  }
}

function asConnectivityError(error: unknown): Error {
  if (error instanceof Error && !isReplyError(error)) return error
  return new RedisUnavailableError('a subscriber command failed', { cause: error })
}
