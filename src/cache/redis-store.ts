import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { corkAfterFirst as cork } from '../redis/cork.js'
import { evalScript, script } from '../redis/script.js'
import type { CacheStore } from './store.js'

/** Runs commands on a Redis connection chosen by the caller (the health monitor's `run`). */
export type Runner = <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>

export interface RedisStoreOptions {
  /** `${prefix}:cache:${namespace}`: every key this store touches starts with it. */
  base: string
  /** Unique per cache instance (its clean mark; tags its bus messages). */
  instanceId: string
  /** How commands reach Redis by default. */
  run: Runner
  /** Publish invalidations on `${base}:bus` for other processes' memory tiers. */
  bus: boolean
}

/** A bus message: keys changed by `i`, or a new generation `g` (everything changed). */
export interface BusMessage {
  i: string
  k?: string[]
  g?: string
}

/**
 * A `getOrSet` load in flight holds a lease on its key: the key's own Redis value is this
 * marker followed by a random token, until the load stores its result. A NUL first character
 * cannot start a JSON text (JSON.stringify escapes control characters), and a custom
 * serializer's output starting with this exact marker is treated as a miss.
 *
 * Keeping the lease in the key itself is what lets a plain `set` stay one `SET`: any write
 * replaces the marker, any delete removes it, and expiry removes it — so a load's fill, which
 * stores only if the marker with its token is still there, can never overwrite a newer value
 * nor resurrect a deleted one.
 */
export const LEASE_MARK = '\u0000failsoft:lease:'

/** True when stored text is a lease marker, not a value. */
export function isLease(text: string): boolean {
  return text.charCodeAt(0) === 0 && text.startsWith(LEASE_MARK)
}

/**
 * A `getOrSet` miss: the value if it is there after all, else a lease on the key — the token
 * of the lease in place (another load of the same key is running somewhere) or a new one. The
 * lease and the read are atomic, so any write or delete after this point replaces the marker
 * and the load's fill is refused. KEYS: data. ARGV: lease marker, candidate token, lease TTL
 * in ms. Returns {1, text, pttl} on a hit, {0, token} otherwise.
 */
const ACQUIRE = script(`
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, #ARGV[1]) == ARGV[1] then return {0, string.sub(v, #ARGV[1] + 1)} end
  return {1, v, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'PX', ARGV[3])
return {0, ARGV[2]}
`)

/**
 * A `getOrSet` fill: store the loaded text only if the key still holds this load's lease.
 * KEYS: data. ARGV: lease marker + token, text, TTL in ms ('0' = none), bus channel ('' =
 * none), bus message. Returns 1 when stored, 0 when the lease was gone.
 */
const FILL = script(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
`)

/** 'l1' reads: the value and its remaining TTL in one round trip. KEYS: data. */
const GET_WITH_TTL = script(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
`)

/**
 * Does the key hold a value (not a lease)? Reads at most the marker's length of it.
 * KEYS: data. ARGV: lease marker. Returns 1 or 0.
 */
const HAS = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1) == ARGV[1] then return 0 end
return 1
`)

/** A new generation and its bus notice, atomically (notices arrive in generation order). */
const BUMP = script(`
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
`)

/**
 * A delete removes the value, or a lease (a load in flight for the key can no longer store),
 * and publishes its bus notice. KEYS: data. ARGV: lease marker, bus channel ('' = none),
 * message. Returns 1 when a value (not a lease) was removed.
 */
const DELETE = script(`
local held = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1) ~= ARGV[1] then held = 1 end
  redis.call('UNLINK', KEYS[1])
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return held
`)

/**
 * Read the generation, creating a fresh random one if it is missing, in one round trip. A
 * missing generation key means nobody knows what was current (Redis restarted empty,
 * flushed, or evicted the key): a new random value, never a reused counter, keeps keys of any
 * older generation unreachable. SET NX makes every process agree. KEYS: generation.
 * ARGV: candidate generation.
 */
const SYNC = script(`
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
  g = redis.call('GET', KEYS[1])
end
return g
`)

/**
 * The periodic check and this instance's "clean" mark, in one round trip. Records the server's
 * time as the last moment this instance was on Redis with nothing left to reconcile (score of
 * its id in the members set) and the generation it uses (the `held` hash), forgets members
 * silent for longer than the prune age, and returns the generation (false if missing) with
 * that time. Other instances read the marks when they recover, and after they move the
 * generation (see PEERS). KEYS: generation, members, held. ARGV: instance id, prune age ms,
 * generation in use here ('' = none yet). Returns {generation | false, server time ms}.
 */
const HEARTBEAT = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 100)
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], m)
end
return {redis.call('GET', KEYS[1]), now}
`)

/**
 * What the other instances of the namespace are up to, in one round trip: how many were alive
 * before `before` (a mark in [from, before)) and have not marked themselves clean since; how
 * many are alive now (a mark within `window` ms of the server's time) and still use another
 * generation than the current one; and the current generation. KEYS: generation, members,
 * held. ARGV: from, before, window ms, own id. Returns {unconfirmed, stale, generation | false}.
 */
const PEERS = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local g = redis.call('GET', KEYS[1])
local unconfirmed = redis.call('ZCOUNT', KEYS[2], ARGV[1], '(' .. ARGV[2])
local stale = 0
local alive = redis.call('ZRANGEBYSCORE', KEYS[2], now - tonumber(ARGV[3]), '+inf')
for _, m in ipairs(alive) do
  if m ~= ARGV[4] and redis.call('HGET', KEYS[3], m) ~= g then stale = stale + 1 end
end
return {unconfirmed, stale, g}
`)

/** A TTL as the scripts and SET take it: whole ms, at least 1; 0 for no expiry. */
function pxOf(ttlMs: number | null): number {
  return ttlMs === null ? 0 : Math.max(1, Math.round(ttlMs))
}

/** 48 random bits, URL-safe: a generation or lease token. */
export function newToken(): string {
  return randomBytes(6).toString('base64url')
}

/**
 * A member silent for this long is forgotten (a process that exited without closing). Far
 * longer than any outage a peer should be waited for: it only bounds the set's size.
 */
const MEMBER_PRUNE_MS = 60 * 60 * 1000

const SCAN_COUNT = 500
const UNLINK_BATCH = 500

/**
 * The shared store: plain GET / SET for reads and writes, scripts for a `getOrSet` miss and
 * fill, deletes and the generation. Keys are `${base}:d:${generation}:${key}` (a value, or the
 * lease of a load in flight: see LEASE_MARK); the generation lives in `${base}:gen` and is
 * learned by `sync()` (at start-up and on every recovery) and `heartbeat()` (polled by the
 * cache, and on bus notices), so reads never pay a round trip for it.
 *
 * A write sent before an outage could land after the cache reconciled (a frozen server
 * draining its input on thaw, a proxy delivering what it held). That is made impossible one
 * level up: the health monitor closes this process's earlier command sockets in Redis before
 * any component recovers (`RecoveryContext.lateCommandsFenced`), and when it cannot, the
 * cache bumps the generation instead, so such a write lands where nobody reads.
 */
export class RedisStore implements CacheStore {
  readonly kind = 'redis' as const
  readonly base: string
  readonly instanceId: string
  readonly generationKey: string
  /** Sorted set: instance id → server time (ms) of its last clean mark. */
  readonly membersKey: string
  /** Hash: instance id → the generation it used at its last mark. */
  readonly heldKey: string
  readonly channel: string
  readonly #run: Runner
  readonly #bus: boolean
  #generation: string | null = null
  #dataPrefix = ''

  constructor(options: RedisStoreOptions) {
    this.base = options.base
    this.instanceId = options.instanceId
    this.generationKey = `${options.base}:gen`
    this.membersKey = `${options.base}:members`
    this.heldKey = `${options.base}:held`
    this.channel = `${options.base}:bus`
    this.#run = options.run
    this.#bus = options.bus
  }

  /** True once the generation is known: until then the store must not be used. */
  get synced(): boolean {
    return this.#generation !== null
  }

  get generation(): string | null {
    return this.#generation
  }

  /** The Redis key holding `key` (its value, or the lease of a load) in the current generation. */
  dataKey(key: string): string {
    return this.#dataPrefix + key
  }

  // ── the store contract ─────────────────────────────────────────────────────────────────────

  async get(key: string, run: Runner = this.#run): Promise<string | undefined> {
    const text = await run((redis) => cork(redis).get(this.dataKey(key)))
    return text === null || isLease(text) ? undefined : text
  }

  /** The value and its remaining lifetime in ms (null: no expiry), or undefined. */
  async getWithTtl(
    key: string,
    run: Runner = this.#run,
  ): Promise<{ text: string; ttlMs: number | null } | undefined> {
    const reply = await run((redis) =>
      evalScript(cork(redis), GET_WITH_TTL, [this.dataKey(key)], []),
    )
    if (!Array.isArray(reply)) return undefined
    const [text, pttl] = reply as [unknown, unknown]
    if (typeof text !== 'string' || isLease(text)) return undefined
    const ttl = Number(pttl)
    return { text, ttlMs: ttl >= 0 ? ttl : null }
  }

  /**
   * Store text: one SET (and, on the bus, its notice in the same socket write). Resolves true;
   * rejects when Redis does (e.g. OOM) or the connection fails.
   */
  async set(
    key: string,
    text: string,
    ttlMs: number | null,
    run: Runner = this.#run,
  ): Promise<boolean> {
    const dataKey = this.dataKey(key)
    const ttl = pxOf(ttlMs)
    await run((redis): Promise<unknown> => {
      const r = cork(redis)
      const stored = ttl === 0 ? r.set(dataKey, text) : r.set(dataKey, text, 'PX', ttl)
      if (!this.#bus) return stored
      return Promise.all([stored, r.publish(this.channel, this.#message({ k: [key] }))])
    })
    return true
  }

  /**
   * A `getOrSet` miss, atomically: the value if another writer stored it meanwhile, else the
   * token of the key's lease (taken now, or shared with a load already running elsewhere).
   */
  async acquire(
    key: string,
    leaseTtlMs: number,
    run: Runner = this.#run,
  ): Promise<{ text: string; ttlMs: number | null } | { lease: string }> {
    const reply = await run((redis) =>
      evalScript(cork(redis), ACQUIRE, [this.dataKey(key)], [LEASE_MARK, newToken(), leaseTtlMs]),
    )
    if (!Array.isArray(reply)) throw new Error('cache lease: unexpected reply')
    const [found, value, pttl] = reply as [unknown, unknown, unknown]
    if (typeof value !== 'string') throw new Error('cache lease: unexpected reply')
    if (Number(found) === 0) return { lease: value }
    const ttl = Number(pttl)
    return { text: value, ttlMs: ttl >= 0 ? ttl : null }
  }

  /**
   * Store a load's result only if its lease is intact: false, storing nothing, when the key
   * was written or deleted since the lease was taken, or the lease expired.
   */
  async fill(
    key: string,
    text: string,
    ttlMs: number | null,
    lease: string,
    run: Runner = this.#run,
  ): Promise<boolean> {
    const ttl = pxOf(ttlMs)
    const channel = this.#bus ? this.channel : ''
    const message = this.#bus ? this.#message({ k: [key] }) : ''
    const stored = await run((redis) =>
      evalScript(
        cork(redis),
        FILL,
        [this.dataKey(key)],
        [LEASE_MARK + lease, text, ttl, channel, message],
      ),
    )
    return Number(stored) === 1
  }

  /** Remove the value, or the lease of a load in flight (which can then no longer store). */
  async delete(key: string, run: Runner = this.#run): Promise<boolean> {
    const args = this.#bus
      ? [LEASE_MARK, this.channel, this.#message({ k: [key] })]
      : [LEASE_MARK, '', '']
    const removed = await run((redis) => evalScript(cork(redis), DELETE, [this.dataKey(key)], args))
    return Number(removed) > 0
  }

  async has(key: string, run: Runner = this.#run): Promise<boolean> {
    const held = await run((redis) =>
      evalScript(cork(redis), HAS, [this.dataKey(key)], [LEASE_MARK]),
    )
    return Number(held) === 1
  }

  /**
   * Every key of the namespace becomes unreachable at once (a new generation, visible to
   * other processes at their next generation check or bus notice), then the old generations'
   * keys are removed with SCAN + UNLINK. Never FLUSHDB: other namespaces and other data in
   * the same Redis are untouched.
   */
  async clear(run: Runner = this.#run): Promise<void> {
    await this.bumpGeneration(run)
    await this.sweep(run)
  }

  // ── generation, clean marks and reconciliation ─────────────────────────────────────────────

  /**
   * Learn the current generation (creating it if missing). Run at start-up and before every
   * return to Redis. True when the generation differs from the one this store used before
   * (its memory copies belong to another generation).
   */
  async sync(run: Runner = this.#run): Promise<boolean> {
    const generation = await run((redis) =>
      evalScript(redis, SYNC, [this.generationKey], [newToken()]),
    )
    if (typeof generation !== 'string') throw new Error('cache sync: unexpected reply')
    return this.#adopt(generation)
  }

  /**
   * Poll: has another process moved the generation? A missing key triggers a full sync. Also
   * marks this instance clean (it must have nothing left to reconcile) at the server's time,
   * which is returned: `changed` as for `sync`.
   */
  async heartbeat(run: Runner = this.#run): Promise<{ changed: boolean; at: number }> {
    const reply = await run((redis) =>
      evalScript(
        cork(redis),
        HEARTBEAT,
        [this.generationKey, this.membersKey, this.heldKey],
        [this.instanceId, MEMBER_PRUNE_MS, this.#generation ?? ''],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache heartbeat: unexpected reply')
    const [generation, at] = reply as [unknown, unknown]
    if (typeof at !== 'number') throw new Error('cache heartbeat: unexpected reply')
    if (typeof generation !== 'string') return { changed: await this.sync(run), at }
    return { changed: this.#adopt(generation), at }
  }

  /**
   * The other instances: `unconfirmed` were alive just before this instance's outage (a clean
   * mark in [from, before)) and have not confirmed since `before` that their own outage writes
   * are reconciled; `stale` are alive now (marked within `windowMs`) and still use another
   * generation than the current one. The current generation is adopted (`changed` as for
   * `sync`), read in the same step, so that whatever ended a wait is seen with it.
   */
  async peers(
    from: number,
    before: number,
    windowMs: number,
    run: Runner = this.#run,
  ): Promise<{ unconfirmed: number; stale: number; changed: boolean }> {
    const reply = await run((redis) =>
      evalScript(
        cork(redis),
        PEERS,
        [this.generationKey, this.membersKey, this.heldKey],
        [from, before, windowMs, this.instanceId],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache peers: unexpected reply')
    const [unconfirmed, stale, generation] = reply as [unknown, unknown, unknown]
    const changed = typeof generation === 'string' ? this.#adopt(generation) : await this.sync(run)
    return { unconfirmed: Number(unconfirmed), stale: Number(stale), changed }
  }

  /** Best effort on close: this instance's clean mark is of no use to anyone else. */
  async leave(run: Runner = this.#run): Promise<void> {
    await run((redis) =>
      redis
        .pipeline()
        .zrem(this.membersKey, this.instanceId)
        .hdel(this.heldKey, this.instanceId)
        .exec(),
    )
  }

  /** O(1) invalidation of the whole namespace: a new random generation. */
  async bumpGeneration(run: Runner = this.#run): Promise<string> {
    const generation = newToken()
    const channel = this.#bus ? this.channel : ''
    const message = this.#bus ? this.#message({ g: generation }) : ''
    await run((redis) =>
      evalScript(redis, BUMP, [this.generationKey], [generation, channel, message]),
    )
    this.#adopt(generation)
    return generation
  }

  /** Delete keys of the current generation in batches (reconciliation: DEL, never SET). */
  async unlinkMany(keys: readonly string[], run: Runner = this.#run): Promise<void> {
    for (let i = 0; i < keys.length; i += UNLINK_BATCH) {
      const batch = keys.slice(i, i + UNLINK_BATCH)
      await run(async (redis) => {
        // Values and leases alike: loads in flight elsewhere for these keys cannot store.
        await redis.unlink(...batch.map((key) => this.dataKey(key)))
        if (this.#bus) await redis.publish(this.channel, this.#message({ k: batch }))
      })
    }
  }

  /** Remove the keys of every generation but the current one. Returns how many. */
  async sweep(run: Runner = this.#run): Promise<number> {
    const keep = this.#dataPrefix
    let cursor = '0'
    let removed = 0
    do {
      const [next, keys] = await run((redis) =>
        redis.scan(cursor, 'MATCH', `${this.base}:d:*`, 'COUNT', SCAN_COUNT),
      )
      cursor = next
      const stale = keys.filter((key) => !key.startsWith(keep))
      if (stale.length > 0) removed += await run((redis) => redis.unlink(...stale))
    } while (cursor !== '0')
    return removed
  }

  /** A generation announced on the bus by another process. */
  adoptGeneration(generation: string): boolean {
    return this.#adopt(generation)
  }

  #adopt(generation: string): boolean {
    const changed = this.#generation !== null && this.#generation !== generation
    this.#generation = generation
    this.#dataPrefix = `${this.base}:d:${generation}:`
    return changed
  }

  #message(body: Omit<BusMessage, 'i'>): string {
    return JSON.stringify({ i: this.instanceId, ...body })
  }
}
