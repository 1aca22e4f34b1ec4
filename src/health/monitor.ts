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
import { RedisClock } from './clock.js'
import { Components, warnFallback } from './components.js'
import { TypedEvents, type Disposable } from './events.js'
import { EarlierSockets } from './fence.js'
import { Heartbeat } from './heartbeat.js'
import { CommandWatchdog } from './watchdog.js'
import { InFlightCommands } from './in-flight.js'
import { probe, readEpoch } from './probe.js'
import { RecoveryAbandoned, RecoveryStepError, runRecoverySteps } from './recovery.js'
import { RttEstimator } from './rtt.js'
import { SentinelWatch } from './sentinel-watch.js'
import type { HealthTimings } from './timings.js'
import { Watermark, type Rollback } from './watermark.js'
import type {
  ComponentHandle,
  ComponentRegistration,
  Health,
  HealthEvents,
  HealthSnapshot,
  HealthState,
  RecoveryContext,
  RedisStatus,
} from './types.js'
import { DEMOTED_REFUSE_MS, PROBE_RETRY_AFTER_TIMEOUT_MS } from '../tunables.js'
import { tracing } from '../diagnostics/channels.js'
import { publishTransition, traceOperation } from '../diagnostics/publish.js'

export type {
  ComponentHandle,
  ComponentRegistration,
  Health,
  HealthEvents,
  HealthSnapshot,
  HealthState,
  RecoveryContext,
  RedisStatus,
  Runner,
} from './types.js'

const now = (): number => Date.now()

/** Rounds of recovery steps before giving up on a component that keeps needing one. */
const MAX_RECOVERY_ROUNDS = 10

/**
 * One per failsoft instance: owns the command and health connections and decides, for every
 * component, whether Redis is used. Detection comes from the client's own signals (socket
 * errors and closes, commands that outlive their deadline, a heartbeat with its own deadline
 * on a separate connection); recovery from a timer-driven probe, then the components'
 * recovery steps, then 'up'.
 *
 * The parts live in their own modules: the probe (probe.ts), the heartbeat (heartbeat.ts),
 * the command watchdog (watchdog.ts) over the commands in flight (in-flight.ts), the adaptive
 * deadline (rtt.ts), Redis' clock (clock.ts), the earlier sockets closed in Redis before a recovery (fence.ts) and the
 * recovery round (recovery.ts). This class holds the state machine that ties them together.
 */
export class HealthMonitor implements Health {
  readonly target: RedisTarget | null
  /** Redis' clock as estimated here (see RedisClock). */
  readonly clock = new RedisClock()
  /**
   * Lost-write detection (see Watermark): components stamp the writes they would have to
   * reconcile if Redis forgot them; a recovery's `rollback` says which.
   */
  readonly watermark: Watermark
  readonly #timings: HealthTimings
  readonly #logger: Logger
  readonly #events: TypedEvents<HealthEvents>
  readonly #epochKey: string
  readonly #connectionPrefix: string
  readonly #rtt = new RttEstimator()
  readonly #inFlight = new InFlightCommands()
  readonly #sockets = new EarlierSockets()
  readonly #heartbeat: Heartbeat

  readonly #command: Redis | null = null
  readonly #health: Redis | null = null
  readonly #extra = new Set<Redis>()
  /** Connections kept on the current primary of a Sentinel set (see followPrimary). */
  readonly #followed = new Set<Redis>()
  /** When each extra connection was last reset for being on another node (see #align). */
  readonly #strayResetAt = new WeakMap<Redis, number>()
  #strayConnectionsReset = 0
  readonly #components: Components

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
  /** Whether the last probe could close every earlier command socket (see RecoveryContext). */
  #lateCommandsFenced = true
  #fenceFailures = 0
  #transitions = { down: 0, up: 0, reset: 0, rollback: 0 }
  /** Writes Redis may have forgotten, to be reconciled by the next recovery (see Watermark). */
  #pendingRollback: Rollback | null = null
  /** Another Redis process (or one never seen) answers since the last recovery. */
  #pendingReplaced = false
  /** host:port of the Redis the last probe reached (a Sentinel set's current primary). */
  #primary: string | null = null
  #sentinelWatch: SentinelWatch | null = null
  /** The primary Sentinel last announced as replaced, and when (see #primarySwitched). */
  #demoted: { address: string; at: number } | null = null
  #lastTransition: { to: HealthState; at: number } | null = null
  /** Bumped on every Redis failure: anything started before it is stale. */
  #generation = 0
  /** The round of recovery steps running now, if any. */
  #recovery: AbortController | null = null
  #recovering = false
  /** An interrupted recovery must start over once it has wound down (see forceFallback). */
  #recoverAgain = false
  /** A reset seen by a probe stays to be reconciled until a recovery completes. */
  #pendingReset = false
  #probeTimer: NodeJS.Timeout | null = null
  #heartbeatTimer: NodeJS.Timeout | null = null
  #watchdog: CommandWatchdog | null = null
  #summaryTimer: NodeJS.Timeout | null = null
  #probing = false
  #resetting = false
  #epochAttemptAt = -Infinity
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
    this.#logger = options.logger.child({ component: 'health' })
    this.#components = new Components(options.logger)
    this.#events = new TypedEvents<HealthEvents>(
      (event, error) =>
        this.#logger.error(
          { err: loggableError(error), event },
          'a failsoft health listener threw; the error was contained',
        ),
      (event, payload) => publishTransition(this, event, payload, this.target?.secrets),
    )
    this.#epochKey = `${options.prefix}:failsoft:epoch`
    this.watermark = new Watermark(`${options.prefix}:failsoft:wm:${randomUUID()}`)
    this.#connectionPrefix = `failsoft:${options.prefix}`
    this.#heartbeat = new Heartbeat({
      epochKey: this.#epochKey,
      rtt: this.#rtt,
      clock: this.clock,
      deadlineMs: () =>
        this.#rtt.deadline(this.#timings.heartbeatTimeoutMs, this.#maxDeadline(), 2),
      watermark: this.watermark,
      onFailure: (error) => this.#redisDown(error),
      // Redis forgot acknowledged writes without any connection failing (a failover that
      // kept the sockets, a restart too quick to notice): off Redis, and the probe assesses.
      onWatermarkBehind: () =>
        this.#redisDown(
          new RedisUnavailableError(
            'Redis forgot acknowledged writes (its write counter went back); reconciling',
          ),
        ),
      onEpoch: (epoch) => {
        if (epoch !== this.#epoch) {
          void this.#onResetWhileUp()
          return true
        }
        if (epoch === null) this.#createEpochSoon()
        return false
      },
    })

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
    if (this.target.topology === 'sentinel') {
      this.#sentinelWatch = new SentinelWatch({
        options: this.target.options,
        connectTimeoutMs: this.#timings.connectTimeoutMs,
        connectionName: `${this.#connectionPrefix}:sentinel-watch`,
        onSwitch: (from, to) => this.#primarySwitched(from, to),
        onError: (error) =>
          this.#logger.debug(
            { err: loggableError(error, this.target?.secrets) },
            'Sentinel announcement subscriber failed (retried)',
          ),
      })
    }
    this.#watchdog = new CommandWatchdog({
      inFlight: this.#inFlight,
      deadlineMs: () => this.commandDeadlineMs,
      everyMs: Math.max(10, Math.floor(this.#timings.commandTimeoutMs / 5)),
      onOverdue: (limit) =>
        this.#redisDown(new RedisTimeoutError(limit, { details: { source: 'command' } })),
    })
    this.#heartbeatTimer = unref(setInterval(() => this.#beat(), this.#timings.heartbeatIntervalMs))
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

  /**
   * The deadline a command is held to now, in ms: `commandTimeoutMs`, or more on a slow link
   * (see RttEstimator), at most `maxCommandTimeoutMs`.
   */
  get commandDeadlineMs(): number {
    return this.#rtt.deadline(this.#timings.commandTimeoutMs, this.#maxDeadline())
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
      // A recovery under way is interrupted: none of its steps' results count.
      this.#recovery?.abort(new RecoveryAbandoned())
      if (this.#state !== 'down') {
        this.#goDown(new RedisUnavailableError('fallbacks forced by the operator'), true)
      }
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
   * first and take their fallback without creating an error. A command that outlives the
   * command deadline brings the state down, which closes the connection and rejects every
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
        this.commandDeadlineMs,
        'command while closing',
      )
    }
    return this.#tracked(this.#command, fn)
  }

  /**
   * Let the command watchdog see commands a component sends on its own connection without
   * `run` (a hot path that tracks its commands itself, e.g. the task producer's adds):
   * `oldestMs(since)` returns how long the oldest of them sent at or after `since`
   * (performance.now() time: when the last outage began) has been waiting, in ms (0 when none
   * is). Past the command deadline the state goes down, as for a command sent through `run`;
   * the component reports the errors of those commands itself (`reportFailure`).
   */
  watchInFlight(oldestMs: (since: number) => number): Disposable {
    return this.#inFlight.watch(oldestMs)
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
    this.followPrimary(connection)
    return connection
  }

  /**
   * Keep a connection on the current primary of a Sentinel set: one found ready on another
   * node — when it (re)connects while up, or when a probe reaches a new primary — has its
   * socket reset, so that its own retry policy reconnects it through the Sentinels (see
   * #align). For connections made from createConnection's (BullMQ's duplicates); theirs are
   * followed already.
   */
  followPrimary(connection: Redis): void {
    this.#followed.add(connection)
    connection.once('end', () => this.#followed.delete(connection))
    connection.on('ready', () => {
      if (this.#redis === 'up') this.#align(connection)
    })
  }

  register(registration: ComponentRegistration): ComponentHandle {
    return this.#components.add(registration, (logger) => {
      if (this.#state === 'down' && this.target !== null) {
        warnFallback(logger, registration, this.#forced)
      }
    })
  }

  status(): RedisStatus {
    return {
      available: this.available,
      state: this.#state,
      since: new Date(this.#since).toISOString(),
      error: this.#state === 'down' ? (this.#error?.message ?? null) : null,
      target: this.target?.label ?? null,
      topology: this.target?.topology ?? null,
      primary: this.#primary,
      tls: this.target?.tls ?? false,
      mode: this.target === null ? 'memory-only' : 'redis',
      forced: this.#forced,
      runId: this.#runId,
      transitions: { ...this.#transitions },
      lastTransition:
        this.#lastTransition === null
          ? null
          : { to: this.#lastTransition.to, at: new Date(this.#lastTransition.at).toISOString() },
      fallbackOps: this.#components.fallbackOps,
      rttMs: this.#rtt.srttMs === null ? null : Math.round(this.#rtt.srttMs * 100) / 100,
      commandDeadlineMs: this.commandDeadlineMs,
      clockOffsetMs: this.clock.offsetMs,
      strayConnectionsReset: this.#strayConnectionsReset,
    }
  }

  componentStatuses(): Record<string, { backend: 'redis' | 'memory'; fallbackOps: number }> {
    return this.#components.statuses(this.available)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#generation++
    this.#recovery?.abort(new RecoveryAbandoned())
    for (const timer of [this.#probeTimer, this.#summaryTimer]) if (timer) clearTimeout(timer)
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer)
    this.#watchdog?.stop()
    this.#sentinelWatch?.close()
    // Components may still send a last command while they close (the channel layer hands its
    // outbox over, the cache removes its clean mark): the connections stay open until then.
    this.#componentsClosing = true
    await this.#components.closeAll()
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

  /**
   * A Sentinel set: a connection of ours that is ready on another node than the primary the
   * last probe reached is reset (its socket destroyed), so that its own retry policy
   * reconnects it — through the Sentinels, to the primary. The case: a connection that
   * reconnected by itself while the primary was frozen got the frozen node from the Sentinels,
   * its handshake hung, and completed when that node thawed — after a replica had been
   * promoted, on a node still answering as a primary until Sentinel reconfigures it (about
   * 10 s): a worker there ran nothing of the new primary's queue, and what it completed was
   * thrown away (outside review 5: 9 s, tasks run twice). At most once a second per
   * connection, in case our own view of the primary is the stale one.
   */
  #align(connection: Redis): void {
    if (this.target?.topology !== 'sentinel' || this.#closed) return
    const primary = this.#primary
    if (primary === null || connection.status !== 'ready') return
    const at = remoteAddress(connection)
    if (at === null || at === primary) return
    const last = this.#strayResetAt.get(connection) ?? -Infinity
    if (now() - last < STRAY_RESET_MIN_MS) return
    this.#strayResetAt.set(connection, now())
    this.#strayConnectionsReset++
    this.#logger.warn(
      { reached: at, primary },
      'a connection reached another node than the primary; reconnecting it',
    )
    ;(connection as unknown as { stream?: { destroy(): void } }).stream?.destroy()
  }

  #maxDeadline(): number {
    return Math.max(this.#timings.commandTimeoutMs, this.#timings.maxCommandTimeoutMs)
  }

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

  #tracked<T>(connection: Redis, fn: (redis: Redis) => Promise<T>): Promise<T> {
    if (tracing.redisCommand.active) {
      const message = { health: this, connection: 'command' } as const
      return traceOperation(tracing.redisCommand, message, () =>
        this.#inFlight.track(connection, fn, this.#onCommandFailure),
      )
    }
    return this.#inFlight.track(connection, fn, this.#onCommandFailure)
  }

  readonly #onCommandFailure = (error: unknown): void => {
    if (isConnectivityError(error)) this.#redisDown(asError(error))
  }

  #beat(): void {
    const health = this.#health
    if (this.#closed || this.#redis !== 'up' || health === null) return
    const generation = this.#generation
    this.#heartbeat.beat(health, () => generation === this.#generation && !this.#closed)
  }

  /** The most telling error: a recent socket error beats a generic "connection closed". */
  #cause(error: Error): Error {
    const recent = this.#lastSocketError
    const generic =
      error.message === 'Connection is closed.' || error instanceof RedisUnavailableError
    return generic && recent !== null && now() - recent.at < 2000 ? recent.error : error
  }

  /**
   * Sentinel promoted another node (`+switch-master` for this primary name). In a planned
   * failover the old primary keeps answering — and accepting writes it will throw away — until
   * Sentinel reconfigures it, seconds later: leave it now, as if it had failed, and come back
   * through a probe (which asks the Sentinels for the primary again).
   */
  #primarySwitched(from: string, to: string): void {
    if (this.#closed) return
    this.#demoted = { address: from, at: now() }
    if (this.#redis !== 'up' || this.#primary === to) return
    this.#logger.info(
      { from, to, primary: this.#primary },
      'Sentinel switched the primary; following it',
    )
    this.#redisDown(new RedisUnavailableError(`Sentinel switched the primary to ${to}`))
  }

  /**
   * A probe that reached the primary Sentinel has just demoted (a Sentinel that has not heard
   * of the switch yet) fails, for DEMOTED_REFUSE_MS after the announcement: it is retried.
   */
  #refuseDemoted(health: Redis, command: Redis): void {
    const demoted = this.#demoted
    if (demoted === null) return
    if (now() - demoted.at > DEMOTED_REFUSE_MS) {
      this.#demoted = null
      return
    }
    for (const connection of [health, command]) {
      if (remoteAddress(connection) === demoted.address) {
        throw new RedisUnavailableError(
          `reached ${demoted.address}, the primary Sentinel has just replaced`,
        )
      }
    }
  }

  #redisDown(error: Error): void {
    if (this.#closed) return
    error = this.#cause(error)
    this.#error = error
    if (this.#redis === 'down') return
    this.#redis = 'down'
    this.#generation++
    this.#inFlight.newEpoch()
    this.#recovery?.abort(new RecoveryAbandoned())
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
    this.#components.outageFallbackOps = 0
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
    this.#components.warnFallbacks(this.#forced)
    this.#startSummary()
    this.#resolveReady()
    this.#events.emit('down', { error, at: this.#since, forced })
  }

  #startSummary(): void {
    if (this.#summaryTimer) clearInterval(this.#summaryTimer)
    this.#summaryTimer = unref(
      setInterval(() => {
        if (this.#state !== 'down') return
        this.#logger.warn(
          {
            downForMs: now() - this.#since,
            fallbackOps: this.#components.outageFallbackOps,
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
    const health = this.#health
    const command = this.#command
    if (health === null || command === null) return
    this.#probing = true
    const generation = this.#generation
    try {
      const starting = this.#state === 'starting'
      const connectDeadlineMs = starting
        ? this.#timings.connectTimeoutMs
        : // A slow link needs several round trips to connect (TCP, AUTH, the ready check).
          this.#rtt.deadline(this.#timings.probeTimeoutMs, this.#timings.connectTimeoutMs, 4)
      const result = await probe({
        health,
        command,
        epochKey: this.#epochKey,
        watermarkKey: this.watermark.key,
        connectDeadlineMs,
        commandDeadlineMs: () =>
          this.#rtt.deadline(this.#timings.heartbeatTimeoutMs, this.#maxDeadline(), 2),
        rtt: this.#rtt,
        clock: this.clock,
        sockets: this.#sockets,
        onFenceError: (error) => this.#cannotCloseSockets(error),
      })
      if (this.#closed || generation !== this.#generation)
        throw new RedisUnavailableError('Redis failed during the probe')
      const reset = this.#epoch !== null && result.epoch !== this.#epoch
      this.#epoch = result.epoch
      this.#lateCommandsFenced = result.fenced
      this.#refuseDemoted(health, command)
      this.#assessRollback(result.watermark, result.runId)
      this.#primary = remoteAddress(health)
      for (const connection of this.#followed) this.#align(connection)
      this.#redisUp(result.runId, reset)
    } catch (error) {
      if (this.#closed) return
      this.#error = this.#cause(asError(error))
      // Whatever the probe was waiting for on these sockets may never be answered: the next
      // probe starts on fresh ones.
      dropConnection(health)
      if (generation === this.#generation) dropConnection(command)
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

  /** Logged once per instance: the first failure says why (typically an ACL). */
  #cannotCloseSockets(error: unknown): void {
    this.#fenceFailures++
    if (this.#fenceFailures > 1) return
    this.#logger.warn(
      { err: loggableError(error, this.target?.secrets) },
      'cannot close earlier connections in Redis (CLIENT ID / CLIENT KILL); after an outage the cache bumps its generation instead when a write may still land',
    )
  }

  /**
   * Redis answers again: may it have forgotten writes it acknowledged? Another Redis process
   * (a restart, a failover) makes the writes not yet confirmed uncertain; the write counter
   * found behind means acknowledged writes were forgotten (see Watermark).
   */
  #assessRollback(found: number | null, runId: string | null): void {
    const replaced = this.#runId !== null && runId !== this.#runId
    this.#pendingReplaced ||= replaced
    const rollback = this.watermark.assess(found, replaced)
    if (rollback === null) return
    const pending = this.#pendingRollback
    this.#pendingRollback =
      pending === null
        ? rollback
        : {
            after: Math.min(pending.after, rollback.after),
            deep: pending.deep || rollback.deep,
            seen: Math.max(pending.seen, rollback.seen),
            found: rollback.found,
          }
    if (rollback.deep) {
      this.#transitions.rollback++
      this.#logger.error(
        { seen: rollback.seen, found: rollback.found, runId, previousRunId: this.#runId },
        'Redis forgot writes it had acknowledged (restarted from older data, or failed over to a replica that had not received them); components reconcile before using it',
      )
      this.#events.emit('rollback', {
        at: now(),
        seen: rollback.seen,
        found: rollback.found,
        runId,
        previousRunId: this.#runId,
      })
    } else {
      this.#logger.info(
        { runId, previousRunId: this.#runId },
        'another Redis process answers (restarted or failed over); the last writes not yet confirmed are reconciled',
      )
    }
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
      this.#pendingReset ||= reset
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

  /**
   * The epoch is unknown (Redis refused to store it, at maxmemory, when it came back): create it
   * once Redis takes writes again, at most once a second. Not a reset: nothing was known.
   */
  #createEpochSoon(): void {
    const health = this.#health
    if (health === null || this.#resetting || now() - this.#epochAttemptAt < 1000) return
    this.#epochAttemptAt = now()
    const generation = this.#generation
    readEpoch(health, this.#epochKey, () => this.commandDeadlineMs).then(
      (epoch) => {
        if (generation === this.#generation && this.#epoch === null) this.#epoch = epoch
      },
      (error: unknown) => {
        if (isConnectivityError(error)) this.#redisDown(asError(error))
      },
    )
  }

  /**
   * The heartbeat saw another epoch while up: Redis was flushed (or replaced under us) without
   * any connection failing. The components re-assert what lived there, staying on Redis.
   */
  async #onResetWhileUp(): Promise<void> {
    const health = this.#health
    if (health === null || this.#recovering || this.#resetting || this.#redis !== 'up') return
    this.#resetting = true
    const generation = this.#generation
    try {
      const epoch = await readEpoch(health, this.#epochKey, () => this.commandDeadlineMs)
      if (generation !== this.#generation || epoch === this.#epoch) return
      if (this.#epoch === null) {
        // It was unknown (refused at maxmemory): now it is, and nothing was known to be lost.
        this.#epoch = epoch
        return
      }
      this.#epoch = epoch
      this.#emitReset(this.#runId, this.#runId)
      await this.#runRound(true, 0, generation)
    } catch (error) {
      if (error instanceof RecoveryAbandoned || generation !== this.#generation) return
      this.#logger.warn(
        { err: loggableError(error, this.target?.secrets) },
        'could not re-assert component state after a Redis reset',
      )
      const cause = error instanceof RecoveryStepError ? error.cause : error
      if (isConnectivityError(cause)) this.#redisDown(asError(cause))
    } finally {
      this.#resetting = false
    }
  }

  async #recoverAndGoUp(reset: boolean): Promise<void> {
    this.#pendingReset ||= reset
    if (this.#recovering) {
      // The round under way may have been interrupted (forceFallback): it starts over once
      // it has wound down, so that no step is skipped.
      this.#recoverAgain = true
      return
    }
    this.#recovering = true
    try {
      for (;;) {
        this.#recoverAgain = false
        await this.#recoverOnce()
        if (!this.#recoverAgain || !this.#eligible()) break
      }
    } finally {
      this.#recovering = false
    }
  }

  /** Redis answers and nothing holds the components back from it. */
  #eligible(): boolean {
    return !this.#closed && !this.#forced && this.#redis === 'up' && this.#state !== 'up'
  }

  /** One recovery: rounds of steps until every component is clean, then 'up' in the same tick. */
  async #recoverOnce(): Promise<void> {
    if (!this.#eligible()) return
    const generation = this.#generation
    const wasStarting = this.#state === 'starting'
    const downtimeMs = wasStarting ? 0 : now() - this.#since
    const reset = this.#pendingReset
    try {
      // Work can arrive while a step runs (a key journaled by a write that was already under
      // way): re-run until every component says it is clean, then flip in the same tick.
      for (let round = 0; ; round++) {
        await this.#runRound(reset, downtimeMs, generation)
        if (!this.#eligible() || generation !== this.#generation) return
        const dirty = this.#components.dirty()
        if (!dirty) break
        if (round >= MAX_RECOVERY_ROUNDS) {
          throw new Error(`components kept needing recovery after ${MAX_RECOVERY_ROUNDS} rounds`)
        }
      }
      this.#goUp(wasStarting, downtimeMs, reset)
    } catch (error) {
      if (error instanceof RecoveryAbandoned) return
      if (!this.#eligible() || generation !== this.#generation) return
      this.#logger.warn(
        { err: loggableError(error, this.target?.secrets) },
        'recovery step failed; staying on fallbacks and retrying',
      )
      if (this.#state === 'starting') this.#goDown(asError(error), false)
      // Stay on the fallbacks; the next probe checks Redis again and the steps run again.
      this.#redis = 'down'
      this.#scheduleProbe(this.#timings.probeIntervalMs)
    }
  }

  async #runRound(reset: boolean, downtimeMs: number, generation: number): Promise<void> {
    const command = this.#command
    if (command === null) return
    const controller = new AbortController()
    this.#recovery = controller
    const context: RecoveryContext = {
      reset,
      rollback: this.#pendingRollback,
      replaced: this.#pendingReplaced,
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
    try {
      await runRecoverySteps(
        this.#components.registrations(),
        context,
        controller,
        this.#timings.recoveryTimeoutMs,
        this,
      )
    } finally {
      if (this.#recovery === controller) this.#recovery = null
    }
    // Interrupted after the last step finished (forceFallback, Redis failing): not a recovery.
    if (controller.signal.aborted) throw new RecoveryAbandoned()
  }

  #goUp(wasStarting: boolean, downtimeMs: number, reset: boolean): void {
    const at = now()
    const fallbackOps = this.#components.outageFallbackOps
    // The components dealt with whatever could still land; until the next outage nothing can.
    this.#lateCommandsFenced = true
    this.#pendingReset = false
    this.#pendingRollback = null
    this.#pendingReplaced = false
    this.#state = 'up'
    this.#since = at
    this.#error = null
    this.#transitions.up++
    this.#lastTransition = { to: 'up', at }
    if (this.#summaryTimer) clearInterval(this.#summaryTimer)
    this.#summaryTimer = null
    if (wasStarting) {
      this.#logger.info(
        { target: this.target?.label, primary: this.#primary, runId: this.#runId },
        'Redis available',
      )
    } else {
      this.#logger.info(
        {
          target: this.target?.label,
          primary: this.#primary,
          downtimeMs,
          fallbackOps,
          reset,
          runId: this.#runId,
        },
        'Redis is back; components returned to Redis',
      )
    }
    this.#resolveReady()
    this.#events.emit('up', { at, downtimeMs, fallbackOps, reset })
  }

  #resolveReady(): void {
    const resolvers = this.#readyResolvers
    this.#readyResolvers = []
    for (const resolve of resolvers) resolve(this.#state)
  }
}

function unref<T extends NodeJS.Timeout>(timer: T): T {
  timer.unref()
  return timer
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

/** host:port a connection's socket reached (IPv6 in brackets); null before it connected. */
/** A stray connection is reset at most this often (ms; see HealthMonitor.#align). */
const STRAY_RESET_MIN_MS = 1000

function remoteAddress(connection: Redis): string | null {
  const socket = (
    connection as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }
  ).stream
  const host = socket?.remoteAddress
  const port = socket?.remotePort
  if (typeof host !== 'string' || typeof port !== 'number') return null
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}
