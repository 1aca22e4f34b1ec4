// Cache invariants (see docs/checker.md, "Cache").
//
// A key is a register; set(k, v) writes v, delete(k) and clear() write "absent", and a set
// answered `false` (Redis refused it: the key is invalidated) writes "absent" at its
// completion. Values are unique per write, so a read names the write it returns.
//
// A read R (get answered with a value v, not a miss) by process P, where W1 is the set that
// wrote v, violates:
//   cache.phantom-value     no set of v on that key exists, or R completed before W1 was invoked;
//   cache.stale-read        R is not degraded and an acknowledged write W2 on the key (or a
//                           clear) exists with W1.complete < W2.invoke and W2.complete <
//                           R.invoke, W2 "visible to P" (below), or W1 itself was answered
//                           false before R was invoked;
//   cache.read-your-writes  R is degraded and such a W2 exists among P's own writes.
//
// Degraded: an operation of P is degraded when P's health state was not 'up' or the cache's
// backend was not 'redis' at its invoke or at its completion, or P had a health transition
// in between (the peer wait after a recovery reports backend 'memory', so it counts).
//
// Visible to P (for a non-degraded read): W2 is P's own write; or W2 was not degraded; or
// W2's process has had an 'up' (its recovery, which reconciles the journal, completed)
// after W2 completed and before R was invoked — and its cache was back on Redis by R's invoke:
// one of its cache operations between that 'up' and R began on backend 'redis' or with nothing
// left to reconcile (the child records it: journaled keys + 1 for an owed generation bump), or with none in between, its next one
// did not begin with keys still journaled and no transition since the 'up' (a reconciliation
// Redis refused, e.g. at maxmemory, keeps that cache on memory while the process is 'up': its
// writes are not in Redis yet, docs/cache.md). A degraded read only has to honour P's own
// writes: its memory tier may differ from other processes (documented, bounded by
// maxStaleSeconds and the TTL, both longer than a run).
//
// A miss is always allowed. A clear() is a write like any other: every operation on a data key
// checks the generation in its own round trip (docs/cache.md, "Generation changes"), so there
// is no window after it.
import { INF, type History, type OpRecord } from './history.js'
import { opEvents, withContext, type Violation } from './violation.js'

function field(e: { [k: string]: unknown } | undefined, name: string): unknown {
  return e === undefined ? undefined : e[name]
}

export function degraded(h: History, op: OpRecord): boolean {
  if (op.done === undefined || !op.ok) return true
  if (field(op.invoke, 'state') !== 'up' || field(op.invoke, 'backend') !== 'redis') return true
  if (field(op.done, 'state') !== 'up' || field(op.done, 'backend') !== 'redis') return true
  return h.transitionIn(op.process, op.invokeT, op.completeT)
}

export interface CacheStats {
  reads: number
  hits: number
  writes: number
  degradedReads: number
}

export function checkCache(h: History): { violations: Violation[]; stats: CacheStats } {
  const violations: Violation[] = []
  const gets = h.opsOf('cache.get')
  const writes = [...h.opsOf('cache.set'), ...h.opsOf('cache.delete')]
  const clears = h.opsOf('cache.clear')
  const byKey = new Map<string, OpRecord[]>()
  const setByValue = new Map<string, OpRecord>()
  for (const w of writes) {
    const key = String(field(w.invoke, 'key'))
    let list = byKey.get(key)
    if (list === undefined) byKey.set(key, (list = []))
    list.push(w)
    if (w.op === 'cache.set') setByValue.set(String(field(w.invoke, 'value')), w)
  }
  // Each process's cache operations, in invoke order (for `visible`).
  const cacheOps = new Map<string, OpRecord[]>()
  for (const op of [...gets, ...writes, ...clears]) {
    let list = cacheOps.get(op.process)
    if (list === undefined) cacheOps.set(op.process, (list = []))
    list.push(op)
  }
  for (const list of cacheOps.values()) list.sort((a, b) => (a.invokeT < b.invokeT ? -1 : 1))
  /**
   * Whether `process`'s cache had reconciled by `before`, after its 'up' at `after`: one of its
   * cache operations in between began on backend 'redis' or with an empty journal — or, with
   * none in between, its first one after `before` did not begin with keys still journaled
   * while 'up' and no health transition since `after` (a reconciliation refused: the cache
   * stayed on memory throughout). Histories without `journal` count backend 'memory' as not.
   */
  const cacheReconciled = (process: string, after: bigint, before: bigint): boolean => {
    let any = false
    for (const op of cacheOps.get(process) ?? []) {
      if (op.invokeT <= after) continue
      // On Redis, or reconciled (nothing left: the peer wait also reports 'memory').
      const onRedis = field(op.invoke, 'backend') === 'redis' || field(op.invoke, 'journal') === 0
      if (op.invokeT < before) {
        any = true
        if (onRedis) return true
        continue
      }
      if (any) return false
      const stillOnMemory =
        !onRedis &&
        field(op.invoke, 'state') === 'up' &&
        !h.transitionIn(process, after + 1n, op.invokeT)
      return !stillOnMemory
    }
    return !any
  }
  const isDegraded = new Map<OpRecord, boolean>()
  const deg = (op: OpRecord): boolean => {
    let d = isDegraded.get(op)
    if (d === undefined) isDegraded.set(op, (d = degraded(h, op)))
    return d
  }
  const stats: CacheStats = {
    reads: 0,
    hits: 0,
    writes: writes.length + clears.length,
    degradedReads: 0,
  }

  for (const r of gets) {
    if (!r.ok || r.done === undefined) continue
    stats.reads++
    const rDeg = deg(r)
    if (rDeg) stats.degradedReads++
    const value = field(r.done, 'value')
    if (value === null || value === undefined) continue // a miss: always allowed
    stats.hits++
    const key = String(field(r.invoke, 'key'))
    const w1 = setByValue.get(String(value))
    if (w1 === undefined || String(field(w1.invoke, 'key')) !== key || r.completeT < w1.invokeT) {
      const why =
        w1 === undefined
          ? 'no set ever wrote this value'
          : String(field(w1.invoke, 'key')) !== key
            ? `the value was written to key ${String(field(w1.invoke, 'key'))}`
            : 'the read completed before the set of this value was invoked'
      violations.push({
        invariant: 'cache.phantom-value',
        severity: 'violation',
        message: `${r.process} get(${key}) returned ${JSON.stringify(value)}: ${why}`,
        events: withContext(h, opEvents(r, w1)),
      })
      continue
    }
    if (
      w1.done !== undefined &&
      w1.ok &&
      field(w1.done, 'result') === false &&
      w1.completeT < r.invokeT
    ) {
      if (!rDeg || w1.process === r.process) {
        violations.push({
          invariant: rDeg ? 'cache.read-your-writes' : 'cache.stale-read',
          severity: 'violation',
          message:
            `${r.process} get(${key}) returned ${JSON.stringify(value)}, the value of a set that ` +
            `${w1.process} was answered false (refused, key invalidated) before the read began`,
          events: withContext(h, opEvents(w1, r)),
        })
        continue
      }
    }
    if (w1.completeT === INF) continue // never acknowledged: nothing can be ordered after it
    const candidates = [...(byKey.get(key) ?? []), ...clears].filter(
      (w2) =>
        w2 !== w1 &&
        w2.ok &&
        w2.done !== undefined &&
        w1.completeT < w2.invokeT &&
        w2.completeT < r.invokeT &&
        visible(h, w2, r, rDeg, deg, cacheReconciled),
    )
    if (candidates.length === 0) continue
    // The replacing write closest to the read is the most telling one.
    candidates.sort((a, b) => (a.completeT > b.completeT ? -1 : 1))
    const w2 = candidates[0]!
    const what =
      w2.op === 'cache.clear'
        ? 'clear()'
        : w2.op === 'cache.delete'
          ? `delete(${key})`
          : `set(${key}, ${JSON.stringify(field(w2.invoke, 'value'))})`
    const gapMs = Number(r.invokeT - w2.completeT) / 1e6
    violations.push({
      invariant: rDeg ? 'cache.read-your-writes' : 'cache.stale-read',
      severity: 'violation',
      message:
        `${r.process} ${rDeg ? '(degraded) ' : ''}get(${key}) returned ${JSON.stringify(value)} ` +
        `(written by ${w1.process}#${w1.opId}), but ${w2.process}#${w2.opId} ${what}` +
        `${deg(w2) ? ' (made while degraded)' : ''}, invoked after that write completed, was ` +
        `acknowledged ${gapMs.toFixed(1)} ms before the read began` +
        (candidates.length > 1 ? ` (${candidates.length - 1} more such writes)` : ''),
      events: withContext(h, opEvents(w1, w2, r)),
    })
  }
  return { violations, stats }
}

function visible(
  h: History,
  w2: OpRecord,
  r: OpRecord,
  rDegraded: boolean,
  deg: (op: OpRecord) => boolean,
  cacheReconciled: (process: string, after: bigint, before: bigint) => boolean,
): boolean {
  if (w2.process === r.process) return true // read-your-writes, memory tier included
  if (rDegraded) return false // a degraded read only owes its own process' writes
  if (!deg(w2)) return true
  // Made while its process was degraded: owed once that process completed a recovery and its
  // cache is back on Redis.
  const up = h.nextUp(w2.process, w2.completeT, r.invokeT)
  return up !== undefined && cacheReconciled(w2.process, up, r.invokeT)
}
