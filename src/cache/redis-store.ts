import { createHash, randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { CacheStore } from './store.js'

/** Runs commands on a Redis connection chosen by the caller (the health monitor's `run`). */
export type Runner = <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>

export interface RedisStoreOptions {
  /** `${prefix}:cache:${namespace}`: every key this store touches starts with it. */
  base: string
  /** Unique per cache instance (names its fence key and tags its bus messages). */
  instanceId: string
  /** How commands reach Redis by default. */
  run: Runner
  /** Lifetime of the fence key, refreshed at every sync, in ms. */
  fenceTtlMs: number
  /** Publish invalidations on `${base}:bus` for other processes' memory tiers. */
  bus: boolean
}

/** A bus message: keys changed by `i`, or a new generation `g` (everything changed). */
export interface BusMessage {
  i: string
  k?: string[]
  g?: string
}

/** A write refused by its fence although the fence was re-asserted: it did not land. */
export class FenceLostError extends Error {
  constructor() {
    super('cache write refused: its fence token is no longer current')
    this.name = 'FenceLostError'
  }
}

interface Script {
  readonly lua: string
  readonly sha: string
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

/**
 * Writes land only if this instance's fence key still holds the token they carry. Recovery
 * rotates the token before it reconciles, so a write sent before an outage that reaches Redis
 * late (a frozen server draining its input on thaw, a retransmission after a partition) is
 * refused instead of overwriting a newer value. The writes issued in one tick travel in one
 * call (the script's fixed cost, ~4 µs of Redis CPU, is paid once per batch, not per write).
 *
 * Each write also settles its key's lease (see ACQUIRE): a plain `set` is an explicit new
 * value, so it removes the lease and any `getOrSet` load in flight for that key, in any
 * process, can no longer store its result. A fill (a `getOrSet` storing what its loader
 * returned) carries the lease token it was given and lands only if the lease still holds that
 * token; a missing lease counts as changed (deleted, set, expired, or lost with Redis's data).
 * A fill that lands removes the lease too.
 *
 * KEYS: fence, then per write its data key and its lease key. ARGV: fence token, bus channel
 * ('' = none), bus message, then per write its text, TTL in ms ('0' = none) and lease token
 * ('' = a plain set). Returns 0 when the fence refused the batch, else one character per write:
 * '1' stored, '0' refused by its lease.
 */
const FENCED_SET = script(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local data, lease = KEYS[2 * i], KEYS[2 * i + 1]
  local text, ttl, token = ARGV[3 * i + 1], ARGV[3 * i + 2], ARGV[3 * i + 3]
  if token == '' or redis.call('GET', lease) == token then
    if ttl == '0' then redis.call('SET', data, text) else redis.call('SET', data, text, 'PX', ttl) end
    redis.call('DEL', lease)
    out[i] = '1'
  else
    out[i] = '0'
  end
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return table.concat(out)
`)

/**
 * A `getOrSet` miss: the value if it is there after all, else a lease on the key — the token
 * of the lease in place (another load of the same key is running somewhere) or a new one. The
 * lease and the read are atomic, so any delete or set after this point removes the lease and
 * the load's fill is refused. KEYS: data, lease. ARGV: candidate token, lease TTL in ms.
 * Returns {1, text, pttl} on a hit, {0, token} otherwise.
 */
const ACQUIRE = script(`
local v = redis.call('GET', KEYS[1])
if v then return {1, v, redis.call('PTTL', KEYS[1])} end
local t = redis.call('GET', KEYS[2])
if not t then
  t = ARGV[1]
  redis.call('SET', KEYS[2], t, 'PX', ARGV[2])
end
return {0, t}
`)

/** Writes waiting for the end of the tick, per runner (the recovery runner is not the usual one). */
interface PendingWrite {
  readonly key: string
  readonly text: string
  readonly ttl: number
  /** The lease a fill holds; '' for a plain set. */
  readonly lease: string
  readonly resolve: (stored: boolean) => void
  readonly reject: (error: unknown) => void
}

/** Most writes sent in one script call. */
const WRITE_BATCH = 256

/** 'l1' reads: the value and its remaining TTL in one round trip. KEYS: data. */
const GET_WITH_TTL = script(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
`)

/** A new generation and its bus notice, atomically (notices arrive in generation order). */
const BUMP = script(`
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
`)

/**
 * A delete removes the value and the key's lease, atomically (a fill in flight for the key
 * can no longer land), and publishes its bus notice. KEYS: data, lease. ARGV: bus channel
 * ('' = none), message. Returns 1 when the value existed.
 */
const DELETE = script(`
local n = redis.call('UNLINK', KEYS[1])
redis.call('UNLINK', KEYS[2])
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return n
`)

/**
 * The periodic check and this instance's "clean" mark, in one round trip. Records the server's
 * time as the last moment this instance was on Redis with nothing left to reconcile (score of
 * its id in the members set), forgets members silent for longer than the prune age, and
 * returns the generation (false if missing) with that time. Other instances read the marks
 * when they recover (see `countUnconfirmed`). KEYS: generation, members. ARGV: instance id,
 * prune age ms. Returns {generation | false, server time ms}.
 */
const HEARTBEAT = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
return {redis.call('GET', KEYS[1]), now}
`)

/**
 * Read the generation (creating a fresh random one if it is missing) and install a new fence
 * token, in one round trip. A missing generation key means nobody knows what was current
 * (Redis restarted empty, flushed, or evicted the key): a new random value, never a reused
 * counter, keeps keys of any older generation unreachable. SET NX makes every process agree.
 * KEYS: generation, fence. ARGV: candidate generation, token, fence ttl ms.
 */
const SYNC = script(`
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
  g = redis.call('GET', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return g
`)

async function evalScript(
  redis: Redis,
  s: Script,
  keys: readonly string[],
  args: ReadonlyArray<string | number>,
): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, keys.length, ...keys, ...args)
  } catch (error) {
    // First use on this server (or it restarted): EVAL loads the script and runs it.
    if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
      return redis.eval(s.lua, keys.length, ...keys, ...args)
    }
    throw error
  }
}

const corked = new WeakSet<object>()

/**
 * Coalesce the commands issued in one tick into one socket write. ioredis writes each command
 * as it is issued, one syscall each; under concurrency those syscalls, not Redis, bound the
 * throughput. Corking the socket until `process.nextTick` (which runs once the current
 * microtasks have drained) turns a burst of commands into a single writev, and costs a
 * sequential caller nothing measurable. Commands and replies are unchanged.
 */
function cork(redis: Redis): Redis {
  const stream = redis.stream as { cork?: () => void; uncork?: () => void } | undefined
  if (stream?.cork === undefined || corked.has(stream)) return redis
  stream.cork()
  corked.add(stream)
  process.nextTick(() => {
    corked.delete(stream)
    stream.uncork?.()
  })
  return redis
}

/** 48 random bits, URL-safe: a generation or fence token. */
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
 * The shared store: plain GET/EXISTS for reads, scripts for deletes and fenced writes. Keys are
 * `${base}:d:${generation}:${key}`, their leases `${base}:l:${generation}:${key}` (they exist
 * only while a `getOrSet` load runs); the generation lives in `${base}:gen`
 * and is learned by `sync()` (at start-up and on every recovery) and `checkGeneration()`
 * (polled by the cache, and on bus notices), so reads never pay a round trip for it.
 */
export class RedisStore implements CacheStore {
  readonly kind = 'redis' as const
  readonly base: string
  readonly instanceId: string
  readonly generationKey: string
  readonly fenceKey: string
  /** Sorted set: instance id → server time (ms) of its last clean mark. */
  readonly membersKey: string
  readonly channel: string
  readonly #run: Runner
  readonly #fenceTtlMs: number
  readonly #bus: boolean
  #generation: string | null = null
  #dataPrefix = ''
  #leasePrefix = ''
  #token = newToken()
  readonly #pending = new Map<Runner, PendingWrite[]>()

  constructor(options: RedisStoreOptions) {
    this.base = options.base
    this.instanceId = options.instanceId
    this.generationKey = `${options.base}:gen`
    this.fenceKey = `${options.base}:fence:${options.instanceId}`
    this.membersKey = `${options.base}:members`
    this.channel = `${options.base}:bus`
    this.#run = options.run
    this.#fenceTtlMs = options.fenceTtlMs
    this.#bus = options.bus
  }

  /** True once the generation is known: until then the store must not be used. */
  get synced(): boolean {
    return this.#generation !== null
  }

  get generation(): string | null {
    return this.#generation
  }

  /** The Redis key holding `key` in the current generation. */
  dataKey(key: string): string {
    return this.#dataPrefix + key
  }

  /** The Redis key holding the lease of `key`'s load in flight, in the current generation. */
  leaseKey(key: string): string {
    return this.#leasePrefix + key
  }

  // ── the store contract ─────────────────────────────────────────────────────────────────────

  async get(key: string, run: Runner = this.#run): Promise<string | undefined> {
    const text = await run((redis) => cork(redis).get(this.dataKey(key)))
    return text ?? undefined
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
    if (typeof text !== 'string') return undefined
    const ttl = Number(pttl)
    return { text, ttlMs: ttl >= 0 ? ttl : null }
  }

  /**
   * Store text. With `lease` (a token from `acquire`), a conditional fill: resolves false,
   * storing nothing, when the key was deleted or set since the lease was taken (or the lease
   * expired). Writes issued in one tick share one script call.
   */
  set(
    key: string,
    text: string,
    ttlMs: number | null,
    run: Runner = this.#run,
    lease = '',
  ): Promise<boolean> {
    const ttl = ttlMs === null ? 0 : Math.max(1, Math.round(ttlMs))
    return new Promise<boolean>((resolve, reject) => {
      let batch = this.#pending.get(run)
      if (batch === undefined) {
        batch = []
        this.#pending.set(run, batch)
        // After the current microtasks: every write issued meanwhile joins this batch.
        process.nextTick(() => this.#flush(run))
      }
      batch.push({ key, text, ttl, lease, resolve, reject })
    })
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
      evalScript(
        cork(redis),
        ACQUIRE,
        [this.dataKey(key), this.leaseKey(key)],
        [newToken(), leaseTtlMs],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache lease: unexpected reply')
    const [found, value, pttl] = reply as [unknown, unknown, unknown]
    if (typeof value !== 'string') throw new Error('cache lease: unexpected reply')
    if (Number(found) === 0) return { lease: value }
    const ttl = Number(pttl)
    return { text: value, ttlMs: ttl >= 0 ? ttl : null }
  }

  #flush(run: Runner): void {
    const batch = this.#pending.get(run)
    this.#pending.delete(run)
    if (batch === undefined) return
    for (let i = 0; i < batch.length; i += WRITE_BATCH) {
      const part = batch.slice(i, i + WRITE_BATCH)
      this.#writeBatch(part, run).then(
        (landed) => {
          for (let j = 0; j < part.length; j++) part[j]?.resolve(landed[j] === '1')
        },
        (error: unknown) => {
          for (const write of part) write.reject(error)
        },
      )
    }
  }

  /** One script call; resolves one character per write: '1' stored, '0' refused by its lease. */
  async #writeBatch(batch: readonly PendingWrite[], run: Runner): Promise<string> {
    const keys = [this.fenceKey]
    const message = this.#bus ? this.#message({ k: batch.map((w) => w.key) }) : ''
    const args: Array<string | number> = ['', this.#bus ? this.channel : '', message]
    for (const write of batch) {
      keys.push(this.dataKey(write.key), this.leaseKey(write.key))
      args.push(write.text, write.ttl, write.lease)
    }
    const attempt = (token: string): Promise<unknown> => {
      args[0] = token
      return run((redis) => evalScript(cork(redis), FENCED_SET, keys, args))
    }
    let landed = await attempt(this.#token)
    if (typeof landed === 'string') return landed
    // The fence is gone (expired, evicted, Redis lost its data): re-create it — NX, so that a
    // re-creation arriving late can never replace a token installed by a later recovery.
    await run((redis) => redis.set(this.fenceKey, this.#token, 'PX', this.#fenceTtlMs, 'NX'))
    landed = await attempt(this.#token)
    if (typeof landed === 'string') return landed
    throw new FenceLostError()
  }

  /**
   * Send the writes still waiting for the end of the tick now, so that a delete issued after
   * them reaches Redis after them (program order), not before.
   */
  #flushBefore(run: Runner): void {
    if (this.#pending.has(run)) this.#flush(run)
  }

  /** Remove the value and its lease (a load in flight for it can no longer store). */
  async delete(key: string, run: Runner = this.#run): Promise<boolean> {
    this.#flushBefore(run)
    const keys = [this.dataKey(key), this.leaseKey(key)]
    const args = this.#bus ? [this.channel, this.#message({ k: [key] })] : ['', '']
    const removed = await run((redis) => evalScript(cork(redis), DELETE, keys, args))
    return Number(removed) > 0
  }

  async has(key: string, run: Runner = this.#run): Promise<boolean> {
    return (await run((redis) => cork(redis).exists(this.dataKey(key)))) > 0
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

  // ── generation, fence and reconciliation ───────────────────────────────────────────────────

  /**
   * Learn the current generation (creating it if missing) and rotate the fence token. Run at
   * start-up and before every return to Redis. True when the generation differs from the
   * one this store used before (its memory copies belong to another generation).
   */
  async sync(run: Runner = this.#run): Promise<boolean> {
    const token = newToken()
    const generation = await run((redis) =>
      evalScript(
        redis,
        SYNC,
        [this.generationKey, this.fenceKey],
        [newToken(), token, this.#fenceTtlMs],
      ),
    )
    if (typeof generation !== 'string') throw new Error('cache sync: unexpected reply')
    this.#token = token
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
        [this.generationKey, this.membersKey],
        [this.instanceId, MEMBER_PRUNE_MS],
      ),
    )
    if (!Array.isArray(reply)) throw new Error('cache heartbeat: unexpected reply')
    const [generation, at] = reply as [unknown, unknown]
    if (typeof at !== 'number') throw new Error('cache heartbeat: unexpected reply')
    if (typeof generation !== 'string') return { changed: await this.sync(run), at }
    return { changed: this.#adopt(generation), at }
  }

  /**
   * How many other instances of this namespace have a clean mark in [from, before): they were
   * alive not long before this instance's outage and have not confirmed since `before` that
   * their own outage writes are reconciled.
   */
  async countUnconfirmed(from: number, before: number, run: Runner = this.#run): Promise<number> {
    return run((redis) => cork(redis).zcount(this.membersKey, from, `(${before}`))
  }

  /** Best effort on close: this instance's fence and clean mark are of no use to anyone else. */
  async leave(run: Runner = this.#run): Promise<void> {
    await run(async (redis) => {
      await Promise.all([redis.unlink(this.fenceKey), redis.zrem(this.membersKey, this.instanceId)])
    })
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
    this.#flushBefore(run)
    for (let i = 0; i < keys.length; i += UNLINK_BATCH) {
      const batch = keys.slice(i, i + UNLINK_BATCH)
      await run(async (redis) => {
        // One command: the values and their leases (loads in flight elsewhere cannot store).
        await redis.unlink(
          ...batch.map((key) => this.dataKey(key)),
          ...batch.map((key) => this.leaseKey(key)),
        )
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
    this.#leasePrefix = `${this.base}:l:${generation}:`
    return changed
  }

  #message(body: Omit<BusMessage, 'i'>): string {
    return JSON.stringify({ i: this.instanceId, ...body })
  }
}
