import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { corkAfterFirst as cork } from '../redis/cork.js'
import { evalScript, script } from '../redis/script.js'
import type { CacheStore } from './store.js'
import { PEER_ALIVE_MS } from '../tunables.js'

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
  /**
   * The generation this store uses moved (another process cleared the namespace, or bumped
   * it in its recovery): memory copies belong to the old one.
   */
  onMoved?: () => void
}

/** A peer wait to announce with a recovery's clean mark (see RedisStore.heartbeat). */
export interface AnnouncedWait {
  readonly waitMs: number
  /** Start of the window of peers waited for (server ms); null: PEER_ALIVE_MS before the mark. */
  readonly from: number | null
  /** Redis was replaced: the peers listed before (see PeerWait), else null. */
  readonly listed: readonly string[] | null
}

/** A peer wait announced by another instance, as read by one that joins it. */
export interface JoinedWait {
  readonly before: number
  readonly from: number
  /** The generation when it began: a move since ends it (nothing older is reachable). */
  readonly generation: string
  readonly listed: readonly string[] | null
  readonly remainingMs: number
  /** The raw announcement (to end it); null for a wait nobody announced. */
  readonly value: string | null
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
 * Every command on a data key checks, in the same round trip, that the generation it was sent
 * for is still the current one (see RedisStore). A script begins with this: KEYS[1] is the
 * generation key, ARGV[1] the generation expected; when it moved, the script does nothing and
 * answers MOVED with the current generation (false if missing). The data key is KEYS[2], the
 * script's own arguments follow from ARGV[2].
 */
const MOVED = '~moved'
function checked(body: string): ReturnType<typeof script> {
  return script(`
local g = redis.call('GET', KEYS[1])
if g ~= ARGV[1] then return {'${MOVED}', g or false} end
${body}`)
}

/**
 * A `getOrSet` miss: the value if it is there after all, else a lease on the key — the token
 * of the lease in place (another load of the same key is running somewhere) or a new one. The
 * lease and the read are atomic, so any write or delete after this point replaces the marker
 * and the load's fill is refused. ARGV: lease marker, candidate token, lease TTL in ms.
 * Returns {1, text, pttl} on a hit, {0, token} otherwise.
 */
const ACQUIRE = checked(`
local v = redis.call('GET', KEYS[2])
if v then
  if string.sub(v, 1, #ARGV[2]) == ARGV[2] then return {0, string.sub(v, #ARGV[2] + 1)} end
  return {1, v, redis.call('PTTL', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[2] .. ARGV[3], 'PX', ARGV[4])
return {0, ARGV[3]}
`)

/**
 * A `getOrSet` fill: store the loaded text only if the key still holds this load's lease.
 * ARGV: lease marker + token, text, TTL in ms ('0' = none), bus channel ('' = none), bus
 * message. Returns 1 when stored, 0 when the lease was gone.
 */
const FILL = checked(`
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if ARGV[4] == '0' then redis.call('SET', KEYS[2], ARGV[3]) else redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
`)

/** 'l1' reads: the value and its remaining TTL in one round trip. */
const GET_WITH_TTL = checked(`
local v = redis.call('GET', KEYS[2])
if not v then return false end
return {v, redis.call('PTTL', KEYS[2])}
`)

/**
 * Does the key hold a value (not a lease)? Reads at most the marker's length of it.
 * ARGV: lease marker. Returns 1 or 0.
 */
const HAS = checked(`
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('GETRANGE', KEYS[2], 0, #ARGV[2] - 1) == ARGV[2] then return 0 end
return 1
`)

/** A new generation and its bus notice, atomically (notices arrive in generation order). */
const BUMP = script(`
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
`)

/**
 * A new generation only if the current one is still ARGV[4] (a missing one counts as moved:
 * the next read creates a fresh one), with its bus notice. Returns the generation now current.
 * Several instances whose peer waits time out together move it once.
 */
const BUMP_FROM = script(`
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[4] then return current end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return ARGV[1]
`)

/**
 * A delete removes the value, or a lease (a load in flight for the key can no longer store),
 * and publishes its bus notice. ARGV: lease marker, bus channel ('' = none), message.
 * Returns 1 when a value (not a lease) was removed.
 */
const DELETE = checked(`
local held = 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('GETRANGE', KEYS[2], 0, #ARGV[2] - 1) ~= ARGV[2] then held = 1 end
  redis.call('UNLINK', KEYS[2])
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
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
local t = redis.call('TIME')
return {g, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
`)

/**
 * The periodic check and this instance's "clean" mark, in one round trip. Records the moment
 * this instance was last on Redis with nothing left to reconcile (score of its id in the
 * members set): the server's time when the mark was *issued* — ARGV[5], this instance's lower
 * bound of it (see RedisStore.issuedAt) — or, if later or '', now. A mark that reaches Redis
 * late (a stalled link, a proxy delivering the bytes of a process killed since) therefore
 * claims nothing about the time it arrived: it ends no peer wait that began after it was sent.
 * When ARGV[6] is '1' (an instance in no peer wait, settled since it started), the mark also
 * raises the namespace's calm time (KEYS[5]): the last moment any instance was on Redis with
 * nothing to wait for — the start of the namespace's outage while every instance is cut off
 * (see RedisStore.heartbeat). It forgets members silent for longer than the prune age before
 * that moment, and returns the generation (false if missing) with the server's time now — and,
 * when ARGV[3] is a number of ms, the ids of the members marked within that long (the peers
 * this instance will wait for if Redis is replaced, see LISTED_PEERS). Other instances read the
 * marks when they recover (see PEERS). It also reads the namespace's write counter (KEYS[3])
 * and, when ARGV[4] is '1' (this instance wrote since its last beat), increments it: see
 * RedisStore.heartbeat. When ARGV[7] is a number of ms (a recovery that begins a peer wait), it
 * announces the wait in KEYS[4] for that long — `before from generation -|L ids...`, `from`
 * being ARGV[8] or, if '', now - ARGV[9] — so that an instance joining meanwhile waits too
 * (see PeerWait.join).
 * KEYS: generation, members, writes, wait, calm. ARGV: instance id, prune age ms, alive ms | '',
 * wrote, issued ms | '', calm, wait ms | '', from | '', alive ms, '-' | 'L', listed ids...
 * Returns {generation | false, server time ms, ids | false, writes before, writes after,
 * announced wait | false, calm time before this mark | false}.
 */
const HEARTBEAT = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = now
if ARGV[5] ~= '' and tonumber(ARGV[5]) < now then score = tonumber(ARGV[5]) end
redis.call('ZADD', KEYS[2], score, ARGV[1])
local calm = tonumber(redis.call('GET', KEYS[5]) or '')
local horizon = now
if calm and calm < now then horizon = calm end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon - tonumber(ARGV[2]))
if ARGV[6] == '1' and (not calm or score > calm) then redis.call('SET', KEYS[5], score) end
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
local after = before
if ARGV[4] == '1' then after = redis.call('INCR', KEYS[3]) end
local ids = false
if ARGV[3] ~= '' then ids = redis.call('ZRANGEBYSCORE', KEYS[2], now - tonumber(ARGV[3]), '+inf') end
local g = redis.call('GET', KEYS[1])
local wait = false
if ARGV[7] ~= '' and g then
  local from = ARGV[8]
  if from == '' then from = tostring(now - tonumber(ARGV[9])) end
  wait = now .. ' ' .. from .. ' ' .. g
  for i = 10, #ARGV do wait = wait .. ' ' .. ARGV[i] end
  redis.call('SET', KEYS[4], wait, 'PX', ARGV[7])
end
return {g, now, ids, before, after, wait, calm or false}
`)

/**
 * The peer wait an instance announced (see HEARTBEAT), with the ms it has left: an instance
 * that joins meanwhile waits with it (see PeerWait.join). KEYS: wait. Returns {value | false, pttl}.
 */
const ANNOUNCED_WAIT = script(`
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
`)

/** The announced wait is over: removed if it is still the one given. KEYS: wait. ARGV: value. */
const END_WAIT = script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`)

/**
 * After this instance's recovery: how many other instances were alive before `before` (a mark
 * in [from, before)) and have not marked themselves clean since, with the current generation.
 * This instance's own mark is not counted (scored with its issue time, it can be just before
 * `before`, its reply's server time). KEYS: generation, members. ARGV: from, before, own id.
 * Returns {unconfirmed, generation | false}.
 */
const PEERS = script(`
local n = redis.call('ZCOUNT', KEYS[2], ARGV[1], '(' .. ARGV[2])
local own = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[3]) or '')
if own and own >= tonumber(ARGV[1]) and own < tonumber(ARGV[2]) then n = n - 1 end
return {n, redis.call('GET', KEYS[1])}
`)

/**
 * PEERS for a Redis that was replaced (restarted from older data, failed over): its members set
 * may have forgotten instances, so the instances are the ones this instance listed before —
 * how many of them have no clean mark at or after `before` — plus, as in PEERS, the members it
 * still holds with a mark in [from, before) (an instance that joined after this one's last
 * listing: the list lags by up to LIST_PEERS_EVERY beats), not counting its own mark.
 * KEYS: generation, members. ARGV: before, from, own id, ids... Returns {unconfirmed,
 * generation | false}.
 */
const LISTED_PEERS = script(`
local before = tonumber(ARGV[1])
local n = redis.call('ZCOUNT', KEYS[2], ARGV[2], '(' .. ARGV[1])
local own = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[3]) or '')
if own and own >= tonumber(ARGV[2]) and own < before then n = n - 1 end
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if not score or tonumber(score) < before then n = n + 1 end
end
return {n, redis.call('GET', KEYS[1])}
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
 * A member silent for this long before the namespace's calm time (see calmKey) is forgotten (a
 * process that exited without closing): it only bounds the set's size. Counted from the calm
 * time, not from now, the members alive before an outage of every instance are not forgotten
 * during it, however long it lasts.
 */
const MEMBER_PRUNE_MS = 60 * 60 * 1000

const SCAN_COUNT = 500
/** Generation moves an operation follows before it gives up (each is a clear() or a reset). */
const MAX_MOVES = 3
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
  /**
   * Counter of the namespace's writes, incremented by each instance's heartbeat after it wrote
   * (see heartbeat): it never goes down unless Redis forgot acknowledged writes.
   */
  readonly writesKey: string
  /** The peer wait in progress after a recovery, announced for instances that join meanwhile. */
  readonly waitKey: string
  /**
   * Server time (ms) of the last clean mark of an instance in no peer wait (see HEARTBEAT): while
   * every instance is cut off, the start of the namespace's outage.
   */
  readonly calmKey: string
  readonly channel: string
  readonly #run: Runner
  /** The highest value of writesKey this instance saw (0: none yet). */
  #writesSeen = 0
  #wrote = false
  readonly #bus: boolean
  readonly #onMoved: () => void
  #generation: string | null = null
  #dataPrefix = ''
  /**
   * The server's time in the last reply that carried it, and when (performance.now()) that
   * reply was received here: see issuedAt.
   */
  #serverTime: { server: number; local: number } | null = null

  constructor(options: RedisStoreOptions) {
    this.base = options.base
    this.instanceId = options.instanceId
    this.generationKey = `${options.base}:gen`
    this.membersKey = `${options.base}:members`
    this.writesKey = `${options.base}:writes`
    this.waitKey = `${options.base}:wait`
    this.calmKey = `${options.base}:calm`
    this.channel = `${options.base}:bus`
    this.#run = options.run
    this.#bus = options.bus
    this.#onMoved = options.onMoved ?? (() => undefined)
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

  /** The value, or undefined (a miss, or a lease). One MGET: the generation with the value. */
  async get(key: string, run: Runner = this.#run): Promise<string | undefined> {
    for (let moves = 0; ; moves++) {
      const generation = this.#expected()
      const dataKey = this.dataKey(key)
      const [g, text] = await run((redis) => cork(redis).mget(this.generationKey, dataKey))
      if (g === generation)
        return text === null || text === undefined || isLease(text) ? undefined : text
      await this.#moved(g, moves, run)
    }
  }

  /** The value and its remaining lifetime in ms (null: no expiry), or undefined. */
  async getWithTtl(
    key: string,
    run: Runner = this.#run,
  ): Promise<{ text: string; ttlMs: number | null } | undefined> {
    const reply = await this.#eval(GET_WITH_TTL, key, [], run)
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
    const ttl = pxOf(ttlMs)
    for (let moves = 0; ; moves++) {
      const generation = this.#expected()
      const dataKey = this.dataKey(key)
      const g = await run((redis): Promise<unknown> => {
        const r = cork(redis)
        const stored = ttl === 0 ? r.set(dataKey, text) : r.set(dataKey, text, 'PX', ttl)
        const published = this.#bus ? r.publish(this.channel, this.#message({ k: [key] })) : null
        // Right after the SET, on the same connection: the generation it was written under.
        const current = r.get(this.generationKey)
        return Promise.all([stored, published, current]).then(([, , g]) => g)
      })
      if (g === generation) return true
      // Written into a generation that had moved: invisible, and so not done. Again, in the new one.
      await this.#moved(g, moves, run)
    }
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
    const reply = await this.#eval(ACQUIRE, key, [LEASE_MARK, newToken(), leaseTtlMs], run)
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
    const stored = await this.#eval(
      FILL,
      key,
      [LEASE_MARK + lease, text, ttl, channel, message],
      run,
    )
    return Number(stored) === 1
  }

  /** Remove the value, or the lease of a load in flight (which can then no longer store). */
  async delete(key: string, run: Runner = this.#run): Promise<boolean> {
    const args = this.#bus
      ? [LEASE_MARK, this.channel, this.#message({ k: [key] })]
      : [LEASE_MARK, '', '']
    const removed = await this.#eval(DELETE, key, args, run)
    return Number(removed) > 0
  }

  async has(key: string, run: Runner = this.#run): Promise<boolean> {
    const held = await this.#eval(HAS, key, [LEASE_MARK], run)
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
    const reply = await run((redis) => evalScript(redis, SYNC, [this.generationKey], [newToken()]))
    const [generation, at] = Array.isArray(reply) ? (reply as unknown[]) : []
    if (typeof generation !== 'string' || typeof at !== 'number') {
      throw new Error('cache sync: unexpected reply')
    }
    this.#sawServerTime(at)
    return this.#adopt(generation)
  }

  /**
   * A lower bound of the server's time now (ms), or '' before any reply carried it: the server's
   * time in the last such reply plus the time elapsed here since it was received (the reply's
   * way back is not counted: the bound is low by that much). A clean mark is scored with it.
   * Elapsed time is measured on this process' monotonic clock: its rate, not its value, is
   * trusted (drift: milliseconds per hour).
   */
  issuedAt(): number | '' {
    const seen = this.#serverTime
    if (seen === null) return ''
    return Math.floor(seen.server + (performance.now() - seen.local))
  }

  #sawServerTime(server: number): void {
    this.#serverTime = { server, local: performance.now() }
  }

  /**
   * Poll: has another process moved the generation? A missing key triggers a full sync. Also
   * marks this instance clean (it must have nothing left to reconcile) at the server's time,
   * which is returned: `changed` as for `sync`.
   */
  async heartbeat(
    run: Runner = this.#run,
    listPeersAliveMs?: number,
    announce?: AnnouncedWait,
    calm = false,
  ): Promise<{
    changed: boolean
    at: number
    rolledBack: boolean
    peers?: string[]
    /** The wait announced (see HEARTBEAT), to end it with endWait. */
    announced?: string
    /** The namespace's calm time before this mark (see calmKey); null if none. */
    calmAt: number | null
  }> {
    const wrote = this.#wrote
    this.#wrote = false
    const args: Array<string | number> = [
      this.instanceId,
      MEMBER_PRUNE_MS,
      listPeersAliveMs ?? '',
      wrote ? '1' : '0',
      this.issuedAt(),
      calm ? '1' : '0',
      ...(announce === undefined
        ? ['']
        : [
            Math.max(1, Math.round(announce.waitMs)),
            announce.from ?? '',
            PEER_ALIVE_MS,
            announce.listed === null ? '-' : 'L',
            ...(announce.listed ?? []),
          ]),
    ]
    let reply: unknown
    try {
      reply = await run((redis) =>
        evalScript(
          cork(redis),
          HEARTBEAT,
          [this.generationKey, this.membersKey, this.writesKey, this.waitKey, this.calmKey],
          args,
        ),
      )
    } catch (error) {
      if (wrote) this.#wrote = true
      throw error
    }
    if (!Array.isArray(reply)) throw new Error('cache heartbeat: unexpected reply')
    const [generation, at, ids, before, after, announced, calmAt] = reply as unknown[]
    if (typeof at !== 'number') throw new Error('cache heartbeat: unexpected reply')
    this.#sawServerTime(at)
    const peers = Array.isArray(ids)
      ? ids.filter((id): id is string => typeof id === 'string' && id !== this.instanceId)
      : undefined
    let changed = typeof generation === 'string' ? this.#adopt(generation) : await this.sync(run)
    // The namespace's write counter only grows while Redis keeps what it acknowledged: lower
    // than a value this instance saw, Redis forgot writes — any instance's, including those of
    // one that has left since (a restart from an older snapshot, a failover to a lagging
    // replica). Their old values may be back: the namespace moves to a new generation.
    const counted = Number(before) || 0
    const seen = this.#writesSeen
    this.#writesSeen = Math.max(Number(after) || 0, counted)
    let rolledBack = false
    if (counted < seen) {
      rolledBack = true
      if (await this.bumpGenerationFrom(run)) changed = true
    }
    return {
      changed,
      at,
      rolledBack,
      ...(peers !== undefined && { peers }),
      ...(typeof announced === 'string' && { announced }),
      calmAt: typeof calmAt === 'number' ? calmAt : null,
    }
  }

  /**
   * The peer wait another instance announced after its recovery and has not ended, with the
   * time it has left (null: none). A cache that joins while up waits with it (PeerWait.join).
   */
  async announcedWait(run: Runner = this.#run): Promise<JoinedWait | null> {
    const reply = await run((redis) => evalScript(redis, ANNOUNCED_WAIT, [this.waitKey], []))
    if (!Array.isArray(reply)) throw new Error('cache wait: unexpected reply')
    const [value, pttl] = reply as [unknown, unknown]
    if (typeof value !== 'string' || typeof pttl !== 'number' || pttl <= 0) return null
    const [before, from, generation, mode, ...ids] = value.split(' ')
    const parsed = { before: Number(before), from: Number(from) }
    if (!Number.isFinite(parsed.before) || !Number.isFinite(parsed.from) || !generation) {
      throw new Error('cache wait: unexpected value')
    }
    return {
      ...parsed,
      generation,
      listed: mode === 'L' ? ids : null,
      remainingMs: pttl,
      value,
    }
  }

  /** Best effort: the announced wait `value` is over (kept if another instance replaced it). */
  async endWait(value: string, run: Runner = this.#run): Promise<void> {
    await run((redis) => evalScript(redis, END_WAIT, [this.waitKey], [value]))
  }

  /** A write of this instance reached Redis: the next heartbeat counts it (see heartbeat). */
  markWritten(): void {
    this.#wrote = true
  }

  /**
   * How many other instances of this namespace were alive just before this instance's outage
   * (a clean mark in [from, before)) and have not confirmed since `before` that their own
   * outage writes are reconciled. The generation is read (and adopted) in the same step.
   */
  async peers(
    from: number,
    before: number,
    run: Runner = this.#run,
  ): Promise<{ unconfirmed: number; changed: boolean }> {
    const reply = await run((redis) =>
      evalScript(
        cork(redis),
        PEERS,
        [this.generationKey, this.membersKey],
        [from, before, this.instanceId],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache peers: unexpected reply')
    const [unconfirmed, generation] = reply as [unknown, unknown]
    const changed = typeof generation === 'string' ? this.#adopt(generation) : await this.sync(run)
    return { unconfirmed: Number(unconfirmed), changed }
  }

  /**
   * After Redis was replaced: how many of `ids` (the peers listed before, see heartbeat) have
   * not marked themselves clean at or after `before`. The generation is adopted as for peers().
   */
  async listedPeers(
    from: number,
    before: number,
    ids: readonly string[],
    run: Runner = this.#run,
  ): Promise<{ unconfirmed: number; changed: boolean }> {
    const reply = await run((redis) =>
      evalScript(
        cork(redis),
        LISTED_PEERS,
        [this.generationKey, this.membersKey],
        [before, from, this.instanceId, ...ids],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache peers: unexpected reply')
    const [unconfirmed, generation] = reply as [unknown, unknown]
    const changed = typeof generation === 'string' ? this.#adopt(generation) : await this.sync(run)
    return { unconfirmed: Number(unconfirmed), changed }
  }

  /** Best effort on close: this instance's clean mark is of no use to anyone else. */
  async leave(run: Runner = this.#run): Promise<void> {
    await run((redis) => redis.zrem(this.membersKey, this.instanceId))
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

  /**
   * Invalidate the namespace unless another instance already moved its generation since this
   * one adopted it (or since `expected`). Returns whether this call moved it.
   */
  async bumpGenerationFrom(
    run: Runner = this.#run,
    expected: string | null = this.#generation,
  ): Promise<boolean> {
    if (expected === null) return false
    const generation = newToken()
    const channel = this.#bus ? this.channel : ''
    const message = this.#bus ? this.#message({ g: generation }) : ''
    const reply = await run((redis) =>
      evalScript(redis, BUMP_FROM, [this.generationKey], [generation, channel, message, expected]),
    )
    if (typeof reply === 'string') {
      this.#adopt(reply)
      return reply === generation
    }
    // Gone (evicted, flushed): a fresh one is created by the next sync.
    await this.sync(run)
    return false
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
    if (changed) this.#onMoved()
    return changed
  }

  /** The generation an operation is sent for (the store must be synced). */
  #expected(): string {
    if (this.#generation === null) throw new Error('cache store used before it synced')
    return this.#generation
  }

  /**
   * An operation found the generation moved (`current`; null when the key is missing: Redis
   * was flushed or restarted empty): adopt it — or create a new one — and let it run again.
   */
  async #moved(current: unknown, moves: number, run: Runner): Promise<void> {
    if (moves >= MAX_MOVES) throw new Error('cache generation kept moving under an operation')
    if (typeof current === 'string') this.#adopt(current)
    else await this.sync(run)
  }

  /** A generation-checked script on one data key (see `checked`). */
  async #eval(
    s: ReturnType<typeof script>,
    key: string,
    args: ReadonlyArray<string | number>,
    run: Runner,
  ): Promise<unknown> {
    for (let moves = 0; ; moves++) {
      const generation = this.#expected()
      const keys = [this.generationKey, this.dataKey(key)]
      const reply = await run((redis) => evalScript(cork(redis), s, keys, [generation, ...args]))
      if (!Array.isArray(reply) || reply[0] !== MOVED) return reply
      await this.#moved(reply[1], moves, run)
    }
  }

  #message(body: Omit<BusMessage, 'i'>): string {
    return JSON.stringify({ i: this.instanceId, ...body })
  }
}
