// The history format the checker reads: one JSON object per line, written by every process of
// a run (the children and the harness). This file is the checker's own definition of it; the
// checker imports nothing from the library or from the harness, so that a bug cannot hide in
// code both share. The harness writes what is described here.
//
// `t` is `process.hrtime.bigint()` as a decimal string: CLOCK_MONOTONIC, common to every
// process on the machine and untouched by the clock-offset fault (which shifts Date only).

export type EventKind = 'invoke' | 'ok' | 'fail' | 'info'

/** What a process reports about itself: the health state and the component's backend. */
export type HealthState = 'starting' | 'up' | 'down'
export type Backend = 'redis' | 'memory'

/** An event as written (t as a string) and as read (t as a bigint). */
export interface RawEvent {
  kind: EventKind
  /** The process incarnation ('web1.1', 'web1.2' after a restart…) or 'harness'. */
  process: string
  op: string
  t: string
  [field: string]: unknown
}

export interface HistoryEvent {
  kind: EventKind
  process: string
  op: string
  t: bigint
  /** Links an op's invoke with its ok/fail, per process. */
  opId?: number
  /** Everything else the writer put in (key, value, mode, id, state, backend, …). */
  [field: string]: unknown
}

// Operation names (`op`):
//
// child lifecycle (kind 'info'):
//   'start'          { base, role, pid, clockOffsetMs }            first event of a child
//   'ready'          { state }                                       ready() resolved, members joined
//   'health'         { state: 'up' | 'down' | 'reset', forced? }     failsoft.health.on(...)
//   'force'          { on: boolean }                                 just before forceFallback(on)
//   'crash'          { error }                                       uncaught exception / rejection
// cache (invoke → ok | fail), each with { state, backend } at that moment:
//   'cache.get'      invoke { key }           ok { key, value: string | null }
//   'cache.set'      invoke { key, value }    ok { key, value, result: boolean }
//   'cache.delete'   invoke { key }           ok { key, result: boolean }
//   'cache.clear'    invoke {}                ok {}
// tasks:
//   'task.dispatch'  invoke { task, key? }    ok { task, key?, mode, id, ok? }
//   'task.run-start' info { runId, id, task, ctxMode, attempt }   written in the handler
//   'task.run-end'   info { runId, id, ok, error? }
// channels:
//   'chan.join'      invoke { channel, group }  ok { channel, group }  (groupAdd)
//   'chan.send'      invoke { group, seq }      ok { group, seq }  (+ state, backend)
//   'chan.recv'      info { channel, pub, seq }                       every receipt
// harness (process 'harness', kind 'info'):
//   'run'            { seed, schedule }         first event
//   'phase'          { phase: 'load' | 'drain' | 'close' | 'end' }
//   'fault-start'    { faultId, fault, targets: string[] ('*' = every process),
//                      outage, slow, dataLoss, expectDown, params }
//   'fault-end'      { faultId, fault }
//   'redis-answers'  { path: base name of a process, faultId }  a PING through that
//                    process's own proxy, on a fresh connection, answered
//   'redis-stall'    { sentT, rttMs }           the harness' own direct PING (every 100 ms)
//                    took ≥ 150 ms while no server fault played: Redis or the machine stalled
//   'harness-stall'  { sentT, rttMs }           the harness' event loop (it carries every
//                    proxy) ticked ≥ 150 ms late: every process' traffic waited
//   'child-spawn'    { child, base, role }
//   'child-kill'     { child }                 the harness SIGKILLs it
//   'child-exit'     { child, code, signal, expected }

/** Parse JSONL text (one or several files concatenated). A torn last line is ignored. */
export function parseHistory(texts: readonly string[]): HistoryEvent[] {
  const events: HistoryEvent[] = []
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue
      let raw: RawEvent
      try {
        raw = JSON.parse(line) as RawEvent
      } catch {
        continue // a line torn by a SIGKILL mid-write: it was never acknowledged to anyone
      }
      if (typeof raw.t !== 'string' || typeof raw.process !== 'string') continue
      events.push({ ...raw, t: BigInt(raw.t) })
    }
  }
  // Stable: events of one process keep their file order when two share a timestamp.
  return events.sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
}

/** The event back as a JSON-safe object (t as a string). */
export function toRaw(event: HistoryEvent): RawEvent {
  return { ...event, t: event.t.toString() } as RawEvent
}
