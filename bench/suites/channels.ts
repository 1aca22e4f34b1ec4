/**
 * Channels suite: WebSocket fan-out through failsoft's channel layer and through Socket.IO
 * with its Redis adapters and with failsoft/socket.io, in the same run, on real redis-server
 * processes and real sockets.
 *
 * - Cross-process fan-out: two server processes (children), 25 WebSocket clients on each, all
 *   in one group/room; one server sends a burst; deliveries/s counted at the 50 clients (this
 *   process), and latency at a steady 300 messages/s.
 * - In-process fan-out while degraded: one server, 50 clients, Redis killed (failsoft serves
 *   from memory and fills its outbox), against Socket.IO's in-memory adapter.
 * - Redis killed for 3 s then restarted (empty, and with its data), or frozen (SIGSTOP) for
 *   3 s, under a steady 200 messages/s: same-process and cross-process losses, the longest
 *   local delivery stall, and the time from Redis answering again to the first cross-process
 *   delivery.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client'
import { WebSocket } from 'ws'
import { RedisServer, sleep } from '../../test/support/fault-kit.js'
import {
  median,
  percentile,
  ratio,
  type BenchContext,
  type Chart,
  type SuiteReport,
  type Table,
} from '../report.js'

type Impl =
  | 'failsoft'
  | 'sio-failsoft'
  | 'sio-redis'
  | 'sio-streams'
  | 'sio-memory'
  | 'sio-redis-ff'
  | 'sio-streams-ff'

const LABEL: Record<Impl, string> = {
  failsoft: 'failsoft channel layer (ws)',
  'sio-failsoft': 'Socket.IO + failsoft/socket.io',
  'sio-redis': 'Socket.IO + redis-adapter (pub/sub)',
  'sio-streams': 'Socket.IO + redis-streams-adapter',
  'sio-memory': 'Socket.IO in-memory adapter',
  'sio-redis-ff': 'Socket.IO + redis-adapter, fail-fast ioredis',
  'sio-streams-ff': 'Socket.IO + redis-streams-adapter, fail-fast ioredis',
}

const serverScript = fileURLToPath(new URL('./channels/server.ts', import.meta.url))
const now = (): number => performance.timeOrigin + performance.now()

// ── server processes ─────────────────────────────────────────────────────────────────────────

class ServerProcess {
  readonly #child: ChildProcess
  readonly #pending = new Map<number, (value: unknown) => void>()
  #nextId = 0
  port = 0

  private constructor(child: ChildProcess) {
    this.#child = child
    child.on('message', (raw: unknown) => {
      const message = raw as { id?: number; ok?: boolean; result?: unknown; error?: string }
      if (message.id === undefined) return
      const resolve = this.#pending.get(message.id)
      this.#pending.delete(message.id)
      resolve?.(message.ok ? message.result : { error: message.error })
    })
  }

  static async start(impl: Impl, redisUrl: string): Promise<ServerProcess> {
    const failFast = impl.endsWith('-ff')
    const child = fork(serverScript, [], {
      execArgv: ['--import', 'tsx'],
      env: {
        ...process.env,
        IMPL: failFast ? impl.slice(0, -'-ff'.length) : impl,
        FAIL_FAST: failFast ? '1' : '0',
        REDIS_URL: redisUrl,
        FAILSOFT_LOG_LEVEL: 'silent',
      },
      // stderr kept, not shown: the peers' clients print warnings; shown if the process fails.
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    })
    let stderr = ''
    child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)))
    const server = new ServerProcess(child)
    server.port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL') // never left behind, whatever state it is in
        reject(new Error(`${impl} server did not start within 30 s: ${stderr}`))
      }, 30_000)
      child.on('message', (raw: unknown) => {
        const message = raw as { event?: string; port?: number }
        if (message.event === 'listening') {
          clearTimeout(timer)
          resolve(message.port ?? 0)
        }
      })
      child.on('exit', (code) => reject(new Error(`${impl} server exited (${code}): ${stderr}`)))
    })
    return server
  }

  call<T = Record<string, unknown>>(command: Record<string, unknown>): Promise<T> {
    const id = ++this.#nextId
    return new Promise<T>((resolve) => {
      this.#pending.set(id, resolve as (value: unknown) => void)
      this.#child.send({ id, ...command })
    })
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    const killer = setTimeout(() => this.#child.kill('SIGKILL'), 5000)
    void this.call({ cmd: 'close' })
    await exited
    clearTimeout(killer)
  }
}

// ── clients (in this process) ────────────────────────────────────────────────────────────────

interface Recorder {
  count: number
  lastAt: number
  /** Sequence numbers seen (fault scenarios). */
  seen: Set<number> | null
  /** [arrival, latency] per delivery when recording latency. */
  samples: Array<[number, number]> | null
}

class Client {
  readonly recorder: Recorder = { count: 0, lastAt: 0, seen: null, samples: null }
  readonly #close: () => void

  private constructor(close: () => void) {
    this.#close = close
  }

  static async connect(impl: Impl, port: number): Promise<Client> {
    let client: Client
    const record = (n: number, t: number): void => {
      const r = client.recorder
      const at = now()
      r.count++
      r.lastAt = at
      r.seen?.add(n)
      r.samples?.push([at, at - t])
    }
    if (impl === 'failsoft') {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`)
      client = new Client(() => socket.terminate())
      socket.on('error', () => undefined)
      socket.on('message', (data) => {
        const message = JSON.parse(String(data)) as { n: number; t: number }
        record(message.n, message.t)
      })
      await new Promise<void>((resolve, reject) => {
        socket.once('open', () => resolve())
        socket.once('error', reject)
      })
    } else {
      const socket: IoSocket = ioClient(`http://127.0.0.1:${port}`, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
      })
      client = new Client(() => socket.disconnect())
      socket.on('bench', (message: { n: number; t: number }) => record(message.n, message.t))
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve())
        socket.once('connect_error', reject)
      })
    }
    return client
  }

  close(): void {
    this.#close()
  }
}

interface Setup {
  servers: ServerProcess[]
  /** clients[i] are connected to servers[i]. */
  clients: Client[][]
}

async function setUp(
  impl: Impl,
  redisUrl: string,
  servers: number,
  perServer: number,
): Promise<Setup> {
  const procs = await Promise.all(
    Array.from({ length: servers }, () => ServerProcess.start(impl, redisUrl)),
  )
  const clients: Client[][] = []
  for (const proc of procs) {
    clients.push(
      await Promise.all(Array.from({ length: perServer }, () => Client.connect(impl, proc.port))),
    )
  }
  // Warm-up: every client must receive one message (memberships and subscriptions in place).
  const all = clients.flat()
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const before = all.map((c) => c.recorder.count)
    await procs[0]!.call({ cmd: 'burst', count: 1, batch: 1 })
    await sleep(200)
    if (all.every((c, i) => c.recorder.count > before[i]!)) break
  }
  // Then a short burst, so that no stack's first measured burst also measures its JIT warm-up
  // (a 600-message quick burst from cold varied by ±30 % between stacks, run to run).
  const warmUp = all.reduce((sum, c) => sum + c.recorder.count, 0) + 200 * all.length
  await procs[0]!.call({ cmd: 'burst', count: 200, batch: 50 })
  await drain(all, warmUp, 500)
  return { servers: procs, clients }
}

async function tearDown(setup: Setup): Promise<void> {
  for (const client of setup.clients.flat()) client.close()
  await Promise.all(setup.servers.map((s) => s.close()))
}

function resetRecorders(clients: Client[], mode: { seen?: boolean; samples?: boolean } = {}): void {
  for (const c of clients) {
    c.recorder.count = 0
    c.recorder.lastAt = 0
    c.recorder.seen = mode.seen ? new Set() : null
    c.recorder.samples = mode.samples ? [] : null
  }
}

/** Wait until `expected` deliveries arrived, or nothing new arrived for `idleMs`. */
async function drain(clients: Client[], expected: number, idleMs = 1500): Promise<number> {
  let last = -1
  let stableSince = Date.now()
  for (;;) {
    const total = clients.reduce((sum, c) => sum + c.recorder.count, 0)
    if (total >= expected) return total
    if (total !== last) {
      last = total
      stableSince = Date.now()
    } else if (Date.now() - stableSince > idleMs) return total
    await sleep(20)
  }
}

// ── scenarios ────────────────────────────────────────────────────────────────────────────────

interface FanOut {
  rate: number
  lost: number
}

/** Burst `count` messages from servers[0]; deliveries/s at every client. */
async function burst(setup: Setup, count: number): Promise<FanOut> {
  const clients = setup.clients.flat()
  resetRecorders(clients)
  await setup.servers[0]!.call({ cmd: 'reset' })
  const start = now()
  await setup.servers[0]!.call({ cmd: 'burst', count, batch: 50 })
  const expected = count * clients.length
  const delivered = await drain(clients, expected)
  const end = Math.max(...clients.map((c) => c.recorder.lastAt))
  return { rate: delivered / ((end - start) / 1000), lost: expected - delivered }
}

interface Latency {
  p50: number
  p99: number
  localP99: number
  remoteP99: number
}

async function steadyLatency(
  setup: Setup,
  perSecond: number,
  durationMs: number,
): Promise<Latency> {
  const clients = setup.clients.flat()
  resetRecorders(clients, { samples: true })
  await setup.servers[0]!.call({ cmd: 'steady', perSecond })
  await sleep(durationMs)
  await setup.servers[0]!.call({ cmd: 'stop' })
  await sleep(500)
  const latencies = (list: Client[]) => list.flatMap((c) => c.recorder.samples!.map(([, l]) => l))
  const all = latencies(clients)
  return {
    p50: percentile(all, 50),
    p99: percentile(all, 99),
    localP99: percentile(latencies(setup.clients[0]!), 99),
    remoteP99: setup.clients[1] ? percentile(latencies(setup.clients[1]), 99) : NaN,
  }
}

/** kill + restart empty, kill + restart with its data, SIGSTOP + SIGCONT. */
type Fault = 'kill-empty' | 'kill-data' | 'freeze'

const FAULT_LABEL: Record<Fault, string> = {
  'kill-empty': 'kill, restart empty',
  'kill-data': 'kill, restart with data',
  freeze: 'freeze (SIGSTOP)',
}

interface FaultResult {
  impl: Impl
  fault: Fault
  sent: number
  /** Messages missing, summed over the clients of the sending server / of the other one. */
  localLost: number
  remoteLost: number
  perClient: number
  /** Longest latency of a same-process delivery for a message sent during the outage, ms. */
  localStallMs: number
  /** From Redis answering again to the first cross-process delivery, ms (NaN: never). */
  backMs: number
  escaped: number
  /** Cross-process deliveries per 100 ms bucket (relative to the kill), as % of expected. */
  timeline: Array<[number, number]>
}

async function outage(impl: Impl, fault: Fault, ctx: BenchContext): Promise<FaultResult> {
  const server = await RedisServer.start()
  let setup: Setup | undefined
  try {
    setup = await setUp(impl, server.url, 2, 25)
    const [local, remote] = [setup.clients[0]!, setup.clients[1]!]
    const perSecond = 200
    const outageMs = ctx.quick ? 1500 : 3000
    resetRecorders([...local, ...remote], { seen: true, samples: true })
    await setup.servers[0]!.call({ cmd: 'reset' })
    await setup.servers[0]!.call({ cmd: 'steady', perSecond })
    await sleep(1000)
    const killAt = now()
    if (fault === 'freeze') {
      server.freeze()
      await sleep(outageMs)
      server.thaw()
    } else {
      await server.restart({ keepData: fault === 'kill-data', delayMs: outageMs })
    }
    const upAt = now()
    await sleep(ctx.quick ? 2000 : 2500)
    const { sent } = await setup.servers[0]!.call<{ sent: number }>({ cmd: 'stop' })
    await sleep(1500)
    const lost = (clients: Client[]) =>
      clients.reduce((sum, c) => {
        let missing = 0
        for (let n = 0; n < sent; n++) if (!c.recorder.seen!.has(n)) missing++
        return sum + missing
      }, 0)
    let localStallMs = 0
    for (const c of local) {
      for (const [at, latency] of c.recorder.samples!) {
        const sentAt = at - latency
        if (sentAt >= killAt && sentAt <= upAt) localStallMs = Math.max(localStallMs, latency)
      }
    }
    let firstBack = Infinity
    for (const c of remote) {
      for (const [at] of c.recorder.samples!) if (at >= upAt && at < firstBack) firstBack = at
    }
    const buckets = new Map<number, number>()
    for (const c of remote) {
      for (const [at] of c.recorder.samples!) {
        const bucket = Math.floor((at - killAt) / 100) * 100
        buckets.set(bucket, (buckets.get(bucket) ?? 0) + 1)
      }
    }
    const expectedPerBucket = (perSecond / 10) * remote.length
    const timeline: Array<[number, number]> = []
    for (let x = -1000; x <= outageMs + 2500; x += 100) {
      timeline.push([x / 1000, Math.round(((buckets.get(x) ?? 0) / expectedPerBucket) * 100)])
    }
    const status = await Promise.all(
      setup.servers.map((s) => s.call<{ escaped: number }>({ cmd: 'status' })),
    )
    return {
      impl,
      fault,
      sent,
      localLost: lost(local),
      remoteLost: lost(remote),
      perClient: sent,
      localStallMs,
      backMs: Number.isFinite(firstBack) ? firstBack - upAt : NaN,
      escaped: status.reduce((sum, s) => sum + (s.escaped ?? 0), 0),
      timeline,
    }
  } finally {
    if (setup) await tearDown(setup)
    await server.stop()
  }
}

// ── the suite ────────────────────────────────────────────────────────────────────────────────

/** Issue 4's targets, each against the peer measured in the same run. */
function targetsTable(
  cross: Record<string, { rates: number[] }>,
  latencyOf: (impl: Impl) => Latency,
  degraded: Record<string, number[]>,
  faults: FaultResult[],
): Table {
  const rate = (impl: Impl): number => median(cross[impl]?.rates ?? [])
  const ours = latencyOf('failsoft')
  const peer = latencyOf('sio-redis')
  const mine = faults.filter((f) => f.impl === 'failsoft' && f.fault !== 'freeze')
  const yes = (ok: boolean): string => (ok ? 'yes' : 'no')
  return {
    title: 'Channels targets (issue 4)',
    columns: ['target', 'measured', 'met'],
    rows: [
      [
        'cross-process fan-out >= Socket.IO redis-adapter',
        `${k(rate('failsoft'))} vs ${k(rate('sio-redis'))} deliveries/s (${ratio(rate('failsoft'), rate('sio-redis'))})`,
        yes(rate('failsoft') >= rate('sio-redis')),
      ],
      [
        'p99 at 300/s no worse than Socket.IO redis-adapter',
        `${fmt(ours.p99, 1)} vs ${fmt(peer.p99, 1)} ms`,
        yes(ours.p99 <= peer.p99),
      ],
      [
        'in-process fan-out while degraded >= Socket.IO in-memory adapter',
        `${k(median(degraded.failsoft ?? []))} vs ${k(median(degraded['sio-memory'] ?? []))} deliveries/s`,
        yes(median(degraded.failsoft ?? []) >= median(degraded['sio-memory'] ?? [])),
      ],
      [
        'kill + restart: same-process lost 0, cross-process back <= 1 s',
        mine
          .map(
            (f) =>
              `${f.fault === 'kill-data' ? 'with data' : 'empty'}: lost ${f.localLost} same / ${f.remoteLost} cross, back ${fmt(f.backMs)} ms`,
          )
          .join('; '),
        yes(mine.length > 0 && mine.every((f) => f.localLost === 0 && f.backMs <= 1000)),
      ],
    ],
    note: 'Percentiles are medians over the latency rounds; "back" is from redis-server answering again to the first cross-process delivery.',
  }
}

/** failsoft/socket.io against the official Socket.IO adapters, measured in the same run. */
function socketIoTargetsTable(
  cross: Record<string, { rates: number[] }>,
  latencyOf: (impl: Impl) => Latency,
  faults: FaultResult[],
): Table {
  const rate = (impl: Impl): number => median(cross[impl]?.rates ?? [])
  const yes = (ok: boolean): string => (ok ? 'yes' : 'no')
  const peers = (['sio-redis', 'sio-streams'] as Impl[]).filter((impl) => cross[impl])
  const ours = latencyOf('sio-failsoft')
  const mine = faults.filter((f) => f.impl === 'sio-failsoft')
  const lossRows = (Object.keys(FAULT_LABEL) as Fault[])
    .filter((fault) => mine.some((f) => f.fault === fault))
    .map((fault) => {
      const f = mine.find((r) => r.fault === fault)!
      const theirs = faults
        .filter((r) => r.fault === fault && r.impl.startsWith('sio-') && r.impl !== 'sio-failsoft')
        .map((r) => `${LABEL[r.impl]} ${r.localLost + r.remoteLost}`)
      return [
        `${FAULT_LABEL[fault]}: lost 0 (same- and cross-process)`,
        `${f.localLost} same / ${f.remoteLost} cross; others: ${theirs.join(', ') || 'n/a'}`,
        yes(f.localLost === 0 && f.remoteLost === 0),
      ]
    })
  return {
    title: 'Socket.IO on failsoft/socket.io: targets',
    columns: ['target', 'measured', 'met'],
    rows: [
      ...peers.map((peer) => [
        `cross-process fan-out >= ${LABEL[peer]}`,
        `${k(rate('sio-failsoft'))} vs ${k(rate(peer))} deliveries/s (${ratio(rate('sio-failsoft'), rate(peer))})`,
        yes(rate('sio-failsoft') >= rate(peer)),
      ]),
      ...peers.map((peer) => [
        `p99 at 300/s no worse than ${LABEL[peer]}`,
        `${fmt(ours.p99, 1)} vs ${fmt(latencyOf(peer).p99, 1)} ms`,
        yes(ours.p99 <= latencyOf(peer).p99),
      ]),
      ...lossRows,
    ],
    note: 'Losses are messages never received, summed over the 25 clients of each server; "others" sums both servers for each official adapter in the same scenario.',
  }
}

const fmt = (value: number, digits = 0): string =>
  Number.isFinite(value) ? value.toFixed(digits) : 'n/a'
const k = (value: number): string =>
  Number.isFinite(value) ? `${(value / 1000).toFixed(1)}k` : 'n/a'

export default async function channels(ctx: BenchContext): Promise<SuiteReport> {
  const runs = ctx.quick ? 1 : ctx.runs
  const burstCount = ctx.quick ? 600 : 2500
  const latencyMs = ctx.quick ? 1000 : 3000
  const data: Record<string, unknown> = {}

  // 1. Cross-process fan-out, Redis up. Every stack is set up at once (idle stacks send
  // nothing) and the runs alternate between them, in a rotating order: the shared machine's
  // noise — a GC pause in the bench process, another process waking — hits all stacks alike.
  const crossImpls: Impl[] = ctx.quick
    ? ['failsoft', 'sio-failsoft', 'sio-redis']
    : ['failsoft', 'sio-failsoft', 'sio-redis', 'sio-streams']
  const latencyRounds = ctx.quick ? 1 : 3
  const cross: Record<string, { rates: number[]; lost: number[]; latency: Latency[] }> = {}
  {
    const server = await RedisServer.start()
    const setups = new Map<Impl, Setup>()
    try {
      for (const impl of crossImpls) {
        ctx.log(`channels: cross-process fan-out, setting up ${impl}`)
        setups.set(impl, await setUp(impl, server.url, 2, 25))
        cross[impl] = { rates: [], lost: [], latency: [] }
      }
      const rotated = (round: number): Impl[] =>
        crossImpls.map((_, i) => crossImpls[(i + round) % crossImpls.length]!)
      for (let run = 0; run < runs; run++) {
        for (const impl of rotated(run)) {
          const result = await burst(setups.get(impl)!, burstCount)
          cross[impl]!.rates.push(result.rate)
          cross[impl]!.lost.push(result.lost)
        }
      }
      for (let round = 0; round < latencyRounds; round++) {
        for (const impl of rotated(round)) {
          ctx.log(`channels: latency at 300 messages/s, ${impl}, round ${round + 1}`)
          cross[impl]!.latency.push(await steadyLatency(setups.get(impl)!, 300, latencyMs))
        }
      }
    } finally {
      for (const setup of setups.values()) await tearDown(setup)
      await server.stop()
    }
  }
  /** Median over the latency rounds of each percentile. */
  const latencyOf = (impl: Impl): Latency => {
    const rounds = cross[impl]!.latency
    return {
      p50: median(rounds.map((l) => l.p50)),
      p99: median(rounds.map((l) => l.p99)),
      localP99: median(rounds.map((l) => l.localP99)),
      remoteP99: median(rounds.map((l) => l.remoteP99)),
    }
  }
  data.crossProcess = cross
  const ours = median(cross.failsoft!.rates)

  // 2. In-process fan-out, failsoft degraded (Redis killed) vs Socket.IO in memory.
  const degraded: Record<string, number[]> = {}
  {
    const server = await RedisServer.start()
    await server.kill() // failsoft keeps probing a dead Redis and fills its outbox meanwhile
    try {
      for (const impl of ['failsoft', 'sio-failsoft', 'sio-memory'] as Impl[]) {
        ctx.log(`channels: in-process fan-out, ${impl}`)
        const setup = await setUp(impl, server.url, 1, 50)
        try {
          degraded[impl] = []
          for (let run = 0; run < runs; run++) {
            degraded[impl].push((await burst(setup, burstCount)).rate)
          }
        } finally {
          await tearDown(setup)
        }
      }
    } finally {
      await server.stop()
    }
  }
  data.degraded = degraded

  // 3. Kill 3 s, restart empty / with data.
  const faults: FaultResult[] = []
  const faultImpls: Impl[] = ctx.quick
    ? ['failsoft', 'sio-failsoft', 'sio-redis']
    : [...crossImpls, 'sio-redis-ff', 'sio-streams-ff']
  const faultKinds: Fault[] = ctx.quick
    ? ['kill-empty', 'freeze']
    : ['kill-empty', 'kill-data', 'freeze']
  for (const fault of faultKinds) {
    for (const impl of faultImpls) {
      ctx.log(`channels: ${FAULT_LABEL[fault]}, ${impl}`)
      faults.push(await outage(impl, fault, ctx))
    }
  }
  data.faults = faults

  const chart: Chart = {
    id: 'channels-restart-empty',
    title:
      'Cross-process deliveries around a Redis kill + empty restart (200 msg/s, 25 remote clients)',
    xLabel: 's since the kill',
    yLabel: '% of the expected deliveries per 100 ms',
    series: faults
      .filter((f) => f.fault === 'kill-empty')
      .map((f) => ({ name: LABEL[f.impl], points: f.timeline })),
    bands: [{ from: 0, to: (ctx.quick ? 1500 : 3000) / 1000, label: 'Redis down' }],
  }

  return {
    suite: 'channels',
    title:
      'Channels: WebSocket fan-out across processes, in-process while degraded, and through a Redis restart or freeze',
    tables: [
      targetsTable(cross, latencyOf, degraded, faults),
      socketIoTargetsTable(cross, latencyOf, faults),
      {
        title: `Cross-process fan-out: 2 server processes × 25 WebSocket clients in one group (burst of ${burstCount} messages)`,
        columns: [
          'stack',
          'deliveries/s (median)',
          'vs failsoft',
          'lost',
          'p50 ms @300/s',
          'p99 ms @300/s',
          'p99 same-process',
          'p99 cross-process',
        ],
        rows: crossImpls.map((impl) => {
          const r = cross[impl]!
          const latency = latencyOf(impl)
          return [
            LABEL[impl],
            k(median(r.rates)),
            impl === 'failsoft' ? '1.00x' : ratio(ours, median(r.rates)),
            Math.max(...r.lost),
            fmt(latency.p50, 1),
            fmt(latency.p99, 1),
            fmt(latency.localP99, 1),
            fmt(latency.remoteP99, 1),
          ]
        }),
        note: `Deliveries counted at the 50 clients (in the bench process); "vs failsoft" is failsoft's rate divided by the peer's. Latency: send time to client receipt at a steady 300 messages/s for ${latencyMs / 1000} s, ${latencyRounds} round(s) per stack alternating with the other stacks; each percentile is the median over the rounds.`,
      },
      {
        title: `In-process fan-out: 1 server × 50 clients (burst of ${burstCount}); failsoft with Redis killed`,
        columns: ['stack', 'deliveries/s (median)', 'failsoft ratio'],
        rows: (['failsoft', 'sio-failsoft', 'sio-memory'] as Impl[]).map((impl) => [
          impl === 'failsoft'
            ? 'failsoft, degraded (Redis down, outbox filling)'
            : impl === 'sio-failsoft'
              ? 'Socket.IO + failsoft/socket.io, degraded (Redis down)'
              : LABEL[impl],
          k(median(degraded[impl]!)),
          impl === 'failsoft'
            ? '1.00x'
            : ratio(median(degraded.failsoft!), median(degraded[impl]!)),
        ]),
        note: 'failsoft serves local members from memory and also keeps each message in its bounded outbox for the other processes.',
      },
      {
        title: `Redis killed ${ctx.quick ? 1.5 : 3} s then restarted, or frozen as long, 200 messages/s from one server, 25 clients on each of 2 servers`,
        columns: [
          'stack',
          'fault',
          'sent',
          'same-process lost',
          'cross-process lost (of 25 × sent)',
          'longest local stall ms',
          'cross-process back after ms',
          'escaped errors',
        ],
        rows: faults.map((f) => [
          LABEL[f.impl],
          FAULT_LABEL[f.fault],
          f.sent,
          f.localLost,
          f.remoteLost,
          fmt(f.localStallMs, 1),
          fmt(f.backMs),
          f.escaped,
        ]),
        note: '"back after": from redis-server answering again to the first delivery on the other server. Losses are messages never received, summed over that server\'s 25 clients. Escaped errors: unhandled rejections/exceptions in the server process.',
      },
    ],
    charts: [chart],
    notes: [
      'failsoft: local members are served from memory before anything touches Redis; cross-process messages sent while Redis is down wait in a bounded outbox (10,000 messages, 8 MiB, 30 s by default) and are flushed in order once this process has re-subscribed and a 400 ms settle delay has let the other processes re-subscribe too.',
      "Socket.IO stacks use the adapters' documented setup (ioredis clients with default options); the fail-fast rows give their ioredis clients enableOfflineQueue false, maxRetriesPerRequest 0, commandTimeout 250 ms, connectTimeout 1 s and reconnects capped at 1 s — except that the streams adapter keeps its offline queue and no command timeout: without the queue its poll loop, which re-issues XREAD at once after an error, spun at 100 % CPU at start-up and the server never listened; a command timeout cuts every blocking XREAD.",
    ],
    data,
  }
}
