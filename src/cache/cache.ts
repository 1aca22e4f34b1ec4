import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { ClosedError, RedisUnavailableError } from '../errors.js'
import type { FailsoftContext } from '../context.js'
import type { ComponentHandle, HealthMonitor, RecoveryContext } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError } from '../redis/connection.js'
import { withDeadline } from '../util/async.js'
import { sleep } from '../util/sleep.js'
import { safeJsonParse } from '../util/json.js'
import {
  InvalidKeyError,
  InvalidTtlError,
  InvalidValueError,
  ValueTooLargeError,
} from './errors.js'
import { Journal } from './journal.js'
import { MemoryStore } from './memory-store.js'
import {
  MAX_TTL_SECONDS,
  resolveCacheOptions,
  type CacheOptions,
  type ResolvedCacheOptions,
} from './options.js'
import { RedisStore, type BusMessage, type Runner } from './redis-store.js'

/** Options of one write. */
export interface SetOptions {
  /** Seconds until the value expires; `null` for never. Default: the cache's `defaultTtlSeconds`. */
  ttlSeconds?: number | null | undefined
}

/** Counters and bounds of one cache, for `failsoft.status()` and dashboards. JSON-safe. */
export interface CacheStatus {
  backend: 'redis' | 'memory'
  namespace: string
  memoryMode: ResolvedCacheOptions['memory']['mode']
  generation: string | null
  memory: {
    entries: number
    bytes: number
    maxEntries: number
    maxBytes: number
    evictions: number
  }
  journal: { keys: number; maxKeys: number; overflows: number; pendingGenerationBump: boolean }
  /** Operations served from memory because Redis was unavailable, since creation. */
  fallbackOps: number
  /** Keys deleted in Redis by reconciliation, since creation. */
  reconciledKeys: number
  generationBumps: number
  /** Reads served from the memory tier while Redis was up ('l1' mode). */
  memoryHits: number
  /** Redis answered with an error for one command (e.g. OOM): that write failed, the key was invalidated. */
  replyErrors: number
  /** Stored text the serializer could not read back: served as a miss. */
  decodeErrors: number
  /** 'l1' mode: whether other processes' invalidations are being received. */
  busConnected: boolean | null
  /**
   * `getOrSet` loads whose result was returned but not stored because the key was deleted or
   * set (here or in another process) while the loader ran, or its lease expired.
   */
  fillsSuperseded: number
  /**
   * After an outage, reads wait off Redis until the other instances of this namespace confirm
   * their own reconciliation (`peerWaitMs`): whether this instance is waiting now, how many
   * such waits it went through, and how many ended at the deadline with peers unconfirmed.
   */
  peerWait: { waiting: boolean; waits: number; timeouts: number }
}

/**
 * One `getOrSet` load in flight for a key in this process (single-flight: later callers join
 * it). `lease` is the token Redis gave its miss (null: none, the miss was served by memory);
 * `invalidated` is set when this process deletes, sets or clears the key meanwhile.
 */
interface Flight {
  promise: Promise<FlightResult>
  lease: string | null
  invalidated: boolean
}

/**
 * What a load produced: the stored form, and the loader's own value for the caller that
 * started it (`undefined` when the value was found in Redis instead). `current` is false when
 * the load was superseded (its value was not stored).
 */
interface FlightResult {
  readonly text: string
  readonly value: unknown
  readonly current: boolean
}

/** What a write did: stored, failed (refused by Redis or the memory bound), or superseded. */
type WriteOutcome = 'stored' | 'failed' | 'superseded'

type Route = 'redis' | 'recovering' | 'memory'

/** Keys deleted per UNLINK during reconciliation. */
const RECONCILE_BATCH = 500
/** A bus (re)connection attempt that takes longer than this is abandoned (retried later). */
const BUS_CONNECT_TIMEOUT_MS = 1000
/** After a failed sync on a live Redis (e.g. NOPERM for EVAL), wait this long before retrying. */
const SYNC_RETRY_MS = 1000
/**
 * Lifetime of a `getOrSet` lease in Redis: the longest load whose result can still be stored.
 * A load that takes longer returns its value but does not store it (a missing lease counts as
 * changed), so a slow load can never store a stale value.
 */
const LEASE_TTL_MS = 60_000
/**
 * Other instances whose last clean mark is older than this instance's own last one (before its
 * outage) by more than this were not alive then: they are not waited for after a recovery.
 */
const PEER_ALIVE_MS = 10_000
/** While waiting for other instances after an outage, their marks are counted this often. */
const PEER_POLL_MS = 25
/** close(): the best-effort removal of this instance's clean mark waits at most this. */
const LEAVE_TIMEOUT_MS = 500

/**
 * After a recovery, reads stay off Redis until no other instance alive just before the outage
 * (a clean mark in [from, before)) is left unconfirmed, or until the deadline.
 */
interface PeerWait {
  readonly from: number
  readonly before: number
  readonly started: number
  readonly deadline: number
  downtimeMs: number
  timer: NodeJS.Timeout | null
}

/** Placeholder of a flight's promise until its load starts (synchronously after). */
const NO_RESULT: FlightResult = { text: '', value: undefined, current: false }

/**
 * A namespaced cache with Redis as the shared store and a bounded in-process LRU that serves
 * while Redis is unavailable. Every operation goes through one decision (`#route`): a
 * property read on the health monitor. Nothing here throws because of Redis; the methods
 * throw typed errors only for programmer errors (bad key, value, TTL) and after close.
 *
 * Coming back clean: keys written or deleted while Redis was unavailable (and writes whose
 * outcome is unknown) are journaled; on recovery, before any read returns to Redis, each is
 * deleted in Redis and the memory entries written meanwhile are dropped. A journal overflow
 * bumps the namespace generation instead. A write that reaches Redis late (sent before the
 * outage, held by a frozen server or a proxy) can never overwrite a newer value: the monitor
 * closes the old connection in Redis before recovery, or else the generation is bumped.
 */
export class Cache {
  readonly namespace: string
  /** The component name, `cache:<namespace>`. */
  readonly name: string
  readonly #monitor: HealthMonitor
  readonly #handle: ComponentHandle
  readonly #logger: Logger
  readonly #options: ResolvedCacheOptions
  readonly #memory: MemoryStore
  readonly #redis: RedisStore | null
  readonly #journal: Journal
  readonly #instanceId = randomUUID()
  readonly #defaultTtlMs: number | null
  readonly #maxStaleMs: number
  /**
   * How long a confirmation of the generation lasts here, in ms: an operation on Redis with no
   * confirmation sent within it first asks again (a heartbeat). Another instance that moves
   * the generation (clear(), a recovery's bump) waits for every instance marked within this
   * window to use the new one; an instance silent for longer is not waited for — and, being
   * unconfirmed, asks before its next operation. Hence: no read or write that starts after the
   * move completed uses the old generation, in any process. 2.5 × generationCheckMs, ≥ 500.
   */
  readonly #fenceMs: number
  readonly #flights = new Map<string, Flight>()
  readonly #timer: NodeJS.Timeout | null = null
  readonly #subscriber: Redis | null = null
  readonly #disposables: Array<{ dispose(): void }> = []

  /** Set while a recovery step runs, once synced: writes go to Redis through it. */
  #recovery: RecoveryContext | null = null
  /**
   * Bumped whenever what a memory copy would reflect may have changed underneath an operation
   * in flight (down, up, recovery, generation change, bus invalidation): a Redis reply
   * received across a bump is not copied into memory.
   */
  #epoch = 0
  #closed = false
  #syncing: Promise<void> | null = null
  #syncFailedAt = -Infinity
  #checking: Promise<void> | null = null
  /** performance.now() at which the last generation confirmation was sent (see #fenceMs). */
  #confirmedAt = -Infinity
  #busReady = false
  #busConnecting = false
  #sweeping = false
  #degraded = false
  /** Server time (ms) of this instance's last clean mark (its heartbeat); null before the first. */
  #lastCleanAt: number | null = null
  #peerWait: PeerWait | null = null
  #outage = { ops: 0, reconciledKeys: 0, generationBumped: false }
  #stats = {
    reconciledKeys: 0,
    generationBumps: 0,
    memoryHits: 0,
    replyErrors: 0,
    decodeErrors: 0,
    fillsSuperseded: 0,
    busErrors: 0,
    backgroundErrors: 0,
    peerWaits: 0,
    peerWaitTimeouts: 0,
  }
  #lastProblem = ''

  constructor(context: FailsoftContext, options: ResolvedCacheOptions) {
    this.#options = options
    this.namespace = options.namespace
    this.name = `cache:${options.namespace}`
    this.#monitor = context.monitor
    this.#defaultTtlMs = ttlToMs(options.defaultTtlSeconds)
    this.#maxStaleMs = options.memory.maxStaleSeconds * 1000
    this.#fenceMs = Math.max(500, 2.5 * options.generationCheckMs)
    this.#memory = new MemoryStore({
      maxEntries: options.memory.maxEntries,
      maxBytes: options.memory.maxBytes,
    })
    this.#journal = new Journal(options.journalMaxKeys)
    const l1 = options.memory.mode === 'l1'
    this.#redis =
      context.monitor.target === null
        ? null
        : new RedisStore({
            base: `${context.prefix}:cache:${options.namespace}`,
            instanceId: this.#instanceId,
            run: this.#run,
            bus: l1,
          })
    this.#handle = context.monitor.register({
      name: this.name,
      fallback: 'in-process memory cache (bounded LRU)',
      recover: (ctx) => this.#recover(ctx),
      needsRecovery: () => !this.#journal.empty,
      status: () => ({ ...this.status() }),
      close: () => this.#close(),
    })
    this.#logger = this.#handle.logger
    if (this.#redis === null) return

    this.#disposables.push(
      context.monitor.on('down', () => {
        this.#recovery = null
        this.#stopPeerWait()
        this.#epoch++
        if (!this.#degraded) {
          this.#degraded = true
          this.#outage = { ops: 0, reconciledKeys: 0, generationBumped: false }
        }
      }),
      context.monitor.on('up', ({ downtimeMs }) => {
        this.#recovery = null
        this.#epoch++
        const wait = this.#peerWait
        if (wait === null) {
          this.#backOnRedis(downtimeMs)
          return
        }
        wait.downtimeMs = downtimeMs
        this.#pollPeers()
      }),
    )
    if (l1) {
      const subscriber = context.monitor.createConnection('subscriber', `${this.name}:bus`)
      this.#subscriber = subscriber
      subscriber.on('error', () => {
        // Acted on through 'close'; counted for status.
        this.#stats.busErrors++
      })
      subscriber.on('close', () => {
        if (this.#busReady) this.#epoch++
        this.#busReady = false
      })
      subscriber.on('message', (_channel: string, message: string) => this.#onBus(message))
    }
    this.#timer = setInterval(() => this.#tick(), options.generationCheckMs)
    this.#timer.unref()
    // Created after start-up: sync now rather than on the first operation.
    if (context.monitor.available) this.#tick()
  }

  /** Where operations go right now. */
  get backend(): 'redis' | 'memory' {
    const route = this.#route()
    if (route === 'redis') return 'redis'
    // Up but not synced yet (created after start-up): the next operation syncs, then uses Redis.
    const pendingSync =
      route === 'memory' &&
      this.#redis !== null &&
      this.#monitor.available &&
      performance.now() - this.#syncFailedAt >= SYNC_RETRY_MS
    return pendingSync ? 'redis' : 'memory'
  }

  // ── public API ─────────────────────────────────────────────────────────────────────────────

  /** The value, or undefined on a miss (or the default). Never throws because of Redis. */
  get<T = unknown>(key: string): Promise<T | undefined>
  get<T = unknown>(key: string, defaultValue: T): Promise<T>
  async get<T = unknown>(key: string, defaultValue?: T): Promise<T | undefined> {
    this.#assertOpen()
    this.#checkKey(key)
    const text = await this.#read(key)
    if (text === undefined) return defaultValue
    return this.#decode<T>(text, defaultValue)
  }

  /**
   * Store a value. Resolves true when it is stored in the active backend (Redis, or memory
   * while Redis is unavailable); false when Redis refused this write (e.g. OOM at maxmemory —
   * the key is then invalidated, so its previous value is not served) or the value does not
   * fit the memory tier's byte bound while it is the active backend.
   */
  async set(key: string, value: unknown, options?: SetOptions): Promise<boolean> {
    this.#assertOpen()
    this.#checkKey(key)
    const ttlMs = this.#ttl(options)
    const text = this.#encode(key, value)
    this.#supersede(key)
    return (await this.#write(key, text, ttlMs)) === 'stored'
  }

  /**
   * Remove a key. Resolves true when the key existed in the active backend. While Redis is
   * unavailable the delete is applied to memory and journaled: Redis loses the key on recovery.
   */
  async delete(key: string): Promise<boolean> {
    this.#assertOpen()
    this.#checkKey(key)
    this.#supersede(key)
    return this.#remove(key)
  }

  async has(key: string): Promise<boolean> {
    this.#assertOpen()
    this.#checkKey(key)
    return (await this.#read(key, true)) !== undefined
  }

  /**
   * The cached value, or the loader's result stored with `options.ttlSeconds`. Per key, at
   * most one loader runs at a time in this process: concurrent callers share its result (each
   * gets its own copy). A loader's error is passed to every waiting caller and not cached.
   *
   * A delete or set of the key while the loader runs (in this process or any other) wins: the
   * loaded value is returned to this caller but not stored, and callers that joined the load
   * load again, so nobody is handed a value older than an acknowledged delete.
   */
  async getOrSet<T>(key: string, loader: () => T | Promise<T>, options?: SetOptions): Promise<T> {
    this.#assertOpen()
    this.#checkKey(key)
    const ttlMs = this.#ttl(options)
    if (typeof loader !== 'function') {
      throw new TypeError(`getOrSet: loader must be a function; received ${typeof loader}`)
    }
    const inFlight = this.#flights.get(key)
    if (inFlight) return this.#join<T>(key, inFlight, loader, ttlMs)
    const text = await this.#read(key)
    if (text !== undefined) {
      const value = this.#decode<T>(text, undefined)
      if (value !== undefined) return value
    }
    const joined = this.#flights.get(key)
    if (joined) return this.#join<T>(key, joined, loader, ttlMs)
    return this.#own<T>(await this.#load(key, loader, ttlMs).promise)
  }

  /** The result for the caller that started the load: the loader's value itself, no copy. */
  #own<T>(result: FlightResult): T {
    if (result.value !== undefined) return result.value as T
    return this.#decode<T>(result.text, undefined) as T
  }

  /**
   * Share a load already running. If it was superseded (the key was deleted or set while it
   * ran), the value may predate a change acknowledged before this call: load again, once —
   * whatever load serves the retry started after this call did.
   */
  async #join<T>(
    key: string,
    flight: Flight,
    loader: () => T | Promise<T>,
    ttlMs: number | null,
  ): Promise<T> {
    const result = await flight.promise
    if (result.current) return this.#decode<T>(result.text, undefined) as T
    const again = this.#flights.get(key)
    if (again !== undefined) return this.#decode<T>((await again.promise).text, undefined) as T
    return this.#own<T>(await this.#load(key, loader, ttlMs).promise)
  }

  /**
   * Start a load: take the key's lease in Redis (atomically with a last look at the value),
   * run the loader, then store its result only if the lease is intact — no delete or set of
   * the key anywhere since. The flight is in the map until it settles.
   */
  #load<T>(key: string, loader: () => T | Promise<T>, ttlMs: number | null): Flight {
    const flight: Flight = { promise: Promise.resolve(NO_RESULT), lease: null, invalidated: false }
    const run = async (): Promise<FlightResult> => {
      const found = await this.#lease(key, flight)
      if (found !== undefined) return { text: found, value: undefined, current: true }
      const value = await loader()
      const encoded = this.#encode(key, value)
      const outcome = await this.#write(key, encoded, ttlMs, flight)
      if (outcome === 'superseded') this.#stats.fillsSuperseded++
      return { text: encoded, value, current: outcome !== 'superseded' }
    }
    flight.promise = run()
    this.#flights.set(key, flight)
    const done = (): void => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key)
    }
    flight.promise.then(done, done)
    return flight
  }

  /**
   * A miss on Redis: take the key's lease (recorded on the flight), or return the value if it
   * was stored meanwhile. On memory (or if Redis fails now) there is no lease: the fill then
   * stores in memory only, never in Redis.
   */
  async #lease(key: string, flight: Flight): Promise<string | undefined> {
    const redis = this.#redis
    if (redis === null || this.#route() !== 'redis') return undefined
    const epoch = this.#epoch
    try {
      const reply = await redis.acquire(key, LEASE_TTL_MS, this.#run)
      if ('lease' in reply) {
        flight.lease = reply.lease
        return undefined
      }
      if (epoch === this.#epoch && !flight.invalidated) {
        this.#keepCopy(key, reply.text, reply.ttlMs)
      }
      return reply.text
    } catch (error) {
      if (!isConnectivityError(error)) {
        this.#stats.replyErrors++
        this.#problem('a cache lease failed on Redis; the loaded value will not be stored', error)
      }
      return undefined
    }
  }

  /** A delete, set or clear in this process: loads in flight for the key must not store. */
  #supersede(key: string): void {
    const flight = this.#flights.get(key)
    if (flight === undefined) return
    flight.invalidated = true
    this.#flights.delete(key)
  }

  #supersedeAll(): void {
    for (const flight of this.#flights.values()) flight.invalidated = true
    this.#flights.clear()
  }

  /**
   * Empty this namespace, and only it: a new generation (O(1), seen by other processes at
   * their next generation check) then SCAN + UNLINK of the old keys. Never FLUSHDB. While
   * Redis is unavailable the memory tier is emptied and the generation is bumped on recovery.
   */
  async clear(): Promise<void> {
    this.#assertOpen()
    this.#supersedeAll()
    const next = this.#routeNow()
    const route = typeof next === 'string' ? next : await next
    const redis = this.#redis
    if (redis !== null && route !== 'memory') {
      try {
        await redis.bumpGeneration(this.#run)
        this.#epoch++
        this.#memory.clear()
        this.#stats.generationBumps++
      } catch (error) {
        if (!isConnectivityError(error)) throw error
        this.#fellBack()
        this.#journal.markCleared()
        this.#memory.clear()
        return
      }
      await this.#awaitGeneration()
      try {
        await redis.sweep(this.#run)
      } catch (error) {
        // The new generation already hides the old keys; they expire by their TTL.
        this.#problem('could not remove the old generation after clear()', error)
      }
      return
    }
    this.#fellBack()
    if (redis !== null) this.#journal.markCleared()
    this.#memory.clear()
  }

  /**
   * After this instance moved the generation: wait until every other instance alive now uses
   * it — they adopt it at their next check and say so at the one after (≤ 2 ×
   * generationCheckMs) — or has been silent for `#fenceMs` (it then asks before its next
   * operation). Bounded by `#fenceMs`; Redis failing meanwhile ends it (the others learn the
   * generation when they recover).
   */
  async #awaitGeneration(): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    const deadline = performance.now() + this.#fenceMs + PEER_POLL_MS
    for (;;) {
      let stale: number
      try {
        stale = (await redis.peers(0, 0, this.#fenceMs, this.#run)).stale
      } catch (error) {
        this.#background(error)
        return
      }
      if (stale === 0 || performance.now() >= deadline || !this.#monitor.available) return
      await sleep(PEER_POLL_MS)
    }
  }

  status(): CacheStatus {
    const m = this.#memory
    return {
      backend: this.backend,
      namespace: this.namespace,
      memoryMode: this.#options.memory.mode,
      generation: this.#redis?.generation ?? null,
      memory: {
        entries: m.entries,
        bytes: m.bytes,
        maxEntries: m.maxEntries,
        maxBytes: m.maxBytes,
        evictions: m.evictions,
      },
      journal: {
        keys: this.#journal.size,
        maxKeys: this.#journal.maxKeys,
        overflows: this.#journal.overflows,
        pendingGenerationBump: this.#journal.needsGenerationBump,
      },
      fallbackOps: this.#handle.fallbackOps,
      reconciledKeys: this.#stats.reconciledKeys,
      generationBumps: this.#stats.generationBumps,
      memoryHits: this.#stats.memoryHits,
      replyErrors: this.#stats.replyErrors,
      decodeErrors: this.#stats.decodeErrors,
      busConnected: this.#subscriber === null ? null : this.#busReady,
      fillsSuperseded: this.#stats.fillsSuperseded,
      peerWait: {
        waiting: this.#peerWait !== null,
        waits: this.#stats.peerWaits,
        timeouts: this.#stats.peerWaitTimeouts,
      },
    }
  }

  // ── the one degradation path ───────────────────────────────────────────────────────────────

  /**
   * 'redis': the monitor says up and the generation is known. 'recovering': a recovery step
   * has synced, so writes may go to Redis, but reads stay on memory until the
   * journal is reconciled — and, after that, until the other instances have confirmed theirs
   * (the peer wait). 'memory': everything else. A property read or two, no I/O.
   */
  #route(): Route {
    if (this.#redis === null) return 'memory'
    if (this.#monitor.available) {
      if (!this.#redis.synced || !this.#journal.empty) return 'memory'
      return this.#peerWait === null ? 'redis' : 'recovering'
    }
    const recovery = this.#recovery
    return recovery !== null && !recovery.signal.aborted ? 'recovering' : 'memory'
  }

  /**
   * The route, after syncing first when the monitor is up but this cache is not (a cache
   * created after start-up, a sync refused, or a key journaled just as Redis came back).
   * Synchronous on the common path: no extra await per operation.
   */
  #routeNow(): Route | Promise<Route> {
    const route = this.#route()
    if (route === 'redis') {
      // Not confirmed for a while (this process was stalled, or its checks failed): another
      // instance may have moved the generation and stopped waiting for us. Ask first.
      if (performance.now() - this.#confirmedAt <= this.#fenceMs) return route
      return this.#beat().then(() => this.#route())
    }
    if (route !== 'memory' || this.#redis === null || !this.#monitor.available) return route
    if (performance.now() - this.#syncFailedAt < SYNC_RETRY_MS) return route
    this.#syncing ??= this.#syncWhileUp().finally(() => {
      this.#syncing = null
    })
    return this.#syncing.then(() => this.#route())
  }

  /** Commands go through the monitor while up, through the recovery context while recovering. */
  readonly #run: Runner = (fn) => {
    if (this.#monitor.available) return this.#monitor.run(fn)
    const recovery = this.#recovery
    if (recovery !== null && !recovery.signal.aborted) return recovery.run(fn)
    return Promise.reject(new RedisUnavailableError())
  }

  async #read(key: string, existence = false): Promise<string | undefined> {
    const next = this.#routeNow()
    const route = typeof next === 'string' ? next : await next
    const redis = this.#redis
    if (route === 'redis' && redis !== null) {
      if (this.#busReady) {
        const entry = this.#memory.entry(key)
        if (entry !== undefined) {
          this.#stats.memoryHits++
          return entry.text
        }
      }
      const epoch = this.#epoch
      try {
        if (existence && !this.#busReady) {
          return (await redis.has(key, this.#run)) ? '' : undefined
        }
        if (this.#subscriber !== null) {
          const found = await redis.getWithTtl(key, this.#run)
          if (epoch === this.#epoch) this.#keepCopy(key, found?.text, found?.ttlMs ?? null)
          return found?.text
        }
        const text = await redis.get(key, this.#run)
        if (epoch === this.#epoch) this.#keepCopy(key, text, null)
        return text
      } catch (error) {
        if (!isConnectivityError(error)) {
          this.#stats.replyErrors++
          this.#problem('a cache read failed on Redis; served as a miss', error)
          return undefined
        }
      }
    }
    this.#fellBack()
    return existence ? (this.#memory.has(key) ? '' : undefined) : this.#memory.get(key)
  }

  /**
   * Store text in the active backend. With `fill` (a `getOrSet` storing its loader's result),
   * conditional: nothing is stored if this process superseded the load, or — on Redis — if
   * the key's lease is gone (deleted or set by anyone since the miss) or was never taken.
   */
  async #write(
    key: string,
    text: string,
    ttlMs: number | null,
    fill?: Flight,
  ): Promise<WriteOutcome> {
    if (fill?.invalidated) return 'superseded'
    const next = this.#routeNow()
    const route = typeof next === 'string' ? next : await next
    if (fill?.invalidated) return 'superseded'
    const redis = this.#redis
    if (route !== 'memory' && redis !== null) {
      // A load that missed in memory has no lease: it cannot know what changed in Redis since.
      if (fill !== undefined && fill.lease === null) return 'superseded'
      const epoch = this.#epoch
      try {
        const stored =
          fill === undefined
            ? await redis.set(key, text, ttlMs, this.#run)
            : await redis.fill(key, text, ttlMs, fill.lease ?? '', this.#run)
        if (stored && epoch === this.#epoch && fill?.invalidated !== true) {
          this.#keepCopy(key, text, ttlMs)
        } else {
          this.#memory.delete(key)
        }
        return stored ? 'stored' : 'superseded'
      } catch (error) {
        if (!isConnectivityError(error)) {
          // It did not land (OOM, NOPERM…): make sure the previous value is not served either.
          this.#stats.replyErrors++
          this.#problem('a cache write failed on Redis; the key was invalidated', error)
          this.#memory.delete(key)
          await this.#invalidate(key)
          return 'failed'
        }
        // The connection failed with the write in flight: it may have landed, or may land
        // later. Journal it (a fill cannot land late harmfully: it needs its lease intact).
        if (fill?.invalidated) {
          // Superseded while in flight: the delete or set that superseded it is journaled.
          return 'superseded'
        }
        if (fill === undefined) this.#journal.addUnsure(key)
      }
    }
    this.#fellBack()
    if (redis !== null) this.#journal.add(key)
    return this.#memory.put(key, text, ttlMs, 'local') ? 'stored' : 'failed'
  }

  async #remove(key: string): Promise<boolean> {
    const next = this.#routeNow()
    const route = typeof next === 'string' ? next : await next
    const redis = this.#redis
    if (route !== 'memory' && redis !== null) {
      try {
        const existed = await redis.delete(key, this.#run)
        this.#memory.delete(key)
        return existed
      } catch (error) {
        if (!isConnectivityError(error)) {
          this.#stats.replyErrors++
          this.#problem('a cache delete failed on Redis', error)
          this.#memory.delete(key)
          return false
        }
      }
    }
    this.#fellBack()
    if (redis !== null) this.#journal.add(key)
    return this.#memory.delete(key)
  }

  /** Best-effort delete in Redis after a failed write; journaled if Redis just went away. */
  async #invalidate(key: string): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    try {
      await redis.delete(key, this.#run)
    } catch (error) {
      if (isConnectivityError(error)) this.#journal.add(key)
      else this.#problem('could not invalidate a key after a failed write', error)
    }
  }

  #fellBack(): void {
    this.#handle.recordFallback()
    this.#outage.ops++
  }

  /** Keep (or drop) the memory tier's copy of what Redis holds for key. */
  #keepCopy(key: string, text: string | undefined, ttlMs: number | null): void {
    if (text === undefined || this.#options.memory.mode === 'fallback' || this.#maxStaleMs <= 0) {
      this.#memory.delete(key)
      return
    }
    const lifetime = ttlMs === null ? this.#maxStaleMs : Math.min(ttlMs, this.#maxStaleMs)
    this.#memory.put(key, text, lifetime, 'copy')
  }

  // ── recovery ───────────────────────────────────────────────────────────────────────────────

  /**
   * Runs before the monitor lets components back on Redis (and at start-up, and when Redis
   * lost its data while up). The monitor has already closed this process's old connection in
   * Redis (or says it could not: `lateCommandsFenced`). Order: learn the generation, reconcile
   * the journal (DEL, or a generation bump), mark this instance clean, then drop the memory
   * entries written while degraded.
   */
  async #recover(context: RecoveryContext): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    this.#epoch++
    if (this.#subscriber !== null) await this.#connectBus()
    try {
      const sentAt = performance.now()
      this.#confirmed(sentAt, await redis.sync(context.run))
    } catch (error) {
      if (isConnectivityError(error)) throw error
      // A Redis that refuses the cache's commands (e.g. an ACL without EVAL) must not keep
      // the other components off Redis: this cache stays on memory and retries on its own.
      this.#syncFailedAt = performance.now()
      this.#problem('the cache cannot use this Redis; serving from memory', error)
      return
    }
    this.#epoch++
    if (this.#monitor.available) {
      // Redis lost its data while we were up: the new generation is in place.
      this.#memory.clear()
      return
    }
    this.#recovery = context
    await this.#reconcile(context.run, context.lateCommandsFenced)
    // Our outage writes are gone from Redis; other instances may still hold theirs.
    const sentAt = performance.now()
    const { at, changed } = await redis.heartbeat(context.run)
    this.#confirmed(sentAt, changed)
    if (this.#options.peerWaitMs > 0) {
      const started = performance.now()
      this.#stopPeerWait()
      this.#peerWait = {
        from: (this.#lastCleanAt ?? at) - PEER_ALIVE_MS,
        before: at,
        started,
        deadline: started + this.#options.peerWaitMs,
        downtimeMs: 0,
        timer: null,
      }
    }
    this.#memory.clear()
    this.#epoch++
  }

  /**
   * After a recovery: count the other instances alive before the outage that have not marked
   * themselves clean since our own reconciliation, and those alive now that still use another
   * generation (ours moved it, or another's recovery did); back on Redis for reads when both
   * are none, or at the deadline. The generation is read in the same step, so the wait never
   * ends on a peer's clean mark while this instance still holds the generation that peer
   * replaced. A peer marks itself clean right after its own recovery step, and every
   * `generationCheckMs` while it is on Redis.
   */
  #pollPeers(): void {
    const wait = this.#peerWait
    const redis = this.#redis
    if (wait === null || redis === null || this.#closed || !this.#monitor.available) return
    const next = (waitingFor: { unconfirmed: number; stale: number } | null): void => {
      if (this.#peerWait !== wait) return
      const clean = waitingFor !== null && waitingFor.unconfirmed === 0 && waitingFor.stale === 0
      if (clean || performance.now() >= wait.deadline) {
        this.#endPeerWait(wait, clean ? null : (waitingFor ?? false))
      } else {
        wait.timer = setTimeout(() => this.#pollPeers(), PEER_POLL_MS)
      }
    }
    const sentAt = performance.now()
    redis.peers(wait.from, wait.before, this.#fenceMs, this.#run).then(
      (reply) => {
        this.#confirmed(sentAt, reply.changed)
        next(reply)
      },
      (error: unknown) => {
        // An outage ends the wait through 'down'; anything else is retried until the deadline.
        this.#background(error)
        next(null)
      },
    )
  }

  #endPeerWait(
    wait: PeerWait,
    unconfirmed: { unconfirmed: number; stale: number } | null | false,
  ): void {
    this.#stopPeerWait()
    // Copies made while waiting were never checked against the peers' reconciliation.
    this.#memory.clear()
    this.#epoch++
    this.#stats.peerWaits++
    if (unconfirmed !== null) {
      this.#stats.peerWaitTimeouts++
      this.#logger.warn(
        {
          namespace: this.namespace,
          peerWaitMs: this.#options.peerWaitMs,
          unconfirmedPeers: unconfirmed === false ? null : unconfirmed.unconfirmed,
          peersOnOlderGeneration: unconfirmed === false ? null : unconfirmed.stale,
        },
        'other instances of this cache have not confirmed their reconciliation; reading from Redis anyway',
      )
    }
    this.#backOnRedis(wait.downtimeMs, performance.now() - wait.started)
  }

  #stopPeerWait(): void {
    const wait = this.#peerWait
    if (wait === null) return
    if (wait.timer !== null) clearTimeout(wait.timer)
    this.#peerWait = null
  }

  /** One INFO per outage, once reads are back on Redis. */
  #backOnRedis(downtimeMs: number, peerWaitMs?: number): void {
    if (this.#degraded) {
      this.#degraded = false
      this.#logger.info(
        {
          namespace: this.namespace,
          downtimeMs,
          servedFromMemory: this.#outage.ops,
          reconciledKeys: this.#outage.reconciledKeys,
          generationBumped: this.#outage.generationBumped,
          ...(peerWaitMs !== undefined && { peerWaitMs: Math.round(peerWaitMs) }),
        },
        `${this.name} is back on Redis`,
      )
    }
    if (this.#outage.generationBumped) this.#sweepSoon()
  }

  /**
   * Delete the journaled keys in Redis — or bump the generation after an overflow, a clear
   * while degraded, or when a SET that was in flight at the failure could still land later
   * (`fenced` false: the monitor could not close the old connection in Redis), since a DEL
   * now would not stop it.
   */
  async #reconcile(run: Runner, fenced: boolean): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    if (this.#journal.unsure && !fenced) this.#journal.requireGenerationBump()
    if (this.#journal.needsGenerationBump) {
      await redis.bumpGeneration(run)
      this.#journal.generationBumped()
      this.#outage.generationBumped = true
      this.#stats.generationBumps++
    }
    while (this.#journal.size > 0) {
      const keys = this.#journal.take(RECONCILE_BATCH)
      try {
        await redis.unlinkMany(keys, run)
      } catch (error) {
        this.#journal.restore(keys)
        throw error
      }
      this.#outage.reconciledKeys += keys.length
      this.#stats.reconciledKeys += keys.length
    }
    this.#journal.reconciled()
  }

  /** The cache was created (or its sync refused) while the monitor was already up. */
  async #syncWhileUp(): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    try {
      if (this.#subscriber !== null) await this.#connectBus()
      const sentAt = performance.now()
      this.#confirmed(sentAt, await redis.sync(this.#run))
      this.#epoch++
      // Not a recovery: nothing can say whether an unsure write could still land.
      await this.#reconcile(this.#run, false)
      this.#memory.clear()
      this.#epoch++
    } catch (error) {
      if (!isConnectivityError(error)) {
        this.#syncFailedAt = performance.now()
        this.#problem('the cache cannot use this Redis; serving from memory', error)
      }
    }
  }

  /**
   * Periodic: learn a generation moved by another process, mark this instance clean (nothing
   * left to reconcile) for the others' peer waits, keep the bus connected.
   */
  #tick(): void {
    const redis = this.#redis
    if (this.#closed || redis === null || this.#checking !== null || !this.#monitor.available)
      return
    if (!redis.synced || !this.#journal.empty) {
      Promise.resolve(this.#routeNow()).catch((error: unknown) => this.#background(error))
      return
    }
    void this.#beat()
  }

  /**
   * One generation check and clean mark (shared by the timer and by operations that need a
   * fresh confirmation, see `#fenceMs`). Never rejects.
   */
  #beat(): Promise<void> {
    const redis = this.#redis
    if (redis === null) return Promise.resolve()
    this.#checking ??= (async () => {
      const epoch = this.#epoch
      if (this.#subscriber !== null && !this.#busReady) await this.#connectBus()
      const sentAt = performance.now()
      const { changed, at } = await redis.heartbeat(this.#run)
      this.#lastCleanAt = at
      this.#confirmed(sentAt, changed)
      if (epoch !== this.#epoch) this.#epoch++
    })()
      .catch((error: unknown) => this.#background(error))
      .finally(() => {
        this.#checking = null
      })
    return this.#checking
  }

  /**
   * A reply read the current generation (adopted if it moved) from a command sent at `sentAt`:
   * until `sentAt + #fenceMs` this instance may use it without asking again.
   */
  #confirmed(sentAt: number, changed: boolean): void {
    if (changed) {
      this.#epoch++
      this.#memory.clear()
    }
    if (sentAt > this.#confirmedAt) this.#confirmedAt = sentAt
  }

  /** After a generation bump, the old generation's keys are unreachable: remove them. */
  #sweepSoon(): void {
    const redis = this.#redis
    if (redis === null || this.#sweeping) return
    this.#sweeping = true
    redis
      .sweep(this.#run)
      .catch((error: unknown) => this.#background(error))
      .finally(() => {
        this.#sweeping = false
      })
  }

  // ── the l1 bus ─────────────────────────────────────────────────────────────────────────────

  /** (Re)connect and subscribe; memory copies made while unsubscribed are dropped. */
  async #connectBus(): Promise<void> {
    const subscriber = this.#subscriber
    const redis = this.#redis
    if (subscriber === null || redis === null || this.#busReady || this.#busConnecting) return
    this.#busConnecting = true
    try {
      const attempt = (async () => {
        if (subscriber.status !== 'ready') {
          if (subscriber.status !== 'wait' && subscriber.status !== 'end') subscriber.disconnect()
          await subscriber.connect()
        }
        await subscriber.subscribe(redis.channel)
      })()
      await withDeadline(attempt, BUS_CONNECT_TIMEOUT_MS, 'cache bus subscription')
      this.#epoch++
      this.#memory.clear()
      this.#busReady = true
    } catch (error) {
      this.#stats.busErrors++
      subscriber.disconnect()
      if (!isConnectivityError(error)) this.#problem('cache bus subscription failed', error)
    } finally {
      this.#busConnecting = false
    }
  }

  #onBus(raw: string): void {
    let message: BusMessage
    try {
      message = safeJsonParse(raw) as BusMessage
    } catch (error) {
      this.#stats.busErrors++
      this.#problem('unreadable cache bus message', error)
      return
    }
    if (message === null || typeof message !== 'object' || message.i === this.#instanceId) return
    this.#epoch++
    if (typeof message.g === 'string') {
      this.#redis?.adoptGeneration(message.g)
      this.#memory.clear()
    }
    if (Array.isArray(message.k)) {
      for (const key of message.k) if (typeof key === 'string') this.#memory.delete(key)
    }
  }

  // ── validation, serialization ──────────────────────────────────────────────────────────────

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(this.name)
  }

  #checkKey(key: unknown): asserts key is string {
    if (typeof key !== 'string') throw new InvalidKeyError(key, 'keys are strings')
    if (key.length === 0) throw new InvalidKeyError(key, 'keys are not empty')
    if (key.length > this.#options.maxKeyLength) {
      throw new InvalidKeyError(
        key,
        `longer than maxKeyLength (${this.#options.maxKeyLength} characters)`,
      )
    }
  }

  #ttl(options: SetOptions | undefined): number | null {
    if (options === undefined) return this.#defaultTtlMs
    if (typeof options !== 'object' || options === null) {
      throw new InvalidTtlError(options, 'options must be an object such as { ttlSeconds: 60 }')
    }
    const ttl = options.ttlSeconds
    if (ttl === undefined) return this.#defaultTtlMs
    if (ttl === null) return null
    if (typeof ttl !== 'number' || !Number.isFinite(ttl)) {
      throw new InvalidTtlError(ttl, 'ttlSeconds must be a finite number of seconds or null')
    }
    if (ttl <= 0 || ttl > MAX_TTL_SECONDS) {
      throw new InvalidTtlError(ttl, `ttlSeconds must be > 0 and <= ${MAX_TTL_SECONDS}`)
    }
    return ttl * 1000
  }

  #encode(key: string, value: unknown): string {
    let text: unknown
    try {
      text = this.#options.serializer.serialize(value)
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error)
      throw new InvalidValueError(key, value, `the serializer threw: ${reason}`, error)
    }
    if (typeof text !== 'string') {
      throw new InvalidValueError(
        key,
        value,
        'it has no serialized form (undefined, a function or a symbol)',
      )
    }
    const limit = this.#options.maxValueBytes
    if (text.length * 3 > limit) {
      const bytes = Buffer.byteLength(text, 'utf8')
      if (bytes > limit) throw new ValueTooLargeError(key, bytes, limit)
    }
    return text
  }

  #decode<T>(text: string, fallback: T | undefined): T | undefined {
    try {
      return this.#options.serializer.deserialize(text) as T
    } catch (error) {
      this.#stats.decodeErrors++
      this.#problem('a cached value could not be deserialized; served as a miss', error)
      return fallback
    }
  }

  // ── diagnostics, close ─────────────────────────────────────────────────────────────────────

  /** Failures that concern one operation: counted, and logged once per distinct message. */
  #problem(message: string, error: unknown): void {
    const signature = `${message}:${error instanceof Error ? error.message : String(error)}`
    if (signature === this.#lastProblem) return
    this.#lastProblem = signature
    this.#logger.warn({ namespace: this.namespace, err: loggableError(error) }, message)
  }

  #background(error: unknown): void {
    this.#stats.backgroundErrors++
    if (!isConnectivityError(error)) this.#problem('cache background task failed', error)
  }

  async #close(): Promise<void> {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#stopPeerWait()
    for (const disposable of this.#disposables) disposable.dispose()
    this.#memory.clear()
    this.#supersedeAll()
    caches.get(this.#monitor)?.delete(this.namespace)
    // Others need not wait for this instance after their next outage.
    const redis = this.#redis
    if (redis !== null && this.#monitor.available && this.#journal.empty) {
      await withDeadline(redis.leave(this.#run), LEAVE_TIMEOUT_MS, 'cache leave').catch(
        (error: unknown) => this.#background(error),
      )
    }
  }
}

function ttlToMs(seconds: number | null): number | null {
  return seconds === null ? null : seconds * 1000
}

const caches = new WeakMap<
  HealthMonitor,
  Map<string, { cache: Cache; signature: string; serializer: unknown }>
>()

/**
 * `failsoft.cache(options)`: one cache per namespace per instance. Asking again for a
 * namespace with the same options returns the same cache; with different options it is a
 * programmer error (two parts of an app would disagree on TTLs or bounds).
 */
export function createCache(context: FailsoftContext, options?: Partial<CacheOptions>): Cache {
  context.assertOpen()
  const resolved = resolveCacheOptions(options)
  const signature = JSON.stringify({ ...resolved, serializer: undefined })
  let byNamespace = caches.get(context.monitor)
  if (byNamespace === undefined) {
    byNamespace = new Map()
    caches.set(context.monitor, byNamespace)
  }
  const existing = byNamespace.get(resolved.namespace)
  if (existing !== undefined) {
    if (existing.signature === signature && existing.serializer === resolved.serializer) {
      return existing.cache
    }
    throw new RangeError(
      `failsoft: cache namespace "${resolved.namespace}" already exists with other options`,
    )
  }
  const cache = new Cache(context, resolved)
  byNamespace.set(resolved.namespace, { cache, signature, serializer: resolved.serializer })
  return cache
}
