// An index over a merged history: processes and their health timelines, faults as intervals,
// operations as invoke/complete pairs. Every invariant module reads the history through this.
import type { HistoryEvent } from './events.js'

/** A time after every event of a run (bigint nanoseconds). */
export const INF = 2n ** 62n
export const MS = 1_000_000n

export const ms = (n: number): bigint => BigInt(Math.round(n)) * MS

export interface Interval {
  start: bigint
  end: bigint
}

export interface FaultRecord {
  id: string
  fault: string
  /** Base names of the processes whose path to Redis it affects; '*' = all. */
  targets: string[]
  /** Redis does not answer this process while it lasts (it may go down). */
  outage: boolean
  /** A slow but answering link: must NOT take the process down. */
  slow: boolean
  /** Redis lost (some of) its data: queued jobs and done markers may be gone. */
  dataLoss: boolean
  /** The process must notice it (go down) while it lasts. */
  expectDown: boolean
  /** Redis answers but refuses writes (maxmemory): not an outage; a recovery that writes waits. */
  writesRefused: boolean
  start: bigint
  /** INF if the history has no end for it. */
  end: bigint
  startEvent: HistoryEvent
  endEvent: HistoryEvent | undefined
}

export interface Transition {
  t: bigint
  state: 'up' | 'down'
  forced: boolean
  event: HistoryEvent
}

export interface ProcessRecord {
  /** The incarnation: 'web1.2' is web1 after its first restart. */
  name: string
  base: string
  role: string
  /** Its first event (or the harness' spawn). */
  start: bigint
  ready: bigint | undefined
  /** When it stopped existing: SIGKILLed by the harness, crashed, or exited at the close. INF if never seen to stop. */
  death: bigint
  /** SIGKILLed by the harness (a fault), as opposed to the orderly close at the end. */
  killed: boolean
  transitions: Transition[]
  /** forceFallback(true) … forceFallback(false) as this process recorded them. */
  forced: Interval[]
  forceEvents: HistoryEvent[]
  lifecycle: HistoryEvent[]
}

/** One operation: its invoke, and its ok or fail (if it completed before the process died). */
export interface OpRecord {
  process: string
  op: string
  opId: number
  invoke: HistoryEvent
  done: HistoryEvent | undefined
  ok: boolean
  invokeT: bigint
  /** INF when it never completed. */
  completeT: bigint
}

export interface Answer {
  t: bigint
  path: string
  event: HistoryEvent
}

export class History {
  readonly events: HistoryEvent[]
  /** The first event (the harness' 'run', normally). */
  readonly t0: bigint
  /** The last event of the run. */
  readonly end: bigint
  /** Start of the harness' 'load' phase and 'drain' phase, when known. */
  readonly loadStart: bigint
  readonly drainStart: bigint
  readonly closeStart: bigint
  readonly seed: number | undefined
  readonly processes = new Map<string, ProcessRecord>()
  readonly faults: FaultRecord[] = []
  readonly answers: Answer[] = []
  /**
   * The harness' own direct PING to Redis took ≥ 150 ms with no server fault playing
   * ('redis-stall'), or the harness' event loop, which carries every proxy, stalled as long
   * ('harness-stall'): an outage nobody injected.
   */
  readonly stalls: Array<Interval & { event: HistoryEvent }> = []
  readonly ops: OpRecord[] = []
  readonly byOp = new Map<string, OpRecord[]>()

  constructor(events: readonly HistoryEvent[]) {
    this.events = [...events].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
    this.t0 = this.events[0]?.t ?? 0n
    this.end = this.events.at(-1)?.t ?? 0n
    let loadStart = this.t0
    let drainStart = INF
    let closeStart = INF
    let seed: number | undefined
    const openOps = new Map<string, OpRecord>()
    const faultById = new Map<string, FaultRecord>()
    for (const e of this.events) {
      if (e.process === 'harness') {
        switch (e.op) {
          case 'run':
            if (typeof e['seed'] === 'number') seed = e['seed']
            break
          case 'phase':
            if (e['phase'] === 'load') loadStart = e.t
            if (e['phase'] === 'drain') drainStart = e.t
            if (e['phase'] === 'close') closeStart = e.t
            break
          case 'fault-start': {
            const f: FaultRecord = {
              id: String(e['faultId']),
              fault: String(e['fault']),
              targets: Array.isArray(e['targets'])
                ? (e['targets'] as unknown[]).map(String)
                : ['*'],
              outage: e['outage'] === true,
              slow: e['slow'] === true,
              dataLoss: e['dataLoss'] === true,
              expectDown: e['expectDown'] === true,
              writesRefused: e['writesRefused'] === true,
              start: e.t,
              end: INF,
              startEvent: e,
              endEvent: undefined,
            }
            this.faults.push(f)
            faultById.set(f.id, f)
            break
          }
          case 'fault-end': {
            const f = faultById.get(String(e['faultId']))
            if (f !== undefined) {
              f.end = e.t
              f.endEvent = e
            }
            break
          }
          case 'redis-answers':
            this.answers.push({ t: e.t, path: String(e['path']), event: e })
            break
          case 'redis-stall':
          case 'harness-stall':
            if (typeof e['sentT'] === 'string') {
              this.stalls.push({ start: BigInt(e['sentT']), end: e.t, event: e })
            }
            break
          case 'child-spawn': {
            const p = this.#proc(String(e['child']), e)
            p.base = String(e['base'] ?? p.base)
            p.role = String(e['role'] ?? p.role)
            if (e.t < p.start) p.start = e.t
            p.lifecycle.push(e)
            break
          }
          case 'child-kill': {
            const p = this.#proc(String(e['child']), e)
            if (e.t < p.death) p.death = e.t
            p.killed = true
            p.lifecycle.push(e)
            break
          }
          case 'child-exit': {
            const p = this.#proc(String(e['child']), e)
            if (e.t < p.death) p.death = e.t
            if (e['expected'] !== true) p.killed = true
            p.lifecycle.push(e)
            break
          }
        }
        continue
      }
      const p = this.#proc(e.process, e)
      switch (e.op) {
        case 'start':
          p.base = String(e['base'] ?? p.base)
          p.role = String(e['role'] ?? p.role)
          p.lifecycle.push(e)
          break
        case 'ready':
          p.ready ??= e.t
          p.lifecycle.push(e)
          break
        case 'health': {
          const state = e['state']
          if (state === 'up' || state === 'down') {
            p.transitions.push({ t: e.t, state, forced: e['forced'] === true, event: e })
          }
          break
        }
        case 'force': {
          p.forceEvents.push(e)
          const last = p.forced.at(-1)
          if (e['on'] === true) {
            if (last === undefined || last.end !== INF) p.forced.push({ start: e.t, end: INF })
          } else if (last !== undefined && last.end === INF) {
            last.end = e.t
          }
          break
        }
        case 'crash':
          p.lifecycle.push(e)
          break
      }
      if (
        typeof e.opId === 'number' &&
        (e.kind === 'invoke' || e.kind === 'ok' || e.kind === 'fail')
      ) {
        const k = `${e.process}\u0000${e.opId}`
        if (e.kind === 'invoke') {
          const rec: OpRecord = {
            process: e.process,
            op: e.op,
            opId: e.opId,
            invoke: e,
            done: undefined,
            ok: false,
            invokeT: e.t,
            completeT: INF,
          }
          openOps.set(k, rec)
          this.ops.push(rec)
          let list = this.byOp.get(e.op)
          if (list === undefined) this.byOp.set(e.op, (list = []))
          list.push(rec)
        } else {
          const rec = openOps.get(k)
          if (rec !== undefined) {
            rec.done = e
            rec.ok = e.kind === 'ok'
            rec.completeT = e.t
            openOps.delete(k)
          }
        }
      }
    }
    this.loadStart = loadStart
    this.drainStart = drainStart
    this.closeStart = closeStart
    this.seed = seed
  }

  #proc(name: string, e: HistoryEvent): ProcessRecord {
    let p = this.processes.get(name)
    if (p === undefined) {
      const dot = name.lastIndexOf('.')
      p = {
        name,
        base: dot > 0 ? name.slice(0, dot) : name,
        role: 'unknown',
        start: e.t,
        ready: undefined,
        death: INF,
        killed: false,
        transitions: [],
        forced: [],
        forceEvents: [],
        lifecycle: [],
      }
      this.processes.set(name, p)
    }
    return p
  }

  /** Operations of one kind (e.g. 'cache.get'). */
  opsOf(op: string): OpRecord[] {
    return this.byOp.get(op) ?? []
  }

  /** Health state of a process at time t (from its own 'health' events): 'starting' before the first. */
  stateAt(name: string, t: bigint): 'starting' | 'up' | 'down' {
    const p = this.processes.get(name)
    if (p === undefined) return 'starting'
    let state: 'starting' | 'up' | 'down' = 'starting'
    for (const tr of p.transitions) {
      if (tr.t > t) break
      state = tr.state
    }
    return state
  }

  /** A health transition of the process at a time in [a, b]. */
  transitionIn(name: string, a: bigint, b: bigint): boolean {
    const p = this.processes.get(name)
    return p !== undefined && p.transitions.some((tr) => tr.t >= a && tr.t <= b)
  }

  /** The first 'up' of the process strictly after `after` (and not after `before`). */
  nextUp(name: string, after: bigint, before: bigint = INF): bigint | undefined {
    const p = this.processes.get(name)
    if (p === undefined) return undefined
    for (const tr of p.transitions) {
      if (tr.t > after && tr.t <= before && tr.state === 'up') return tr.t
    }
    return undefined
  }

  /** Up for the whole of [a, b] (no transition inside, up at a). */
  upThroughout(name: string, a: bigint, b: bigint): boolean {
    return this.stateAt(name, a) === 'up' && !this.transitionIn(name, a, b)
  }

  /** forceFallback(true) in effect at some moment of [a, b]. */
  forcedDuring(name: string, a: bigint, b: bigint): boolean {
    const p = this.processes.get(name)
    return p !== undefined && p.forced.some((i) => i.start <= b && i.end >= a)
  }

  /** Whether the fault concerns this base name's path to Redis. */
  static affects(fault: FaultRecord, base: string): boolean {
    return fault.targets.includes('*') || fault.targets.includes(base)
  }

  /** Faults affecting `base` that are active at some moment of [a, b]. */
  faultsDuring(
    base: string,
    a: bigint,
    b: bigint,
    pick?: (f: FaultRecord) => boolean,
  ): FaultRecord[] {
    return this.faults.filter(
      (f) => f.start <= b && f.end >= a && History.affects(f, base) && (pick?.(f) ?? true),
    )
  }

  /** Any harness fault (whatever it targets) active at some moment of [a, b]. */
  anyFaultDuring(a: bigint, b: bigint): FaultRecord[] {
    return this.faults.filter((f) => f.start <= b && f.end >= a)
  }

  /** A fault that lost Redis data (restart empty, FLUSHALL, rollback) starting in [a, b]. */
  dataLossBetween(a: bigint, b: bigint): FaultRecord | undefined {
    return this.faults.find((f) => f.dataLoss && f.start >= a && f.start <= b)
  }

  /** Milliseconds since the start of the run (for reports). */
  rel(t: bigint): number {
    return Number(t - this.t0) / 1e6
  }

  /** The process record, or a throw-free placeholder answer. */
  proc(name: string): ProcessRecord | undefined {
    return this.processes.get(name)
  }
}
