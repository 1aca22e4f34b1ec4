// Task invariants (see docs/checker.md, "Tasks").
//
// Identity is the task id the dispatch answered with (`ctx.id` in the handler): dispatches
// with the same idempotency key share it, in every process.
//
//   tasks.lost              an id some dispatch answered queued / inline / spooled / deferred /
//                           duplicate has no run by the end of the history (after the drain).
//                           Not counted (stats.lostWithRedisData) when Redis lost data (restart
//                           empty, FLUSHALL, rollback) after that dispatch: the docs say jobs
//                           Redis held are gone then.
//   tasks.refused-ran       an id every dispatch of which was answered dropped / rejected ran.
//   tasks.overlap           two runs of one id overlap in time. A run lasts from its
//                           'run-start' to its 'run-end', or to its process' death, or forever.
//   tasks.ran-after-success a run of an id starts after another run of that id succeeded.
//                           Documented (docs/tasks.md, "What exactly-once does not cover"):
//                           the first run is inline and its process had not recovered (written
//                           its marker) before the second started in another process;
//                           Redis lost its data in between (the done marker with it); the
//                           process of the successful run was killed ≤ 2 s after it ended
//                           (before its done marker could be written).
//   tasks.phantom-run       a run of an id no dispatch answered, when no dispatch was left
//                           unanswered (by a process killed in the middle of it: that one's id
//                           is unknown, and its task may legitimately run).
import { INF, ms, type History, type OpRecord } from './history.js'
import type { HistoryEvent } from './events.js'
import { opEvents, withContext, type Violation } from './violation.js'

const ACCEPTED = new Set(['queued', 'inline', 'spooled', 'deferred', 'duplicate'])
const REFUSED = new Set(['dropped', 'rejected'])
const KILLED_AFTER_SUCCESS_MS = 2000

export interface Run {
  process: string
  runId: string
  id: string
  task: string
  ctxMode: string
  attempt: number
  start: bigint
  end: bigint
  outcome: 'ok' | 'failed' | 'died' | 'unfinished'
  startEvent: HistoryEvent
  endEvent: HistoryEvent | undefined
}

export interface TaskStats {
  dispatches: number
  byMode: Record<string, number>
  ids: number
  runs: number
  lostWithRedisData: number
}

export function collectRuns(h: History): Run[] {
  const open = new Map<string, Run>()
  const runs: Run[] = []
  for (const e of h.events) {
    if (e.op !== 'task.run-start' && e.op !== 'task.run-end') continue
    const k = `${e.process}\u0000${String(e['runId'])}`
    if (e.op === 'task.run-start') {
      const run: Run = {
        process: e.process,
        runId: String(e['runId']),
        id: String(e['id']),
        task: String(e['task']),
        ctxMode: String(e['ctxMode']),
        attempt: Number(e['attempt'] ?? 1),
        start: e.t,
        end: INF,
        outcome: 'unfinished',
        startEvent: e,
        endEvent: undefined,
      }
      open.set(k, run)
      runs.push(run)
    } else {
      const run = open.get(k)
      if (run === undefined) continue
      run.end = e.t
      run.outcome = e['ok'] === true ? 'ok' : 'failed'
      run.endEvent = e
      open.delete(k)
    }
  }
  for (const run of open.values()) {
    const death = h.proc(run.process)?.death ?? INF
    if (death !== INF) {
      run.end = death
      run.outcome = 'died'
    }
  }
  return runs
}

function runEvents(...runs: Run[]): HistoryEvent[] {
  return runs.flatMap((r) => (r.endEvent ? [r.startEvent, r.endEvent] : [r.startEvent]))
}

export function checkTasks(h: History): { violations: Violation[]; stats: TaskStats } {
  const violations: Violation[] = []
  const dispatches = h.opsOf('task.dispatch')
  const runs = collectRuns(h)
  const byId = new Map<string, { dispatches: OpRecord[]; runs: Run[] }>()
  const entry = (id: string): { dispatches: OpRecord[]; runs: Run[] } => {
    let e = byId.get(id)
    if (e === undefined) byId.set(id, (e = { dispatches: [], runs: [] }))
    return e
  }
  const stats: TaskStats = {
    dispatches: 0,
    byMode: {},
    ids: 0,
    runs: runs.length,
    lostWithRedisData: 0,
  }
  for (const d of dispatches) {
    if (!d.ok || d.done === undefined) continue
    stats.dispatches++
    const mode = String(d.done['mode'])
    stats.byMode[mode] = (stats.byMode[mode] ?? 0) + 1
    entry(String(d.done['id'])).dispatches.push(d)
  }
  for (const r of runs) entry(r.id).runs.push(r)
  stats.ids = byId.size
  const unanswered = dispatches.filter((d) => d.done === undefined).length

  for (const [id, { dispatches: ds, runs: rs }] of byId) {
    rs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0))
    const accepted = ds.filter((d) => ACCEPTED.has(String(d.done?.['mode'])))
    const refused = ds.filter((d) => REFUSED.has(String(d.done?.['mode'])))

    if (ds.length === 0) {
      // A dispatch its process was killed in the middle of never answered: its id is unknown,
      // and the task may well run (spooled, or added, just before the kill).
      if (unanswered > 0) continue
      violations.push({
        invariant: 'tasks.phantom-run',
        severity: 'violation',
        message: `task id ${id} ran (${rs.length} run(s), first in ${rs[0]?.process}) but no dispatch answered with it`,
        events: withContext(h, runEvents(...rs.slice(0, 2))),
      })
      continue
    }

    if (accepted.length > 0 && rs.length === 0) {
      const first = accepted[0]!
      const loss = h.dataLossBetween(first.invokeT, INF)
      if (loss !== undefined) {
        stats.lostWithRedisData++
      } else {
        const modes = accepted.map((d) => `${d.process}#${d.opId} ${String(d.done?.['mode'])}`)
        violations.push({
          invariant: 'tasks.lost',
          severity: 'violation',
          message: `task id ${id} (${String(first.invoke['task'])}) was accepted (${modes.join(', ')}) and never ran, drain included`,
          events: withContext(h, opEvents(...accepted.slice(0, 3)), { after: ms(3000) }),
        })
      }
    }

    if (accepted.length === 0 && refused.length > 0 && rs.length > 0) {
      violations.push({
        invariant: 'tasks.refused-ran',
        severity: 'violation',
        message:
          `task id ${id} (${String(refused[0]!.invoke['task'])}) was answered ` +
          `${refused.map((d) => String(d.done?.['mode'])).join('/')} and ran anyway ` +
          `(${rs.map((r) => `${r.process} ${r.ctxMode}`).join(', ')})`,
        events: withContext(h, [...opEvents(...refused.slice(0, 2)), ...runEvents(rs[0]!)]),
      })
    }

    // Overlap: runs sorted by start; a later one starting before an earlier one ended.
    let overlapped = false
    for (let i = 0; i < rs.length && !overlapped; i++) {
      for (let j = i + 1; j < rs.length; j++) {
        const a = rs[i]!
        const b = rs[j]!
        if (b.start < a.end) {
          overlapped = true
          violations.push({
            invariant: 'tasks.overlap',
            severity: 'violation',
            message:
              `task id ${id} (${a.task}) ran twice at the same time: ${a.process} ${a.ctxMode} ` +
              `attempt ${a.attempt} (${a.outcome}) and ${b.process} ${b.ctxMode} attempt ${b.attempt} ` +
              `(${b.outcome}) started ${(Number(b.start - a.start) / 1e6).toFixed(1)} ms later`,
            events: withContext(h, [...opEvents(...ds.slice(0, 2)), ...runEvents(a, b)], {
              processes: [a.process, b.process, ...ds.slice(0, 2).map((d) => d.process)],
            }),
          })
          break
        }
      }
    }
    if (overlapped) continue

    const success = rs.find((r) => r.outcome === 'ok')
    if (success === undefined) continue
    const again = rs.find((r) => r !== success && r.start > success.end)
    if (again === undefined) continue
    const proc = h.proc(success.process)
    let documented: string | undefined
    const loss = h.dataLossBetween(success.start, again.start)
    if (loss !== undefined) {
      documented = `Redis lost its data in between (${loss.fault}): the done marker with it`
    } else if (
      success.ctxMode === 'inline' &&
      again.process !== success.process &&
      h.nextUp(success.process, success.end, again.start) === undefined
    ) {
      documented =
        `the first run is inline in ${success.process}, which had not recovered (written its ` +
        'marker to Redis) when the second started elsewhere (docs/tasks.md: markers of inline ' +
        'runs are written on recovery; "an idempotency key dispatched on two replicas … during an outage")'
    } else if (
      proc !== undefined &&
      proc.killed &&
      proc.death >= success.end &&
      proc.death - success.end <= ms(KILLED_AFTER_SUCCESS_MS)
    ) {
      documented = `${success.process} was killed ${(Number(proc.death - success.end) / 1e6).toFixed(0)} ms after the run ended, before its done marker could be written`
    }
    const gap = (Number(again.start - success.end) / 1e6).toFixed(1)
    violations.push({
      invariant: 'tasks.ran-after-success',
      severity: documented === undefined ? 'violation' : 'documented',
      message:
        `task id ${id} (${success.task}) ran again ${gap} ms after a successful run: first ` +
        `${success.process} ${success.ctxMode}, then ${again.process} ${again.ctxMode} attempt ${again.attempt}` +
        (documented !== undefined ? `; ${documented}` : ''),
      events: withContext(h, [...opEvents(...ds.slice(0, 3)), ...runEvents(success, again)], {
        processes: [success.process, again.process, ...ds.slice(0, 3).map((d) => d.process)],
      }),
    })
  }
  return { violations, stats }
}
