import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { ClosedError, RedisTimeoutError, RedisUnavailableError } from '../errors.js'
import { loggableError, type Logger } from '../logger.js'
import {
  createConnection,
  dropConnection,
  isConnectivityError,
  type ConnectionRole,
} from '../redis/connection.js'
import type { RedisTarget } from '../redis/target.js'
import { asError, withDeadline } from '../util/async.js'
import { TypedEvents, type Disposable } from './events.js'
import type { HealthTimings } from './timings.js'

/** The state every component reads before each operation. */
export type HealthState = 'starting' | 'up' | 'down'

/** The health state with what goes with it, read synchronously. */
export type HealthSnapshot =
  | { readonly state: 'starting'; readonly since: number }
  | { readonly state: 'up'; readonly since: number }
  | {
      readonly state: 'down'
      readonly since: number
      readonly error: Error
      /** True when the operator forced the fallbacks (Redis itself may be fine). */
      readonly forced: boolean
    }

export interface HealthEvents {
  /** Components stop using Redis. Emitted once per outage. */
  down: { readonly error: Error; readonly at: number; readonly forced: boolean }
  /** Components are back on Redis; every registered recovery step has run. */
  up: {
    readonly at: number
    /** How long the components were on their fallbacks (0 at start-up). */
    readonly downtimeMs: number
    /** Operations the fallbacks served during that time. */
    readonly fallbackOps: number
    /** True when Redis came back empty (see 'reset'). */
    readonly reset: boolean
  }
  /**
   * Redis lost what failsoft had stored in it (it restarted without persistence, or was
   * flushed): components re-assert what lived there (group memberships, schedulers).
   */
  reset: {
    readonly at: number
    readonly runId: string | null
    readonly previousRunId: string | null
  }
}

/** The public face of the monitor: `failsoft.health`. */
export interface Health {
  /** 'starting' until the first decision, then 'up' or 'down'. A property read, never I/O. */
  readonly state: HealthState
  /** `state === 'up'`: components use Redis. */
  readonly available: boolean
  /** True while `forceFallback(true)` is in effect. */
  readonly forced: boolean
  snapshot(): HealthSnapshot
  on<K extends keyof HealthEvents>(
    event: K,
    listener: (payload: HealthEvents[K]) => void,
  ): Disposable
  once<K extends keyof HealthEvents>(
    event: K,
    listener: (payload: HealthEvents[K]) => void,
  ): Disposable
  /**
   * Operator switch: `true` makes every component behave as if Redis were down (fallbacks,
   * journals) until `false`, which reconciles and returns to Redis if it is reachable.
   */
  forceFallback(on: boolean): void
}

/** Passed to a component's recovery step, which runs before the state returns to 'up'. */
export interface RecoveryContext {
  /** Redis lost its data since the component last used it: re-assert everything. */
  readonly reset: boolean
  readonly downtimeMs: number
  /** Aborted if Redis fails again (or failsoft closes) while the step runs. */
  readonly signal: AbortSignal
  /** Run commands during recovery (the state is not 'up' yet, so `run` would refuse). */
  run<T>(fn: (redis: Redis) => Promise<T>): Promise<T>
  /**
   * True when no command sent before this recovery can still execute in Redis: every earlier
   * command connection of this process is closed on the server side (the monitor closed it
   * with CLIENT KILL, or it was gone, or Redis restarted). False when that could not be
   * established (the ACL user may not run CLIENT ID / CLIENT KILL): a command sent before
   * the outage may then still land later — a frozen server draining its input on thaw, a
   * proxy delivering what it held — and components must make such late commands harmless
   * by other means (the cache bumps its generation).
   */
  readonly lateCommandsFenced: boolean
}

/** What a component tells the monitor about itself. */
export interface ComponentRegistration {
  /** Unique per instance, e.g. 'cache:api'. */
  readonly name: string
  /** What serves while Redis is down, for the WARNING line, e.g. 'in-process memory cache'. */
  readonly fallback: string
  /**
   * Reconcile before the component returns to Redis. Must be idempotent: if Redis fails
   * again meanwhile it is run again on the next recovery. Throwing keeps every component on
   * its fallback and the step is retried at the next probe.
   *
   * It runs on every transition to 'up' (the first one at start-up included) and on a reset
   * noticed while up. A component registered while the state is already 'up' is not recovered
   * at registration: it does its own initial set-up (the cache reads its generation, the
   * channel layer opens its subscriber) before its first use of Redis.
   */
  recover?(context: RecoveryContext): Promise<void>
  /**
   * Synchronous check run just before the state flips to 'up': true if work arrived during
   * recovery (e.g. a key journaled while the step ran), so the step must run again.
   */
  needsRecovery?(): boolean
  /** JSON-safe status for `failsoft.status()`. */
  status?(): Record<string, unknown>
  /** Called by `failsoft.close()`, in reverse registration order, before connections close. */
  close?(): Promise<void> | void
}

/** What a component gets back from `register`. */
export interface ComponentHandle extends Disposable {
  readonly logger: Logger
  /** Count operations served by the fallback (reported in the INFO line on recovery). */
  recordFallback(count?: number): void
  readonly fallbackOps: number
}

interface Registered {
  readonly registration: ComponentRegistration
  readonly logger: Logger
  fallbackOps: number
}

interface InFlight {
  readonly start: number
}

const now = (): number => Date.now()

/**
 * One per failsoft instance: owns the command and health connections and decides, for every
 * component, whether Redis is used. Detection comes from the client's own signals (socket
 * errors and closes, commands that outlive their deadline, a heartbeat with its own deadline
 * on a separate connection); recovery from a timer-driven probe, then the components'
 * recovery steps, then 'up'.
 */
export class HealthMonitor implements Health {
  readonly target: RedisTarget | null
  readonly #timings: HealthTimings
  readonly #logger: Logger
  readonly #rootLogger: Logger
  readonly #events: TypedEvents<HealthEvents>
  readonly #epochKey: string
  readonly #connectionPrefix: string

  readonly #command: Redis | null = null
  readonly #health: Redis | null = null
  readonly #extra = new Set<Redis>()
  readonly #components: Registered[] = []
  readonly #inFlight = new Set<InFlight>()
  /** Components' own in-flight trackers (see `watchInFlight`). */
  readonly #watched = new Set<() => number>()

  /** What the connections say. 'up' means connected, not yet that components use Redis. */
  #redis: HealthState = 'starting'
  /** What components use: only 'up' after their recovery steps ran. */
  #state: HealthState = 'starting'
  #since = now()
  #error: Error | null = null
  #forced = false
  #closed = false
  /** True while close() waits for the components: their last commands still run. */
  #componentsClosing = false
  #epoch: string | null = null
  #runId: string | null = null
  /**
   * Server-side ids of the command connection's sockets that may still be open in Redis
   * (the current one last), with the run_id of the server they were opened on.
   */
  #commandSockets: Array<{ id: number; runId: string | null }> = []
  /** Whether the last probe could close every earlier command socket (see RecoveryContext). */
  #lateCommandsFenced = true
  /** A command socket was used whose server-side id is unknown (CLIENT ID refused). */
  #untrackedSocket = false
  #socketCloseFailures = 0
  #outageFallbackOps = 0
  #transitions = { down: 0, up: 0, reset: 0 }
  #lastTransition: { to: HealthState; at: number } | null = null
  /** Bumped on every Redis failure: a recovery started before it is abandoned. */
  #generation = 0
  #recovery: AbortController | null = null
  #recovering = false
  #heartbeatPending = false
  #probeTimer: NodeJS.Timeout | null = null
  #heartbeatTimer: NodeJS.Timeout | null = null
  #watchdogTimer: NodeJS.Timeout | null = null
  #summaryTimer: NodeJS.Timeout | null = null
  #probing = false
  /** The latest 'error' event: it carries the real cause (ECONNREFUSED, WRONGPASS …) that a
   * rejected command only reports as "Connection is closed". */
  #lastSocketError: { error: Error; at: number } | null = null
  #readyResolvers: Array<(state: HealthState) => void> = []

  constructor(options: {
    target: RedisTarget | null
    prefix: string
    timings: HealthTimings
    logger: Logger
  }) {
    this.target = options.target
    this.#timings = options.timings
    this.#rootLogger = options.logger
    this.#logger = options.logger.child({ component: 'health' })
    this.#events = new TypedEvents<HealthEvents>((event, error) =>
      this.#logger.error(
        { err: loggableError(error), event },
        'a failsoft health listener threw; the error was contained',
      ),
    )
    this.#epochKey = `${options.prefix}:failsoft:epoch`
    this.#connectionPrefix = `failsoft:${options.prefix}`

    if (this.target === null) {
      // Memory-only mode: no socket is ever opened.
      this.#redis = 'down'
      this.#state = 'down'
      this.#error = new RedisUnavailableError('Redis is not configured (memory-only mode)')
      this.#logger.info(
        { mode: 'memory-only' },
        'failsoft running without Redis (memory-only mode)',
      )
      return
    }
    this.#command = this.#connection('command', 'command')
    this.#health = this.#connection('health', 'health')
    this.#watchdogTimer = unref(
      setInterval(
        () => this.#watchdog(),
        Math.max(10, Math.floor(this.#timings.commandTimeoutMs / 5)),
      ),
    )
    this.#heartbeatTimer = unref(
      setInterval(() => this.#heartbeat(), this.#timings.heartbeatIntervalMs),
    )
    // The first probe starts now, not on an unref'd timer: until the first decision, the
    // connect attempt is what keeps a process awaiting ready() alive.
    setImmediate(() => void this.#probe())
  }

  // ── public API ─────────────────────────────────────────────────────────────────────────────

  get state(): HealthState {
    return this.#state
  }

  get available(): boolean {
    return this.#state === 'up'
  }

  get forced(): boolean {
    return this.#forced
  }

  get memoryOnly(): boolean {
    return this.target === null
  }

  snapshot(): HealthSnapshot {
    if (this.#state === 'down') {
      return {
        state: 'down',
        since: this.#since,
        error: this.#error ?? new RedisUnavailableError(),
        forced: this.#forced,
      }
    }
    return { state: this.#state, since: this.#since }
  }

  on<K extends keyof HealthEvents>(
    event: K,
    listener: (payload: HealthEvents[K]) => void,
  ): Disposable {
    return this.#events.on(event, listener)
  }

  once<K extends keyof HealthEvents>(
    event: K,
    listener: (payload: HealthEvents[K]) => void,
  ): Disposable {
    return this.#events.once(event, listener)
  }

  forceFallback(on: boolean): void {
    if (typeof on !== 'boolean')
      throw new TypeError(`forceFallback expects a boolean; received ${typeof on}`)
    if (this.#closed || this.target === null || on === this.#forced) return
    this.#forced = on
    if (on) {
      this.#logger.warn({ forced: true }, 'fallbacks forced by the operator')
      if (this.#state !== 'down') {
        this.#goDown(new RedisUnavailableError('fallbacks forced by the operator'), true)
      }
      this.#recovery?.abort()
    } else {
      this.#logger.info({ forced: false }, 'operator released the forced fallbacks')
      if (this.#redis === 'up') void this.#recoverAndGoUp(false)
    }
  }

  /** Resolves with the first decision ('up' or 'down'); never rejects, never waits past the connect deadline. */
  ready(): Promise<HealthState> {
    if (this.#state !== 'starting') return Promise.resolve(this.#state)
    return new Promise((resolve) => this.#readyResolvers.push(resolve))
  }

  // ── for components ─────────────────────────────────────────────────────────────────────────

  /**
   * Run commands on the shared command connection. Rejects at once with
   * RedisUnavailableError when the state is not 'up' — but components check `available`
   * first and take their fallback without creating an error. A command that outlives
   * `commandTimeoutMs` brings the state down, which closes the connection and rejects every
   * command still waiting, so no caller waits much longer than the deadline.
   */
  run<T>(fn: (redis: Redis) => Promise<T>): Promise<T> {
    if (this.#closed && !this.#componentsClosing) return Promise.reject(new ClosedError())
    if (this.#state !== 'up' || this.#command === null) {
      return Promise.reject(new RedisUnavailableError())
    }
    if (this.#closed) {
      // The watchdog is already stopped: a last command while closing gets its own deadline.
      return withDeadline(
        this.#tracked(this.#command, fn),
        this.#timings.commandTimeoutMs,
        'command while closing',
      )
    }
    return this.#tracked(this.#command, fn)
  }

  /**
   * Let the command watchdog see commands a component sends on its own connection without
   * `run` (a hot path that tracks its commands itself, e.g. the task producer's adds):
   * `oldestMs()` returns how long the oldest of them has been waiting, in ms (0 when none
   * is). Past `commandTimeoutMs` the state goes down, as for a command sent through `run`;
   * the component reports the errors of those commands itself (`reportFailure`).
   */
  watchInFlight(oldestMs: () => number): Disposable {
    this.#watched.add(oldestMs)
    return { dispose: () => void this.#watched.delete(oldestMs) }
  }

  /** A component saw a failure on one of its own connections. */
  reportFailure(error: unknown): void {
    if (!isConnectivityError(error)) return
    this.#redisDown(asError(error))
  }

  /**
   * Open an extra connection with failsoft's defaults for its role (e.g. a subscriber).
   * failsoft closes it on `close()`; its errors are contained.
   */
  createConnection(role: ConnectionRole, name: string): Redis {
    if (this.target === null)
      throw new RedisUnavailableError('Redis is not configured (memory-only mode)')
    if (this.#closed) throw new ClosedError()
    const connection = this.#connection(role, name)
    this.#extra.add(connection)
    connection.once('end', () => this.#extra.delete(connection))
    return connection
  }

  register(registration: ComponentRegistration): ComponentHandle {
    if (this.#components.some((c) => c.registration.name === registration.name)) {
      throw new RangeError(
        `failsoft: a component named "${registration.name}" is already registered`,
      )
    }
    const entry: Registered = {
      registration,
      logger: this.#rootLogger.child({ component: registration.name }),
      fallbackOps: 0,
    }
    this.#components.push(entry)
    if (this.#state === 'down' && this.target !== null) this.#warnFallback(entry)
    const countFallback = (count: number): void => {
      entry.fallbackOps += count
      this.#outageFallbackOps += count
    }
    return {
      logger: entry.logger,
      get fallbackOps() {
        return entry.fallbackOps
      },
      recordFallback: (count = 1) => countFallback(count),
      dispose: () => {
        const index = this.#components.indexOf(entry)
        if (index >= 0) this.#components.splice(index, 1)
      },
    }
  }

  status(): Record<string, unknown> {
    return {
      available: this.available,
      state: this.#state,
      since: new Date(this.#since).toISOString(),
      error: this.#state === 'down' ? (this.#error?.message ?? null) : null,
      target: this.target?.label ?? null,
      tls: this.target?.tls ?? false,
      mode: this.target === null ? 'memory-only' : 'redis',
      forced: this.#forced,
      runId: this.#runId,
      transitions: { ...this.#transitions },
      lastTransition:
        this.#lastTransition === null
          ? null
          : { to: this.#lastTransition.to, at: new Date(this.#lastTransition.at).toISOString() },
      fallbackOps: this.#components.reduce((sum, c) => sum + c.fallbackOps, 0),
    }
  }

  componentStatuses(): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {}
    for (const c of this.#components) {
      out[c.registration.name] = {
        backend: this.available ? 'redis' : 'memory',
        fallbackOps: c.fallbackOps,
        ...c.registration.status?.(),
      }
    }
    return out
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#generation++
    this.#recovery?.abort()
    for (const timer of [this.#probeTimer, this.#summaryTimer]) if (timer) clearTimeout(timer)
    for (const timer of [this.#heartbeatTimer, this.#watchdogTimer]) if (timer) clearInterval(timer)
    // Components may still send a last command while they close (the channel layer hands its
    // outbox over, the cache removes its clean mark): the connections stay open until then.
    this.#componentsClosing = true
    for (const entry of [...this.#components].reverse()) {
      try {
        await entry.registration.close?.()
      } catch (error) {
        entry.logger.error({ err: loggableError(error) }, 'component failed to close cleanly')
      }
    }
    this.#componentsClosing = false
    const connections = [...this.#extra, this.#health, this.#command].filter(
      (c): c is Redis => c !== null,
    )
    await Promise.all(connections.map((c) => closeConnection(c)))
    this.#state = 'down'
    this.#resolveReady()
    this.#events.clear()
  }

  // ── detection ──────────────────────────────────────────────────────────────────────────────

  #connection(role: ConnectionRole, name: string): Redis {
    if (this.target === null) throw new RedisUnavailableError()
    const connection = createConnection(this.target.options, role, {
      connectTimeoutMs: this.#timings.connectTimeoutMs,
      connectionName: `${this.#connectionPrefix}:${name}`,
    })
    // An 'error' event with no listener would crash the process: always contain it. The
    // failure itself is acted on through 'close' and the failed commands.
    connection.on('error', (error: unknown) => {
      this.#lastSocketError = { error: asError(error), at: now() }
    })
    if (role === 'command' || role === 'health') {
      connection.on('close', () => {
        if (!this.#closed && this.#redis === 'up') {
          this.#redisDown(
            this.#error ?? new RedisUnavailableError(`Redis ${role} connection closed`),
          )
        }
      })
    }
    return connection
  }

  // Not an async function: on the hot path of every component, one promise per command.
  #tracked<T>(connection: Redis, fn: (redis: Redis) => Promise<T>): Promise<T> {
    const token: InFlight = { start: now() }
    this.#inFlight.add(token)
    let pending: Promise<T>
    try {
      pending = fn(connection)
    } catch (error) {
      this.#inFlight.delete(token)
      return this.#commandFailed(error)
    }
    return pending.then(
      (value) => {
        this.#inFlight.delete(token)
        return value
      },
      (error: unknown) => {
        this.#inFlight.delete(token)
        return this.#commandFailed(error)
      },
    )
  }

  #commandFailed(error: unknown): Promise<never> {
    if (isConnectivityError(error)) this.#redisDown(asError(error))
    return Promise.reject(error)
  }

  /** A frozen Redis sends nothing: the oldest command still waiting is the signal. */
  #watchdog(): void {
    const limit = this.#timings.commandTimeoutMs
    const oldest = this.#inFlight.values().next().value
    const late = oldest !== undefined && now() - oldest.start > limit
    if (!late && !this.#watchedLate(limit)) return
    // A timer can fire late because the event loop was busy; the reply may already be
    // waiting in the socket. setImmediate runs after the poll phase has read it.
    setImmediate(() => {
      if ((late && this.#inFlight.has(oldest)) || this.#watchedLate(limit)) {
        this.#redisDown(new RedisTimeoutError(limit, { details: { source: 'command' } }))
      }
    })
  }

  /** True when a component's own oldest command (`watchInFlight`) waits longer than `limit`. */
  #watchedLate(limit: number): boolean {
    for (const oldestMs of this.#watched) if (oldestMs() > limit) return true
    return false
  }

  #heartbeat(): void {
    if (this.#closed || this.#redis !== 'up' || this.#heartbeatPending || this.#health === null)
      return
    this.#heartbeatPending = true
    const generation = this.#generation
    let answered = false
    const deadline = setTimeout(() => {
      setImmediate(() => {
        if (!answered && generation === this.#generation) {
          this.#redisDown(
            new RedisTimeoutError(this.#timings.heartbeatTimeoutMs, {
              details: { source: 'heartbeat' },
            }),
          )
        }
      })
    }, this.#timings.heartbeatTimeoutMs)
    this.#health
      .get(this.#epochKey)
      .then(
        (epoch) => {
          if (generation === this.#generation && epoch !== this.#epoch) void this.#onResetWhileUp()
        },
        (error: unknown) => {
          if (generation === this.#generation && isConnectivityError(error))
            this.#redisDown(asError(error))
        },
      )
      .finally(() => {
        answered = true
        clearTimeout(deadline)
        this.#heartbeatPending = false
      })
  }

  /** The most telling error: a recent socket error beats a generic "connection closed". */
  #cause(error: Error): Error {
    const recent = this.#lastSocketError
    const generic =
      error.message === 'Connection is closed.' || error instanceof RedisUnavailableError
    return generic && recent !== null && now() - recent.at < 2000 ? recent.error : error
  }

  #redisDown(error: Error): void {
    if (this.#closed) return
    error = this.#cause(error)
    this.#error = error
    if (this.#redis === 'down') return
    this.#redis = 'down'
    this.#generation++
    this.#recovery?.abort()
    // Closing the connections rejects every command still waiting (so no caller hangs on a
    // frozen server) and guarantees a late reply can never be matched to a new command.
    if (this.#command) dropConnection(this.#command)
    if (this.#health) dropConnection(this.#health)
    if (this.#state !== 'down') this.#goDown(error, false)
    this.#scheduleProbe(this.#timings.probeIntervalMs)
  }

  #goDown(error: Error, forced: boolean): void {
    const first = this.#state === 'starting'
    this.#state = 'down'
    this.#since = now()
    this.#error = error
    this.#outageFallbackOps = 0
    this.#transitions.down++
    this.#lastTransition = { to: 'down', at: this.#since }
    if (!forced) {
      this.#logger.error(
        {
          err: loggableError(error, this.target?.secrets),
          target: this.target?.label,
          startup: first,
        },
        first
          ? 'Redis unavailable at start-up; serving from fallbacks'
          : 'Redis unavailable; serving from fallbacks',
      )
    }
    for (const entry of this.#components) this.#warnFallback(entry)
    this.#startSummary()
    this.#resolveReady()
    this.#events.emit('down', { error, at: this.#since, forced })
  }

  #warnFallback(entry: Registered): void {
    entry.logger.warn(
      { fallback: entry.registration.fallback, forced: this.#forced },
      `${entry.registration.name} is using its fallback: ${entry.registration.fallback}`,
    )
  }

  #startSummary(): void {
    if (this.#summaryTimer) clearInterval(this.#summaryTimer)
    this.#summaryTimer = unref(
      setInterval(() => {
        if (this.#state !== 'down') return
        this.#logger.warn(
          {
            downForMs: now() - this.#since,
            fallbackOps: this.#outageFallbackOps,
            forced: this.#forced,
            err: loggableError(this.#error, this.target?.secrets),
          },
          this.#forced ? 'fallbacks still forced' : 'Redis still unavailable',
        )
      }, this.#timings.summaryIntervalMs),
    )
  }

  // ── recovery ───────────────────────────────────────────────────────────────────────────────

  #scheduleProbe(delayMs: number): void {
    if (this.#closed || this.#probeTimer !== null) return
    // Jitter so that many processes do not probe a recovering Redis in lockstep.
    const jittered = Math.round(delayMs * (0.75 + Math.random() * 0.5))
    this.#probeTimer = unref(
      setTimeout(() => {
        this.#probeTimer = null
        void this.#probe()
      }, jittered),
    )
  }

  /** Timer-driven, one at a time: never a tight loop of instantly failing attempts. */
  async #probe(): Promise<void> {
    if (this.#closed || this.#probing || this.#redis === 'up') return
    this.#probing = true
    const generation = this.#generation
    try {
      const health = this.#health
      const command = this.#command
      if (health === null || command === null) return
      const deadline =
        this.#state === 'starting' ? this.#timings.connectTimeoutMs : this.#timings.probeTimeoutMs
      await this.#connect(health, deadline)
      await withDeadline(health.ping(), this.#timings.heartbeatTimeoutMs, 'probe')
      await this.#connect(command, deadline)
      const runId = await readRunId(health)
      const reset = await this.#checkEpoch(health)
      if (this.#closed || generation !== this.#generation)
        throw new RedisUnavailableError('Redis failed during the probe')
      this.#lateCommandsFenced = await this.#closeEarlierSockets(command, runId)
      if (this.#closed || generation !== this.#generation)
        throw new RedisUnavailableError('Redis failed during the probe')
      this.#redisUp(runId, reset)
    } catch (error) {
      if (this.#closed) return
      this.#error = this.#cause(asError(error))
      if (this.#health) dropConnection(this.#health)
      if (this.#state === 'starting') this.#goDown(this.#error, false)
      // A probe that timed out has already waited its deadline, so trying again at once is
      // no tight loop; and in a partition that has just healed, waiting another interval
      // would only add to the recovery time.
      this.#scheduleProbe(
        error instanceof RedisTimeoutError
          ? PROBE_RETRY_AFTER_TIMEOUT_MS
          : this.#timings.probeIntervalMs,
      )
    } finally {
      this.#probing = false
    }
  }

  async #connect(connection: Redis, deadlineMs: number): Promise<void> {
    if (connection.status === 'ready') return
    if (
      connection.status !== 'wait' &&
      connection.status !== 'end' &&
      connection.status !== 'close'
    ) {
      dropConnection(connection)
    }
    const attempt = connection.connect()
    try {
      await withDeadline(attempt, deadlineMs, 'connect')
    } catch (error) {
      // A blackholed connect never settles by itself: drop it. The attempt's own rejection is
      // expected and already handled by this catch.
      attempt.catch(() => undefined)
      dropConnection(connection)
      throw error
    }
  }

  /**
   * Make sure nothing this process sent before can still execute: a command written on an
   * earlier socket of the command connection may sit in a frozen server's input buffer, in a
   * proxy, or in a TCP retransmission, and run whenever it arrives — after the components
   * have reconciled. Redis frees a killed client with everything it had not executed, so once
   * CLIENT KILL has answered for every earlier socket of this Redis process (or that process
   * is gone: another run_id), no late command can run. Records the new socket's id. Returns
   * false when that cannot be established (CLIENT ID or CLIENT KILL refused, e.g. by an ACL,
   * or not answered in time): components then protect themselves by other means, so this
   * never fails the probe.
   */
  async #closeEarlierSockets(command: Redis, runId: string | null): Promise<boolean> {
    let id: number | null = null
    try {
      id = Number(
        await withDeadline(command.client('ID'), this.#timings.connectTimeoutMs, 'client id'),
      )
    } catch (error) {
      // Unknown id: the next recovery cannot close this socket and will say so.
      this.#cannotCloseSockets(error)
    }
    let fenced = !this.#untrackedSocket
    const kept: Array<{ id: number; runId: string | null }> = []
    for (const socket of this.#commandSockets) {
      if (socket.id === id) continue
      // Another Redis process: the sockets of the old one died with it.
      if (runId === null || socket.runId !== runId) {
        if (runId === null) fenced = false
        continue
      }
      try {
        await withDeadline(
          command.client('KILL', 'ID', String(socket.id)),
          this.#timings.connectTimeoutMs,
          'client kill',
        )
      } catch (error) {
        // Refused (an ACL without CLIENT KILL) or not answered: not proven closed.
        this.#cannotCloseSockets(error)
        fenced = false
        kept.push(socket)
      }
    }
    this.#untrackedSocket = id === null
    if (id !== null) kept.push({ id, runId })
    // Bounded: a socket that could not be closed is retried at the next recoveries, a few.
    this.#commandSockets = kept.slice(-MAX_TRACKED_SOCKETS)
    return fenced
  }

  /** Logged once per instance: the first failure says why (typically an ACL). */
  #cannotCloseSockets(error: unknown): void {
    this.#socketCloseFailures++
    if (this.#socketCloseFailures > 1) return
    this.#logger.warn(
      { err: loggableError(error, this.target?.secrets) },
      'cannot close earlier connections in Redis (CLIENT ID / CLIENT KILL); after an outage the cache bumps its generation instead when a write may still land',
    )
  }

  /**
   * The epoch key holds a random value written by the first process that finds it missing.
   * A process that sees a value other than the one it knew (or none) knows Redis lost what it
   * had stored: restarted without persistence, flushed or evicted.
   */
  async #checkEpoch(health: Redis): Promise<boolean> {
    let epoch = await withDeadline(
      health.get(this.#epochKey),
      this.#timings.heartbeatTimeoutMs,
      'epoch',
    )
    if (epoch === null) {
      await health.set(this.#epochKey, randomUUID(), 'NX')
      epoch = await health.get(this.#epochKey)
    }
    const reset = this.#epoch !== null && epoch !== this.#epoch
    this.#epoch = epoch
    return reset
  }

  #redisUp(runId: string | null, reset: boolean): void {
    const previousRunId = this.#runId
    this.#runId = runId
    this.#redis = 'up'
    this.#error = null
    if (previousRunId !== null && runId !== previousRunId && !reset) {
      this.#logger.info({ runId, previousRunId }, 'Redis restarted with its data')
    }
    if (reset) this.#emitReset(runId, previousRunId)
    if (this.#forced) {
      if (this.#state === 'starting')
        this.#goDown(new RedisUnavailableError('fallbacks forced by the operator'), true)
      this.#logger.info({ target: this.target?.label }, 'Redis reachable; fallbacks still forced')
      return
    }
    void this.#recoverAndGoUp(reset)
  }

  #emitReset(runId: string | null, previousRunId: string | null): void {
    this.#transitions.reset++
    this.#logger.warn(
      { runId, previousRunId },
      'Redis lost its data (restarted empty or flushed); components re-assert their state',
    )
    this.#events.emit('reset', { at: now(), runId, previousRunId })
  }

  async #onResetWhileUp(): Promise<void> {
    const health = this.#health
    if (health === null || this.#recovering) return
    try {
      const reset = await this.#checkEpoch(health)
      if (!reset) return
      this.#emitReset(this.#runId, this.#runId)
      await this.#runRecoverySteps(true, 0, this.#generation)
    } catch (error) {
      this.#logger.warn(
        { err: loggableError(error, this.target?.secrets) },
        'could not re-assert component state after a Redis reset',
      )
      if (isConnectivityError(error)) this.#redisDown(asError(error))
    }
  }

  async #recoverAndGoUp(reset: boolean): Promise<void> {
    if (this.#recovering) return
    this.#recovering = true
    const generation = this.#generation
    const wasStarting = this.#state === 'starting'
    const downtimeMs = wasStarting ? 0 : now() - this.#since
    try {
      // Work can arrive while a step runs (a key journaled by a write that was already under
      // way): re-run until every component says it is clean, then flip in the same tick.
      for (let round = 0; ; round++) {
        await this.#runRecoverySteps(reset, downtimeMs, generation)
        if (!this.#stillCurrent(generation)) return
        const dirty = this.#components.some((c) => c.registration.needsRecovery?.() === true)
        if (!dirty) break
        if (round >= 10) throw new Error('components kept needing recovery after 10 rounds')
      }
      const at = now()
      const fallbackOps = this.#outageFallbackOps
      // The components dealt with whatever could still land; until the next outage nothing can.
      this.#lateCommandsFenced = true
      this.#state = 'up'
      this.#since = at
      this.#error = null
      this.#transitions.up++
      this.#lastTransition = { to: 'up', at }
      if (this.#summaryTimer) clearInterval(this.#summaryTimer)
      this.#summaryTimer = null
      if (wasStarting) {
        this.#logger.info({ target: this.target?.label, runId: this.#runId }, 'Redis available')
      } else {
        this.#logger.info(
          { target: this.target?.label, downtimeMs, fallbackOps, reset, runId: this.#runId },
          'Redis is back; components returned to Redis',
        )
      }
      this.#resolveReady()
      this.#events.emit('up', { at, downtimeMs, fallbackOps, reset })
    } catch (error) {
      if (!this.#stillCurrent(generation)) return
      this.#logger.warn(
        { err: loggableError(error, this.target?.secrets) },
        'recovery step failed; staying on fallbacks and retrying',
      )
      if (this.#state === 'starting') this.#goDown(asError(error), false)
      if (isConnectivityError(error) && !(error instanceof RecoveryStepError)) {
        this.#redisDown(asError(error))
      } else {
        this.#redis = 'down'
        this.#scheduleProbe(this.#timings.probeIntervalMs)
      }
    } finally {
      this.#recovering = false
    }
  }

  #stillCurrent(generation: number): boolean {
    return !this.#closed && !this.#forced && generation === this.#generation && this.#redis === 'up'
  }

  async #runRecoverySteps(reset: boolean, downtimeMs: number, generation: number): Promise<void> {
    const controller = new AbortController()
    this.#recovery = controller
    const command = this.#command
    if (command === null) return
    const context: RecoveryContext = {
      reset,
      downtimeMs,
      signal: controller.signal,
      lateCommandsFenced: this.#lateCommandsFenced,
      run: (fn) => {
        if (controller.signal.aborted || generation !== this.#generation) {
          return Promise.reject(new RedisUnavailableError('recovery abandoned'))
        }
        return this.#tracked(command, fn)
      },
    }
    for (const entry of [...this.#components]) {
      const step = entry.registration.recover
      if (!step || controller.signal.aborted) continue
      try {
        await withDeadline(
          step.call(entry.registration, context),
          this.#timings.recoveryTimeoutMs,
          'recovery',
        )
      } catch (error) {
        throw new RecoveryStepError(entry.registration.name, error)
      }
    }
    if (this.#recovery === controller) this.#recovery = null
  }

  #resolveReady(): void {
    const resolvers = this.#readyResolvers
    this.#readyResolvers = []
    for (const resolve of resolvers) resolve(this.#state)
  }
}

class RecoveryStepError extends Error {
  constructor(component: string, cause: unknown) {
    super(`recovery step of ${component} failed: ${asError(cause).message}`, { cause })
    this.name = 'RecoveryStepError'
  }
}

/** Earlier command sockets remembered for CLIENT KILL at most (one per unfenced recovery). */
/** Delay before the next probe when one timed out (it has waited `probeTimeoutMs` already). */
const PROBE_RETRY_AFTER_TIMEOUT_MS = 20
const MAX_TRACKED_SOCKETS = 8

function unref<T extends NodeJS.Timeout>(timer: T): T {
  timer.unref()
  return timer
}

async function readRunId(connection: Redis): Promise<string | null> {
  const info = await connection.info('server')
  const match = /^run_id:(\w+)/m.exec(info)
  return match?.[1] ?? null
}

async function closeConnection(connection: Redis): Promise<void> {
  if (connection.status === 'ready') {
    try {
      await withDeadline(connection.quit(), 200, 'quit')
      return
    } catch {
      // QUIT not answered in time (frozen Redis): the socket is dropped below instead.
    }
  }
  dropConnection(connection)
}
