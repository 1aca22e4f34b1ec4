// The multi-host run (test/cache/multi-host.test.ts, test/cache/multi-host-sentinel.test.ts):
// three app processes, each in a network namespace of its own (its own "host", its own link to
// the Redis host), all using the cache and dispatching tasks (fixtures/multi-host-node.ts). One
// of them (CUT) is partitioned (its link down: a blackhole, both ways) while the other two keep
// theirs — with, optionally, something else happening meanwhile (a Sentinel failover) — then its
// link heals. runMultiHost() drives the workload and returns the recorded history, judged:
//   - errors: what threw, in any process;
//   - the partitioned process: reported down, served and dispatched while degraded, back on
//     Redis by itself (cutBack);
//   - othersOff: every sign that another process left Redis (a `down`, an operation or status
//     off Redis, a dispatch not `queued`), with its time — a test decides which it allows;
//   - stale: reads that returned a value an acknowledged write owed to them replaced (the
//     checker's rule, docs/checker.md, "Cache"; see below);
//   - tasks: accepted and not run, run though refused or never dispatched, run twice.
// assertCommon() asserts what holds in every scenario; each test adds its own.
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { sleep, waitFor } from '../support/fault-kit.js'
import { uniquePrefix } from '../support/failsoft.js'
import type { NetnsLab } from '../support/netns.js'

const fixture = fileURLToPath(new URL('./fixtures/multi-host-node.ts', import.meta.url))
export const PROCESSES = 3
export const CUT = 0 // the process whose link is cut
const KEYS = ['K0', 'K1', 'K2', 'K3', 'K4', 'K5']
/** Clock slack between processes when comparing a read's start with a recovery, in ms. */
const SLACK_MS = 5
const ACCEPTED = new Set(['queued', 'inline', 'spooled', 'deferred', 'duplicate'])

export interface State {
  available: boolean
  backend: 'redis' | 'memory'
  peerWaiting: boolean
  onRedis: boolean
}

interface OpReply {
  seq: number
  op: 'set' | 'delete' | 'clear' | 'get'
  key?: string
  value?: string
  result?: unknown
  error?: string
  start: number
  end: number
  before: State
  after: State
}

export interface Report {
  dispatches: Array<{
    task: string
    id: string
    mode: string
    ok: boolean | null
    start: number
    end: number
    before: State
  }>
  events: Array<{ event: 'down' | 'up'; at: number }>
  transitions: Array<{ at: number; state: State }>
  errors: string[]
}

export interface StatusReply {
  at: number
  redis: { available: boolean; state: string; primary: string | null }
  state: State
}

/**
 * An app process in its namespace, driven over IPC. A cache operation's reply is matched by its
 * `seq`, any other by a request id (`rid`) the fixture echoes: two requests of one kind in
 * flight at once (the status poller's and a waitFor's) each get their own reply.
 */
class AppProcess {
  readonly #pending = new Map<string, (reply: Record<string, unknown>) => void>()
  #exit: string | undefined
  #rid = 0

  constructor(
    readonly index: number,
    readonly child: ChildProcess,
  ) {
    child.on('message', (raw) => {
      const reply = raw as Record<string, unknown>
      const tag = typeof reply.seq === 'number' ? `seq:${reply.seq}` : `rid:${String(reply.rid)}`
      const resolve = this.#pending.get(tag)
      this.#pending.delete(tag)
      resolve?.(reply)
    })
    child.once('exit', (code, signal) => {
      this.#exit = `process ${index} exited (${signal ?? code})`
    })
  }

  request<T>(message: Record<string, unknown>, timeoutMs = 15_000): Promise<T> {
    if (this.#exit !== undefined) return Promise.reject(new Error(this.#exit))
    if (typeof message.seq !== 'number') message = { ...message, rid: ++this.#rid }
    const tag =
      typeof message.seq === 'number' ? `seq:${message.seq}` : `rid:${String(message.rid)}`
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(tag)
        reject(new Error(`process ${this.index}: no reply to ${JSON.stringify(message)}`))
      }, timeoutMs)
      this.#pending.set(tag, (reply) => {
        clearTimeout(timer)
        resolve(reply as T)
      })
      this.child.send(message)
    })
  }
}

/** A sign that a process other than the partitioned one was off Redis. */
export interface OffRedis {
  proc: number
  at: number
  what: string
}

export interface MultiHostOptions {
  lab: NetnsLab
  /** What each process passes as `redis`: a URL, or options (ioredis', e.g. `{ sentinels, name }`). */
  redis: string | Record<string, unknown>
  /** How long the partition lasts, in ms (default 4000). */
  partitionMs?: number
  /** Runs alongside the workload once the link is down (e.g. a failover). */
  duringPartition?: () => Promise<void>
  /** More fields for the run's diagnostic line. */
  extra?: () => Record<string, unknown>
}

export async function runMultiHost(t: TestContext, options: MultiHostOptions) {
  const { lab, redis, partitionMs = 4000, duringPartition, extra } = options
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-multihost-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const prefix = uniquePrefix()
  const execFiles: string[] = []

  const apps: AppProcess[] = []
  const ready: Array<Promise<void>> = []
  for (let i = 0; i < PROCESSES; i++) {
    const execFile = join(dir, `exec-${i}.log`)
    execFiles.push(execFile)
    const child = lab.spawn(i, process.execPath, ['--import', 'tsx', fixture], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        ...(typeof redis === 'string'
          ? { REDIS_URL: redis }
          : { REDIS_OPTIONS: JSON.stringify(redis) }),
        PREFIX: prefix,
        NAME: `p${i}`,
        EXEC_FILE: execFile,
        SPOOL: join(dir, `spool-${i}.jsonl`),
      },
    })
    const app = new AppProcess(i, child)
    apps.push(app)
    ready.push(
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`process ${i} not ready`)), 30_000)
        child.on('message', (raw) => {
          if ((raw as { op?: string }).op === 'ready') {
            clearTimeout(timer)
            resolve()
          }
        })
        child.once('exit', (code) => reject(new Error(`process ${i} exited early (${code})`)))
      }),
    )
  }
  await Promise.all(ready)
  const cut = apps[CUT]
  assert.ok(cut !== undefined)

  // ---- the workload: one cache operation at a time, across the processes; dispatch loops.
  const ops: Array<OpReply & { proc: number }> = []
  let seq = 0
  let values = 0
  const call = async (
    proc: number,
    message: Omit<OpReply, 'start' | 'end' | 'before' | 'after' | 'seq'>,
  ) => {
    const app = apps[proc]
    assert.ok(app !== undefined)
    const reply = await app.request<OpReply>({ ...message, seq: ++seq })
    ops.push({ ...reply, proc })
    return reply
  }
  let round = 0
  const workload = async (ms: number): Promise<void> => {
    const until = performance.now() + ms
    while (performance.now() < until) {
      round++
      const writer = round % PROCESSES
      const key = KEYS[Math.floor(Math.random() * KEYS.length)] ?? 'K0'
      const dice = Math.random()
      if (round % 97 === 0) await call(writer, { op: 'clear' })
      else if (dice < 0.25) await call(writer, { op: 'delete', key })
      else await call(writer, { op: 'set', key, value: `p${writer}:${++values}` })
      // Everyone reads the key just written (concurrently: reads change nothing) …
      await Promise.all(apps.map((_, proc) => call(proc, { op: 'get', key })))
      // … and now and then every key.
      if (round % 5 === 0) {
        for (const k of KEYS)
          await Promise.all(apps.map((_, proc) => call(proc, { op: 'get', key: k })))
      }
      await sleep(2)
    }
  }

  const statuses: Array<StatusReply & { proc: number; phase: string }> = []
  let phase = 'before'
  let polling = true
  const poller = (async () => {
    while (polling) {
      const replies = await Promise.all(
        apps.map((app) => app.request<StatusReply>({ op: 'status' }).catch(() => undefined)),
      )
      for (const [proc, reply] of replies.entries()) {
        if (reply !== undefined) statuses.push({ ...reply, proc, phase })
      }
      await sleep(50)
    }
  })()

  for (const app of apps) app.child.send({ op: 'dispatch', on: true })
  await workload(1500)

  phase = 'partitioned'
  const partitionedAt = performance.timeOrigin + performance.now()
  await lab.partition(CUT)
  await Promise.all([workload(partitionMs), duringPartition?.()])
  const downDuring = statuses.some(
    (s) => s.proc === CUT && s.phase === 'partitioned' && !s.redis.available,
  )

  phase = 'healed'
  await lab.heal(CUT)
  const healedAt = performance.timeOrigin + performance.now()
  await workload(3000)
  await waitFor(async () => (await cut.request<StatusReply>({ op: 'status' })).state.onRedis, {
    timeoutMs: 15_000,
    message: 'the partitioned process back on Redis by itself',
  })
  await workload(1500)
  polling = false
  await poller

  await Promise.all(apps.map((app) => app.request({ op: 'dispatch', on: false })))
  const reports = await Promise.all(apps.map((app) => app.request<Report>({ op: 'report' })))

  // ---- tasks: every accepted dispatch runs (let the queue drain), none twice.
  const accepted = new Map<string, string>()
  const refused = new Map<string, string>() // answered 'dropped' or 'rejected': never runs
  const dispatched = new Set<string>()
  for (const [proc, report] of reports.entries()) {
    for (const d of report.dispatches) {
      dispatched.add(d.id)
      const what = `p${proc} ${d.task} ${d.mode}${d.ok === false ? ' (failed)' : ''}`
      if (ACCEPTED.has(d.mode)) accepted.set(d.id, what)
      else if (d.mode === 'dropped' || d.mode === 'rejected') refused.set(d.id, what)
    }
  }
  const runs = (): Map<string, string[]> => {
    const seen = new Map<string, string[]>()
    for (const file of execFiles) {
      if (!existsSync(file)) continue
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        const [id, ...rest] = line.split(' ')
        if (id === undefined || id === '') continue
        seen.set(id, [...(seen.get(id) ?? []), rest.join(' ')])
      }
    }
    return seen
  }
  await waitFor(() => [...accepted.keys()].every((id) => runs().has(id)), {
    timeoutMs: 20_000,
    intervalMs: 200,
    message: 'every accepted task runs',
  }).catch(() => undefined) // reported by the assertion below, with the ids
  await sleep(1000) // a second run, if any, has time to show
  const ran = runs()
  const notRun = [...accepted].filter(([id]) => !ran.has(id)).map(([id, what]) => `${id} (${what})`)
  const shouldNot = [...ran]
    .filter(([id]) => refused.has(id) || !dispatched.has(id))
    .map(([id, list]) => `${id} (${refused.get(id) ?? 'never dispatched'}): ${list.join(' | ')}`)
  const twice = [...ran]
    .filter(([, list]) => list.length > 1)
    .map(([id, list]) => `${id}: ${list.join(' | ')}`)

  await Promise.all(apps.map((app) => app.request({ op: 'close' }, 5000).catch(() => undefined)))

  // ---- the cache history: the stale reads.
  const onRedisAgain = (proc: number, after: number): number => {
    const report = reports[proc]
    assert.ok(report !== undefined)
    const back = report.transitions.find((tr) => tr.at >= after && tr.state.onRedis)
    return back?.at ?? Infinity
  }
  // The checker's rule (docs/checker.md, "Cache"), with the parent's total order of
  // operations for "completed before": a read R of process P that returned v (a miss is always
  // allowed; v names its write W1, every value is unique) is stale when a write W2 on the key,
  // or a clear(), came after W1 and is owed to R — P's own W2 completed before R (read-your-
  // writes, degraded or not); another process' W2, for an R on Redis only: acknowledged before
  // R while its process was on Redis, or made degraded and its process back on Redis before R.
  interface Write {
    seq: number
    proc: number
    key: string | '*'
    value: string | undefined
    refused: boolean
    clean: boolean
    /** When the others owe it: its process back on Redis after it (degraded writes). */
    reconciled: number
  }
  const writes: Write[] = []
  const byValue = new Map<string, Write>()
  for (const op of ops) {
    if (op.op === 'get' || op.error !== undefined) continue
    const write: Write = {
      seq: op.seq,
      proc: op.proc,
      key: op.op === 'clear' ? '*' : (op.key ?? ''),
      value: op.op === 'set' ? op.value : undefined,
      refused: op.op === 'set' && op.result === false,
      clean: op.before.onRedis && op.after.onRedis,
      reconciled: onRedisAgain(op.proc, op.end),
    }
    writes.push(write)
    if (write.value !== undefined) byValue.set(write.value, write)
  }
  const stale: string[] = []
  for (const read of ops) {
    if (read.op !== 'get' || read.error !== undefined || read.result === null) continue
    const value = String(read.result)
    const onRedis = read.before.onRedis && read.after.onRedis
    const where = `p${read.proc} read ${read.key}=${value} (seq ${read.seq}, ${onRedis ? 'on Redis' : 'degraded'})`
    const source = byValue.get(value)
    if (source === undefined || source.seq > read.seq) {
      stale.push(`${where}: no such write before it`)
      continue
    }
    if (source.refused) stale.push(`${where}: its set was refused`)
    const owed = (w: Write): boolean =>
      w.proc === read.proc
        ? w.seq < read.seq
        : onRedis && (w.clean ? w.seq < read.seq : w.reconciled + SLACK_MS < read.start)
    const newer = writes.find(
      (w) => (w.key === read.key || w.key === '*') && w.seq > source.seq && owed(w),
    )
    if (newer !== undefined) {
      stale.push(
        `${where}: replaced by p${newer.proc} seq ${newer.seq} ` +
          (newer.clean
            ? '(on Redis)'
            : `(degraded, reconciled at ${newer.reconciled.toFixed(1)} vs read at ${read.start.toFixed(1)})`),
      )
    }
  }

  // ---- health: the partitioned process only.
  const cutReport = reports[CUT]
  assert.ok(cutReport !== undefined)
  const others = apps.map((_, i) => i).filter((i) => i !== CUT)
  const othersOff = others.flatMap((i): OffRedis[] => {
    const report = reports[i]
    if (report === undefined) return [{ proc: i, at: NaN, what: `p${i}: no report` }]
    return [
      ...report.events
        .filter((e) => e.event === 'down')
        .map((e) => ({ proc: i, at: e.at, what: `p${i} down at ${e.at.toFixed(1)}` })),
      ...ops
        .filter((op) => op.proc === i && !(op.before.onRedis && op.after.onRedis))
        .map((op) => ({
          proc: i,
          at: op.start,
          what: `p${i} ${op.op} ${op.key ?? ''} seq ${op.seq} off Redis`,
        })),
      ...statuses
        .filter((s) => s.proc === i && !s.redis.available)
        .map((s) => ({
          proc: i,
          at: s.at,
          what: `p${i} status ${s.redis.state} at ${s.at.toFixed(1)}`,
        })),
      ...report.dispatches
        .filter((d) => d.mode !== 'queued')
        .map((d) => ({ proc: i, at: d.start, what: `p${i} dispatch ${d.task} ${d.mode}` })),
    ]
  })
  const cutDown = cutReport.events.filter(
    (e) => e.event === 'down' && e.at >= partitionedAt && e.at <= healedAt,
  )
  const cutBack = onRedisAgain(CUT, healedAt)
  const cutDegradedOps = ops.filter((op) => op.proc === CUT && !op.after.available).length
  const cutModes = (mode: string): number =>
    cutReport.dispatches.filter((d) => d.mode === mode).length
  const cutFallbackDispatches = cutModes('inline') + cutModes('spooled')
  const errors = reports.flatMap((r, i) => r.errors.map((e) => `p${i}: ${e}`))
  const summary = {
    cacheOps: ops.length,
    dispatches: reports.map((r) => r.dispatches.length),
    accepted: accepted.size,
    cutDegradedOps,
    cutFallbackDispatches,
    cutBackAfterHealMs: Math.round(cutBack - healedAt),
  }
  t.diagnostic(JSON.stringify({ ...summary, ...extra?.() }))
  // The whole history, for a failure's post-mortem: MULTIHOST_DUMP=<file>.
  const dump = process.env['MULTIHOST_DUMP']
  if (dump !== undefined && dump !== '') {
    writeFileSync(dump, JSON.stringify({ partitionedAt, healedAt, ops, reports, statuses }))
  }
  const last = apps.map((_, proc) => statuses.filter((s) => s.proc === proc).at(-1))

  return {
    summary,
    errors,
    partitionedAt,
    healedAt,
    cutDown,
    downDuring,
    cutDegradedOps,
    cutInline: cutModes('inline'),
    cutSpooled: cutModes('spooled'),
    cutBack,
    othersOff,
    /** Every status polled (each process, every 50 ms), and each process's last one. */
    statuses,
    last,
    stale,
    accepted,
    notRun,
    shouldNot,
    twice,
  }
}

export type MultiHostResult = Awaited<ReturnType<typeof runMultiHost>>

/** What holds whatever else happens: everything but the other processes' time off Redis. */
export function assertCommon(r: MultiHostResult): void {
  assert.deepEqual(r.errors, [], 'no operation threw, in any process')
  assert.ok(r.cutDown.length >= 1 && r.downDuring, 'the partitioned process reports Redis down')
  assert.ok(
    r.cutDegradedOps > 50,
    `the partitioned process served while degraded (${r.cutDegradedOps})`,
  )
  assert.ok(
    r.cutInline > 10 && r.cutSpooled > 10,
    `…and dispatched (${r.cutInline} inline, ${r.cutSpooled} spooled)`,
  )
  assert.ok(
    r.cutBack - r.healedAt < 10_000,
    `back on Redis ${r.summary.cutBackAfterHealMs} ms after the heal`,
  )
  assert.deepEqual(
    r.stale,
    [],
    'no read returned a value an acknowledged write owed to it replaced',
  )
  assert.ok(r.accepted.size > 200, `tasks were dispatched (${r.accepted.size} accepted)`)
  assert.deepEqual(r.notRun, [], 'every accepted task ran')
  assert.deepEqual(r.shouldNot, [], 'no task ran that no dispatch accepted')
  assert.deepEqual(r.twice, [], 'no task ran twice')
}
