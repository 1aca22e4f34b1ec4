// From what the run recorded to the per-phase table, the targets (PASS / FAIL) and CHAOS.md.
import type { LogScan } from './apps.js'
import type { DispatchSample, HttpSample, LoadData, StatusSample } from './load.js'

export interface PhaseRecord {
  name: string
  kind: 'warmup' | 'gap' | 'fault'
  /** Fault phases: what was done. */
  label?: string
  start: number
  end: number
  /** Fault phases: inject() resolved. */
  injected?: number
  /** Fault phases: heal() called. */
  healStart?: number
  /** Fault phases: heal() resolved — Redis answers again (recovery t0). */
  healed?: number
  /**
   * Fault phases whose heal() waits for the outage to end (a Sentinel failover): the end of the
   * p99-during-the-outage window (default: healStart).
   */
  outageEnd?: number
  /**
   * A failover's new primary (host:port): a process has recovered once it is on Redis AND its
   * failsoft says it is on this node (its health log records), not on the old primary.
   */
  newPrimary?: string
}

/** The primary a process's failsoft said it was on (its health log records), run clock. */
export interface PrimarySample {
  t: number
  app: string
  primary: string
}

/** V8 heap in use per app (MiB), at the end of each warm-up / gap; null when not exported. */
export interface HeapSample {
  t: number
  mib: Record<string, number | null>
}

/** One process's memory right after a full garbage collection (forced through the inspector). */
export interface SettledMemory {
  rssMiB: number | null
  /** V8 heap in use then: the live objects. */
  heapMiB: number | null
}

export interface RssSample {
  t: number
  kib: Record<string, number | null>
}

/** What the database says the tasks did. */
export interface Executions {
  /** outbox rows per task id (send_email) and batch_runs rows per task id (compost). */
  byId: Map<string, number>
  /** outbox rows per subject: one dispatch that ran under two ids shows up here. */
  bySubject: Map<string, number>
}

export interface AppSummary {
  name: string
  pid: number | null
  scan: LogScan
  /** Exit before the harness stopped it (a crash). */
  crashed: string | null
  /** Exit status of the graceful stop at the end. */
  shutdown: string | null
}

/** 'redis': one redis-server behind a proxy; 'sentinel': a Sentinel set (`--sentinel`). */
export type Topology = 'redis' | 'sentinel'

export interface RunInput {
  profile: string
  topology?: Topology
  command: string
  apps: string[]
  phases: PhaseRecord[]
  load: LoadData
  rss: RssSample[]
  heap: HeapSample[]
  /** Memory after a full GC at the end of the warm-up and at the end of the schedule. */
  settled?: { baseline: Record<string, SettledMemory>; final: Record<string, SettledMemory> }
  executions: Executions
  appSummaries: AppSummary[]
  machine: Record<string, string>
  durationS: number
  /** Each app's own counters at the end (GET /api/status: channels, tasks, transitions). */
  finalStatus: Record<string, unknown>
  notes: string[]
  /** Sentinel profile: which primary each process was on. */
  primaries?: PrimarySample[]
}

type PerApp<T> = Record<string, T>

export interface PhaseRow {
  phase: string
  kind: PhaseRecord['kind']
  label?: string
  durationS: number
  http: {
    count: number
    failed: number
    /** Each failed request, so a failure can be diagnosed (status 0: network error or timeout). */
    failures: Array<{
      t: number
      app: string
      op: string
      status: number
      ms: number
      error?: string
    }>
    p50: number | null
    p99: number | null
    /** Fault phases: requests started after every process that went down had detected it, until heal. */
    outage: { count: number; p99: number | null } | null
    served: Record<string, number>
    /** The slowest requests of the phase (of its outage window for a fault). */
    slowest: Array<{
      t: number
      app: string
      op: string
      ms: number
      status: number
      cache?: string
    }>
  }
  ws: {
    sent: number
    expectedSame: number
    lostSame: number
    expectedCross: number
    lostCross: number
    errorFrames: number
  }
  votes: number
  tasks: {
    dispatched: number
    accepted: number
    executed: number
    twice: number
    lost: number
    refused: number
    failedInline: number
    modes: Record<string, number>
    embedModes: Record<string, number>
  }
  stale: { duringOutage: number; afterRecovery: number }
  rssMiB: PerApp<number | null>
  detectionMs: PerApp<number | null>
  /** ms from Redis answering to the process back on Redis; 'up' = it never left Redis. */
  recoveryMs: PerApp<number | 'up' | null>
}

export interface TargetResult {
  target: string
  measured: string
  pass: boolean
}

export interface ChaosReport {
  at: string
  profile: string
  /** Absent in reports written before the Sentinel profile existed: 'redis'. */
  topology?: Topology
  command: string
  durationS: number
  machine: Record<string, string>
  passed: boolean
  phases: PhaseRow[]
  targets: TargetResult[]
  failures: string[]
  healthyP99: number | null
  memory: PerApp<{
    baselineMiB: number | null
    finalMiB: number | null
    maxMiB: number | null
    /** V8 heap used after warm-up / at the end, when the app exports it. */
    heapBaselineMiB: number | null
    heapFinalMiB: number | null
    /** After a full GC, at the end of the warm-up and at the end of the schedule. */
    settledBaseline: SettledMemory | null
    settledFinal: SettledMemory | null
  }>
  logs: AppSummary[]
  staleReads: LoadData['stale']
  taskProblems: Array<DispatchSample & { problem: string; rows: number }>
  wsClientsClosed: Array<{ client: string; t: number; code: number }>
  /** Every change of a process's state as the status samples saw it (t in s). */
  transitions: Array<{ t: number; app: string; state: string; source: string }>
  finalStatus: Record<string, unknown>
  /** Each phase's time span (run clock, ms). */
  phaseBounds: Array<{ phase: string; start: number; end: number }>
  notes: string[]
}

/** p99 during an outage may exceed the healthy p99 by at most this much (ms). */
export const P99_MARGIN_MS = 5
/** Every recovery within this (ms). */
export const RECOVERY_LIMIT_MS = 1000
/**
 * Memory after a full GC at the end of the schedule: at most this many times what it was after
 * the warm-up (RSS, and V8 heap in use).
 */
export const MEMORY_GROWTH_LIMIT = 1.3
/** Fewer requests than this in an outage window: no p99 worth the name. */
const MIN_OUTAGE_SAMPLES = 50

// 'local': the app's "Recompute now" while Redis is unavailable (the batch ran in the process).
const ACCEPTED = new Set(['queued', 'inline', 'spooled', 'deferred', 'local'])
const REFUSED = new Set(['dropped', 'rejected'])

export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[index] ?? null
}

const inPhase = (t: number, phase: PhaseRecord): boolean => t >= phase.start && t < phase.end
const failed = (s: HttpSample): boolean => s.status < 200 || s.status >= 400
const round = (n: number | null, digits = 1): number | null =>
  n === null ? null : Math.round(n * 10 ** digits) / 10 ** digits
const count = (into: Record<string, number>, key: string): void => {
  into[key] = (into[key] ?? 0) + 1
}

/** Status samples of one app, in time order. */
function timeline(status: StatusSample[], app: string): StatusSample[] {
  return status.filter((s) => s.app === app).sort((a, b) => a.t - b.t)
}

function transitions(status: StatusSample[], apps: string[]): ChaosReport['transitions'] {
  const out: ChaosReport['transitions'] = []
  for (const app of apps) {
    let last = ''
    for (const s of timeline(status, app)) {
      const state = !s.available
        ? `off Redis (${s.state})`
        : s.allRedis
          ? 'on Redis'
          : 'up, not every component on Redis'
      if (state === last) continue
      last = state
      out.push({ t: Math.round(s.t) / 1000, app, state, source: s.source })
    }
  }
  return out.sort((a, b) => a.t - b.t)
}

/** First time the app was seen down in the phase, relative to the fault's start. */
function detection(samples: StatusSample[], phase: PhaseRecord): number | null {
  const down = samples.find((s) => inPhase(s.t, phase) && !s.available)
  return down === undefined ? null : down.t - phase.start
}

/** Recovery: the first "on Redis, every component" sample after the last "down" one, minus t0. */
function recovery(samples: StatusSample[], phase: PhaseRecord): number | 'up' | null {
  const t0 = phase.healed ?? phase.end
  const window = samples.filter((s) => inPhase(s.t, phase))
  const downs = window.filter((s) => !s.available || !s.allRedis)
  if (downs.length === 0) return 'up'
  const lastDown = downs[downs.length - 1] as StatusSample
  const back = window.find((s) => s.t > lastDown.t && s.available && s.allRedis)
  if (back === undefined) return null
  return Math.max(0, back.t - t0)
}

/**
 * Sentinel faults: the first record after the fault's start in which the process names the new
 * primary, before `bound` (the next fault); null if none. Relative to t0, at least 0.
 */
function onNewPrimary(
  primaries: PrimarySample[],
  app: string,
  phase: PhaseRecord,
  bound: number,
): number | null {
  const t0 = phase.healed ?? phase.end
  const first = primaries.find(
    (p) => p.app === app && p.t >= phase.start && p.t < bound && p.primary === phase.newPrimary,
  )
  return first === undefined ? null : Math.max(0, first.t - t0)
}

function rssAt(rss: RssSample[], t: number, app: string): number | null {
  let value: number | null = null
  for (const sample of rss) {
    if (sample.t > t) break
    const kib = sample.kib[app]
    if (kib !== undefined && kib !== null) value = kib
  }
  return value === null ? null : Math.round((value / 1024) * 10) / 10
}

/**
 * Median RSS over the last 5 s of a phase (at most its second half), in MiB: one sample is
 * at the mercy of the garbage collector's timing (±10 MiB seen between two samples).
 */
function rssMedian(rss: RssSample[], phase: PhaseRecord, app: string): number | null {
  const from = phase.end - Math.min(5000, (phase.end - phase.start) / 2)
  const values = rss
    .filter((s) => s.t >= from && s.t <= phase.end)
    .map((s) => s.kib[app])
    .filter((v): v is number => typeof v === 'number')
  const median = percentile(values, 50)
  return median === null ? rssAt(rss, phase.end, app) : Math.round((median / 1024) * 10) / 10
}

export function buildReport(input: RunInput): ChaosReport {
  const { load, phases, apps, executions } = input
  const timelines = new Map(apps.map((app) => [app, timeline(load.status, app)]))
  const chatApp = new Map(load.chatClients.map((c) => [c.index, c.app]))
  const rows: PhaseRow[] = []

  // Which dispatches ran, which ran twice (by id, and by the unique subject of an email).
  const taskProblems: ChaosReport['taskProblems'] = []
  const tracked = (d: DispatchSample): boolean =>
    d.kind === 'email' || d.kind === 'welcome' || d.kind === 'compost'
  const verdict = (d: DispatchSample): 'executed' | 'twice' | 'lost' | 'refused' | 'failed' => {
    if (REFUSED.has(d.mode)) return 'refused'
    if ((d.mode === 'inline' || d.mode === 'local') && d.ok === false) return 'failed'
    const rows = executions.byId.get(d.id) ?? 0
    const bySubject = d.subject === undefined ? 0 : (executions.bySubject.get(d.subject) ?? 0)
    if (rows > 1 || bySubject > 1) return 'twice'
    if (rows === 0) return 'lost'
    return 'executed'
  }

  for (const phase of phases) {
    const http = load.http.filter((s) => inPhase(s.t, phase))
    const served: Record<string, number> = {}
    for (const s of http) if (s.cache !== undefined) count(served, s.cache)

    let outage: PhaseRow['http']['outage'] = null
    let slowPool = http
    const detectionMs: PerApp<number | null> = {}
    const recoveryMs: PerApp<number | 'up' | null> = {}
    for (const app of apps) {
      const samples = timelines.get(app) ?? []
      detectionMs[app] = phase.kind === 'fault' ? round(detection(samples, phase), 0) : null
      let rec = phase.kind === 'fault' ? recovery(samples, phase) : null
      if (phase.kind === 'fault' && phase.newPrimary !== undefined) {
        // On Redis is not enough after a failover: on the NEW primary, too.
        const next = phases.find((p) => p.kind === 'fault' && p.start > phase.start)
        const moved = onNewPrimary(input.primaries ?? [], app, phase, next?.start ?? Infinity)
        rec = moved === null || rec === null ? null : Math.max(moved, rec === 'up' ? 0 : rec)
      }
      recoveryMs[app] = typeof rec === 'number' ? Math.round(rec) : rec
    }
    if (phase.kind === 'fault') {
      // The outage window: from the moment every process that went down knew it, to the heal.
      const detected = Object.values(detectionMs).filter((d): d is number => d !== null)
      const from = phase.start + (detected.length > 0 ? Math.max(...detected) : 0)
      const to = phase.outageEnd ?? phase.healStart ?? phase.end
      const inWindow = http.filter((s) => s.t >= from && s.t < to)
      slowPool = inWindow
      const window = inWindow.map((s) => s.ms)
      outage = {
        count: window.length,
        p99: window.length >= MIN_OUTAGE_SAMPLES ? round(percentile(window, 99), 2) : null,
      }
    }

    // WebSocket chat: every message should reach every client in the room.
    const sent = load.chatSent.filter((m) => inPhase(m.t, phase))
    let expectedSame = 0
    let lostSame = 0
    let expectedCross = 0
    let lostCross = 0
    for (const message of sent) {
      for (const client of load.chatClients) {
        if (client.closed !== null && client.closed.t < message.t) continue
        const same = chatApp.get(client.index) === message.app
        const got = client.received.has(message.key)
        if (same) {
          expectedSame++
          if (!got) lostSame++
        } else {
          expectedCross++
          if (!got) lostCross++
        }
      }
    }

    const dispatches = load.dispatches.filter((d) => inPhase(d.t, phase))
    const tasks: PhaseRow['tasks'] = {
      dispatched: 0,
      accepted: 0,
      executed: 0,
      twice: 0,
      lost: 0,
      refused: 0,
      failedInline: 0,
      modes: {},
      embedModes: {},
    }
    for (const d of dispatches) {
      if (d.kind === 'embed') {
        count(tasks.embedModes, d.mode)
        continue
      }
      tasks.dispatched++
      count(tasks.modes, d.mode)
      if (ACCEPTED.has(d.mode)) tasks.accepted++
      const v = verdict(d)
      if (v === 'executed' || v === 'twice') tasks.executed++
      if (v === 'twice') tasks.twice++
      if (v === 'lost') tasks.lost++
      if (v === 'refused') tasks.refused++
      if (v === 'failed') tasks.failedInline++
    }

    const stale = load.stale.filter((s) => inPhase(s.t, phase))
    const rssMiB: PerApp<number | null> = {}
    for (const app of apps) rssMiB[app] = rssAt(input.rss, phase.end, app)

    rows.push({
      phase: phase.name,
      kind: phase.kind,
      ...(phase.label !== undefined && { label: phase.label }),
      durationS: round((phase.end - phase.start) / 1000, 1) ?? 0,
      http: {
        count: http.length,
        failed: http.filter(failed).length,
        failures: http.filter(failed).map((s) => ({
          t: s.t,
          app: s.app,
          op: s.op,
          status: s.status,
          ms: s.ms,
          ...(s.error !== undefined && { error: s.error }),
        })),
        p50: round(
          percentile(
            http.map((s) => s.ms),
            50,
          ),
          2,
        ),
        p99: round(
          percentile(
            http.map((s) => s.ms),
            99,
          ),
          2,
        ),
        outage,
        served,
        slowest: [...slowPool]
          .sort((x, y) => y.ms - x.ms)
          .slice(0, 5)
          .map((x) => ({
            t: Math.round(x.t) / 1000,
            app: x.app,
            op: x.op,
            ms: Math.round(x.ms * 10) / 10,
            status: x.status,
            ...(x.cache !== undefined && { cache: x.cache }),
          })),
      },
      ws: {
        sent: sent.length,
        expectedSame,
        lostSame,
        expectedCross,
        lostCross,
        errorFrames: sent.filter((m) => m.error !== undefined).length,
      },
      votes: load.votes.filter((v) => inPhase(v.t, phase)).length,
      tasks,
      stale: {
        duringOutage: stale.filter((s) => s.cache === 'memory').length,
        afterRecovery: stale.filter((s) => s.cache !== 'memory').length,
      },
      rssMiB,
      detectionMs,
      recoveryMs,
    })
  }

  for (const d of load.dispatches) {
    if (!tracked(d)) continue
    const v = verdict(d)
    if (v !== 'executed') {
      const rows =
        (executions.byId.get(d.id) ?? 0) +
        (d.subject === undefined ? 0 : (executions.bySubject.get(d.subject) ?? 0))
      taskProblems.push({ ...d, problem: v, rows })
    }
  }

  // ── targets ──────────────────────────────────────────────────────────────────────────────
  const measured = rows.filter((r) => r.kind !== 'warmup')
  const faults = rows.filter((r) => r.kind === 'fault')
  const healthy = rows.find((r) => r.kind === 'gap')
  const healthyP99 = healthy?.http.p99 ?? null
  const sum = (f: (r: PhaseRow) => number): number => measured.reduce((a, r) => a + f(r), 0)
  const targets: TargetResult[] = []
  const failures: string[] = []
  const target = (name: string, pass: boolean, value: string, why: string): void => {
    targets.push({ target: name, measured: value, pass })
    if (!pass) failures.push(`FAILED: ${name} — ${why}`)
  }

  const httpFailed = sum((r) => r.http.failed)
  const httpTotal = sum((r) => r.http.count)
  const failedWhere = measured
    .filter((r) => r.http.failed > 0)
    .map(
      (r) =>
        `${r.phase}: ${r.http.failed} — ${r.http.failures
          .slice(0, 3)
          .map((f) => `${f.app} ${f.op} → ${f.status}${f.error ? ` (${f.error})` : ''}`)
          .join('; ')}`,
    )
  target(
    '0 failed HTTP requests',
    httpFailed === 0,
    `${httpFailed} of ${httpTotal}`,
    `${httpFailed} failed (${failedWhere.join(', ')})`,
  )

  const unhandled = input.appSummaries.reduce(
    (a, s) => a + s.scan.unhandled.length + (s.crashed === null ? 0 : 1),
    0,
  )
  const crashes = input.appSummaries.filter((s) => s.crashed !== null).map((s) => s.name)
  target(
    '0 unhandled errors',
    unhandled === 0,
    `${unhandled}${crashes.length > 0 ? ` (crashed: ${crashes.join(', ')})` : ''}`,
    `${unhandled} uncaught/unhandled log lines or crashes (see the log section)`,
  )

  const lost = sum((r) => r.tasks.lost + r.tasks.refused + r.tasks.failedInline)
  const twice = sum((r) => r.tasks.twice)
  const accepted = sum((r) => r.tasks.accepted)
  target(
    '0 tasks lost or run twice',
    lost === 0 && twice === 0,
    `${lost} lost/refused/failed, ${twice} twice, of ${sum((r) => r.tasks.dispatched)} dispatched (${accepted} accepted)`,
    `${lost} not run, ${twice} run twice (${measured
      .filter((r) => r.tasks.lost + r.tasks.refused + r.tasks.failedInline + r.tasks.twice > 0)
      .map((r) => r.phase)
      .join(', ')})`,
  )

  const staleAfter = sum((r) => r.stale.afterRecovery)
  target(
    '0 stale reads after recovery',
    staleAfter === 0,
    `${staleAfter} (and ${sum((r) => r.stale.duringOutage)} from the memory fallback during outages)`,
    `${staleAfter} stale reads served from Redis or the database (${measured
      .filter((r) => r.stale.afterRecovery > 0)
      .map((r) => `${r.phase}: ${r.stale.afterRecovery}`)
      .join(', ')})`,
  )

  const lostSame = sum((r) => r.ws.lostSame)
  target(
    '0 same-process WebSocket messages lost',
    lostSame === 0,
    `${lostSame} of ${sum((r) => r.ws.expectedSame)}`,
    `${lostSame} lost (${measured
      .filter((r) => r.ws.lostSame > 0)
      .map((r) => `${r.phase}: ${r.ws.lostSame}`)
      .join(', ')})`,
  )

  const over = faults.filter(
    (r) =>
      healthyP99 === null ||
      (r.http.outage?.p99 !== null &&
        r.http.outage?.p99 !== undefined &&
        r.http.outage.p99 > healthyP99 + P99_MARGIN_MS),
  )
  const evaluated = faults.filter((r) => r.http.outage?.p99 !== null && r.http.outage !== null)
  target(
    `p99 HTTP latency during an outage ≤ healthy p99 + ${P99_MARGIN_MS} ms`,
    over.length === 0 && evaluated.length > 0,
    `healthy ${healthyP99 ?? 'n/a'} ms; ${evaluated
      .map((r) => `${r.phase} ${r.http.outage?.p99} ms`)
      .join(', ')}`,
    over.length === 0
      ? 'no outage window had enough requests to measure'
      : `over ${(healthyP99 ?? 0) + P99_MARGIN_MS} ms: ${over
          .map((r) => `${r.phase} ${r.http.outage?.p99} ms`)
          .join(', ')}`,
  )

  const slow: string[] = []
  const recoveries: string[] = []
  for (const r of faults) {
    for (const app of apps) {
      const ms = r.recoveryMs[app]
      recoveries.push(`${r.phase}/${app} ${ms === 'up' ? 'stayed up' : (ms ?? 'never')}`)
      if (ms === null || (typeof ms === 'number' && ms > RECOVERY_LIMIT_MS)) {
        const never =
          input.topology === 'sentinel' ? 'never on the new primary' : 'not back on Redis'
        slow.push(`${r.phase}/${app}: ${ms === null ? never : `${ms} ms`}`)
      }
    }
  }
  const worst = Math.max(
    0,
    ...faults.flatMap((r) => apps.map((a) => r.recoveryMs[a])).filter((v) => typeof v === 'number'),
  )
  target(
    `every recovery ≤ ${RECOVERY_LIMIT_MS} ms`,
    slow.length === 0,
    `worst ${worst} ms (${faults.length * apps.length} recoveries)`,
    slow.join(', '),
  )

  const memory: ChaosReport['memory'] = {}
  const warmup = phases.find((p) => p.kind === 'warmup')
  const last = phases[phases.length - 1]
  const grown: string[] = []
  const memoryLines: string[] = []
  for (const app of apps) {
    const values = input.rss
      .map((s) => s.kib[app])
      .filter((v): v is number => typeof v === 'number')
    const max = values.length === 0 ? null : Math.round((Math.max(...values) / 1024) * 10) / 10
    const heaps = input.heap.map((h) => h.mib[app] ?? null)
    const before = input.settled?.baseline[app] ?? null
    const after = input.settled?.final[app] ?? null
    memory[app] = {
      baselineMiB: warmup === undefined ? null : rssMedian(input.rss, warmup, app),
      finalMiB: last === undefined ? null : rssMedian(input.rss, last, app),
      maxMiB: max,
      heapBaselineMiB: heaps[0] ?? null,
      heapFinalMiB: heaps[heaps.length - 1] ?? null,
      settledBaseline: before,
      settledFinal: after,
    }
    const pairs: Array<[string, number | null | undefined, number | null | undefined]> = [
      ['RSS', before?.rssMiB, after?.rssMiB],
      ['heap', before?.heapMiB, after?.heapMiB],
    ]
    const line = pairs.map(([what, b, f]) => `${what} ${b ?? '?'} → ${f ?? '?'} MiB`).join(', ')
    memoryLines.push(`${app}: ${line}`)
    if (pairs.some(([, b, f]) => b == null || f == null || f > b * MEMORY_GROWTH_LIMIT)) {
      grown.push(`${app}: ${line}`)
    }
  }
  target(
    `memory flat (after a full GC: final RSS and V8 heap in use ≤ ${MEMORY_GROWTH_LIMIT} × after warm-up)`,
    grown.length === 0,
    memoryLines.join('; '),
    grown.join('; '),
  )

  const wsClientsClosed = load.chatClients
    .filter((c) => c.closed !== null)
    .map((c) => ({
      client: `chat${c.index}@${c.app}`,
      t: c.closed?.t ?? 0,
      code: c.closed?.code ?? 0,
    }))

  return {
    at: new Date().toISOString(),
    profile: input.profile,
    topology: input.topology ?? 'redis',
    command: input.command,
    durationS: input.durationS,
    machine: input.machine,
    passed: failures.length === 0,
    phases: rows,
    targets,
    failures,
    healthyP99,
    memory,
    logs: input.appSummaries,
    // The ones that count against the target first.
    staleReads: [
      ...load.stale.filter((x) => x.cache !== 'memory'),
      ...load.stale.filter((x) => x.cache === 'memory'),
    ]
      .slice(0, 50)
      .map((x) => ({ ...x, t: Math.round(x.t) })),
    transitions: transitions(load.status, apps),
    finalStatus: input.finalStatus,
    phaseBounds: phases.map((p) => ({
      phase: p.name,
      start: Math.round(p.start),
      end: Math.round(p.end),
    })),
    taskProblems: taskProblems.slice(0, 500).map((d) => ({ ...d, t: Math.round(d.t) })),
    wsClientsClosed,
    notes: input.notes,
  }
}

// ── Markdown ─────────────────────────────────────────────────────────────────────────────────

const cell = (v: unknown): string => (v === null || v === undefined ? '–' : String(v))
const perApp = (values: Record<string, unknown>): string =>
  Object.values(values)
    .map((v) => (v === 'up' ? 'up' : cell(v)))
    .join(' / ')

function modes(m: Record<string, number>): string {
  const short: Record<string, string> = {
    queued: 'q',
    inline: 'i',
    spooled: 's',
    deferred: 'd',
    local: 'l',
  }
  const parts = Object.entries(m).map(([k, v]) => `${v}${short[k] ?? ` ${k}`}`)
  return parts.length === 0 ? '–' : parts.join(' ')
}

const INTRO = [
  'Generated by `npm run chaos` (do not edit by hand): the reference app — two processes',
  '(A and B) sharing one SQLite file and one `redis-server` — under steady, bounded load from',
  'loopback clients while a schedule of real faults plays. See `docs/chaos.md` for how every',
  'figure is measured.',
  '',
  'The randomized fault checker (`npm run check`: seeded schedules of combined faults against',
  'several processes, histories verified by an independent checker) reports in',
  '[CHECK.md](CHECK.md); see `docs/checker.md`.',
]

const SENTINEL_TITLE = 'Sentinel profile'

const SENTINEL_INTRO = [
  'Generated by `npm run chaos -- --sentinel`: the same app, load and targets, but the two',
  'processes reach Redis through Redis Sentinel',
  '(`REDIS_URL=redis-sentinel://…`: a primary, two replicas, three Sentinels) and every fault',
  'hits whichever node is the primary: SIGKILL, `SENTINEL FAILOVER`, SIGSTOP until a replica is',
  'promoted, and a failover to a replica that missed acknowledged writes. A fault ends when every',
  'Sentinel names the new primary and it answers as one: recoveries are timed from that instant.',
  'See "The Sentinel profile" in `docs/chaos.md`.',
]

/** The Markdown report of one run (what `--no-write` prints). */
export function renderMarkdown(report: ChaosReport, apps: string[]): string {
  const sentinel = report.topology === 'sentinel'
  return [
    sentinel ? `# failsoft under chaos: ${SENTINEL_TITLE}` : '# failsoft under chaos',
    '',
    ...(sentinel ? SENTINEL_INTRO : INTRO),
    '',
    renderBody(report, apps, 2),
  ].join('\n')
}

/**
 * CHAOS.md: the single-Redis run's report, then the Sentinel run's in its own section — each
 * from its results file, so that a run of one profile leaves the other's figures as they were.
 */
export function renderChaosFile(
  single: ChaosReport | null,
  sentinel: ChaosReport | null,
  apps: string[],
): string {
  const lines = ['# failsoft under chaos', '', ...INTRO, '']
  lines.push(
    `The Sentinel profile's results are in [their own section](#sentinel-profile)${sentinel === null ? ' (not run yet)' : ''}.`,
    '',
  )
  lines.push(
    single === null
      ? 'The single-Redis profile has not been run yet.\n'
      : renderBody(single, apps, 2),
  )
  if (sentinel !== null) {
    lines.push(`## ${SENTINEL_TITLE}`, '', ...SENTINEL_INTRO, '', renderBody(sentinel, apps, 3))
  }
  return lines.join('\n')
}

function renderBody(report: ChaosReport, apps: string[], level: number): string {
  const a = apps.join('/')
  const h = '#'.repeat(level)
  const sentinel = report.topology === 'sentinel'
  const lines: string[] = [
    `Last run: ${report.at}, profile \`${report.profile}\`, ${report.durationS} s, command \`${report.command}\`.`,
    '',
    `**Result: ${report.passed ? 'every target PASSED' : `${report.failures.length} target(s) FAILED`}.**`,
    '',
    `${h} Targets`,
    '',
    '| target | measured | result |',
    '| --- | --- | --- |',
    ...report.targets.map(
      (t) => `| ${t.target} | ${t.measured} | ${t.pass ? 'PASS' : '**FAIL**'} |`,
    ),
    '',
  ]
  if (report.failures.length > 0) {
    lines.push('```', ...report.failures, '```', '')
  }
  lines.push(
    `${h} Per phase`,
    '',
    `| phase | s | HTTP req | failed | p50 ms | p99 ms | p99 outage ms (n) | served r/m/d | chat lost same (of) | chat lost cross (of) | tasks acc / run / twice / lost | modes | stale outage / after | RSS ${a} MiB | detect ${a} ms | recover ${a} ms |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- | --- | --- | --- |',
  )
  for (const r of report.phases) {
    const o = r.http.outage
    const s = r.http.served
    lines.push(
      [
        '',
        r.kind === 'fault' ? `**${r.phase}**` : r.phase,
        r.durationS,
        r.http.count,
        r.http.failed,
        cell(r.http.p50),
        cell(r.http.p99),
        o === null ? '' : `${cell(o.p99)} (${o.count})`,
        `${s.redis ?? 0}/${s.memory ?? 0}/${s.database ?? 0}`,
        `${r.ws.lostSame} (${r.ws.expectedSame})`,
        `${r.ws.lostCross} (${r.ws.expectedCross})`,
        `${r.tasks.accepted} / ${r.tasks.executed} / ${r.tasks.twice} / ${r.tasks.lost + r.tasks.refused + r.tasks.failedInline}`,
        modes(r.tasks.modes),
        `${r.stale.duringOutage} / ${r.stale.afterRecovery}`,
        perApp(r.rssMiB),
        r.kind === 'fault' ? perApp(r.detectionMs) : '',
        r.kind === 'fault' ? perApp(r.recoveryMs) : '',
        '',
      ]
        .join(' | ')
        .trim(),
    )
  }
  lines.push(
    '',
    'Columns: `served r/m/d` = reads answered from Redis / the memory fallback / the database',
    "(the app's `x-cache` header). Chat losses count (message, receiver) pairs: every message",
    'should reach all chat clients in the room, on both processes. Tasks = notification emails,',
    'welcome emails and manual compost runs, checked by task id (and, for emails, by unique',
    'subject) in the SQLite file; modes q/i/s/d/l = queued / inline / spooled / deferred / local.',
    '`stale outage` = older-than-acknowledged project versions served from the memory fallback',
    'while Redis was out (expected: each process has its own memory); `after` = stale answers',
    'from Redis or the database (the target). `detect` = first status sample showing the process',
    "off Redis, from the fault's start; `recover` = from Redis answering again to the process",
    `reporting every component on Redis (\`up\` = it never left Redis)${sentinel ? '; here Redis answering again is every Sentinel naming the new primary (t0), `p99 outage` runs until then, and a process has recovered once it reports every component on Redis and its failsoft names the new primary (its "Redis available" / "Redis is back" log record) — searched until the next fault, so a process left on the old primary shows how long it stayed there' : ''}.`,
    '',
    `${h} Faults`,
    '',
    '| phase | what was done |',
    '| --- | --- |',
    ...report.phases
      .filter((r) => r.kind === 'fault')
      .map((r) => `| ${r.phase} | ${r.label ?? ''} |`),
    '',
    `${h} Memory`,
    '',
    '| process | after a full GC: RSS, warm-up → end | V8 heap in use, warm-up → end | RSS medians (no GC), warm-up → last 5 s | max RSS |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...Object.entries(report.memory).map(
      ([app, m]) =>
        `| ${app} | ${cell(m.settledBaseline?.rssMiB ?? null)} → ${cell(m.settledFinal?.rssMiB ?? null)} MiB | ${cell(m.settledBaseline?.heapMiB ?? null)} → ${cell(m.settledFinal?.heapMiB ?? null)} MiB | ${cell(m.baselineMiB)} → ${cell(m.finalMiB)} MiB | ${cell(m.maxMiB)} MiB |`,
    ),
    '',
    'The target compares each process after a full garbage collection (forced through the',
    'inspector, between phases, with the load running): the live heap and what V8 keeps. Plain',
    "RSS samples are shown too; they move with V8's young generation, which grows to 2 × 16 MiB",
    'under load and shrinks again on its own schedule (docs/chaos.md).',
    '',
    `${h} Logs`,
    '',
    '| process | uncaught / unhandled | crashed | shutdown | ERROR records | WARN records | stderr lines |',
    '| --- | ---: | --- | --- | --- | --- | ---: |',
    ...report.logs.map(
      (l) =>
        `| ${l.name} | ${l.scan.unhandled.length} | ${l.crashed ?? 'no'} | ${l.shutdown ?? '–'} | ${counts(l.scan.errors)} | ${counts(l.scan.warnings)} | ${l.scan.stderrCount} |`,
    ),
    '',
  )
  const unhandledLines = report.logs.flatMap((l) => l.scan.unhandled.map((x) => `${l.name}: ${x}`))
  const stderrLines = report.logs.flatMap((l) => l.scan.stderr.map((x) => `${l.name}: ${x}`))
  if (unhandledLines.length + stderrLines.length > 0) {
    lines.push('```', ...unhandledLines.slice(0, 10), ...stderrLines.slice(0, 10), '```', '')
  }
  if (report.staleReads.length > 0) {
    lines.push(
      `${h} Stale reads (first ones)`,
      '',
      '| t s | process | read | project | got version | acknowledged (by, ms before the read) | served from |',
      '| ---: | --- | --- | ---: | ---: | ---: | --- |',
      ...report.staleReads
        .slice(0, 15)
        .map(
          (s) =>
            `| ${(s.t / 1000).toFixed(1)} | ${s.app} | ${s.op} | ${s.project} | ${s.got} | ${s.acked} (${s.ackedBy}, ${s.ackedBeforeMs}) | ${s.cache} |`,
        ),
      '',
    )
  }
  if (report.taskProblems.length > 0) {
    lines.push(
      `${h} Tasks not run exactly once (the first 3 of each phase)`,
      '',
      '| t s | phase | process | task | id | mode | problem | rows |',
      '| ---: | --- | --- | --- | --- | --- | --- | ---: |',
      ...firstPerPhase(report.taskProblems, report.phaseBounds, 3).map(
        (d) =>
          `| ${(d.t / 1000).toFixed(1)} | ${d.phase} | ${d.app} | ${d.kind} | ${d.id} | ${d.mode} | ${d.problem}${d.error ? ` (${d.error})` : ''} | ${d.rows} |`,
      ),
      '',
    )
  }
  if (report.wsClientsClosed.length > 0) {
    lines.push(
      `${h} WebSocket clients closed by the server`,
      '',
      ...report.wsClientsClosed.map(
        (c) => `- ${c.client} at ${(c.t / 1000).toFixed(1)} s, code ${c.code}`,
      ),
      '',
    )
  }
  const counters = Object.entries(report.finalStatus)
  if (counters.length > 0) {
    lines.push(
      `${h} The apps' own counters at the end (\`GET /api/status\`)`,
      '',
      '| process | counters |',
      '| --- | --- |',
      ...counters.map(([app, value]) => `| ${app} | \`${JSON.stringify(value)}\` |`),
      '',
    )
  }
  if (report.notes.length > 0) {
    lines.push(`${h} Notes`, '', ...report.notes.map((n) => `- ${n}`), '')
  }
  lines.push(
    `${h} Machine`,
    '',
    '| | |',
    '| --- | --- |',
    ...Object.entries(report.machine).map(([k, v]) => `| ${k} | ${v} |`),
    '',
  )
  return lines.join('\n')
}

function firstPerPhase<T extends { t: number }>(
  items: T[],
  bounds: ChaosReport['phaseBounds'],
  n: number,
): Array<T & { phase: string }> {
  const out: Array<T & { phase: string }> = []
  for (const b of bounds) {
    const inside = items.filter((x) => x.t >= b.start && x.t < b.end).sort((x, y) => x.t - y.t)
    out.push(...inside.slice(0, n).map((x) => ({ ...x, phase: b.phase })))
  }
  return out
}

function counts(m: Record<string, number>): string {
  const entries = Object.entries(m)
  if (entries.length === 0) return '0'
  return entries
    .sort((x, y) => y[1] - x[1])
    .slice(0, 4)
    .map(([k, v]) => `${v}× "${k.replace(/\|/g, '\\|')}"`)
    .join(', ')
}
