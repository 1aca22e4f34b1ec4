// One chaos run: a redis-server (AOF, noeviction) behind a fault-injecting TCP proxy — or, with
// `sentinel`, a Sentinel set (a primary, two replicas, three Sentinels) — two app processes on
// it sharing one SQLite file, the load, the fault schedule, then the drain and the report.
// Everything started here is stopped in `finally`, even when the run fails.
import { execSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { freePort, RedisServer, sleep, TcpProxy } from '../test/support/fault-kit.js'
import type { SentinelSet } from '../test/support/sentinel.js'
import { AppProcess, type LogScan } from './apps.js'
import { Load, type LoadProfile } from './load.js'
import {
  buildReport,
  type AppSummary,
  type ChaosReport,
  type Executions,
  type PhaseRecord,
  type PrimarySample,
  type HeapSample,
  type RssSample,
  type SettledMemory,
} from './report.js'
import {
  schedule,
  sentinelSchedule,
  type Fault,
  type FaultEnv,
  type ProfileName,
  type Schedule,
  type SentinelFaultEnv,
} from './schedule.js'
import {
  DOWN_AFTER_MS,
  FAILOVER_TIMEOUT_MS,
  REPLICAS,
  SENTINELS,
  SETTLE_TIMEOUT_MS as RESTORE_MAX_MS,
  sentinelUrl,
  startSentinelSet,
} from './sentinel.js'

export interface RunOptions {
  profile: ProfileName
  /** Repository root (where app/ lives). */
  root: string
  /** The command line, for the report. */
  command: string
  /** Play only these faults (names from schedule.ts). */
  only?: string[]
  /** Keep the run directory (database, app logs) even when every target passed. */
  keep?: boolean
  /** The Sentinel profile: the apps through a Sentinel set, faults on its primary. */
  sentinel?: boolean
  log?: (message: string) => void
}

export interface RunResult {
  report: ChaosReport
  apps: string[]
  /** Database and app logs; removed after a passing run unless `keep`. */
  runDir: string
  runDirKept: boolean
}

const APPS = ['A', 'B']

function loadProfile(profile: ProfileName): LoadProfile {
  const base: LoadProfile = {
    readersPerApp: 2,
    readPeriodMs: 60,
    trackedProjects: 4,
    patchPeriodMs: 500,
    createPeriodMs: 2000,
    notifyPeriodMs: 500,
    compostPeriodMs: 10_000,
    chatClientsPerApp: 2,
    chatPeriodMs: 500,
    votePeriodMs: 1000,
  }
  return profile === 'smoke' ? { ...base, readersPerApp: 1, readPeriodMs: 100 } : base
}

function versionOf(root: string, pkg: string): string {
  try {
    const path = join(root, 'node_modules', pkg, 'package.json')
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version
  } catch {
    return 'not installed'
  }
}

export function machine(root: string): Record<string, string> {
  let redis = 'unknown'
  try {
    redis = execSync('redis-server --version').toString().trim().split(' ')[2] ?? redis
  } catch {
    redis = 'unknown (redis-server --version failed)'
  }
  const cpus = os.cpus()
  return {
    cpus: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    redis: redis.replace(/^v=/, ''),
    failsoft: (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string })
      .version,
    ioredis: versionOf(root, 'ioredis'),
    bullmq: versionOf(root, 'bullmq'),
    ws: versionOf(root, 'ws'),
    'better-sqlite3': versionOf(root, 'better-sqlite3'),
  }
}

/** Rows per task id and per email subject, read from the app's SQLite file (read-only). */
function readExecutions(databasePath: string): Executions {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true })
  try {
    const byId = new Map<string, number>()
    const bySubject = new Map<string, number>()
    const outbox = db.prepare('SELECT task_id, subject FROM outbox').all() as Array<{
      task_id: string
      subject: string
    }>
    for (const row of outbox) {
      byId.set(row.task_id, (byId.get(row.task_id) ?? 0) + 1)
      bySubject.set(row.subject, (bySubject.get(row.subject) ?? 0) + 1)
    }
    const batches = db.prepare('SELECT task_id FROM batch_runs').all() as Array<{ task_id: string }>
    for (const row of batches) byId.set(row.task_id, (byId.get(row.task_id) ?? 0) + 1)
    // The side effects above are idempotent by task id, so they hide a second run of one id;
    // the app's audit trail (one row per completed handler run) does not.
    const runs = db
      .prepare('SELECT task_id, COUNT(*) AS n FROM task_runs GROUP BY task_id')
      .all() as Array<{
      task_id: string
      n: number
    }>
    for (const row of runs) byId.set(row.task_id, Math.max(byId.get(row.task_id) ?? 0, row.n))
    return { byId, bySubject }
  } finally {
    db.close()
  }
}

/**
 * V8 heap in use (MiB) from the app's /metrics, if it exports prom-client's default metrics
 * (`nodejs_heap_size_used_bytes`); null otherwise. Tells heap growth from RSS noise.
 */
async function heapUsedMiB(url: string): Promise<number | null> {
  try {
    const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) })
    const text = await response.text()
    const match = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)$/m.exec(text)
    return match?.[1] === undefined ? null : Math.round((Number(match[1]) / 2 ** 20) * 10) / 10
  } catch {
    return null
  }
}

/** BullMQ's lists for the app's queue and who is connected: written when tasks did not run. */
async function queueDiagnostics(server: RedisServer): Promise<string> {
  const key = (name: string): string => `chaos:tasks:app:${name}`
  const lines: string[] = []
  for (const [command, name] of [
    ['LLEN', 'wait'],
    ['LLEN', 'active'],
    ['LLEN', 'paused'],
    ['ZCARD', 'prioritized'],
    ['ZCARD', 'delayed'],
    ['ZCARD', 'completed'],
    ['ZCARD', 'failed'],
  ] as const) {
    try {
      lines.push(`${command} ${key(name)} = ${String(await server.cli(command, key(name)))}`)
    } catch (error) {
      lines.push(`${command} ${key(name)} failed: ${String(error)}`)
    }
  }
  try {
    const clients = String(await server.cli('CLIENT', 'LIST'))
    for (const line of clients.split('\n').filter(Boolean)) {
      const field = (f: string): string => new RegExp(`\\b${f}=(\\S*)`).exec(line)?.[1] ?? ''
      lines.push(
        `client ${field('name') || '(no name)'} age=${field('age')} idle=${field('idle')} flags=${field('flags')} cmd=${field('cmd')}`,
      )
    }
  } catch (error) {
    lines.push(`CLIENT LIST failed: ${String(error)}`)
  }
  return lines.join('\n')
}

/** Where the apps' Redis is, what the faults act on, and how to stop it all. */
interface Deployment<E> {
  topology: 'redis' | 'sentinel'
  redisUrl: string
  plan: Schedule<E>
  faultEnv(hooks: Pick<SentinelFaultEnv, 'note' | 'acknowledgedWrites'>): E
  /** The node to read BullMQ's lists from when tasks did not run (the current primary). */
  diagnostics(): Promise<RedisServer>
  /** How the apps reached Redis, for the notes. */
  describe: string
  stop(): Promise<void>
}

async function singleRedis(options: RunOptions): Promise<Deployment<FaultEnv>> {
  const plan = schedule(options.profile, options.only)
  // AOF (fsync always) so a SIGKILLed Redis comes back with its data; noeviction as BullMQ needs.
  const server = await RedisServer.start({
    persistence: true,
    args: ['--maxmemory-policy', 'noeviction'],
  })
  let proxy: TcpProxy
  try {
    proxy = await TcpProxy.start(server)
  } catch (error) {
    await server.stop()
    throw error
  }
  return {
    topology: 'redis',
    redisUrl: proxy.url,
    plan,
    faultEnv: () => ({ server, proxy }),
    diagnostics: async () => server,
    describe: 'REDIS_URL pointing at the proxy',
    stop: async () => {
      await proxy.close()
      await server.stop()
    },
  }
}

async function sentinelSetup(options: RunOptions): Promise<Deployment<SentinelFaultEnv>> {
  const plan = sentinelSchedule(options.profile, options.only)
  const set: SentinelSet = await startSentinelSet()
  return {
    topology: 'sentinel',
    redisUrl: sentinelUrl(set),
    plan,
    faultEnv: (hooks) => ({ set, ...hooks }),
    diagnostics: () => set.primary(),
    describe: `REDIS_URL=redis-sentinel://<${SENTINELS} Sentinels>#${set.name} (a primary and ${REPLICAS} replicas, each AOF fsync always and noeviction; Sentinel down-after ${DOWN_AFTER_MS} ms, failover-timeout ${FAILOVER_TIMEOUT_MS} ms, quorum ${Math.floor(SENTINELS / 2) + 1}, no proxy)`,
    stop: () => set.stop(),
  }
}

export async function runChaos(options: RunOptions): Promise<RunResult> {
  if (options.sentinel === true) return runOn(options, await sentinelSetup(options))
  return runOn(options, await singleRedis(options))
}

async function runOn<E>(options: RunOptions, deployment: Deployment<E>): Promise<RunResult> {
  const log = options.log ?? (() => undefined)
  const plan = deployment.plan
  const runDir = mkdtempSync(join(os.tmpdir(), 'failsoft-chaos-'))
  const databasePath = join(runDir, 'app.db')
  const started = Date.now()
  const notes: string[] = []

  const apps: AppProcess[] = []
  let load: Load | null = null
  let rssTimer: NodeJS.Timeout | undefined
  let passed = false
  try {
    const env = {
      REDIS_URL: deployment.redisUrl,
      DATABASE_PATH: databasePath,
      ADMIN_TOKEN: randomBytes(24).toString('hex'),
      FAILSOFT_PREFIX: 'chaos',
      COMPOST_EVERY_MS: '60000',
      LOG_LEVEL: 'info',
    }
    // A first, then B: A creates and seeds the database.
    for (const name of APPS) {
      const port = await freePort()
      log(`starting app ${name} on port ${port}`)
      apps.push(await AppProcess.start({ name, root: options.root, port, env, logDir: runDir }))
    }

    const t0 = performance.now()
    const now = (): number => performance.now() - t0
    const current = new Load(apps, loadProfile(options.profile), now)
    load = current
    for (const app of apps) {
      const deadline = Date.now() + 15_000
      for (;;) {
        const status = await current.pollStatus(app.name)
        if (status?.available === true && status.allRedis) break
        if (Date.now() > deadline) throw new Error(`app ${app.name} is not on Redis after 15 s`)
        await sleep(100)
      }
    }
    await current.setup()

    const rss: RssSample[] = []
    const sampleRss = (): void => {
      const kib: Record<string, number | null> = {}
      for (const app of apps) kib[app.name] = app.rssKiB()
      rss.push({ t: now(), kib })
    }
    sampleRss()
    rssTimer = setInterval(sampleRss, 500)

    const planned =
      plan.warmupMs +
      plan.gapMs * (plan.faults.length + 1) +
      plan.faults.reduce(
        (a, f) => a + f.holdMs + plan.settleMaxMs + (f.restore === undefined ? 0 : RESTORE_MAX_MS),
        0,
      )
    // The loops stop at the end of the schedule; this bound only matters if the schedule hangs.
    current.start(now() + planned + 30_000)

    const phases: PhaseRecord[] = []
    const heap: HeapSample[] = []
    const sampleHeap = async (): Promise<void> => {
      const t = now()
      const mib: Record<string, number | null> = {}
      for (const app of apps) mib[app.name] = await heapUsedMiB(app.url)
      heap.push({ t, mib })
    }
    const idle = async (name: string, kind: 'warmup' | 'gap', ms: number): Promise<void> => {
      const start = now()
      log(`${name} (${Math.round(ms / 1000)} s)`)
      await sleep(ms)
      phases.push({ name, kind, start, end: now() })
      await sampleHeap()
    }

    // Status of both processes every 50 ms while a fault plays (the WebSocket pushes too).
    const watchStatus = (): (() => Promise<void>) => {
      let watching = true
      const loop = (async () => {
        while (watching) {
          await Promise.all(apps.map((app) => current.pollStatus(app.name)))
          await sleep(50)
        }
      })()
      return async () => {
        watching = false
        await loop
      }
    }

    const backOnRedis = (since: number): boolean =>
      apps.every((app) => {
        const samples = current.data.status.filter((s) => s.app === app.name && s.t >= since)
        const lastSample = samples[samples.length - 1]
        return lastSample !== undefined && lastSample.available && lastSample.allRedis
      })

    const acknowledgedWrites = (): number =>
      current.data.http.filter(
        (s) => s.op !== 'list' && s.op !== 'detail' && s.status >= 200 && s.status < 400,
      ).length
    const faultEnv = (fault: Fault<E>): E =>
      deployment.faultEnv({
        note: (message) => notes.push(`${fault.name}: ${message}.`),
        acknowledgedWrites,
      })

    // The primary each process's failsoft last said it was on, on the run clock.
    const primaries = (): PrimarySample[] =>
      apps.flatMap((app) =>
        app.primaries.map((p) => ({
          t: p.time - performance.timeOrigin - t0,
          app: app.name,
          primary: p.primary,
        })),
      )
    const onPrimary = (primary: string | undefined, since: number): boolean =>
      primary === undefined ||
      apps.every((app) =>
        primaries().some((p) => p.app === app.name && p.t >= since && p.primary === primary),
      )

    const play = async (fault: Fault<E>): Promise<void> => {
      const start = now()
      log(`fault ${fault.name}: ${fault.label}`)
      const stopWatching = watchStatus()
      const env = faultEnv(fault)
      await fault.inject(env)
      const injected = now()
      await sleep(fault.holdMs)
      const healStart = now()
      const back = await fault.heal(env)
      const healed = back ? Math.min(now(), back.at - t0) : now()
      const newPrimary = back ? back.primary : undefined
      const settleUntil = healed + plan.settleMaxMs
      await sleep(plan.settleMinMs)
      while (now() < settleUntil && !(backOnRedis(healed) && onPrimary(newPrimary, start)))
        await sleep(25)
      await stopWatching()
      phases.push({
        name: fault.name,
        kind: 'fault',
        label: fault.label,
        start,
        injected,
        healStart,
        healed,
        ...(fault.outageUntilHealed === true && { outageEnd: healed }),
        ...(newPrimary !== undefined && { newPrimary }),
        end: now(),
      })
    }

    // The gap after a fault starts with its restore (the old primary back), measured in the gap.
    const gapAfter = async (fault: Fault<E>): Promise<void> => {
      const name = `after ${fault.name}`
      if (fault.restore === undefined) return idle(name, 'gap', plan.gapMs)
      const start = now()
      log(`${name}: restoring, then ${Math.round(plan.gapMs / 1000)} s`)
      await fault.restore(faultEnv(fault))
      await sleep(plan.gapMs)
      phases.push({ name, kind: 'gap', start, end: now() })
      await sampleHeap()
    }

    // RSS and heap right after a full collection in each app, at the end of the warm-up and at
    // the end of the schedule (load running both times): comparable states, whatever size V8
    // gave its young generation meanwhile. Between phases, so no measured request waits on it.
    const settled = async (): Promise<Record<string, SettledMemory>> => {
      const out: Record<string, SettledMemory> = {}
      for (const app of apps) {
        try {
          await app.collectGarbage()
          const kib = app.rssKiB()
          out[app.name] = {
            rssMiB: kib === null ? null : Math.round((kib / 1024) * 10) / 10,
            heapMiB: await heapUsedMiB(app.url),
          }
        } catch (error) {
          notes.push(`Memory after a full GC not measured for ${app.name}: ${String(error)}.`)
          out[app.name] = { rssMiB: null, heapMiB: null }
        }
      }
      return out
    }

    await idle('warm-up', 'warmup', plan.warmupMs)
    const settledBaseline = await settled()
    await idle('healthy', 'gap', plan.gapMs)
    for (const fault of plan.faults) {
      await play(fault)
      await gapAfter(fault)
    }
    const settledFinal = await settled()
    // A phase without load measured nothing: a harness bug (the load's time bound), not a pass.
    const unloaded = phases.filter(
      (p) => !current.data.http.some((s) => s.t >= p.start && s.t < p.end),
    )
    if (unloaded.length > 0) {
      throw new Error(`no load ran in phase(s) ${unloaded.map((p) => p.name).join(', ')}`)
    }
    current.abort()
    await current.finished()
    const loadEnd = now()

    // Drain: accepted tasks may still be queued or spooled; chat frames may be in flight.
    log(`draining (≤ ${Math.round(plan.drainMs / 1000)} s)`)
    const drainUntil = Date.now() + plan.drainMs
    await sleep(1000)
    for (;;) {
      const executions = readExecutions(databasePath)
      const waiting = current.data.dispatches.filter(
        (d) =>
          d.kind !== 'embed' &&
          ['queued', 'spooled', 'deferred'].includes(d.mode) &&
          !executions.byId.has(d.id),
      ).length
      if (waiting === 0 || Date.now() > drainUntil) {
        if (waiting > 0) {
          const diagnostics = await queueDiagnostics(await deployment.diagnostics())
          writeFileSync(join(runDir, 'queue-diagnostics.txt'), `${diagnostics}\n`)
          notes.push(
            `${waiting} accepted task(s) had not run after the drain. Queue state then: ${diagnostics
              .split('\n')
              .filter((l) => !l.startsWith('client'))
              .join('; ')}.`,
          )
        }
        break
      }
      await sleep(500)
    }
    clearInterval(rssTimer)
    rssTimer = undefined
    // The apps' own counters (channel drops, task modes, transitions) for the diagnosis.
    const finalStatus: Record<string, unknown> = {}
    for (const app of apps) {
      try {
        const response = await fetch(`${app.url}/api/status`, { signal: AbortSignal.timeout(2000) })
        const body = (await response.json()) as Record<string, unknown>
        const redis = body.redis as Record<string, unknown> | undefined
        finalStatus[app.name] = {
          transitions: redis?.transitions,
          fallbackOps: body.fallbackOps,
          channels: body.channels,
          tasks: body.tasks,
        }
      } catch (error) {
        finalStatus[app.name] = { error: String(error) }
      }
    }
    current.close()

    const crashed = new Map(
      apps.map((app) => [
        app.name,
        app.exit === null
          ? null
          : `exit ${app.exit.signal ?? app.exit.code} at the end of the load`,
      ]),
    )
    log('stopping the apps')
    for (const app of apps) await app.stop()
    const executions = readExecutions(databasePath)

    const appSummaries: AppSummary[] = apps.map((app) => ({
      name: app.name,
      pid: app.pid ?? null,
      scan: app.scan as LogScan,
      crashed: crashed.get(app.name) ?? null,
      shutdown: app.exit === null ? null : `${app.exit.signal ?? `code ${app.exit.code}`}`,
    }))
    notes.push(
      `Load ran ${(loadEnd / 1000).toFixed(0)} s; the apps were started with ${deployment.describe}, one SQLite file (WAL) and the default spool next to it, COMPOST_EVERY_MS=60000, default health timings.`,
    )
    if (current.data.oddFrames > 0) {
      notes.push(`${current.data.oddFrames} WebSocket frame(s) were not JSON objects.`)
    }
    const voteResults = current.data.voteClients
      .map((v) => `${v.app}: ${v.results} results, ${v.errors} errors`)
      .join('; ')
    notes.push(
      `Poll votes: ${current.data.votes.length} sent over WebSocket; poll.results frames received — ${voteResults}.`,
    )

    const report = buildReport({
      profile: options.profile,
      topology: deployment.topology,
      command: options.command,
      apps: APPS,
      phases,
      load: current.data,
      rss,
      heap,
      settled: { baseline: settledBaseline, final: settledFinal },
      executions,
      appSummaries,
      machine: machine(options.root),
      durationS: Math.round((Date.now() - started) / 1000),
      finalStatus,
      notes,
      ...(deployment.topology === 'sentinel' && { primaries: primaries() }),
    })
    passed = report.passed
    const runDirKept = options.keep === true || !passed
    return { report, apps: APPS, runDir, runDirKept }
  } finally {
    if (rssTimer !== undefined) clearInterval(rssTimer)
    load?.abort()
    load?.close()
    for (const app of apps) app.killNow()
    await Promise.all(apps.map((app) => app.stop().catch(() => undefined)))
    await deployment.stop()
    if (passed && options.keep !== true && existsSync(runDir)) {
      rmSync(runDir, { recursive: true, force: true })
    }
  }
}
