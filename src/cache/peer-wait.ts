import type { Logger } from '../logger.js'
import type { JoinedWait, RedisStore, Runner } from './redis-store.js'
import { PEER_ALIVE_MS, PEER_POLL_MS } from '../tunables.js'

export interface PeerWaitDeps {
  readonly redis: RedisStore
  readonly run: Runner
  /** Longest wait after a recovery. */
  readonly peerWaitMs: number
  readonly namespace: string
  readonly logger: Logger
  readonly background: (error: unknown) => void
  /** Whether the monitor still says up (an outage ends any wait). */
  readonly available: () => boolean
  /**
   * At the deadline with peers unconfirmed: 'invalidate' moves the namespace generation before
   * reads return to Redis (an unconfirmed peer may have died holding outage writes it never
   * deleted in Redis); 'read' reads from Redis anyway.
   */
  readonly onTimeout: 'invalidate' | 'read'
}

/** How a wait ended: when and how long it took, and whether peers were left unconfirmed. */
export interface PeerWaitEnd {
  readonly waitedMs: number
  readonly downtimeMs: number
  readonly timedOut: boolean
  /** The wait timed out and this instance moved the generation (not done by another first). */
  readonly invalidated: boolean
}

interface Waiting {
  readonly from: number
  readonly before: number
  readonly started: number
  readonly deadline: number
  /** Redis was replaced: the peers listed before, rather than its members set (null: not). */
  readonly listed: readonly string[] | null
  /**
   * The generation it began in (null: none known yet). A move since ends it — the namespace was
   * invalidated (another instance's wait timed out, a clear(), a recovery's bump): nothing older
   * is reachable — and a timeout invalidates from it, so several waits move it once.
   */
  readonly generation: string | null
  /** The announcement of this wait in Redis, removed when it ends (null: none). */
  readonly announced: string | null
  downtimeMs: number
  timer: NodeJS.Timeout | null
}

/**
 * Start of the window of peers a wait counts (server ms): those marked in the PEER_ALIVE_MS
 * before `anchor` — this instance's last clean mark before its outage, or for an instance that
 * has none (it starts) the namespace's calm time (see windowAnchor).
 */
export function windowFrom(anchor: number): number {
  return anchor - PEER_ALIVE_MS
}

/**
 * The end of the window of peers an instance that starts waits for (server ms): the
 * namespace's calm time — the last clean mark of an instance in no peer wait — if earlier than
 * `at` (this instance's first mark), else `at`. While every instance is cut off (or gone) the
 * calm time is the start of their outage, however long ago: a peer alive then is waited for,
 * not only one marked in the last PEER_ALIVE_MS.
 */
export function windowAnchor(calmAt: number | null, at: number): number {
  return calmAt === null ? at : Math.min(calmAt, at)
}

/**
 * The peer wait. When processes lose Redis together they do not come back together; until
 * every instance alive just before the outage has deleted, in Redis, the keys it changed in
 * memory meanwhile, Redis still holds their old values. After its own recovery an instance
 * therefore keeps its reads off Redis until none of those instances is left unconfirmed (a
 * clean mark in [from, before) and none since) — or until `peerWaitMs`. When Redis was replaced
 * (restarted from older data, failed over to a replica), its members set may be older than the
 * outage: the peers are then the ones this instance listed before it (see GenerationKeeper).
 * A peer still unconfirmed at the deadline may be alive but cut off, or dead — closed or killed
 * while Redis was down, its list of keys to delete gone with it: by default the wait then
 * invalidates the whole namespace (a new generation, unless another instance moved it first)
 * before reads return to Redis, so that no value it changed is served again (a cold cache is
 * the price). (A peer whose recovery
 * bumped the generation is seen by the very next operation here: every operation on a data key
 * checks the generation in the same round trip, see RedisStore.)
 */
export class PeerWait {
  readonly #deps: PeerWaitDeps
  #waiting: Waiting | null = null
  waits = 0
  timeouts = 0

  constructor(deps: PeerWaitDeps) {
    this.#deps = deps
  }

  get waiting(): boolean {
    return this.#waiting !== null
  }

  /**
   * Start a wait after this instance's reconciliation marked it clean at server time `at`;
   * `anchor` is its last mark before the outage, or the namespace's calm time at start-up (see
   * windowAnchor): the peers marked in the PEER_ALIVE_MS before it are waited for. `listed`: Redis was
   * replaced (restarted, failed over) and may have forgotten marks and writes — wait for each
   * of these peers (listed before the outage) to mark itself clean on it.
   */
  begin(
    at: number,
    anchor: number,
    listed: readonly string[] | null = null,
    announced: string | null = null,
  ): void {
    this.stop()
    const started = performance.now()
    this.#waiting = {
      from: windowFrom(anchor),
      before: at,
      started,
      deadline: started + this.#deps.peerWaitMs,
      listed,
      generation: this.#deps.redis.generation,
      announced,
      downtimeMs: 0,
      timer: null,
    }
  }

  /**
   * An instance that joins while another one's wait is in progress (a cache created, or a
   * process started, just after Redis returned) waits for the same peers until the same
   * deadline: else it would read from Redis what a peer still unconfirmed has changed — or, if
   * that peer died, what the other's wait is about to invalidate. It ends early if the
   * generation moves (the invalidation happened: nothing older is reachable).
   */
  join(joined: JoinedWait, onEnd: (end: PeerWaitEnd) => void): void {
    this.adopt(joined)
    const wait = this.#waiting
    if (wait !== null) this.#poll(wait, onEnd)
  }

  /** As join(), polled from the next `poll()` (a recovery step: the monitor is not up yet). */
  adopt(joined: JoinedWait): void {
    this.stop()
    const started = performance.now()
    this.#waiting = {
      from: joined.from,
      before: joined.before,
      started,
      deadline: started + joined.remainingMs,
      listed: joined.listed,
      generation: joined.generation,
      announced: joined.value,
      downtimeMs: 0,
      timer: null,
    }
  }

  /** The monitor is up: count the peers until the wait can end; `onEnd` is called once. */
  poll(downtimeMs: number, onEnd: (end: PeerWaitEnd) => void): void {
    const wait = this.#waiting
    if (wait === null) return
    wait.downtimeMs = downtimeMs
    this.#poll(wait, onEnd)
  }

  stop(): void {
    const wait = this.#waiting
    if (wait === null) return
    if (wait.timer !== null) clearTimeout(wait.timer)
    this.#waiting = null
  }

  #poll(wait: Waiting, onEnd: (end: PeerWaitEnd) => void): void {
    if (this.#waiting !== wait || !this.#deps.available()) return
    const next = (waitingFor: { unconfirmed: number } | null): void => {
      if (this.#waiting !== wait) return
      const moved = wait.generation !== null && this.#deps.redis.generation !== wait.generation
      const clean = moved || (waitingFor !== null && waitingFor.unconfirmed === 0)
      if (clean) {
        this.#end(wait, null, false, onEnd)
      } else if (performance.now() >= wait.deadline) {
        this.#timedOut(wait, waitingFor ?? false, onEnd)
      } else {
        wait.timer = setTimeout(() => this.#poll(wait, onEnd), PEER_POLL_MS)
      }
    }
    const { redis, run } = this.#deps
    const counted =
      wait.listed === null
        ? redis.peers(wait.from, wait.before, run)
        : redis.listedPeers(wait.from, wait.before, wait.listed, run)
    counted.then(
      (reply) => next(reply),
      (error: unknown) => {
        // An outage ends the wait (stop); anything else is retried until the deadline.
        this.#deps.background(error)
        next(null)
      },
    )
  }

  /** The deadline passed with peers unconfirmed: invalidate first (by default), then end. */
  #timedOut(
    wait: Waiting,
    left: { unconfirmed: number } | false,
    onEnd: (end: PeerWaitEnd) => void,
  ): void {
    if (this.#deps.onTimeout === 'read') {
      this.#end(wait, left, false, onEnd)
      return
    }
    const { redis, run } = this.#deps
    redis.bumpGenerationFrom(run, wait.generation ?? redis.generation).then(
      (moved) => {
        if (this.#waiting === wait) this.#end(wait, left, moved, onEnd)
      },
      (error: unknown) => {
        // Reads stay off Redis; an outage ends the wait, anything else is tried again.
        this.#deps.background(error)
        if (this.#waiting !== wait) return
        wait.timer = setTimeout(() => this.#poll(wait, onEnd), PEER_POLL_MS)
      },
    )
  }

  #end(
    wait: Waiting,
    left: { unconfirmed: number } | null | false,
    invalidated: boolean,
    onEnd: (end: PeerWaitEnd) => void,
  ): void {
    this.stop()
    this.waits++
    if (wait.announced !== null) {
      // Instances that join from now on need not wait.
      this.#deps.redis
        .endWait(wait.announced, this.#deps.run)
        .catch((error: unknown) => this.#deps.background(error))
    }
    if (left !== null) {
      this.timeouts++
      this.#deps.logger.warn(
        {
          namespace: this.#deps.namespace,
          peerWaitMs: this.#deps.peerWaitMs,
          unconfirmedPeers: left === false ? null : left.unconfirmed,
          invalidated,
        },
        this.#deps.onTimeout === 'read'
          ? 'other instances of this cache have not confirmed their reconciliation; reading from Redis anyway'
          : 'other instances of this cache have not confirmed their reconciliation; the namespace was invalidated before reading from Redis',
      )
    }
    onEnd({
      waitedMs: performance.now() - wait.started,
      downtimeMs: wait.downtimeMs,
      timedOut: left !== null,
      invalidated,
    })
  }
}
