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
//                            x + 1 s — unless another such fault or a forceFallback starts in
//                            (x, x + 1 s], P dies, or the run ends in that window.
//   health.slow-link-outage  a 'down' of P (not forced) that no outage fault affecting B
//                            explains (active at d, or ended ≤ 1.5 s before d), while a slow
//                            link on B was active at d (or ended ≤ 0.3 s before): a slow but
//                            answering Redis is not an outage.
//   health.spurious-down     the same without a slow link: down while Redis answered (the
//                            message names what was going on: maxmemory, FLUSHALL…).
//   health.detect-slow       a fault that must be noticed (kill, freeze, DEBUG SLEEP, CLIENT
//                            PAUSE, blackhole) lasting ≥ 1 s, affecting B while P was up and
//                            not forced: P must be down within 1 s of the fault's start.
import { History, INF, ms } from './history.js'
import type { HistoryEvent } from './events.js'
import { withContext, type Violation } from './violation.js'

export const RECOVERY_BOUND_MS = 1000
export const DETECT_BOUND_MS = 1000
const EXPLAIN_GRACE = ms(1500)
/** What the proxy queued under the delay is still arriving just after a slow link ends. */
const SLOW_GRACE = ms(300)

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
        if (!explained) {
          const slow = h.faults.filter(
            (f) => History.affects(f, base) && f.slow && f.start <= d && d <= f.end + SLOW_GRACE,
          )
          const active = h.faults.filter(
            (f) => History.affects(f, base) && f.start <= d && d <= f.end + EXPLAIN_GRACE,
          )
          violations.push({
            invariant: slow.length > 0 ? 'health.slow-link-outage' : 'health.spurious-down',
            severity: 'violation',
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
      let x = d
      if (p.ready !== undefined && p.ready > x) x = p.ready
      let anchorEvent: HistoryEvent = down.event
      let open = false
      for (let guard = 0; guard < 1000; guard++) {
        const blockers = h.faults.filter(
          (f) =>
            History.affects(f, base) &&
            (f.outage || f.slow || f.writesRefused) &&
            f.start <= x &&
            f.end > x,
        )
        const forced = p.forced.filter((i) => i.start <= x && i.end > x)
        if (blockers.length === 0 && forced.length === 0) break
        let next = x
        for (const f of blockers) {
          if (f.end === INF) open = true
          else {
            const ans = h.answers.find((a) => a.path === base && a.t >= f.end)
            const at = ans !== undefined && ans.t > f.end ? ans.t : f.end
            if (at > next) {
              next = at
              anchorEvent = ans?.event ?? f.endEvent ?? anchorEvent
            }
          }
        }
        for (const i of forced) {
          if (i.end === INF) open = true
          else if (i.end > next) {
            next = i.end
            anchorEvent = p.forceEvents.find((e) => e.t === i.end) ?? anchorEvent
          }
        }
        if (open || next === x) break
        x = next
      }
      if (open) continue
      if (u !== undefined && u <= x + bound) {
        stats.recoveries++
        stats.recoveryMs.push(Math.max(0, Number(u - x) / 1e6))
        continue
      }
      const w = x + bound
      if (p.death <= w || h.closeStart <= w || h.end <= w) continue
      const refault = h.faults.some(
        (f) =>
          History.affects(f, base) &&
          (f.outage || f.slow || f.writesRefused) &&
          f.start > x &&
          f.start <= w,
      )
      if (refault || h.forcedDuring(p.name, x, w)) continue
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
      if (down !== undefined && down.t <= f.start + detect) continue
      violations.push({
        invariant: 'health.detect-slow',
        severity: 'violation',
        message:
          down === undefined
            ? `${p.name} never went down during ${f.fault} (${(Number(f.end - f.start) / 1e6).toFixed(0)} ms)`
            : `${p.name} went down ${(Number(down.t - f.start) / 1e6).toFixed(0)} ms into ${f.fault} (bound ${DETECT_BOUND_MS} ms)`,
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

function describe(e: HistoryEvent): string {
  const params = e['params'] as Record<string, unknown> | undefined
  const latency = params?.['latencyMs']
  return `${String(e['fault'])}${latency !== undefined ? ` ${String(latency)} ms` : ''}`
}
