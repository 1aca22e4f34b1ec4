import type { Redis } from 'ioredis'
import { safeJsonParse } from '../util/json.js'
import { Retention, type RetentionLimits } from './retention.js'

/**
 * Wills read per re-subscription (the first to expire first), and at most 4 × the retention's
 * `maxBytes` of them: bounds what one receiver loads. Those beyond are counted
 * (`willsSkipped`) and logged: their messages are not repaired.
 */
export const MAX_WILLS = 256

type Run = <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>

/** [topic without the layer's base, stream, seq, sent at (Redis ms), payload] */
type WillEntry = [string, number, number, number, string]

/**
 * A closing publisher's retention, left in Redis for the receivers that come back after it
 * left: a receiver cut off while the publisher flushed its outbox asks the publisher for what
 * it missed (repair.ts), and a closed publisher cannot answer. So `close()` writes what it
 * still keeps — bounded as its retention (count, bytes, age), and expiring at the age bound —
 * to `<base>will:<process id>`, listed in the sorted set `<base>wills` (score: its expiry,
 * Redis time). A receiver that re-subscribes after an interruption reads the live wills and
 * answers its own repair requests to their publishers from them (CrossProcess).
 */
export class Wills {
  readonly #base: string
  readonly #limits: RetentionLimits
  /** Wills loaded here, by publisher: dropped at `until` (performance.now()). */
  readonly #loaded = new Map<string, { kept: Retention; until: number }>()

  readonly #maxWills: number

  constructor(base: string, limits: RetentionLimits, maxWills = MAX_WILLS) {
    this.#base = base
    this.#limits = limits
    this.#maxWills = maxWills
  }

  get #index(): string {
    return `${this.#base}wills`
  }

  #key(origin: string): string {
    return `${this.#base}will:${origin}`
  }

  /** Leave `retention` (already expired up to `now`, Redis time) under `origin`. */
  async leave(run: Run, origin: string, retention: Retention, now: number): Promise<void> {
    const base = this.#base.length
    const entries: WillEntry[] = retention
      .entries()
      .map((m) => [m.topic.slice(base), m.stream, m.seq, m.at, m.payload])
    if (entries.length === 0) return
    const ttl = Math.max(1, Math.round(this.#limits.maxAgeMs))
    await run((redis) =>
      redis
        .multi()
        .set(this.#key(origin), JSON.stringify(entries), 'PX', ttl)
        .zadd(this.#index, now + ttl, origin)
        .zremrangebyscore(this.#index, '-inf', now)
        .pexpire(this.#index, ttl)
        .exec(),
    )
  }

  /**
   * Read the wills alive at `now` (Redis time) of publishers other than `self`; returns each
   * one's origin and kept messages. Malformed wills are skipped and counted in `malformed`.
   */
  async load(
    run: Run,
    self: string,
    now: number,
    keepForMs: number,
  ): Promise<{
    loaded: Array<{ origin: string; kept: Retention }>
    malformed: number
    skipped: number
  }> {
    const [listed, live] = await run((redis) =>
      Promise.all([
        redis.zrangebyscore(this.#index, now, '+inf', 'LIMIT', 0, this.#maxWills),
        redis.zcount(this.#index, now, '+inf'),
      ]),
    )
    let skipped = Math.max(0, live - listed.length)
    const origins = listed.filter((origin) => origin !== self)
    if (origins.length === 0) return { loaded: [], malformed: 0, skipped }
    const texts = await run((redis) => redis.mget(origins.map((o) => this.#key(o))))
    const loaded: Array<{ origin: string; kept: Retention }> = []
    let malformed = 0
    const until = performance.now() + keepForMs
    // Bounded in memory too: four publishers' worth of retention (maxBytes each) at most.
    let budget = this.#limits.maxBytes * 4
    for (const [i, origin] of origins.entries()) {
      const text = texts[i]
      if (typeof text !== 'string') continue // expired meanwhile
      if (text.length > budget) {
        skipped++
        continue
      }
      budget -= text.length
      const kept = this.#decode(text)
      if (kept === null) {
        malformed++
        continue
      }
      this.#loaded.set(origin, { kept, until })
      loaded.push({ origin, kept })
    }
    return { loaded, malformed, skipped }
  }

  /** The will of `origin` loaded here and not yet dropped (null: none). */
  get(origin: string): Retention | null {
    const will = this.#loaded.get(origin)
    if (will === undefined) return null
    if (performance.now() >= will.until) {
      this.#loaded.delete(origin)
      return null
    }
    return will.kept
  }

  /** Drop the wills kept past their time. */
  prune(): void {
    const t = performance.now()
    for (const [origin, will] of this.#loaded) if (t >= will.until) this.#loaded.delete(origin)
  }

  #decode(text: string): Retention | null {
    if (text.length > this.#limits.maxBytes * 2 + 1024 * 1024) return null
    let value: unknown
    try {
      value = safeJsonParse(text)
    } catch {
      return null
    }
    if (!Array.isArray(value)) return null
    const kept = new Retention(this.#limits)
    for (const item of value) {
      if (!isEntry(item)) return null
      const [topic, stream, seq, at, payload] = item
      kept.keep({ topic: this.#base + topic, stream, seq, at, payload })
    }
    return kept
  }
}

function isEntry(value: unknown): value is WillEntry {
  return (
    Array.isArray(value) &&
    value.length === 5 &&
    typeof value[0] === 'string' &&
    Number.isSafeInteger(value[1]) &&
    Number.isSafeInteger(value[2]) &&
    typeof value[3] === 'number' &&
    typeof value[4] === 'string'
  )
}
