// Seed → schedule: a pure function (no clock, no I/O, no global state). The same seed and the
// same options give the same schedule, which is how `npm run check -- --seed N` replays a run.
import { FAULT_KINDS, faultKind, type FaultStep, type Lane, type PlanContext } from './faults.js'
import { Rng } from './prng.js'

export type Role = 'web' | 'worker'

export interface ProcessPlan {
  /** Base name: the proxy and the faults use it; incarnations are `<base>.<n>`. */
  base: string
  role: Role
  /** Date.now() / new Date() shifted by this much in the child (hrtime untouched). */
  clockOffsetMs: number
  /** Seed of the child's own load generator (incarnation n uses seed + n). */
  seed: number
}

export interface LoadPlan {
  cacheKeys: number
  cacheClients: number
  cacheThinkMs: [number, number]
  /** Share of cache operations that are clear(). */
  clearShare: number
  memoryMode: 'warm' | 'fallback'
  dispatchEveryMs: [number, number]
  maxInFlightDispatches: number
  /** Share of dispatches with an idempotency key from a pool shared by every process. */
  keyShare: number
  keyPool: number
  /** Share of dispatches with a BullMQ priority (1–5), and with a delay (50 ms to maxDelayMs). */
  priorityShare: number
  delayShare: number
  maxDelayMs: number
  quickHandlerMs: [number, number]
  /** The 'long' task: longer than most outages and than a short worker lock. */
  longHandlerMs: number
  sendEveryMs: [number, number]
  membersPerWeb: number
  membersPerWorker: number
}

export interface WorkPlan {
  concurrency: number
  lockDurationMs?: number
  stalledIntervalMs?: number
}

export interface Schedule {
  seed: number
  /** Length of the load phase, ms (faults all end before it does). */
  durationMs: number
  processes: ProcessPlan[]
  work: WorkPlan
  load: LoadPlan
  faults: FaultStep[]
  /** The fault kinds this schedule could draw from. */
  kinds: string[]
}

export interface ScheduleOptions {
  durationMs?: number
  /** Kind names to draw from (default: every kind on by default). */
  kinds?: readonly string[]
}

export const DEFAULT_DURATION_MS = 10_000
const WARMUP_MS = 1000
const TAIL_MS = 800
const GAPS: Record<Lane, [number, number]> = {
  server: [400, 2500],
  network: [400, 3000],
  client: [800, 3500],
}

export function makeSchedule(seed: number, options: ScheduleOptions = {}): Schedule {
  const durationMs = options.durationMs ?? DEFAULT_DURATION_MS
  const kinds = [...(options.kinds ?? FAULT_KINDS.filter((k) => k.defaultOn).map((k) => k.name))]
  const rng = new Rng(seed)
  const shape = rng.fork('shape')

  const withOffsets = shape.chance(0.5)
  const offset = (): number =>
    withOffsets && shape.chance(0.6) ? (shape.chance(0.5) ? -1 : 1) * shape.int(1000, 5000) : 0
  const names: Array<[string, Role]> = [
    ['web1', 'web'],
    ['web2', 'web'],
    ['worker1', 'worker'],
  ]
  if (shape.chance(0.5)) names.push(['worker2', 'worker'])
  const processes: ProcessPlan[] = names.map(([base, role]) => ({
    base,
    role,
    clockOffsetMs: offset(),
    seed: shape.int(1, 2 ** 31 - 1),
  }))

  const shortLock = shape.chance(0.4)
  const work: WorkPlan = shortLock
    ? { concurrency: 8, lockDurationMs: 1000, stalledIntervalMs: 500 }
    : { concurrency: 8 }
  const load: LoadPlan = {
    cacheKeys: 6,
    cacheClients: 2,
    cacheThinkMs: [4, 20],
    clearShare: shape.chance(0.5) ? 0.004 : 0,
    memoryMode: shape.chance(0.7) ? 'warm' : 'fallback',
    dispatchEveryMs: [50, 150],
    maxInFlightDispatches: 6,
    keyShare: 0.25,
    keyPool: 24,
    priorityShare: 0.3,
    delayShare: 0.15,
    maxDelayMs: 600,
    quickHandlerMs: [2, 25],
    longHandlerMs: shape.int(1200, 3500),
    sendEveryMs: [50, 120],
    membersPerWeb: 2,
    membersPerWorker: 1,
  }

  const ctx: PlanContext = {
    bases: processes.map((p) => p.base),
    webs: processes.filter((p) => p.role === 'web').map((p) => p.base),
    workers: processes.filter((p) => p.role === 'worker').map((p) => p.base),
  }
  const faults: FaultStep[] = []
  let n = 0
  for (const lane of ['server', 'network', 'client'] as const) {
    const laneRng = rng.fork(`lane:${lane}`)
    const laneKinds = kinds.map(faultKind).filter((k) => k.lane === lane)
    if (laneKinds.length === 0) continue
    let t = WARMUP_MS
    for (;;) {
      const gap = laneRng.int(GAPS[lane][0], GAPS[lane][1])
      const kind = laneRng.weighted(laneKinds.map((k) => ({ item: k, weight: k.weight })))
      const planned = kind.plan(laneRng.fork(`${lane}:${faults.length}`), ctx)
      if (t + gap + planned.durationMs > durationMs - TAIL_MS) break
      faults.push({
        id: `f${++n}`,
        kind: kind.name,
        lane,
        atMs: t + gap,
        durationMs: planned.durationMs,
        ...(planned.target !== undefined && { target: planned.target }),
        params: planned.params,
      })
      t += gap + planned.durationMs
    }
  }
  faults.sort((a, b) => a.atMs - b.atMs)
  return { seed, durationMs, processes, work, load, faults, kinds }
}

/** A one-line summary per fault, for logs and reports. */
export function describeSchedule(s: Schedule): string[] {
  const procs = s.processes
    .map(
      (p) =>
        `${p.base}(${p.role}${p.clockOffsetMs !== 0 ? `, clock ${p.clockOffsetMs > 0 ? '+' : ''}${p.clockOffsetMs} ms` : ''})`,
    )
    .join(' ')
  const lines = [
    `seed ${s.seed}: ${s.durationMs} ms load; ${procs}; worker lock ${s.work.lockDurationMs ?? 'default'}/${s.work.stalledIntervalMs ?? 'default'} ms, long handler ${s.load.longHandlerMs} ms, cache ${s.load.memoryMode}${s.load.clearShare > 0 ? ' + clear()' : ''}`,
  ]
  for (const f of s.faults) {
    const params = Object.entries(f.params)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ')
    lines.push(
      `  ${String(f.atMs).padStart(6)} ms  ${f.lane.padEnd(7)} ${f.kind}${f.target !== undefined ? ` @${f.target}` : ''} ${params}`,
    )
  }
  return lines
}
