// A violation and its minimal failing history: only the events involved (the operations that
// make it a violation), plus the health transitions and forceFallback switches of the processes
// involved, the faults and "Redis answers again" moments around them, and their lifecycle.
import type { HistoryEvent } from './events.js'
import { History, ms, type OpRecord } from './history.js'

/**
 * 'violation': breaks a guarantee of the spec (exit code 1).
 * 'documented': breaks the spec's wording but is a limitation the library documents (counted
 * and reported; fails the run only with --strict).
 */
export type Severity = 'violation' | 'documented'

export interface Violation {
  invariant: string
  severity: Severity
  message: string
  /** The minimal failing history, in time order. */
  events: HistoryEvent[]
}

/** Events of a list of operations (invoke and completion). */
export function opEvents(...ops: Array<OpRecord | undefined>): HistoryEvent[] {
  const out: HistoryEvent[] = []
  for (const op of ops) {
    if (op === undefined) continue
    out.push(op.invoke)
    if (op.done !== undefined) out.push(op.done)
  }
  return out
}

/**
 * The context of the core events: for each process involved, its health transitions, force
 * switches and lifecycle inside the window; every fault that overlaps the window and concerns
 * one of them; 'redis-answers' of their paths inside the window.
 */
export function withContext(
  h: History,
  core: readonly HistoryEvent[],
  options: { processes?: readonly string[]; before?: bigint; after?: bigint } = {},
): HistoryEvent[] {
  if (core.length === 0) return []
  const before = options.before ?? ms(1000)
  const after = options.after ?? ms(200)
  // Windows around each core event, merged: a violation spanning seconds keeps only what
  // happened near the events that make it one.
  const points = [...core].map((e) => e.t).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))
  const windows: Array<[bigint, bigint]> = []
  for (const t of points) {
    const last = windows.at(-1)
    if (last !== undefined && t - before <= last[1]) last[1] = t + after
    else windows.push([t - before, t + after])
  }
  const inWindow = (t: bigint): boolean => windows.some(([a, b]) => t >= a && t <= b)
  const overlaps = (a: bigint, b: bigint): boolean => windows.some(([x, y]) => a <= y && b >= x)
  const names = new Set(options.processes ?? core.map((e) => e.process))
  names.delete('harness')
  const bases = new Set([...names].map((n) => h.proc(n)?.base ?? n))
  const out = new Set<HistoryEvent>(core)
  for (const name of names) {
    const p = h.proc(name)
    if (p === undefined) continue
    for (const tr of p.transitions) if (inWindow(tr.t)) out.add(tr.event)
    for (const e of p.forceEvents) if (inWindow(e.t)) out.add(e)
    for (const e of p.lifecycle)
      if (inWindow(e.t) && e.op !== 'start' && e.op !== 'ready') out.add(e)
  }
  for (const f of h.faults) {
    if (!overlaps(f.start, f.end)) continue
    if (![...bases].some((base) => History.affects(f, base))) continue
    out.add(f.startEvent)
    if (f.endEvent !== undefined) out.add(f.endEvent)
  }
  for (const ans of h.answers) {
    if (inWindow(ans.t) && bases.has(ans.path)) out.add(ans.event)
  }
  return [...out].sort((x, y) => (x.t < y.t ? -1 : x.t > y.t ? 1 : 0))
}

const SKIP = new Set(['kind', 'process', 'op', 't', 'opId'])

/** One line per event: relative time (ms), process, kind, op, the other fields. */
export function formatEvents(h: History, events: readonly HistoryEvent[]): string[] {
  return events.map((e) => {
    const fields = Object.entries(e)
      .filter(([k]) => !SKIP.has(k))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ')
    const time = h.rel(e.t).toFixed(1).padStart(9)
    const id = e.opId !== undefined ? `#${e.opId}` : ''
    return `${time} ms  ${e.process.padEnd(10)} ${e.kind.padEnd(6)} ${e.op}${id} ${fields}`
  })
}

export function formatViolation(h: History, v: Violation): string {
  const seed = h.seed !== undefined ? `seed ${h.seed}: ` : ''
  const tag = v.severity === 'documented' ? ' (documented limitation)' : ''
  return [
    `${seed}${v.invariant}${tag}: ${v.message}`,
    ...formatEvents(h, v.events).map((l) => `  ${l}`),
  ].join('\n')
}
