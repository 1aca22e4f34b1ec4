/**
 * Cache suite: failsoft's cache against raw ioredis + JSON, BentoCache (L2 only, L1+L2) and
 * cache-manager + @keyv/redis, in the same run, on real redis-server processes. cache-manager
 * also runs on failsoft/keyv (failsoft's Keyv store), beside cache-manager + @keyv/redis.
 *
 * 1. Throughput with Redis up (1 KB JSON values): get and set, sequential and 64 concurrent.
 * 2. Per-operation latency while Redis is killed, frozen, and down for 20 s: every setup runs
 *    a paced get/set/delete loop at the same time against the same server; a peer operation
 *    that hangs is cut at 30 s and counted.
 * 3. Stale after recovery: key A deleted and key B overwritten during an outage (Redis keeps
 *    its data); then A and B are read on the same instance and on a fresh one.
 */
import { Redis, type RedisOptions } from 'ioredis'
import { BentoCache, bentostore } from 'bentocache'
import { memoryDriver } from 'bentocache/drivers/memory'
import { redisDriver } from 'bentocache/drivers/redis'
import { createCache as createCacheManager } from 'cache-manager'
import KeyvRedis, { Keyv } from '@keyv/redis'
import { createFailsoft, type Cache, type Failsoft } from '../../src/index.js'
import { failsoftStore } from '../../src/keyv.js'
import { RedisServer, sleep } from '../../test/support/fault-kit.js'
import {
  median,
  percentile,
  ratio,
  type BenchContext,
  type Chart,
  type Suite,
  type Table,
  measureThroughput,
  slowestPerBucket,
  type Throughput,
} from '../report.js'

// ── setups ─────────────────────────────────────────────────────────────────────────────────

interface Setup {
  readonly name: string
  get(key: string): Promise<unknown>
  set(key: string, value: unknown): Promise<unknown>
  del(key: string): Promise<unknown>
  /** failsoft only: where operations go right now. */
  backend?(): 'redis' | 'memory'
  close(): Promise<void>
}

type Factory = (url: string, namespace: string) => Promise<Setup>

const TTL_SECONDS = 300
/** Errors the peers emit as events (not thrown to callers): counted, never fatal here. */
let emittedErrors = 0
const countError = (): void => {
  emittedErrors++
}

function hostPort(url: string): { host: string; port: number } {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: Number(parsed.port) }
}

/** ioredis with the settings a careful user would pick to fail fast. */
const FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 250,
  connectTimeout: 1000,
  retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
}

function ioredisSetup(name: string, options: RedisOptions): Factory {
  return async (url, namespace) => {
    const redis = new Redis({ ...hostPort(url), ...options })
    redis.on('error', countError)
    const k = (key: string): string => `${namespace}:${key}`
    return {
      name,
      get: async (key) => {
        const text = await redis.get(k(key))
        return text === null ? undefined : (JSON.parse(text) as unknown)
      },
      set: (key, value) => redis.set(k(key), JSON.stringify(value), 'EX', TTL_SECONDS),
      del: (key) => redis.del(k(key)),
      close: async () => {
        redis.disconnect()
      },
    }
  }
}

function failsoftSetup(name: string, mode: 'warm' | 'l1'): Factory {
  return async (url, namespace) => {
    const failsoft: Failsoft = createFailsoft({ redis: url, prefix: namespace, logger: false })
    await failsoft.ready()
    const cache: Cache = failsoft.cache({ namespace: 'bench', memory: { mode } })
    if (mode === 'l1') {
      const deadline = Date.now() + 2000
      while (cache.status().busConnected !== true && Date.now() < deadline) await sleep(10)
    }
    return {
      name,
      get: (key) => cache.get(key),
      set: (key, value) => cache.set(key, value, { ttlSeconds: TTL_SECONDS }),
      del: (key) => cache.delete(key),
      backend: () => cache.backend,
      close: () => failsoft.close(),
    }
  }
}

function bentoSetup(name: string, l1: boolean, failFast: boolean): Factory {
  return async (url, namespace) => {
    let store = bentostore()
    if (l1) store = store.useL1Layer(memoryDriver({ maxSize: '64mb' }))
    const connection = new Redis({ ...hostPort(url), ...(failFast ? FAIL_FAST : {}) })
    connection.on('error', countError)
    store = store.useL2Layer(redisDriver({ connection, prefix: namespace }))
    const bento = new BentoCache({
      default: 'cache',
      stores: { cache: store },
      ...(failFast ? { l2CircuitBreakerDuration: '1s', timeout: '250ms' } : {}),
    })
    return {
      name,
      get: (key) => bento.get({ key }),
      set: (key, value) => bento.set({ key, value, ttl: `${TTL_SECONDS}s` }),
      del: (key) => bento.delete({ key }),
      close: async () => {
        await bento.disconnect().catch(countError)
        connection.disconnect()
      },
    }
  }
}

function cacheManagerSetup(name: string, memoryTier: boolean): Factory {
  return async (url, namespace) => {
    const redisStore = new KeyvRedis(url)
    const redisKeyv = new Keyv({ store: redisStore, namespace })
    redisKeyv.on('error', countError)
    redisStore.on('error', countError)
    const stores = memoryTier ? [new Keyv(), redisKeyv] : [redisKeyv]
    const cache = createCacheManager({ stores })
    cache.on('error' as never, countError as never)
    return {
      name,
      get: (key) => cache.get(key),
      set: (key, value) => cache.set(key, value, TTL_SECONDS * 1000),
      del: (key) => cache.del(key),
      close: async () => {
        await Promise.race([cache.disconnect().catch(countError), sleep(1000)])
      },
    }
  }
}

/** cache-manager v7 on failsoft's Keyv store: what a cache-manager user migrates to. */
function cacheManagerFailsoftSetup(name: string): Factory {
  return async (url, namespace) => {
    const failsoft: Failsoft = createFailsoft({ redis: url, prefix: namespace, logger: false })
    await failsoft.ready()
    const store = failsoftStore(failsoft)
    const keyv = new Keyv({ store, namespace: 'bench' })
    keyv.on('error', countError)
    const cache = createCacheManager({ stores: [keyv] })
    return {
      name,
      get: (key) => cache.get(key),
      set: (key, value) => cache.set(key, value, TTL_SECONDS * 1000),
      del: (key) => cache.del(key),
      backend: () => store.cacheFor().backend,
      close: () => failsoft.close(),
    }
  }
}

const RAW = 'ioredis + JSON'
const FAILSOFT = 'failsoft'
const FAILSOFT_L1 = "failsoft (memory mode 'l1')"
const BENTO_L1L2 = 'BentoCache L1+L2'
const CM_KEYV_REDIS = 'cache-manager + @keyv/redis'
const CM_FAILSOFT = 'cache-manager + failsoft/keyv'

const throughputSetups: Array<[string, Factory]> = [
  [RAW, ioredisSetup(RAW, {})],
  [FAILSOFT, failsoftSetup(FAILSOFT, 'warm')],
  [FAILSOFT_L1, failsoftSetup(FAILSOFT_L1, 'l1')],
  ['BentoCache L2', bentoSetup('BentoCache L2', false, false)],
  [BENTO_L1L2, bentoSetup(BENTO_L1L2, true, false)],
  [CM_KEYV_REDIS, cacheManagerSetup(CM_KEYV_REDIS, false)],
  [CM_FAILSOFT, cacheManagerFailsoftSetup(CM_FAILSOFT)],
  [
    'cache-manager memory + @keyv/redis',
    cacheManagerSetup('cache-manager memory + @keyv/redis', true),
  ],
]

const faultSetups: Array<[string, Factory]> = [
  [FAILSOFT, failsoftSetup(FAILSOFT, 'warm')],
  [`${RAW} (defaults)`, ioredisSetup(`${RAW} (defaults)`, {})],
  [`${RAW} (fail-fast)`, ioredisSetup(`${RAW} (fail-fast)`, FAIL_FAST)],
  ['BentoCache L2 (defaults)', bentoSetup('BentoCache L2 (defaults)', false, false)],
  ['BentoCache L1+L2 (defaults)', bentoSetup('BentoCache L1+L2 (defaults)', true, false)],
  ['BentoCache L1+L2 (fail-fast)', bentoSetup('BentoCache L1+L2 (fail-fast)', true, true)],
  [
    'cache-manager + @keyv/redis (defaults)',
    cacheManagerSetup('cache-manager + @keyv/redis (defaults)', false),
  ],
  [CM_FAILSOFT, cacheManagerFailsoftSetup(CM_FAILSOFT)],
]

// ── 1. throughput ──────────────────────────────────────────────────────────────────────────

const VALUE = { id: 1, name: 'project', body: 'x'.repeat(960) } // ~1 KB as JSON
const KEYS = Array.from({ length: 100 }, (_, i) => `k${i}`)

interface ThroughputRow {
  setup: string
  op: 'get' | 'set'
  concurrency: number
  opsPerSec: number
  p50: number
  p99: number
}

/**
 * A single sequential caller's throughput swings ±15 % from one window to the next on a
 * shared 2-vCPU machine: more, shorter windows (rotated between setups) give a median that
 * holds still between runs of the bench.
 */
function throughputPlan(ctx: BenchContext): { windowMs: number; rounds: number } {
  return ctx.quick
    ? { windowMs: 250, rounds: ctx.runs }
    : { windowMs: 400, rounds: Math.max(ctx.runs, 7) }
}

async function throughput(ctx: BenchContext): Promise<ThroughputRow[]> {
  const server = await RedisServer.start()
  const rows: ThroughputRow[] = []
  const { windowMs, rounds } = throughputPlan(ctx)
  const setups: Array<[string, Setup]> = []
  try {
    for (const [name, factory] of throughputSetups) {
      const setup = await factory(server.url, `tp${setups.length}`)
      setups.push([name, setup])
      for (const key of KEYS) await setup.set(key, VALUE)
      for (const key of KEYS) await setup.get(key) // fills memory tiers
    }
    for (const op of ['get', 'set'] as const) {
      for (const concurrency of [1, 64]) {
        // Sequence number → one of the 100 keys, in turn.
        const fnOf = (setup: Setup) =>
          op === 'get'
            ? (seq: number) => setup.get(KEYS[seq % KEYS.length]!)
            : (seq: number) => setup.set(KEYS[seq % KEYS.length]!, VALUE)
        for (const [, setup] of setups) {
          await measureThroughput(fnOf(setup), concurrency, Math.min(200, windowMs)) // warm-up
        }
        // The runs alternate between the setups, in a rotating order: the shared machine's
        // noise hits every setup alike.
        const runs = new Map<string, Throughput[]>()
        for (let r = 0; r < rounds; r++) {
          for (let i = 0; i < setups.length; i++) {
            const [name, setup] = setups[(i + r) % setups.length]!
            runs.set(name, [
              ...(runs.get(name) ?? []),
              await measureThroughput(fnOf(setup), concurrency, windowMs),
            ])
          }
        }
        for (const [name] of setups) {
          const measured = runs.get(name) ?? []
          const row = {
            setup: name,
            op,
            concurrency,
            opsPerSec: median(measured.map((m) => m.opsPerSec)),
            p50: median(measured.map((m) => m.p50)),
            p99: median(measured.map((m) => m.p99)),
          }
          rows.push(row)
          ctx.log(
            `${name} ${op} c${concurrency}: ${Math.round(row.opsPerSec)} ops/s p99 ${row.p99.toFixed(3)} ms`,
          )
        }
      }
    }
  } finally {
    for (const [, setup] of setups) await setup.close()
    await server.stop()
  }
  return rows
}

// ── 2. latency through faults ──────────────────────────────────────────────────────────────

interface Sample {
  /** ms since the fault started (negative: before). */
  at: number
  latency: number
  error: boolean
  capped: boolean
}

const CAP_MS = 30_000

async function capped(promise: Promise<unknown>): Promise<'ok' | 'error' | 'capped'> {
  let timer: NodeJS.Timeout | undefined
  const cap = new Promise<'capped'>((resolve) => {
    timer = setTimeout(() => resolve('capped'), CAP_MS)
  })
  try {
    return await Promise.race([promise.then(() => 'ok' as const), cap])
  } catch {
    return 'error'
  } finally {
    clearTimeout(timer)
    promise.catch(() => undefined) // its outcome was recorded (or cut at the cap)
  }
}

interface FaultResult {
  setup: string
  samples: Sample[]
  /** ms after the fault ended until operations were served by Redis again. */
  recoveredAfter: number | null
}

async function faultScenario(
  ctx: BenchContext,
  kind: 'kill' | 'freeze',
  durationMs: number,
): Promise<FaultResult[]> {
  const server = await RedisServer.start({ persistence: true })
  const setups: Setup[] = []
  try {
    for (const [, factory] of faultSetups)
      setups.push(await factory(server.url, `f${setups.length}`))
    for (const setup of setups) for (const key of KEYS.slice(0, 20)) await setup.set(key, VALUE)
    let faultAt = Infinity
    let faultEnd = Infinity
    let stop = false
    const results: FaultResult[] = setups.map((s) => ({
      setup: s.name,
      samples: [],
      recoveredAfter: null,
    }))
    const loops = setups.map(async (setup, index) => {
      const result = results[index]!
      let i = 0
      while (!stop) {
        const key = KEYS[i % 20]!
        const op =
          i % 3 === 0 ? setup.get(key) : i % 3 === 1 ? setup.set(key, VALUE) : setup.del(key)
        i++
        const start = performance.now()
        const outcome = await capped(op)
        const end = performance.now()
        result.samples.push({
          at: start - faultAt,
          latency: end - start,
          error: outcome === 'error',
          capped: outcome === 'capped',
        })
        if (result.recoveredAfter === null && start > faultEnd) {
          const onRedis = setup.backend ? setup.backend() === 'redis' : outcome === 'ok'
          if (onRedis) result.recoveredAfter = end - faultEnd
        }
        await sleep(2) // paced, like request traffic: ~300 operations/s per setup
      }
    })
    await sleep(ctx.quick ? 300 : 1000)
    faultAt = performance.now()
    ctx.log(`${kind} for ${durationMs} ms`)
    if (kind === 'kill') await server.kill()
    else server.freeze()
    await sleep(durationMs)
    if (kind === 'kill') await server.start()
    else server.thaw()
    faultEnd = performance.now()
    await sleep(ctx.quick ? 1500 : 3000)
    stop = true
    await Promise.all(loops)
    return results
  } finally {
    for (const setup of setups) await setup.close().catch(countError)
    await server.stop()
  }
}

function faultTable(title: string, results: FaultResult[], durationMs: number): Table {
  return {
    title,
    columns: [
      'setup',
      'ops in fault',
      'errors thrown',
      'p50 ms',
      'p99 ms',
      'max ms',
      'ops > 1 s',
      'p99 after detection ms',
      'back on Redis after',
    ],
    rows: results.map(({ setup, samples, recoveredAfter }) => {
      const inFault = samples.filter((s) => s.at >= 0 && s.at <= durationMs)
      const latencies = inFault.map((s) => s.latency)
      const afterDetection = inFault.filter((s) => s.at >= 500).map((s) => s.latency)
      const capped = inFault.filter((s) => s.capped).length
      return [
        setup,
        inFault.length,
        samples.filter((s) => s.error).length,
        fmt(percentile(latencies, 50)),
        fmt(percentile(latencies, 99)),
        fmt(latencies.reduce((a, b) => Math.max(a, b), 0)) +
          (capped > 0 ? ` (${capped} cut at 30 s)` : ''),
        inFault.filter((s) => s.latency > 1000).length,
        fmt(percentile(afterDetection, 99)),
        recoveredAfter === null ? 'not within the window' : `${Math.round(recoveredAfter)} ms`,
      ]
    }),
    note: `Each setup runs a paced get/set/delete loop (~300 ops/s) at the same time against one redis-server (AOF on); "ops in fault" = operations started during the ${durationMs / 1000} s fault. "p99 after detection" counts operations started 500 ms or more into the fault.`,
  }
}

function latencyChart(
  id: string,
  title: string,
  results: FaultResult[],
  durationMs: number,
): Chart {
  const bucket = 100
  return {
    id,
    title,
    xLabel: 'seconds since the fault started',
    yLabel: 'slowest operation in each 100 ms (ms)',
    logY: true,
    bands: [{ from: 0, to: durationMs / 1000, label: 'Redis unavailable' }],
    series: results.map(({ setup, samples }) => ({
      name: setup,
      points: slowestPerBucket(samples, bucket),
    })),
  }
}

// ── 3. stale after recovery ────────────────────────────────────────────────────────────────

interface StaleRow {
  setup: string
  sameInstance: string
  freshInstance: string
  stale: boolean
  outageWriteMs: number
}

async function staleScenario(ctx: BenchContext, outageMs: number): Promise<StaleRow[]> {
  const server = await RedisServer.start({ persistence: true })
  const rows: StaleRow[] = []
  try {
    const live = await Promise.all(
      faultSetups.map(async ([name, factory], i) => ({
        name,
        factory,
        namespace: `stale${i}`,
        setup: await factory(server.url, `stale${i}`),
      })),
    )
    for (const { setup } of live) {
      await setup.set('A', 'A-old')
      await setup.set('B', 'B-old')
      await setup.get('A')
      await setup.get('B')
    }
    await server.kill()
    // Give every client the chance to notice, as requests would.
    await Promise.all(live.map(({ setup }) => capped(setup.get('A'))))
    const writes = live.map(({ setup }) => {
      const start = performance.now()
      return Promise.all([capped(setup.del('A')), capped(setup.set('B', 'B-new'))]).then(
        () => performance.now() - start,
      )
    })
    await sleep(outageMs)
    await server.start()
    const writeTimes = await Promise.all(writes)
    await sleep(2000) // every setup's own reconnect / recovery
    for (const [index, { name, factory, namespace, setup }] of live.entries()) {
      const read = async (s: Setup): Promise<string> => {
        const a = await s.get('A').catch(() => 'error')
        const b = await s.get('B').catch(() => 'error')
        return `A=${JSON.stringify(a ?? null)} B=${JSON.stringify(b ?? null)}`
      }
      const same = await read(setup)
      const fresh = await factory(server.url, namespace)
      const other = await read(fresh)
      await fresh.close()
      const stale = /A-old|B-old/.test(same) || /A-old|B-old/.test(other)
      rows.push({
        setup: name,
        sameInstance: same,
        freshInstance: other,
        stale,
        outageWriteMs: writeTimes[index] ?? NaN,
      })
      ctx.log(`stale ${name}: ${same} / ${other}`)
    }
    for (const { setup } of live) await setup.close().catch(countError)
  } finally {
    await server.stop()
  }
  return rows
}

// ── the suite ──────────────────────────────────────────────────────────────────────────────

function fmt(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a'
  if (ms >= 100) return String(Math.round(ms))
  if (ms >= 1) return ms.toFixed(1)
  return ms.toFixed(3)
}

const cacheSuite: Suite = async (ctx) => {
  emittedErrors = 0
  const guard = (error: unknown): void => {
    emittedErrors++
    ctx.log(`uncaught from a peer: ${String(error)}`)
  }
  process.on('uncaughtException', guard)
  process.on('unhandledRejection', guard)
  try {
    ctx.log('throughput')
    const tp = await throughput(ctx)
    const short = ctx.quick ? 2000 : 5000
    ctx.log('kill')
    const kill = await faultScenario(ctx, 'kill', short)
    ctx.log('freeze')
    const freeze = await faultScenario(ctx, 'freeze', short)
    const long = ctx.quick ? 5000 : 20_000
    ctx.log(`outage ${long} ms`)
    const outage = await faultScenario(ctx, 'kill', long)
    ctx.log('stale after recovery')
    const stale = await staleScenario(ctx, ctx.quick ? 2000 : 5000)

    const of = (setup: string, op: string, c: number): ThroughputRow | undefined =>
      tp.find((r) => r.setup === setup && r.op === op && r.concurrency === c)
    const tpTable: Table = {
      title: 'Cache throughput with Redis up (1 KB JSON values)',
      columns: ['setup', 'op', 'concurrency', 'ops/s', 'p50 ms', 'p99 ms', 'vs ioredis + JSON'],
      rows: tp.map((r) => [
        r.setup,
        r.op,
        r.concurrency,
        Math.round(r.opsPerSec),
        fmt(r.p50),
        fmt(r.p99),
        ratio(r.opsPerSec, of(RAW, r.op, r.concurrency)?.opsPerSec ?? NaN),
      ]),
      note: `Median of ${throughputPlan(ctx).rounds} run(s) of ${throughputPlan(ctx).windowMs / 1000} s each, setups rotated, 100 keys. Memory-tier setups ('l1', L1+L2, cache-manager memory) serve gets from memory. Target: failsoft >= 0.9x ioredis + JSON; failsoft 'l1' get >= BentoCache L1+L2.`,
    }
    const targets: Table = {
      title: 'Cache targets (issue 3)',
      columns: ['target', 'measured', 'met'],
      rows: [
        ...(['get', 'set'] as const).flatMap((op) =>
          [1, 64].map((c) => {
            const ours = of(FAILSOFT, op, c)?.opsPerSec ?? NaN
            const raw = of(RAW, op, c)?.opsPerSec ?? NaN
            return [
              `${op} c${c} >= 0.9x ioredis + JSON`,
              ratio(ours, raw),
              ours >= 0.9 * raw ? 'yes' : 'no',
            ]
          }),
        ),
        ...[1, 64].map((c) => {
          const ours = of(FAILSOFT_L1, 'get', c)?.opsPerSec ?? NaN
          const bento = of(BENTO_L1L2, 'get', c)?.opsPerSec ?? NaN
          return [
            `memory-tier get c${c} >= BentoCache L1+L2`,
            ratio(ours, bento),
            ours >= bento ? 'yes' : 'no',
          ]
        }),
        ...[
          ['kill', kill, short],
          ['freeze', freeze, short],
          [`${long / 1000} s outage`, outage, long],
        ].map(([label, results, duration]) => {
          const ours = (results as FaultResult[]).find((r) => r.setup === FAILSOFT)!
          const inFault = ours.samples.filter((s) => s.at >= 0 && s.at <= (duration as number))
          const max = ours.samples.reduce((a, s) => Math.max(a, s.latency), 0)
          const after = percentile(
            inFault.filter((s) => s.at >= 500).map((s) => s.latency),
            99,
          )
          const errors = ours.samples.filter((s) => s.error).length
          const back = ours.recoveredAfter ?? Infinity
          return [
            `${label}: max op < 500 ms, p99 after detection <= 2 ms, 0 errors, back on Redis < 1 s`,
            `max ${fmt(max)} ms, p99 ${fmt(after)} ms, ${errors} errors, back after ${fmt(back)} ms`,
            max < 500 && after <= 2 && errors === 0 && back < 1000 ? 'yes' : 'no',
          ]
        }),
        [
          'zero stale reads after recovery (same instance and fresh instance)',
          stale.find((r) => r.setup === FAILSOFT)?.stale ? 'stale' : '0 stale',
          stale.find((r) => r.setup === FAILSOFT)?.stale ? 'no' : 'yes',
        ],
      ],
    }
    const staleTable: Table = {
      title: `Stale after recovery: A deleted and B overwritten during a ${(ctx.quick ? 2000 : 5000) / 1000} s outage (Redis killed, restarted with its data)`,
      columns: [
        'setup',
        'same instance reads',
        'fresh instance reads',
        'stale',
        'outage writes took',
      ],
      rows: stale.map((r) => [
        r.setup,
        r.sameInstance,
        r.freshInstance,
        r.stale ? 'STALE' : 'no',
        `${fmt(r.outageWriteMs)} ms`,
      ]),
      note: 'Correct: A=null and B="B-new" or null (a miss). "outage writes took": how long the delete of A and the write of B made the caller wait.',
    }
    return {
      suite: 'cache',
      title: 'Cache',
      tables: [
        targets,
        tpTable,
        faultTable(
          `Per-operation latency during a ${short / 1000} s kill (SIGKILL, then restart)`,
          kill,
          short,
        ),
        faultTable(
          `Per-operation latency during a ${short / 1000} s freeze (SIGSTOP / SIGCONT)`,
          freeze,
          short,
        ),
        faultTable(
          `Per-operation latency during a ${long / 1000} s outage (SIGKILL, then restart)`,
          outage,
          long,
        ),
        staleTable,
      ],
      charts: [
        latencyChart(
          'cache-latency-kill',
          `Cache operation latency around a ${short / 1000} s kill`,
          kill,
          short,
        ),
        latencyChart(
          'cache-latency-freeze',
          `Cache operation latency around a ${short / 1000} s freeze`,
          freeze,
          short,
        ),
        latencyChart(
          'cache-latency-outage',
          `Cache operation latency around a ${long / 1000} s outage`,
          outage,
          long,
        ),
      ],
      notes: [
        `cache-manager + failsoft/keyv against cache-manager + @keyv/redis, Redis up: ${(
          [
            ['get', 1],
            ['get', 64],
            ['set', 1],
            ['set', 64],
          ] as const
        )
          .map(
            ([op, c]) =>
              `${op} c${c} ${ratio(of(CM_FAILSOFT, op, c)?.opsPerSec ?? NaN, of(CM_KEYV_REDIS, op, c)?.opsPerSec ?? NaN)}`,
          )
          .join(', ')}.`,
        `Peers emitted ${emittedErrors} error events or late rejections (counted, not thrown to callers).`,
        'Fail-fast settings: ioredis enableOfflineQueue false, maxRetriesPerRequest 0, commandTimeout 250 ms, reconnect backoff capped at 1 s; BentoCache additionally l2CircuitBreakerDuration 1 s and timeout 250 ms.',
      ],
      data: { throughput: tp, stale },
    }
  } finally {
    process.off('uncaughtException', guard)
    process.off('unhandledRejection', guard)
  }
}

export default cacheSuite
