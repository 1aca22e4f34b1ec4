// The checker: invariants over a merged history. Imports only node built-ins and its own
// files — never the library (src/, dist/) nor the harness — so that a bug cannot hide in code
// that both the system and its checker share.
//
//   import { check, parseHistory } from './checker/index.js'
//   const result = check(parseHistory([...jsonlTexts]))
//   for (const v of result.violations) console.log(formatViolation(result.history, v))
import { checkCache, type CacheStats } from './cache.js'
import { checkChannels, type ChannelStats } from './channels.js'
import type { HistoryEvent } from './events.js'
import { checkHealth, type HealthStats } from './health.js'
import { History } from './history.js'
import { checkTasks, type TaskStats } from './tasks.js'
import { opEvents, withContext, type Violation } from './violation.js'

export { parseHistory, toRaw, type HistoryEvent, type RawEvent } from './events.js'
export { History } from './history.js'
export { formatEvents, formatViolation, type Severity, type Violation } from './violation.js'

/** The invariant families; `--invariants` can pick among them. */
export const FAMILIES = ['cache', 'tasks', 'channels', 'health', 'process', 'api'] as const
export type Family = (typeof FAMILIES)[number]

export interface CheckStats {
  cache: CacheStats
  tasks: TaskStats
  channels: ChannelStats
  health: HealthStats
  /** Operations per op name (invokes). */
  operations: Record<string, number>
  /** Faults per kind (fault-start events). */
  faults: Record<string, number>
}

export interface CheckResult {
  history: History
  violations: Violation[]
  stats: CheckStats
}

export interface CheckOptions {
  families?: readonly Family[]
}

/**
 *   process.crash  a child died without the harness killing it, or reported an uncaught
 *                  exception / unhandled rejection.
 *   api.threw      an operation that never throws because of Redis (cache get/set/delete/clear,
 *                  dispatch, groupAdd, groupSend) threw.
 */
function checkProcesses(h: History): Violation[] {
  const out: Violation[] = []
  for (const p of h.processes.values()) {
    const crash = p.lifecycle.find((e) => e.op === 'crash')
    const exit = p.lifecycle.find((e) => e.op === 'child-exit' && e['expected'] !== true)
    const killed = p.lifecycle.some((e) => e.op === 'child-kill')
    if (crash !== undefined || (exit !== undefined && !killed)) {
      const core = [crash, exit].filter((e): e is HistoryEvent => e !== undefined)
      out.push({
        invariant: 'process.crash',
        severity: 'violation',
        message: `${p.name} ${crash !== undefined ? `crashed: ${String(crash['error'])}` : `exited (code ${String(exit?.['code'])}, signal ${String(exit?.['signal'])})`}`,
        events: withContext(h, core, { processes: [p.name] }),
      })
    }
  }
  return out
}

function checkApi(h: History): Violation[] {
  const out: Violation[] = []
  const groups = new Map<string, { count: number; first: (typeof h.ops)[number] }>()
  for (const op of h.ops) {
    if (op.done === undefined || op.ok) continue
    const k = `${op.process}\u0000${op.op}`
    const g = groups.get(k)
    if (g === undefined) groups.set(k, { count: 1, first: op })
    else g.count++
  }
  for (const { count, first } of groups.values()) {
    out.push({
      invariant: 'api.threw',
      severity: 'violation',
      message: `${first.process} ${first.op} threw ${count} time(s); first: ${String(first.done?.['error'])}`,
      events: withContext(h, opEvents(first)),
    })
  }
  return out
}

export function check(events: readonly HistoryEvent[], options: CheckOptions = {}): CheckResult {
  const h = new History(events)
  const families = new Set<Family>(options.families ?? FAMILIES)
  const cache = checkCache(h)
  const tasks = checkTasks(h)
  const channels = checkChannels(h)
  const health = checkHealth(h)
  const violations: Violation[] = []
  if (families.has('cache')) violations.push(...cache.violations)
  if (families.has('tasks')) violations.push(...tasks.violations)
  if (families.has('channels')) violations.push(...channels.violations)
  if (families.has('health')) violations.push(...health.violations)
  if (families.has('process')) violations.push(...checkProcesses(h))
  if (families.has('api')) violations.push(...checkApi(h))
  const operations: Record<string, number> = {}
  for (const op of h.ops) operations[op.op] = (operations[op.op] ?? 0) + 1
  const faults: Record<string, number> = {}
  for (const f of h.faults) faults[f.fault] = (faults[f.fault] ?? 0) + 1
  return {
    history: h,
    violations,
    stats: {
      cache: cache.stats,
      tasks: tasks.stats,
      channels: channels.stats,
      health: health.stats,
      operations,
      faults,
    },
  }
}
