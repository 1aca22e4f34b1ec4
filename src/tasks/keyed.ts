import type { Runner } from '../health/types.js'
import { DONE, LeaseKeeper, runToken, type TaskClaims } from './claims.js'

/** One idempotency key run inline in this process. */
export interface KeyedRun {
  state: 'running' | 'done'
  /** The run's lease in Redis, once Redis answered while it ran (a recovery, or up). */
  keeper: LeaseKeeper | null
  /** Succeeded, and its DONE marker is not in Redis yet. */
  markerPending: boolean
  /** A done run is remembered here until then (ms since the epoch), its marker in Redis after. */
  expiresAt: number
}

/**
 * The idempotency keys this process ran inline, so that none runs twice:
 * - while it runs, a repeat of the key here is a duplicate (Redis down or up);
 * - once Redis answers (a recovery step, before 'up'), the run takes the key's lease in Redis,
 *   so a worker anywhere defers a queued copy until it ends;
 * - once it succeeded, its DONE marker reaches Redis before the state returns to 'up' (or at
 *   once if it ends while up), and the key is remembered here for `doneTtlMs` anyway, so a
 *   repeat during a later outage is still a duplicate.
 * Bounded: past `max` keys the oldest done one is forgotten (and, if its marker was not written
 * yet, counted as lost).
 */
export class KeyedRuns {
  readonly #runs = new Map<string, KeyedRun>()
  readonly #max: number
  /** Done keys forgotten before their marker reached Redis. */
  markersLost = 0

  constructor(max: number) {
    this.#max = max
  }

  /** True when the key ran or runs here (and is still remembered). */
  has(id: string, now = Date.now()): boolean {
    const run = this.#runs.get(id)
    if (run === undefined) return false
    if (run.state === 'done' && !run.markerPending && run.expiresAt <= now) {
      this.#runs.delete(id)
      return false
    }
    return true
  }

  get(id: string): KeyedRun | undefined {
    return this.#runs.get(id)
  }

  start(id: string): KeyedRun {
    const run: KeyedRun = { state: 'running', keeper: null, markerPending: false, expiresAt: 0 }
    this.#runs.delete(id)
    this.#runs.set(id, run)
    this.#trim()
    return run
  }

  /** The run succeeded: its marker is to be written (unless memory-only); remembered for `rememberMs`. */
  succeeded(id: string, rememberMs: number, markerPending: boolean): void {
    const run = this.#runs.get(id)
    if (run === undefined) return
    run.keeper?.stop()
    run.keeper = null
    run.state = 'done'
    run.markerPending = markerPending
    run.expiresAt = Date.now() + rememberMs
  }

  /** The run failed for good: the key may be dispatched again. */
  failed(id: string): void {
    this.#runs.get(id)?.keeper?.stop()
    this.#runs.delete(id)
  }

  /**
   * Redis may have forgotten the markers already written (a rollback): every done run still
   * remembered writes its marker again (in the recovery step, before 'up').
   */
  rollback(): void {
    for (const run of this.#runs.values()) if (run.state === 'done') run.markerPending = true
  }

  markerWritten(id: string): void {
    const run = this.#runs.get(id)
    if (run !== undefined) run.markerPending = false
  }

  /** Done keys whose marker is not in Redis yet. */
  pendingMarkers(): string[] {
    const out: string[] = []
    for (const [id, run] of this.#runs) if (run.markerPending) out.push(id)
    return out
  }

  /** Running keys that hold no lease in Redis yet. */
  unleased(): Array<[string, KeyedRun]> {
    const out: Array<[string, KeyedRun]> = []
    for (const entry of this.#runs)
      if (entry[1].state === 'running' && entry[1].keeper === null) out.push(entry)
    return out
  }

  get pendingCount(): number {
    let n = 0
    for (const run of this.#runs.values()) if (run.markerPending) n++
    return n
  }

  get needsRedis(): boolean {
    for (const run of this.#runs.values()) {
      if (run.markerPending || (run.state === 'running' && run.keeper === null)) return true
    }
    return false
  }

  close(): void {
    for (const run of this.#runs.values()) run.keeper?.stop()
  }

  /**
   * DONE markers of the keys that succeeded while Redis could not take them — before any
   * replay, so a replayed or queued copy of the key is skipped. A marker Redis refuses (OOM…)
   * stays to be written and the refusal is thrown (the replay waits for it).
   */
  async writeMarkers(run: Runner, claims: TaskClaims, ttlMs: number): Promise<void> {
    const ids = this.pendingMarkers()
    if (ids.length === 0) return
    const results = await run((redis) => {
      const pipeline = redis.pipeline()
      for (const id of ids) pipeline.set(claims.key(id), DONE, 'PX', ttlMs)
      return pipeline.exec()
    })
    let refused: unknown = null
    ids.forEach((id, i) => {
      const error = results?.[i]?.[0]
      if (error === null || error === undefined) this.markerWritten(id)
      else refused ??= error
    })
    if (refused !== null) throw refused
  }

  /**
   * Give every running key that holds no lease yet its lease in Redis (a recovery step, or a
   * run started while up), so a worker anywhere defers a queued copy of the key until the run
   * ends. A key Redis says is done or held ran elsewhere too while this process could not see
   * it (both were cut off from each other): reported through `onConflict`, nothing else to do.
   */
  async takeLeases(
    run: Runner,
    claims: TaskClaims,
    keep: (id: string, token: string) => LeaseKeeper,
    onConflict: (id: string, redis: 'done' | 'busy') => void,
  ): Promise<void> {
    for (const [id, entry] of this.unleased()) {
      const token = runToken()
      const outcome = await run((redis) => claims.claim(redis, id, token))
      if (entry.state !== 'running' || entry.keeper !== null) continue
      if (outcome.kind !== 'claimed') onConflict(id, outcome.kind)
      entry.keeper = keep(id, token)
    }
  }

  #trim(): void {
    if (this.#runs.size <= this.#max) return
    for (const [id, run] of this.#runs) {
      if (this.#runs.size <= this.#max) break
      if (run.state !== 'done') continue
      if (run.markerPending) this.markersLost++
      this.#runs.delete(id)
    }
  }
}
