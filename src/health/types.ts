import type { Redis } from 'ioredis'
import type { Logger } from '../logger.js'
import type { Disposable } from './events.js'
import type { Rollback } from './watermark.js'

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
  /**
   * Redis forgot writes it had acknowledged: it restarted from older data (an RDB snapshot, an
   * AOF `everysec` tail), or failed over to a replica that had not received them. Components
   * reconcile before using it again (see RecoveryContext.rollback). `seen` is the highest
   * value of failsoft's write counter this process had seen, `found` the value now (null:
   * gone).
   */
  rollback: {
    readonly at: number
    readonly seen: number
    readonly found: number | null
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
   * journals) until `false`, which reconciles and returns to Redis if it is reachable. Safe
   * at any moment, also in the middle of a recovery: a recovery it interrupts starts over.
   */
  forceFallback(on: boolean): void
}

/** Runs commands on a connection the caller does not choose (the monitor's). */
export type Runner = <T>(fn: (redis: Redis) => Promise<T>) => Promise<T>

/** Passed to a component's recovery step, which runs before the state returns to 'up'. */
export interface RecoveryContext {
  /** Redis lost its data since the component last used it: re-assert everything. */
  readonly reset: boolean
  /**
   * Redis may have forgotten writes it acknowledged (see Watermark): the writes this process
   * stamped after `rollback.after` are to be re-applied or invalidated; with `deep`, Redis
   * certainly forgot acknowledged writes, possibly other processes' too, so a component also
   * takes its global measure (the cache moves its generation). Null: nothing can be lost.
   */
  readonly rollback: Rollback | null
  /**
   * Another Redis process answers than the one of the last recovery (a restart, a failover):
   * other processes may have lost writes this one cannot know of — the cache waits for each
   * of them to reconcile before reading (see PeerWait).
   */
  readonly replaced: boolean
  readonly downtimeMs: number
  /** Aborted if Redis fails again (or failsoft closes, or the operator forces the fallbacks) while the step runs. */
  readonly signal: AbortSignal
  /** Run commands during recovery (the state is not 'up' yet, so `run` would refuse). */
  run: Runner
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
   * its fallback and the step is retried at the next probe. The steps of the components run
   * concurrently (they share nothing), each under `recoveryTimeoutMs`.
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
  status?(): object
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

/** `failsoft.status().redis`: JSON-safe, never a credential. */
export interface RedisStatus {
  available: boolean
  state: HealthState
  /** ISO time of the last transition. */
  since: string
  /** The last failure's message while down, else null. */
  error: string | null
  /**
   * host:port/db of the target, or `sentinel:<name>@host:port,…/db` for a Sentinel set (never
   * credentials); null in memory-only mode.
   */
  target: string | null
  /** 'standalone' or 'sentinel'; null in memory-only mode. */
  topology: 'standalone' | 'sentinel' | null
  /**
   * host:port of the Redis reached by the last successful probe: with Sentinel, the current
   * primary (it changes with each failover). Null before the first.
   */
  primary: string | null
  tls: boolean
  mode: 'redis' | 'memory-only'
  forced: boolean
  /** `run_id` of the Redis process last seen. */
  runId: string | null
  /** Transitions counted since start; `rollback`: Redis found to have forgotten acknowledged writes. */
  transitions: { down: number; up: number; reset: number; rollback: number }
  lastTransition: { to: HealthState; at: string } | null
  fallbackOps: number
  /** Smoothed round trip to Redis (heartbeats), in ms; null before the first sample. */
  rttMs: number | null
  /** The command deadline in force now: `commandTimeoutMs`, or more on a slow link. */
  commandDeadlineMs: number
  /** Redis' clock minus this process' clock, in ms (null until measured). */
  clockOffsetMs: number | null
  /**
   * Sentinel: connections of this instance found on another node than the current primary
   * (a handshake that hung on a frozen primary and completed once it thawed, after a replica
   * was promoted) and reset, so that they reconnect through the Sentinels. 0 otherwise.
   */
  strayConnectionsReset: number
}
