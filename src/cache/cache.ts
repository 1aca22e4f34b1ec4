import { randomUUID } from 'node:crypto'
import { ClosedError, RedisUnavailableError } from '../errors.js'
import type { FailsoftContext } from '../context.js'
import type { ComponentHandle, HealthMonitor, RecoveryContext } from '../health/monitor.js'
import { loggableError, type Logger } from '../logger.js'
import { isConnectivityError } from '../redis/connection.js'
import { withDeadline } from '../util/async.js'
import { CacheCodec } from './codec.js'
import { Fills, type Flight, type WriteOutcome } from './fills.js'
import { Journal } from './journal.js'
import { CLEARED, RecentWrites } from './recent-writes.js'
import { MemoryStore } from './memory-store.js'
import type { ResolvedCacheOptions } from './options.js'
import { RedisStore, type Runner } from './redis-store.js'
import { CacheBus } from './bus.js'
import { GenerationKeeper } from './generation.js'
import {
  PeerWait,
  windowAnchor,
  windowFrom,
  type PeerWaitDeps,
  type PeerWaitEnd,
} from './peer-wait.js'
import { reconcile } from './reconcile.js'
import type { CacheStatus, SetOptions } from './status.js'
import { tracing } from '../diagnostics/channels.js'
import { traceCacheOperation } from './tracing.js'
import { PEER_SILENT_MS } from '../tunables.js'

export type { CacheStatus, SetOptions } from './status.js'

type Route = 'redis' | 'recovering' | 'memory'

/** After a failed sync on a live Redis (e.g. NOPERM for EVAL), wait this long before retrying. */
const SYNC_RETRY_MS = 1000
/**
 * Lifetime of a `getOrSet` lease in Redis: the longest load whose result can still be stored.
 * A load that takes longer returns its value but does not store it (a missing lease counts as
 * changed), so a slow load can never store a stale value.
 */
const LEASE_TTL_MS = 60_000
/** close(): the best-effort removal of this instance's clean mark waits at most this. */
const LEAVE_TIMEOUT_MS = 500

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
  /** Writes Redis acknowledged lately, for a rollback (see RecentWrites). */
  readonly #recent = new RecentWrites()
  readonly #handle: ComponentHandle
  readonly #logger: Logger
  readonly #options: ResolvedCacheOptions
  readonly #memory: MemoryStore
  readonly #redis: RedisStore | null
  readonly #journal: Journal
  readonly #instanceId = randomUUID()
  readonly #codec: CacheCodec
  readonly #onClose: () => void
  readonly #maxStaleMs: number
  readonly #fills: Fills
  readonly #timer: NodeJS.Timeout | null = null
  readonly #bus: CacheBus | null = null
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
  #degraded = false
  /**
   * Its start-up wait is over (or it decided none was needed): from then on, outside peer
   * waits, its clean marks move the namespace's calm time (see RedisStore.calmKey).
   */
  #settled = false
  readonly #peers: PeerWait | null = null
  readonly #generation: GenerationKeeper | null = null
  #outage = { ops: 0, reconciledKeys: 0, generationBumped: false }
  #stats = {
    reconciledKeys: 0,
    generationBumps: 0,
    rollbacks: 0,
    memoryHits: 0,
    replyErrors: 0,
    decodeErrors: 0,
    fillsSuperseded: 0,
    backgroundErrors: 0,
  }
  #lastProblem = ''

  /** @internal Use `failsoft.cache(options)`; `onClose` tells the instance's registry. */
  constructor(
    context: FailsoftContext,
    options: ResolvedCacheOptions,
    onClose: () => void = () => undefined,
  ) {
    this.#onClose = onClose
    this.#options = options
    this.namespace = options.namespace
    this.name = `cache:${options.namespace}`
    this.#monitor = context.monitor
    this.#codec = new CacheCodec(options, (error) => {
      this.#stats.decodeErrors++
      this.#problem('a cached value could not be deserialized; served as a miss', error)
    })
    this.#maxStaleMs = options.memory.maxStaleSeconds * 1000
    this.#memory = new MemoryStore({
      maxEntries: options.memory.maxEntries,
      maxBytes: options.memory.maxBytes,
    })
    this.#journal = new Journal(options.journalMaxKeys)
    this.#fills = new Fills({
      codec: this.#codec,
      read: (key) => this.#read(key),
      acquire: (key, flight) => this.#lease(key, flight),
      write: (key, text, ttlMs, fill) => this.#write(key, text, ttlMs, fill),
      onSuperseded: () => {
        this.#stats.fillsSuperseded++
      },
    })
    const l1 = options.memory.mode === 'l1'
    this.#redis =
      context.monitor.target === null
        ? null
        : new RedisStore({
            base: `${context.prefix}:cache:${options.namespace}`,
            instanceId: this.#instanceId,
            run: this.#run,
            bus: l1,
            // Another process moved the generation (seen by any operation, the periodic check
            // or the bus): memory copies belong to the old one.
            onMoved: () => {
              this.#epoch++
              this.#memory.clear()
            },
          })
    this.#handle = context.monitor.register({
      name: this.name,
      fallback: 'in-process memory cache (bounded LRU)',
      recover: (ctx) => this.#recover(ctx),
      // Work left — unless Redis refused it for now (OOM…): this cache then stays on memory and
      // retries on its own, rather than holding every component off Redis.
      needsRecovery: () =>
        !this.#journal.empty && performance.now() - this.#syncFailedAt >= SYNC_RETRY_MS,
      status: () => ({ ...this.status() }),
      close: () => this.#close(),
    })
    this.#logger = this.#handle.logger
    if (this.#redis === null) return
    this.#peers = new PeerWait(this.#peerDeps())
    // Nothing to wait for, ever: settled from the start.
    this.#settled = options.peerWaitMs <= 0

    this.#disposables.push(
      context.monitor.on('down', () => {
        this.#recovery = null
        this.#peers?.stop()
        this.#epoch++
        if (!this.#degraded) {
          this.#degraded = true
          this.#outage = { ops: 0, reconciledKeys: 0, generationBumped: false }
        }
      }),
      context.monitor.on('up', ({ downtimeMs }) => {
        this.#recovery = null
        this.#epoch++
        const peers = this.#peers
        if (peers === null || !peers.waiting) {
          this.#backOnRedis(downtimeMs)
          return
        }
        peers.poll(downtimeMs, this.#peerWaitEnded)
      }),
    )
    if (l1) {
      const redis = this.#redis
      this.#bus = new CacheBus({
        subscriber: context.monitor.createConnection('subscriber', `${this.name}:bus`),
        channel: redis.channel,
        instanceId: this.#instanceId,
        onLinkChange: (ready) => {
          this.#epoch++
          // Copies made while unsubscribed may have missed invalidations.
          if (ready) this.#memory.clear()
        },
        onKeys: (keys) => {
          this.#epoch++
          for (const key of keys) this.#memory.delete(key)
        },
        onGeneration: (generation) => {
          this.#epoch++
          redis.adoptGeneration(generation)
          this.#memory.clear()
        },
        onProblem: (message, error) => this.#problem(message, error),
      })
    }
    this.#generation = new GenerationKeeper({
      redis: this.#redis,
      run: this.#run,
      bus: this.#bus,
      background: (error) => this.#background(error),
      onRollback: () => this.#namespaceRolledBack(),
      calm: () => this.#settled && this.#peers?.waiting !== true,
    })
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
  get<T = unknown>(key: string, defaultValue?: T): Promise<T | undefined> {
    const t = tracing.cache.get
    if (t.active)
      return traceCacheOperation(t, this.#monitor, this, key, () => this.#get(key, defaultValue))
    return this.#get(key, defaultValue)
  }

  async #get<T>(key: string, defaultValue?: T): Promise<T | undefined> {
    this.#assertOpen()
    this.#codec.checkKey(key)
    const text = await this.#read(key)
    if (text === undefined) return defaultValue
    return this.#codec.decode<T>(text, defaultValue)
  }

  /**
   * Store a value. Resolves true when it is stored in the active backend (Redis, or memory
   * while Redis is unavailable); false when Redis refused this write (e.g. OOM at maxmemory —
   * the key is then invalidated, so its previous value is not served) or the value does not
   * fit the memory tier's byte bound while it is the active backend.
   */
  set(key: string, value: unknown, options?: SetOptions): Promise<boolean> {
    const t = tracing.cache.set
    if (t.active)
      return traceCacheOperation(t, this.#monitor, this, key, () => this.#set(key, value, options))
    return this.#set(key, value, options)
  }

  async #set(key: string, value: unknown, options?: SetOptions): Promise<boolean> {
    this.#assertOpen()
    this.#codec.checkKey(key)
    const ttlMs = this.#codec.ttl(options)
    const text = this.#codec.encode(key, value)
    this.#fills.supersede(key)
    return (await this.#write(key, text, ttlMs)) === 'stored'
  }

  /**
   * Remove a key. Resolves true when the key existed in the active backend. While Redis is
   * unavailable the delete is applied to memory and journaled: Redis loses the key on recovery.
   */
  delete(key: string): Promise<boolean> {
    const t = tracing.cache.delete
    if (t.active) return traceCacheOperation(t, this.#monitor, this, key, () => this.#delete(key))
    return this.#delete(key)
  }

  async #delete(key: string): Promise<boolean> {
    this.#assertOpen()
    this.#codec.checkKey(key)
    this.#fills.supersede(key)
    return this.#remove(key)
  }

  has(key: string): Promise<boolean> {
    const t = tracing.cache.has
    if (t.active) return traceCacheOperation(t, this.#monitor, this, key, () => this.#has(key))
    return this.#has(key)
  }

  async #has(key: string): Promise<boolean> {
    this.#assertOpen()
    this.#codec.checkKey(key)
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
  getOrSet<T>(key: string, loader: () => T | Promise<T>, options?: SetOptions): Promise<T> {
    const t = tracing.cache.getOrSet
    if (t.active) {
      return traceCacheOperation(t, this.#monitor, this, key, () =>
        this.#getOrSet(key, loader, options),
      )
    }
    return this.#getOrSet(key, loader, options)
  }

  async #getOrSet<T>(key: string, loader: () => T | Promise<T>, options?: SetOptions): Promise<T> {
    this.#assertOpen()
    this.#codec.checkKey(key)
    const ttlMs = this.#codec.ttl(options)
    if (typeof loader !== 'function') {
      throw new TypeError(`getOrSet: loader must be a function; received ${typeof loader}`)
    }
    return this.#fills.getOrSet(key, loader, ttlMs)
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

  /**
   * Empty this namespace, and only it: a new generation (O(1), seen by other processes at
   * their next generation check) then SCAN + UNLINK of the old keys. Never FLUSHDB. While
   * Redis is unavailable the memory tier is emptied and the generation is bumped on recovery.
   */
  clear(): Promise<void> {
    const t = tracing.cache.clear
    if (t.active) return traceCacheOperation(t, this.#monitor, this, null, () => this.#clear())
    return this.#clear()
  }

  async #clear(): Promise<void> {
    this.#assertOpen()
    this.#fills.supersedeAll()
    const next = this.#routeNow()
    const route = typeof next === 'string' ? next : await next
    const redis = this.#redis
    if (redis !== null && route !== 'memory') {
      try {
        await redis.bumpGeneration(this.#run)
        this.#stamp(CLEARED)
        this.#epoch++
        this.#memory.clear()
        this.#stats.generationBumps++
      } catch (error) {
        if (isConnectivityError(error)) this.#fellBack()
        else {
          // Refused by Redis (OOM at maxmemory…): the namespace is not cleared there yet. Until
          // the bump lands (retried like any reconciliation), reads stay off Redis: the journal
          // holds a pending bump. Never thrown: clear() does not fail because of Redis.
          this.#stats.replyErrors++
          this.#syncFailedAt = performance.now()
          this.#problem(
            'clear() refused by Redis; retried, reads served from memory meanwhile',
            error,
          )
        }
        this.#journal.markCleared()
        this.#memory.clear()
        return
      }
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
      rollbacks: this.#stats.rollbacks,
      memoryHits: this.#stats.memoryHits,
      replyErrors: this.#stats.replyErrors,
      decodeErrors: this.#stats.decodeErrors,
      busConnected: this.#bus === null ? null : this.#bus.ready,
      fillsSuperseded: this.#stats.fillsSuperseded,
      peerWait: {
        waiting: this.#peers?.waiting ?? false,
        waits: this.#peers?.waits ?? 0,
        timeouts: this.#peers?.timeouts ?? 0,
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
      return this.#peers?.waiting === true ? 'recovering' : 'redis'
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
      if (this.#bus?.ready ?? false) {
        const entry = this.#memory.entry(key)
        if (entry !== undefined) {
          this.#stats.memoryHits++
          return entry.text
        }
      }
      const epoch = this.#epoch
      try {
        if (existence && !(this.#bus?.ready ?? false)) {
          return (await redis.has(key, this.#run)) ? '' : undefined
        }
        if (this.#bus !== null) {
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
        if (stored) this.#stamp(key)
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
        this.#stamp(key)
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
      this.#stamp(key)
    } catch (error) {
      if (isConnectivityError(error)) this.#journal.add(key)
      else this.#problem('could not invalidate a key after a failed write', error)
    }
  }

  /**
   * The namespace's write counter went down (RedisStore.heartbeat): Redis forgot writes —
   * perhaps of an instance that has left, which nobody else could reconcile — and the
   * generation has moved.
   */
  #namespaceRolledBack(): void {
    this.#stats.rollbacks++
    this.#stats.generationBumps++
    this.#outage.generationBumped = true
    this.#stamp(CLEARED)
    this.#memory.clear()
    this.#epoch++
    this.#logger.warn(
      { namespace: this.namespace },
      `${this.name}: Redis forgot writes of this namespace (a restart from older data, a failover); every value from before was invalidated`,
    )
  }

  /** Redis acknowledged a write of `key` (or a clear): remembered in case it forgets it. */
  #stamp(key: string | typeof CLEARED): void {
    this.#recent.record(key, this.#monitor.watermark.stamp())
    this.#redis?.markWritten()
  }

  /**
   * Redis may have forgotten writes it acknowledged (see RecoveryContext.rollback): the keys
   * this process wrote since are journaled, so the reconciliation deletes them — their old value
   * may be back. A deep rollback (others' writes may be lost too), a `clear()` among them, or
   * writes older than this process remembers: the generation moves instead, which hides every
   * value from before, anyone's.
   */
  #afterRollback(rollback: NonNullable<RecoveryContext['rollback']>): void {
    const { keys, cleared, complete } = this.#recent.since(rollback.after)
    if (rollback.deep || cleared || !complete) {
      this.#journal.requireGenerationBump()
      this.#stats.rollbacks++
      return
    }
    for (const key of keys) this.#journal.add(key)
    if (keys.size > 0) this.#stats.rollbacks++
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
    await this.#bus?.connect()
    try {
      await redis.sync(context.run)
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
    if (context.rollback !== null) this.#afterRollback(context.rollback)
    try {
      await this.#reconcile(context.run, context.lateCommandsFenced)
    } catch (error) {
      if (isConnectivityError(error)) throw error
      // Redis refuses the reconciliation for now (a generation bump at maxmemory): reads stay
      // off Redis (the journal is not empty) and it is retried while up (#routeNow).
      this.#syncFailedAt = performance.now()
      this.#problem('Redis refused the reconciliation for now; serving from memory', error)
      return
    }
    // Our outage writes are gone from Redis; other instances may still hold theirs. After an
    // outage (not at start-up) the wait for them is announced with the clean mark, for the
    // instances that join meanwhile.
    const generation = this.#generation
    const lastCleanAt = generation?.lastCleanAt ?? null
    const listed = context.replaced ? (generation?.peers ?? []) : null
    const waitMs = this.#options.peerWaitMs
    const announce = waitMs > 0 && lastCleanAt !== null
    let beat: { at: number; rolledBack: boolean; announced?: string; calmAt: number | null }
    try {
      beat = await redis.heartbeat(
        context.run,
        undefined,
        announce ? { waitMs, from: windowFrom(lastCleanAt), listed } : undefined,
      )
    } catch (error) {
      if (isConnectivityError(error)) throw error
      // Refused for now (OOM at maxmemory): no clean mark — the others' waits time out on this
      // instance — but no reason to keep every component off Redis; wait for the peers anyway.
      this.#problem('Redis refused the clean mark for now; waiting for the peers without it', error)
      beat = { at: this.#monitor.clock.now(), rolledBack: false, calmAt: null }
    }
    const { at, rolledBack, announced, calmAt } = beat
    if (rolledBack) this.#namespaceRolledBack()
    if (waitMs > 0) {
      // At start-up, another instance may be waiting after its outage: wait for its peers
      // instead. Else the peers marked in the PEER_ALIVE_MS before the namespace's calm time.
      const joined =
        lastCleanAt === null
          ? await redis.announcedWait(context.run).catch((error: unknown) => {
              if (isConnectivityError(error)) throw error
              this.#background(error)
              return null
            })
          : null
      if (joined !== null && joined.generation === redis.generation) this.#peers?.adopt(joined)
      else {
        const anchor = lastCleanAt ?? windowAnchor(calmAt, at)
        this.#peers?.begin(at, anchor, listed, announced ?? null)
      }
    }
    this.#memory.clear()
    this.#epoch++
  }

  readonly #peerWaitEnded = (end: PeerWaitEnd): void => {
    if (end.invalidated) {
      this.#stamp(CLEARED)
      this.#outage.generationBumped = true
      this.#stats.generationBumps++
    }
    this.#settled = true
    // Copies made while waiting were never checked against the peers' reconciliation.
    this.#memory.clear()
    this.#epoch++
    this.#backOnRedis(end.downtimeMs, end.waitedMs)
  }

  #peerDeps(): PeerWaitDeps {
    const redis = this.#redis
    if (redis === null) throw new Error('peer wait without Redis')
    return {
      redis,
      run: this.#run,
      peerWaitMs: this.#options.peerWaitMs,
      namespace: this.namespace,
      logger: this.#logger,
      background: (error) => this.#background(error),
      available: () => !this.#closed && this.#monitor.available,
      onTimeout: this.#options.onPeerTimeout,
    }
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
    if (this.#outage.generationBumped) this.#generation?.sweepSoon()
  }

  /** Reconcile the journal (see reconcile.ts) and count what it did. */
  async #reconcile(run: Runner, fenced: boolean): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    await reconcile(this.#journal, redis, run, fenced, ({ keys, deleted, generationBumped }) => {
      // Writes too: if Redis forgets them, the outage's changes would be visible again.
      for (const key of deleted) this.#stamp(key)
      if (generationBumped) this.#stamp(CLEARED)
      this.#outage.reconciledKeys += keys
      this.#stats.reconciledKeys += keys
      if (generationBumped) {
        this.#outage.generationBumped = true
        this.#stats.generationBumps++
      }
    })
  }

  /** The cache was created (or its sync refused) while the monitor was already up. */
  async #syncWhileUp(): Promise<void> {
    const redis = this.#redis
    if (redis === null) return
    try {
      await this.#bus?.connect()
      await redis.sync(this.#run)
      // What was written here before the sync (on memory, journaled) is reconciled below; from
      // now on writes go to Redis and their copies are kept.
      this.#memory.clear()
      this.#epoch++
      // Marked at once: a peer's wait after an outage counts this instance from its first write
      // (before its first periodic mark, a process that changed keys while Redis was down and
      // died then was waited for by nobody).
      await this.#generation?.beat()
      // Not a recovery: nothing can say whether an unsure write could still land.
      if (!this.#journal.empty) {
        await this.#reconcile(this.#run, false)
        // Meanwhile reads and writes stayed on memory (the journal was not empty).
        this.#memory.clear()
        this.#epoch++
      }
      if (this.#options.peerWaitMs > 0) await this.#joinPeers(redis)
    } catch (error) {
      if (!isConnectivityError(error)) {
        this.#syncFailedAt = performance.now()
        this.#problem('the cache cannot use this Redis; serving from memory', error)
      }
    }
  }

  /**
   * A cache that syncs while up waits like a recovering one when others may hold changes Redis
   * has not seen: another instance's announced peer wait is in progress (join it), or, with
   * none yet, some instance marked within PEER_ALIVE_MS before the namespace's calm time (while
   * every instance is cut off, the start of their outage) has been silent for PEER_SILENT_MS — in
   * an outage of its own that the others have not noticed the end of yet, or dead. A healthy
   * namespace (every instance marking every generationCheckMs) costs one round trip.
   */
  async #joinPeers(redis: RedisStore): Promise<void> {
    const peers = this.#peers
    if (peers === null || peers.waiting) return
    const announced = await redis.announcedWait(this.#run)
    const generation = redis.generation
    if (announced !== null) {
      if (announced.generation === generation) peers.join(announced, this.#peerWaitEnded)
      // Else it is over: the generation moved since, nothing older is reachable.
      else this.#settled = true
      return
    }
    const at = this.#generation?.lastCleanAt
    if (at === null || at === undefined || generation === null) return
    const silentMs = Math.max(PEER_SILENT_MS, 3 * this.#options.generationCheckMs)
    // Up to the namespace's calm time: while every instance is cut off, the start of their
    // outage (an outside review read a dead writer's values after 11 s of it, 4 of 4 runs).
    const from = windowFrom(windowAnchor(this.#generation?.calmAt ?? null, at))
    const before = at - silentMs
    const { unconfirmed } = await redis.peers(from, before, this.#run)
    if (peers.waiting) return
    if (unconfirmed === 0) {
      this.#settled = true
      return
    }
    peers.join(
      {
        from,
        before,
        generation: redis.generation ?? generation,
        listed: null,
        remainingMs: this.#options.peerWaitMs,
        value: null,
      },
      this.#peerWaitEnded,
    )
  }

  /**
   * Periodic: learn a generation moved by another process, mark this instance clean (nothing
   * left to reconcile) for the others' peer waits, keep the bus connected.
   */
  #tick(): void {
    const redis = this.#redis
    if (
      this.#closed ||
      redis === null ||
      this.#generation?.checking !== false ||
      !this.#monitor.available
    )
      return
    if (!redis.synced || !this.#journal.empty) {
      Promise.resolve(this.#routeNow()).catch((error: unknown) => this.#background(error))
      return
    }
    void this.#generation?.beat()
  }

  // ── validation, serialization ──────────────────────────────────────────────────────────────

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(this.name)
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
    this.#peers?.stop()
    for (const disposable of this.#disposables) disposable.dispose()
    this.#memory.clear()
    this.#fills.supersedeAll()
    this.#onClose()
    const redis = this.#redis
    if (redis !== null && !this.#journal.empty) {
      // Kept in the members set: the others' peer waits time out on it and invalidate.
      this.#logger.warn(
        {
          namespace: this.namespace,
          unreconciledKeys: this.#journal.size,
          pendingGenerationBump: this.#journal.needsGenerationBump,
        },
        `${this.name} closed with changes Redis has not seen; the other processes' peer wait will invalidate the namespace`,
      )
    }
    // Others need not wait for this instance after their next outage.
    if (redis !== null && this.#monitor.available && this.#journal.empty) {
      await withDeadline(redis.leave(this.#run), LEAVE_TIMEOUT_MS, 'cache leave').catch(
        (error: unknown) => this.#background(error),
      )
    }
  }
}
