// Health / recovery invariants (see docs/checker.md, "Health").
//
// For a process P (base name B, the name its proxy and the faults use):
//
//   health.recovery-slow     P went down at d. Its anchor x starts at max(d, P's ready) and is
//                            moved past every fault affecting B (an outage or a slow link)
//                            (or Redis refusing writes: maxmemory) and every
//                            forceFallback(true) of P active at x: to the fault's
//                            end and then to the first "Redis answers through B's proxy"
//                            after it (or to the release of the switch). P must be up by
//                            x + 1 s. If another such fault or a forceFallback starts in
//                            (x, x + 1 s], the outage goes on: x moves past that one too. Not
//                            measured when P dies or the run closes before x + 1 s.
//   health.slow-link-outage  a 'down' of P (not forced) that no outage fault affecting B
//                            explains (active at d, or ended ≤ 1.5 s before d), while a slow
//                            link on B was active at d (or ended ≤ 0.3 s before): a slow but
//                            answering Redis is not an outage. Documented: P's first down
//                            within 1 s of the link's step to slow (taken for an outage once,
//                            then re-measured).
//   health.spurious-down     the same without a slow link: down while Redis answered (the
//                            message names what was going on: maxmemory, FLUSHALL…).
//                            Documented when the harness' own direct PING to Redis took
//                            ≥ 150 ms around it (Redis or the machine stalled by itself).
//   health.detect-slow       a fault that must be noticed (kill, freeze, DEBUG SLEEP, CLIENT
//                            PAUSE, blackhole) lasting ≥ 1 s, affecting B while P was up and
//                            not forced: P must be down within 1 s of the fault's start
//                            (2.5 s when a slow link on P's path was active at that start: the
//                            adaptive command deadline, capped at maxCommandTimeoutMs 2 s).
import { History, INF, ms, type FaultRecord, type ProcessRecord } from './history.js'
import type { HistoryEvent } from './events.js'
import { withContext, type Violation } from './violation.js'

export const RECOVERY_BOUND_MS = 1000
export const DETECT_BOUND_MS = 1000
export const SLOW_LINK_DETECT_BOUND_MS = 2500
const EXPLAIN_GRACE = ms(1500)
/** What the proxy queued under the delay is still arriving just after a slow link ends. */
const SLOW_GRACE = ms(300)
/** A link slow from one moment to the next: the first command sent after the step. */
const STEP_GRACE = ms(1000)

export interface HealthStats {
  downs: number
  recoveries: number
  /** Recovery times measured against their anchor, ms. */
  recoveryMs: number[]
}

export function checkHealth(h: History): { violations: Violation[]; stats: HealthStats } {
  const violations: Violation[] = []
  const stats: HealthStats = { downs: 0, recoveries: 0, recoveryMs: [] }
  const bound = ms(RECOVERY_BOUND_MS)

  for (const p of h.processes.values()) {
    if (p.name === 'harness' || p.role === 'unknown') continue
    const base = p.base
    const downs: Array<{ t: bigint; event: HistoryEvent; forced: boolean }> = p.transitions
      .filter((tr) => tr.state === 'down')
      .map((tr) => ({ t: tr.t, event: tr.event, forced: tr.forced }))
    const readyEvent = p.lifecycle.find((e) => e.op === 'ready')
    if (
      readyEvent !== undefined &&
      readyEvent['state'] !== 'up' &&
      !downs.some((d) => d.t <= readyEvent.t)
    ) {
      downs.unshift({ t: readyEvent.t, event: readyEvent, forced: false })
    }
    for (const down of downs) {
      stats.downs++
      const d = down.t
      const u = h.nextUp(p.name, d)

      // ── explained? (slow link / spurious) ─────────────────────────────────────────────────
      if (!down.forced && !h.forcedDuring(p.name, d - ms(50), d)) {
        const explained = h.faults.some(
          (f) => History.affects(f, base) && f.outage && f.start <= d && d <= f.end + EXPLAIN_GRACE,
        )
        const stall = h.stalls.find((st) => st.start <= d + ms(100) && st.end >= d - EXPLAIN_GRACE)
        if (!explained && stall !== undefined) {
          violations.push({
            invariant: 'health.spurious-down',
            severity: 'documented',
            message:
              `${p.name} went down with no fault injected, while ` +
              (stall.event.op === 'harness-stall'
                ? `the harness' event loop (which carries every proxy) stalled for ${String(stall.event['rttMs'])} ms`
                : `Redis itself did not answer the harness' own PING for ${String(stall.event['rttMs'])} ms`) +
              ' (the machine stalled; docs/health.md: a Redis slower than commandTimeoutMs is treated as down)',
            events: withContext(h, [stall.event, down.event], {
              processes: [p.name],
              before: ms(2000),
            }),
          })
        } else if (!explained) {
          const slow = h.faults.filter(
            (f) => History.affects(f, base) && f.slow && f.start <= d && d <= f.end + SLOW_GRACE,
          )
          const active = h.faults.filter(
            (f) => History.affects(f, base) && f.start <= d && d <= f.end + EXPLAIN_GRACE,
          )
          // Documented (docs/guarantees.md, Health): a link that becomes slow in one step can be
          // taken for an outage once, then is re-measured — P's first down within
          // STEP_GRACE of the slow link's start, and none of P's before it during that link.
          const step = slow.find(
            (f) =>
              d <= f.start + STEP_GRACE &&
              !downs.some((other) => other.t < d && other.t >= f.start && !other.forced),
          )
          violations.push({
            invariant: slow.length > 0 ? 'health.slow-link-outage' : 'health.spurious-down',
            severity: step !== undefined ? 'documented' : 'violation',
            message:
              slow.length > 0
                ? `${p.name} went down during a slow but answering link (${slow.map((f) => describe(f.startEvent)).join(', ')})`
                : `${p.name} went down with no outage on its path` +
                  (active.length > 0 ? ` (active: ${active.map((f) => f.fault).join(', ')})` : ''),
            events: withContext(h, [down.event], { processes: [p.name], before: ms(2000) }),
          })
        }
      }

      // ── recovery bound ─────────────────────────────────────────────────────────────────────
      const start = p.ready !== undefined && p.ready > d ? p.ready : d
      const verdict = recoveryAnchor(h, p, start, u, bound)
      if (verdict === undefined) continue
      if (verdict.ok) {
        stats.recoveries++
        stats.recoveryMs.push(Math.max(0, Number(u! - verdict.x) / 1e6))
        continue
      }
      const { x, anchorEvent } = verdict
      const w = x + bound
      const core: HistoryEvent[] = [down.event, anchorEvent]
      const upEvent = u !== undefined ? p.transitions.find((tr) => tr.t === u)?.event : undefined
      if (upEvent !== undefined) core.push(upEvent)
      const during = h.faults
        .filter((f) => History.affects(f, base) && f.start <= (u ?? w) && f.end >= x)
        .map((f) => f.fault)
      const note = during.length > 0 ? ` (meanwhile: ${[...new Set(during)].join(', ')})` : ''
      violations.push({
        invariant: 'health.recovery-slow',
        severity: 'violation',
        message:
          (u === undefined
            ? `${p.name} never came back up after Redis answered again on its path at ${h.rel(x).toFixed(1)} ms`
            : `${p.name} came back up ${(Number(u - x) / 1e6).toFixed(0)} ms after Redis answered again on its path (bound ${RECOVERY_BOUND_MS} ms)`) +
          note,
        events: withContext(h, core, { processes: [p.name] }),
      })
    }
  }

  // ── detection ──────────────────────────────────────────────────────────────────────────────
  const detect = ms(DETECT_BOUND_MS)
  for (const f of h.faults) {
    if (!f.expectDown || f.end === INF || f.end - f.start < ms(1000)) continue
    for (const p of h.processes.values()) {
      if (p.role === 'unknown' || !History.affects(f, p.base)) continue
      if (p.ready === undefined || p.ready > f.start || p.death <= f.start + detect) continue
      if (h.stateAt(p.name, f.start) !== 'up' || h.forcedDuring(p.name, f.start, f.start + detect))
        continue
      const down = p.transitions.find(
        (tr) => tr.state === 'down' && tr.t >= f.start && tr.t <= f.end,
      )
      // On a slow link the command deadline has grown with the measured round trip (up to
      // maxCommandTimeoutMs, docs/health.md "adaptive deadlines"), and a fault that starts then
      // is noticed within that deadline: the bound is the cap, plus the watchdog's margin.
      const slowLink = h.faults.some(
        (s) => s.slow && History.affects(s, p.base) && s.start <= f.start && s.end >= f.start,
      )
      const bound = slowLink ? ms(SLOW_LINK_DETECT_BOUND_MS) : detect
      if (down !== undefined && down.t <= f.start + bound) continue
      violations.push({
        invariant: 'health.detect-slow',
        severity: 'violation',
        message:
          down === undefined
            ? `${p.name} never went down during ${f.fault} (${(Number(f.end - f.start) / 1e6).toFixed(0)} ms)`
            : `${p.name} went down ${(Number(down.t - f.start) / 1e6).toFixed(0)} ms into ${f.fault} (bound ${slowLink ? `${SLOW_LINK_DETECT_BOUND_MS} ms: a slow link was active` : `${DETECT_BOUND_MS} ms`})`,
        events: withContext(
          h,
          [f.startEvent, ...(down ? [down.event] : []), ...(f.endEvent ? [f.endEvent] : [])],
          {
            processes: [p.name],
          },
        ),
      })
    }
  }
  return { violations, stats }
}

const blocks = (f: FaultRecord): boolean => f.outage || f.slow || f.writesRefused

/**
 * From `start`, the moment Redis answers P's path again with nothing in the way: moved past
 * every blocking fault and forceFallback active at it (to its end, then to the next
 * "Redis answers" of the path), and past every one that starts before P was due up. Returns
 * undefined when the bound cannot apply (a fault never ended, P died, the run closed), ok
 * when P was up in time, or the anchor P missed.
 */
function recoveryAnchor(
  h: History,
  p: ProcessRecord,
  start: bigint,
  u: bigint | undefined,
  bound: bigint,
): { ok: true; x: bigint } | { ok: false; x: bigint; anchorEvent: HistoryEvent } | undefined {
  const base = p.base
  let x = start
  let anchorEvent: HistoryEvent | undefined
  for (let guard = 0; guard < 1000; guard++) {
    const blockers = h.faults.filter(
      (f) => History.affects(f, base) && blocks(f) && f.start <= x && f.end > x,
    )
    const forced = p.forced.filter((i) => i.start <= x && i.end > x)
    if (blockers.length > 0 || forced.length > 0) {
      let next = x
      for (const f of blockers) {
        if (f.end === INF) return undefined
        const ans = h.answers.find((a) => a.path === base && a.t >= f.end)
        const at = ans !== undefined ? ans.t : f.end
        if (at > next) {
          next = at
          anchorEvent = ans?.event ?? f.endEvent
        }
      }
      for (const i of forced) {
        if (i.end === INF) return undefined
        if (i.end > next) {
          next = i.end
          anchorEvent = p.forceEvents.find((e) => e.t === i.end)
        }
      }
      if (next === x) break
      x = next
      continue
    }
    if (u !== undefined && u <= x + bound) return { ok: true, x }
    const w = x + bound
    if (p.death <= w || h.closeStart <= w || h.end <= w) return undefined
    // A new fault (or switch) before P was due up: the outage goes on; measure after it.
    const again = [
      ...h.faults
        .filter((f) => History.affects(f, base) && blocks(f) && f.start > x && f.start <= w)
        .map((f) => f.start),
      ...p.forced.filter((i) => i.start > x && i.start <= w).map((i) => i.start),
    ]
    if (again.length === 0) break
    x = again.reduce((m, t) => (t < m ? t : m))
    if (u !== undefined && u <= x) return { ok: true, x }
  }
  if (u !== undefined && u <= x + bound) return { ok: true, x }
  return { ok: false, x, anchorEvent: anchorEvent ?? p.transitions[0]?.event ?? p.lifecycle[0]! }
}

function describe(e: HistoryEvent): string {
  const params = e['params'] as Record<string, unknown> | undefined
  const latency = params?.['latencyMs']
  return `${String(e['fault'])}${latency !== undefined ? ` ${String(latency)} ms` : ''}`
}
