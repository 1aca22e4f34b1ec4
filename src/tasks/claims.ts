import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { evalScript, script } from '../redis/script.js'

/** A task's marker once it completed (on a worker, or inline). */
export const DONE = '1'

/**
 * Each task id has one marker key in Redis, `<prefix>:tasks:<queue>:done:<task id>`, that lives
 * `doneTtlMs`. It holds either DONE, or the **lease** of the one run allowed now:
 * `run:<token>:<renewed at>:<takeover at>` — the run's own token (unique per run, never shared
 * by a retry nor by a stalled copy of the same BullMQ job), the Redis time (ms) of its last
 * renewal, and the Redis time at which another run first found it stale (0: never).
 *
 * A run renews its lease every leaseMs / 3 for as long as its handler has not returned — past
 * its timeout too, when the handler ignores its signal. Another run of the same task id (a
 * stalled copy handed out again by BullMQ after an outage longer than its lock, a retry, a
 * late add and its spool replay, a repeated idempotency key) finds the lease and waits: it is
 * deferred, never started beside it. A lease not renewed for leaseMs is not taken over at
 * once: the first run to see it stale records the time, and only a run that still finds it
 * stale leaseMs after that takes it. Both times are Redis' own, and the second phase can only
 * start once Redis answers again, so a holder that was merely cut off together with everyone
 * else (a frozen Redis, a partition of Redis itself) has a whole lease period after Redis
 * returns to renew; only a holder that stays silent while others reach Redis loses it.
 */

/**
 * Take the task id's lease for a run, unless the task is done or another run holds a live
 * lease. KEYS: marker. ARGV: run token, lease ms, marker TTL ms.
 * Returns {'claimed'} | {'done', value} | {'busy', ms to wait}.
 */
const CLAIM = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local mine = 'run:' .. ARGV[1] .. ':'
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, 4) ~= 'run:' then return {'done', v} end
  if string.sub(v, 1, #mine) ~= mine then
    local holder, renewed, takeover = string.match(v, '^(run:[^:]+):(%d+):(%d+)$')
    renewed = tonumber(renewed) or 0
    takeover = tonumber(takeover) or 0
    if holder == nil then holder = 'run:legacy' end
    if now - renewed < lease then return {'busy', lease - (now - renewed)} end
    if takeover <= renewed then
      redis.call('SET', KEYS[1], holder .. ':' .. renewed .. ':' .. now, 'PX', ARGV[3])
      return {'busy', lease}
    end
    if now - takeover < lease then return {'busy', lease - (now - takeover)} end
  end
end
redis.call('SET', KEYS[1], mine .. now .. ':0', 'PX', ARGV[3])
return {'claimed'}
`)

/**
 * Renew a run's lease. KEYS: marker. ARGV: run token, marker TTL ms.
 * Returns 1 (held), 2 (the task is done), 0 (lost: taken over). A missing marker is taken
 * again (1): nobody else holds the task id, and the key can only have gone with Redis' data
 * (a reset, a rollback to older data) or its long TTL — while this run still runs, another
 * run must find its lease.
 */
const RENEW = script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = 'run:' .. ARGV[1] .. ':'
local v = redis.call('GET', KEYS[1])
if (not v) or string.sub(v, 1, #mine) == mine then
  redis.call('SET', KEYS[1], mine .. now .. ':0', 'PX', ARGV[2])
  return 1
end
if string.sub(v, 1, 4) ~= 'run:' then return 2 end
return 0
`)

/** Give a run's lease up (it failed: a retry or a copy may run), unless it was replaced. */
const RELEASE = script(`
local mine = 'run:' .. ARGV[1] .. ':'
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #mine) == mine then return redis.call('DEL', KEYS[1]) end
return 0
`)

export type ClaimOutcome =
  | { readonly kind: 'claimed' }
  /** The task completed (its marker is DONE) within the marker's lifetime. */
  | { readonly kind: 'done' }
  /** Another run holds the lease: try again in `retryInMs`. */
  | { readonly kind: 'busy'; readonly retryInMs: number }

export type RenewOutcome = 'held' | 'done' | 'lost'

let tokenPrefix = ''
let tokenCounter = 0

/** A token for one run: never reused, no ':' (it is a field of the lease). */
export function runToken(): string {
  if (tokenPrefix === '' || tokenCounter >= 1_000_000) {
    tokenPrefix = randomBytes(9).toString('base64url')
    tokenCounter = 0
  }
  return `${tokenPrefix}.${(tokenCounter++).toString(36)}`
}

/** The marker commands of one queue. */
export class TaskClaims {
  readonly leaseMs: number
  readonly doneTtlMs: number
  readonly #doneKey: (id: string) => string

  constructor(options: { doneKey: (id: string) => string; doneTtlMs: number; leaseMs: number }) {
    this.#doneKey = options.doneKey
    this.doneTtlMs = options.doneTtlMs
    this.leaseMs = options.leaseMs
  }

  key(id: string): string {
    return this.#doneKey(id)
  }

  async claim(redis: Redis, id: string, token: string): Promise<ClaimOutcome> {
    const reply = await evalScript(
      redis,
      CLAIM,
      [this.#doneKey(id)],
      [token, this.leaseMs, this.#markerTtl()],
    )
    const [kind, detail] = Array.isArray(reply) ? (reply as unknown[]) : []
    if (kind === 'claimed') return { kind: 'claimed' }
    if (kind === 'done') return { kind: 'done' }
    if (kind === 'busy') {
      const wait = Number(detail)
      return { kind: 'busy', retryInMs: Number.isFinite(wait) && wait > 0 ? wait : this.leaseMs }
    }
    throw new Error(`task claim: unexpected reply ${JSON.stringify(reply)}`)
  }

  async renew(redis: Redis, id: string, token: string): Promise<RenewOutcome> {
    const reply = Number(
      await evalScript(redis, RENEW, [this.#doneKey(id)], [token, this.#markerTtl()]),
    )
    return reply === 1 ? 'held' : reply === 2 ? 'done' : 'lost'
  }

  async release(redis: Redis, id: string, token: string): Promise<void> {
    await evalScript(redis, RELEASE, [this.#doneKey(id)], [token])
  }

  /** The task completed: no run of its id starts again while the marker lives. */
  async complete(redis: Redis, id: string, ttlMs = this.doneTtlMs): Promise<void> {
    await redis.set(this.#doneKey(id), DONE, 'PX', Math.max(1, Math.round(ttlMs)))
  }

  /** The marker outlives the lease by far: a lease key never expires under a live holder. */
  #markerTtl(): number {
    return Math.max(this.doneTtlMs, this.leaseMs * 4)
  }
}

/**
 * Keeps one run's lease alive while its handler runs (and past its timeout, until it returns).
 * `onLost` is told when the lease is gone — taken over by another run, or, with
 * `abortAfterMs`, when no renewal has been acknowledged for that long: another run may then
 * take the lease, and the handler is asked to stop (its `ctx.signal`).
 */
export class LeaseKeeper {
  readonly #claims: TaskClaims
  readonly #id: string
  readonly #token: string
  readonly #run: <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>
  readonly #onLost: (reason: string) => void
  readonly #onError: (error: unknown) => void
  readonly #abortAfterMs: number | null
  #timer: NodeJS.Timeout | null = null
  #lastHeld = performance.now()
  #renewing = false
  #stopped = false
  #lost = false

  constructor(options: {
    claims: TaskClaims
    id: string
    token: string
    /** How renewals reach Redis (a rejection, e.g. Redis down, is retried at the next period). */
    run: <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>
    onLost: (reason: string) => void
    onError: (error: unknown) => void
    abortAfterMs: number | null
  }) {
    this.#claims = options.claims
    this.#id = options.id
    this.#token = options.token
    this.#run = options.run
    this.#onLost = options.onLost
    this.#onError = options.onError
    this.#abortAfterMs = options.abortAfterMs
    const every = Math.max(50, Math.floor(options.claims.leaseMs / 3))
    this.#timer = setInterval(() => void this.#renew(), every)
    this.#timer.unref()
  }

  get token(): string {
    return this.#token
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
  }

  async #renew(): Promise<void> {
    if (this.#stopped || this.#lost) return
    if (this.#abortAfterMs !== null && performance.now() - this.#lastHeld > this.#abortAfterMs) {
      this.#lose('no renewal of the lease reached Redis for longer than the lease')
      return
    }
    if (this.#renewing) return
    this.#renewing = true
    try {
      const outcome = await this.#run((redis) => this.#claims.renew(redis, this.#id, this.#token))
      if (this.#stopped) return
      if (outcome === 'held') this.#lastHeld = performance.now()
      else if (outcome === 'lost') this.#lose('the lease was taken by another run')
      // 'done': a copy completed the task meanwhile; nothing left to protect.
      else this.stop()
    } catch (error) {
      this.#onError(error)
    } finally {
      this.#renewing = false
    }
  }

  #lose(reason: string): void {
    this.#lost = true
    this.stop()
    this.#onLost(reason)
  }
}
