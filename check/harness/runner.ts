// Plays one schedule: a redis-server of its own (free port, AOF), one TCP proxy per child
// process, the children (web and worker roles), the faults of the schedule in three lanes,
// then a drain with everything healthy and an orderly close. Returns the history files.
//
// Nothing here touches a Redis it did not start (never 127.0.0.1:6379): the server is started
// on a free port and stopped at the end, and the children only know their proxy's address.
import { spawn, type ChildProcess } from 'node:child_process'
import {
  accessSync,
  closeSync,
  constants,
  cpSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { RedisServer, TcpProxy, respCommand, sleep } from '../../test/support/fault-kit.js'
import { faultKind, type FaultEnv, type FaultStep } from './faults.js'
import type { ChildConfig, FromChild, ToChild } from './protocol.js'
import { Recorder, errorText } from './recorder.js'
import type { ProcessPlan, Schedule } from './schedule.js'

export interface RunOptions {
  schedule: Schedule
  /** Repository root (the children run `check/harness/child.ts` from there). */
  root: string
  log?: (message: string) => void
  /** Parent directory of the run directory (default: the OS temp dir). */
  baseDir?: string
}

export interface RunOutcome {
  seed: number
  runDir: string
  /** The history files: the harness' and one per child incarnation. */
  files: string[]
  texts: string[]
  /** Problems of the harness itself (a fault that could not be played…), not violations. */
  errors: string[]
  wallMs: number
  /** Remove the run directory. */
  cleanup(): void
}

const ACCEPTED = new Set(['queued', 'inline', 'spooled', 'deferred', 'duplicate'])
const READY_TIMEOUT_MS = 60_000
const CLOSE_TIMEOUT_MS = 8000
const MIN_DRAIN_MS = 2500
const STALL_MS = 150
const STALL_EVERY_MS = 100
const LAG_TICK_MS = 20
const LAG_MS = 150

class Child {
  readonly exited: Promise<{ code: number | null; signal: string | null }>
  exitedNow = false
  readyNow = false
  /** The harness killed it, or it was asked to close: its exit is not a crash. */
  expectedExit = false
  readonly #waiters = new Map<string, Array<(m: FromChild) => void>>()

  constructor(
    readonly plan: ProcessPlan,
    readonly incarnation: number,
    readonly name: string,
    readonly historyPath: string,
    readonly proc: ChildProcess,
  ) {
    proc.on('message', (m: FromChild) => {
      if (m.type === 'ready') this.readyNow = true
      const list = this.#waiters.get(m.type)
      if (list === undefined) return
      this.#waiters.delete(m.type)
      for (const resolve of list) resolve(m)
    })
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitedNow = true
        resolve({ code, signal })
        for (const list of this.#waiters.values()) for (const r of list) r({ type: 'closed' })
        this.#waiters.clear()
      })
    })
  }

  send(message: ToChild): void {
    if (this.exitedNow || !this.proc.connected) return
    try {
      this.proc.send(message)
    } catch {
      // the channel closed in between: the child is exiting
    }
  }

  /** The next message of this type (or undefined after timeoutMs, or once the child exited). */
  waitFor(type: FromChild['type'], timeoutMs: number): Promise<FromChild | undefined> {
    if (this.exitedNow) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs)
      const list = this.#waiters.get(type) ?? []
      list.push((m) => {
        clearTimeout(timer)
        resolve(m.type === type ? m : undefined)
      })
      this.#waiters.set(type, list)
    })
  }
}

const liveProcesses = new Set<ChildProcess>()
let exitHook = false
function installExitHook(): void {
  if (exitHook) return
  exitHook = true
  process.on('exit', () => {
    for (const p of liveProcesses) {
      try {
        p.kill('SIGKILL')
      } catch {
        // already gone
      }
    }
  })
}

/** A writable tmpfs for the fsync-heavy files, unless CHECK_TMPFS=0. */
function fastDir(): string | undefined {
  if (process.env['CHECK_TMPFS'] === '0') return undefined
  try {
    const dir = '/dev/shm'
    if (!statSync(dir).isDirectory()) return undefined
    accessSync(dir, constants.W_OK)
    return dir
  } catch {
    return undefined
  }
}

/** RedisServer makes its data dir under os.tmpdir(): point that at `dir` while it starts. */
async function withTmpdir<T>(dir: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (dir === undefined) return fn()
  const previous = process.env['TMPDIR']
  process.env['TMPDIR'] = dir
  try {
    return await fn()
  } finally {
    if (previous === undefined) delete process.env['TMPDIR']
    else process.env['TMPDIR'] = previous
  }
}

export async function runSchedule(options: RunOptions): Promise<RunOutcome> {
  installExitHook()
  const { schedule, root } = options
  const log = options.log ?? ((): void => undefined)
  const started = performance.now()
  const runDir = mkdtempSync(join(options.baseDir ?? tmpdir(), `failsoft-check-${schedule.seed}-`))
  // Redis' AOF (appendfsync always) and the spool (fsync per append) go to a tmpfs when there
  // is one: on this shared machine an fsync to the disk can stall for hundreds of ms when
  // another job writes, which every process would see as Redis not answering (an outage the
  // schedule did not inject). A SIGKILLed redis-server or child still finds its files there.
  const fast = fastDir()
  const spoolDir = mkdtempSync(join(fast ?? runDir, `failsoft-check-spool-${schedule.seed}-`))
  const hist = new Recorder(join(runDir, 'harness.jsonl'), 'harness')
  const errors: string[] = []
  const childPath = join(root, 'check', 'harness', 'child.ts')
  const clockOffsetUrl = pathToFileURL(join(root, 'check', 'harness', 'clock-offset.ts')).href
  const prefix = `chk${schedule.seed}`
  hist.info('run', { seed: schedule.seed, schedule })

  const server = await withTmpdir(fast, () => RedisServer.start({ persistence: true }))
  const proxies = new Map<string, TcpProxy>()
  const live = new Map<string, Child>()
  const restarting = new Set<string>()
  const allChildren: Child[] = []
  const pingers = new Set<Promise<void>>()
  let phase: 'start' | 'load' | 'drain' | 'close' = 'start'
  let stopping = false
  const pending = new PendingTasks(runDir)
  let pendingTimer: NodeJS.Timeout | undefined
  /** Server-lane faults playing now: the stall watch is quiet while one is (it explains itself). */
  let serverFaults = 0

  // Redis' own responsiveness, seen by the harness on fresh direct connections (no proxy): a
  // PING slower than STALL_MS while no server fault plays is recorded as 'redis-stall', so
  // that an outage nobody injected (the machine, the disk) is told apart from one the library
  // imagined.
  // The harness' own event loop carries every proxy: if it stops (GC, a busy machine), every
  // process' commands wait. A tick ≥ LAG_MS late is recorded as 'harness-stall'.
  let lastTick = process.hrtime.bigint()
  const lagTimer = setInterval(() => {
    const now = process.hrtime.bigint()
    const gapMs = Number(now - lastTick) / 1e6
    if (gapMs >= LAG_MS) {
      hist.info('harness-stall', { sentT: lastTick.toString(), rttMs: Math.round(gapMs) })
    }
    lastTick = now
  }, LAG_TICK_MS)
  const stallWatch = (async () => {
    while (!stopping) {
      const sent = process.hrtime.bigint()
      const quietBefore = serverFaults === 0
      try {
        await respCommand(server.respTarget, ['PING'], { timeoutMs: 3000 })
      } catch {
        // down (a fault): the rtt below says how long it took to find out
      }
      const rttMs = Number(process.hrtime.bigint() - sent) / 1e6
      if (rttMs >= STALL_MS && quietBefore && serverFaults === 0 && !stopping) {
        hist.info('redis-stall', { sentT: sent.toString(), rttMs: Math.round(rttMs) })
      }
      await sleep(STALL_EVERY_MS)
    }
  })()

  const spawnChild = (plan: ProcessPlan, incarnation: number, startLoad: boolean): Child => {
    const name = `${plan.base}.${incarnation}`
    const proxy = proxies.get(plan.base)!
    const historyPath = join(runDir, `${name}.jsonl`)
    const config: ChildConfig = {
      name,
      base: plan.base,
      role: plan.role,
      incarnation,
      redisUrl: proxy.url,
      prefix,
      spoolPath: join(spoolDir, 'spool.jsonl'),
      historyPath,
      seed: plan.seed,
      clockOffsetMs: plan.clockOffsetMs,
      load: schedule.load,
      work: schedule.work,
      startLoad,
    }
    const out = openSync(join(runDir, `${name}.log`), 'a')
    const args = ['--import', 'tsx']
    if (plan.clockOffsetMs !== 0) args.push('--import', clockOffsetUrl)
    args.push(childPath)
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CHECK_CHILD: JSON.stringify(config),
      CHECK_CLOCK_OFFSET_MS: String(plan.clockOffsetMs),
    }
    delete env['NODE_TEST_CONTEXT']
    const proc = spawn(process.execPath, args, {
      cwd: root,
      env,
      stdio: ['ignore', out, out, 'ipc'],
    })
    closeSync(out)
    liveProcesses.add(proc)
    const child = new Child(plan, incarnation, name, historyPath, proc)
    allChildren.push(child)
    hist.info('child-spawn', { child: name, base: plan.base, role: plan.role, pid: proc.pid })
    void child.exited.then(({ code, signal }) => {
      liveProcesses.delete(proc)
      hist.info('child-exit', { child: name, code, signal, expected: child.expectedExit })
      if (!child.expectedExit) log(`${name} exited unexpectedly (code ${code}, signal ${signal})`)
    })
    return child
  }

  const pingUntilAnswered = (base: string, faultId: string): void => {
    const proxy = proxies.get(base)
    if (proxy === undefined) return
    const p = new Promise<void>((resolve) => {
      let done = false
      let inflight = 0
      const deadline = performance.now() + 30_000
      const attempt = (): void => {
        inflight++
        respCommand({ host: proxy.host, port: proxy.port }, ['PING'], { timeoutMs: 2000 })
          .then(
            (reply) => {
              if (done || reply !== 'PONG') return
              done = true
              hist.info('redis-answers', { path: base, faultId })
              resolve()
            },
            () => undefined,
          )
          .finally(() => inflight--)
      }
      attempt()
      const timer = setInterval(() => {
        if (done || stopping || performance.now() > deadline) {
          clearInterval(timer)
          resolve()
          return
        }
        if (inflight < 20) attempt()
      }, 20)
    })
    pingers.add(p)
    void p.finally(() => pingers.delete(p))
  }

  const healEverything = async (): Promise<void> => {
    try {
      if (server.frozen) server.thaw()
      if (!server.running) await server.restart({ keepData: true })
      for (const p of proxies.values()) p.pass()
      await respCommand(server.respTarget, ['CONFIG', 'SET', 'maxmemory', '0'], { timeoutMs: 5000 })
    } catch (error) {
      errors.push(`heal: ${errorText(error)}`)
    }
  }

  const playFault = async (step: FaultStep): Promise<void> => {
    const kind = faultKind(step.kind)
    const flags = kind.flags(step)
    if (step.lane === 'server') serverFaults++
    let didStart = false
    let didEnd = false
    const env: FaultEnv = {
      server,
      proxies,
      runDir,
      started: () => {
        if (didStart) return
        didStart = true
        hist.info('fault-start', {
          faultId: step.id,
          fault: step.kind,
          lane: step.lane,
          ...flags,
          ...(step.target !== undefined && { target: step.target }),
          params: step.params,
        })
        log(`${step.id} ${step.kind}${step.target !== undefined ? ` @${step.target}` : ''} starts`)
      },
      ended: () => {
        if (!didStart || didEnd) return
        didEnd = true
        hist.info('fault-end', { faultId: step.id, fault: step.kind })
        const paths = flags.targets.includes('*') ? [...proxies.keys()] : flags.targets
        for (const base of paths) pingUntilAnswered(base, step.id)
      },
      note: (op, fields) => hist.info(op, fields),
      killChild: async (base) => {
        const child = live.get(base)
        if (child === undefined || child.exitedNow || restarting.has(base)) return false
        restarting.add(base)
        child.expectedExit = true
        hist.info('child-kill', { child: child.name })
        child.proc.kill('SIGKILL')
        await child.exited
        return true
      },
      restartChild: async (base) => {
        const old = live.get(base)
        if (old === undefined) return
        const next = spawnChild(old.plan, old.incarnation + 1, phase === 'load')
        live.set(base, next)
        restarting.delete(base)
        await Promise.resolve()
      },
      force: (base, on) => {
        const child = live.get(base)
        if (child === undefined || child.exitedNow || restarting.has(base)) return false
        child.send({ type: 'force', on })
        return true
      },
      aborted: () => stopping,
    }
    try {
      await kind.run(env, step)
    } catch (error) {
      errors.push(`${step.id} ${step.kind}: ${errorText(error)}`)
      hist.info('harness-error', { faultId: step.id, fault: step.kind, error: errorText(error) })
      await healEverything()
    } finally {
      env.ended()
      if (step.lane === 'server') serverFaults--
    }
  }

  try {
    for (const plan of schedule.processes) {
      proxies.set(plan.base, await TcpProxy.start({ host: '127.0.0.1', port: server.port }))
    }
    for (const plan of schedule.processes) live.set(plan.base, spawnChild(plan, 1, false))
    const readies = await Promise.all(
      [...live.values()].map((c) => (c.readyNow ? true : c.waitFor('ready', READY_TIMEOUT_MS))),
    )
    if (readies.some((r) => r === undefined)) throw new Error('a child did not become ready')
    log(`children ready (${(performance.now() - started).toFixed(0)} ms)`)

    // ── load + faults ──────────────────────────────────────────────────────────────────────────
    phase = 'load'
    hist.info('phase', { phase: 'load' })
    // Follows the histories as they grow, so that no call has much to read at once.
    pendingTimer = setInterval(() => pending.count(allChildren), 500)
    const loadT0 = performance.now()
    for (const c of live.values()) c.send({ type: 'start-load' })
    const lanes = (['server', 'network', 'client'] as const).map(async (lane) => {
      for (const step of schedule.faults.filter((f) => f.lane === lane)) {
        const wait = loadT0 + step.atMs - performance.now()
        if (wait > 0) await sleep(wait)
        await playFault(step)
      }
    })
    await Promise.all(lanes)
    const rest = loadT0 + schedule.durationMs - performance.now()
    if (rest > 0) await sleep(rest)

    // ── drain: no new load, Redis healthy, accepted tasks run, outboxes flushed ──────────────
    phase = 'drain'
    hist.info('phase', { phase: 'drain' })
    await healEverything()
    const drainT0 = performance.now()
    await Promise.all(
      [...live.values()].map(async (c) => {
        if (!c.readyNow) await c.waitFor('ready', READY_TIMEOUT_MS) // a restarted one may be starting
        c.send({ type: 'stop-load' })
        await c.waitFor('load-stopped', 10_000)
      }),
    )
    const work = schedule.work
    const drainMaxMs =
      (work.lockDurationMs ?? 10_000) +
      (work.stalledIntervalMs ?? 5000) +
      schedule.load.longHandlerMs +
      4000
    const allUp = async (): Promise<boolean> => {
      const states = await Promise.all(
        [...live.values()].map(async (c) => {
          const reply = c.waitFor('status', 1000)
          c.send({ type: 'status' })
          const r = await reply
          return r?.type === 'status' ? r.state : 'gone'
        }),
      )
      return states.every((s) => s === 'up' || s === 'gone')
    }
    for (let i = 0; i < 40 && !(await allUp()); i++) await sleep(250)
    for (;;) {
      const elapsed = performance.now() - drainT0
      if (elapsed >= MIN_DRAIN_MS && pending.count(allChildren) === 0) break
      if (elapsed >= drainMaxMs) {
        log(`drain ended after ${drainMaxMs} ms with tasks still pending`)
        break
      }
      await sleep(500)
    }

    clearInterval(pendingTimer)

    // ── close ──────────────────────────────────────────────────────────────────────────────────
    phase = 'close'
    hist.info('phase', { phase: 'close' })
    await Promise.all(
      [...live.values()].map(async (c) => {
        c.expectedExit = true
        c.send({ type: 'close' })
        const exited = await Promise.race([
          c.exited.then(() => true),
          sleep(CLOSE_TIMEOUT_MS).then(() => false),
        ])
        if (!exited) {
          hist.info('child-close-timeout', { child: c.name })
          errors.push(`${c.name} did not exit within ${CLOSE_TIMEOUT_MS} ms of close`)
          c.proc.kill('SIGKILL')
          await c.exited
        }
      }),
    )
    hist.info('phase', { phase: 'end' })
  } catch (error) {
    errors.push(`run: ${errorText(error)}`)
    hist.info('harness-error', { error: errorText(error) })
  } finally {
    stopping = true
    clearInterval(pendingTimer)
    for (const c of allChildren) {
      if (!c.exitedNow) {
        c.expectedExit = true
        c.proc.kill('SIGKILL')
      }
    }
    await Promise.all(allChildren.map((c) => c.exited))
    await Promise.all([...pingers])
    await stallWatch
    clearInterval(lagTimer)
    for (const p of proxies.values()) await p.close()
    rmSync(spoolDir, { recursive: true, force: true })
    writeFileSync(join(runDir, 'redis.log'), server.log)
    // Redis' data as it ended (AOF), for a post-mortem: `redis-server --dir <runDir>/redis-data
    // --appendonly yes --port 0 --unixsocket …` reads it back.
    try {
      await server.kill()
      cpSync(server.dataDir, join(runDir, 'redis-data'), { recursive: true })
    } catch (error) {
      errors.push(`copy redis data: ${errorText(error)}`)
    }
    await server.stop()
    hist.close()
  }
  const files = [join(runDir, 'harness.jsonl'), ...allChildren.map((c) => c.historyPath)]
  const texts = files.map((f) => {
    try {
      return readFileSync(f, 'utf8')
    } catch {
      return ''
    }
  })
  return {
    seed: schedule.seed,
    runDir,
    files,
    texts,
    errors,
    wallMs: performance.now() - started,
    cleanup: () => rmSync(runDir, { recursive: true, force: true }),
  }
}

/** Reads the lines appended to a file since the last call (an incomplete last line waits). */
class Tail {
  #offset = 0
  #partial = ''
  constructor(readonly path: string) {}

  read(): Array<Record<string, unknown>> {
    let fd: number
    try {
      fd = openSync(this.path, 'r')
    } catch {
      return []
    }
    const chunks: Buffer[] = []
    try {
      const buf = Buffer.alloc(1 << 16)
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.#offset)
        if (n <= 0) break
        this.#offset += n
        chunks.push(Buffer.from(buf.subarray(0, n)))
      }
    } finally {
      closeSync(fd)
    }
    const lines = (this.#partial + Buffer.concat(chunks).toString('utf8')).split('\n')
    this.#partial = lines.pop() ?? ''
    const out: Array<Record<string, unknown>> = []
    for (const line of lines) {
      if (line === '') continue
      try {
        out.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        // a line torn by a SIGKILL
      }
    }
    return out
  }
}

/**
 * Accepted task ids (dispatched after the last loss of Redis data) that have not run yet, or
 * whose run is still going in a live process. Only decides when the drain may end. Reads
 * the files incrementally: the harness' event loop also carries every proxy, so it must
 * never stop for long (a whole re-read of the histories took long enough, on a busy machine,
 * to delay every process' commands past their deadline).
 */
class PendingTasks {
  readonly #tails = new Map<string, Tail>()
  #lastLoss = 0n
  readonly #accepted = new Map<string, bigint>()
  readonly #ran = new Set<string>()
  readonly #running = new Map<string, Child>()

  constructor(readonly runDir: string) {}

  count(children: readonly Child[]): number {
    for (const e of this.#tail(join(this.runDir, 'harness.jsonl')).read()) {
      if (e['op'] === 'fault-start' && e['dataLoss'] === true)
        this.#lastLoss = BigInt(String(e['t']))
    }
    for (const c of children) {
      for (const e of this.#tail(c.historyPath).read()) {
        const key = `${c.name}:${String(e['runId'])}`
        if (e['op'] === 'task.dispatch' && e['kind'] === 'ok' && ACCEPTED.has(String(e['mode']))) {
          this.#accepted.set(String(e['id']), BigInt(String(e['t'])))
        } else if (e['op'] === 'task.run-start') {
          this.#running.set(key, c)
          this.#ran.add(String(e['id']))
        } else if (e['op'] === 'task.run-end') {
          this.#running.delete(key)
        }
      }
    }
    let pending = 0
    for (const c of this.#running.values()) if (!c.exitedNow) pending++
    for (const [id, t] of this.#accepted) if (t > this.#lastLoss && !this.#ran.has(id)) pending++
    return pending
  }

  #tail(path: string): Tail {
    let tail = this.#tails.get(path)
    if (tail === undefined) this.#tails.set(path, (tail = new Tail(path)))
    return tail
  }
}

/** The run directories a previous run kept (for `--recheck`). */
export function historyFiles(runDir: string): string[] {
  return readdirSync(runDir)
    .filter((f) => f.endsWith('.jsonl'))
    .map((f) => join(runDir, f))
}
