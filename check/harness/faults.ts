// The fault kinds. Each kind plans itself from a PRNG (pure: schedule.ts calls plan()) and
// plays itself against the run's environment (the harness calls run()). A new kind is one
// more entry in FAULT_KINDS; `--faults` enables or disables kinds by name.
//
// Lanes: the kinds of one lane play one after another (two server faults never overlap, two
// proxy faults never fight over one proxy's mode); the three lanes play at the same time, so
// faults combine (a freeze during a partition of one process, a child killed while Redis is
// paused…).
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  respCommand,
  sleep,
  type RedisServer,
  type TcpProxy,
} from '../../test/support/fault-kit.js'
import type { Rng } from './prng.js'

export type Lane = 'server' | 'network' | 'client'

/** One fault of a schedule (JSON-safe: it is printed, stored and replayed from the seed). */
export interface FaultStep {
  id: string
  kind: string
  lane: Lane
  /** Offset from the start of the load phase, ms. */
  atMs: number
  /** How long the lane is busy with it (the fault itself plus restarts), ms. */
  durationMs: number
  /** Base name of the one process it aims at; absent = every process / the server. */
  target?: string
  params: Record<string, number | string | boolean>
}

/** What the checker needs to know about a fault, recorded in its 'fault-start' event. */
export interface FaultFlags {
  /** Base names whose path to Redis it affects; ['*'] = all. */
  targets: string[]
  outage: boolean
  slow: boolean
  dataLoss: boolean
  expectDown: boolean
  /** Redis answers but refuses writes (OOM): not an outage, but a recovery that writes waits. */
  writesRefused: boolean
}

export interface PlanContext {
  bases: readonly string[]
  webs: readonly string[]
  workers: readonly string[]
}

/** What a fault can act on while it plays. */
export interface FaultEnv {
  server: RedisServer
  proxies: ReadonlyMap<string, TcpProxy>
  runDir: string
  /** Records 'fault-start' (call before acting). */
  started(): void
  /** Records 'fault-end' and starts the "Redis answers again" pings of the affected paths. */
  ended(): void
  /** Records another harness event (kind 'info'). */
  note(op: string, fields: Record<string, unknown>): void
  killChild(base: string): Promise<boolean>
  restartChild(base: string): Promise<void>
  force(base: string, on: boolean): boolean
  /** Resolves when the run is being torn down early (a fault should heal at once). */
  readonly aborted: () => boolean
}

export interface FaultKind {
  name: string
  lane: Lane
  /** Played unless `--faults -name`; false = only with `--faults +name`. */
  defaultOn: boolean
  weight: number
  description: string
  flags(step: FaultStep): FaultFlags
  plan(rng: Rng, ctx: PlanContext): Pick<FaultStep, 'durationMs' | 'params'> & { target?: string }
  run(env: FaultEnv, step: FaultStep): Promise<void>
}

const ALL = ['*']
const num = (step: FaultStep, name: string): number => Number(step.params[name])
const targetsOf = (step: FaultStep): string[] => (step.target === undefined ? ALL : [step.target])
const proxiesOf = (env: FaultEnv, step: FaultStep): TcpProxy[] =>
  step.target === undefined
    ? [...env.proxies.values()]
    : [env.proxies.get(step.target)].filter((p): p is TcpProxy => p !== undefined)

/** A proxy fault aims at one process (½) or at all of them. */
function proxyTarget(rng: Rng, ctx: PlanContext): string | undefined {
  return rng.chance(0.5) ? rng.pick(ctx.bases) : undefined
}

const server = (flags: Partial<FaultFlags>): ((step: FaultStep) => FaultFlags) => {
  return () => ({
    targets: ALL,
    outage: false,
    slow: false,
    dataLoss: false,
    expectDown: false,
    writesRefused: false,
    ...flags,
  })
}

/** Smallest non-zero maxmemory: every write that allocates is refused with OOM. */
const TINY_MAXMEMORY = '1'

export const FAULT_KINDS: readonly FaultKind[] = [
  {
    name: 'kill-restart-empty',
    lane: 'server',
    defaultOn: true,
    weight: 2,
    description:
      'redis-server SIGKILLed, restarted empty (new run_id, data dir wiped) after a hold',
    flags: server({ outage: true, dataLoss: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(300, 2500)
      return { durationMs: holdMs + 400, params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      await env.server.kill()
      await sleep(num(step, 'holdMs'))
      await env.server.restart({ keepData: false })
      env.ended()
    },
  },
  {
    name: 'kill-restart-data',
    lane: 'server',
    defaultOn: true,
    weight: 3,
    description:
      'redis-server SIGKILLed, restarted with its data (AOF, appendfsync always) after a hold',
    flags: server({ outage: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(300, 2500)
      return { durationMs: holdMs + 400, params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      await env.server.kill()
      await sleep(num(step, 'holdMs'))
      await env.server.restart({ keepData: true })
      env.ended()
    },
  },
  {
    name: 'freeze',
    lane: 'server',
    defaultOn: true,
    weight: 3,
    description: 'redis-server SIGSTOPped (TCP open, nothing answers), SIGCONT after a hold',
    flags: server({ outage: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(300, 3500)
      return { durationMs: holdMs, params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      env.server.freeze()
      await sleep(num(step, 'holdMs'))
      env.server.thaw()
      env.ended()
    },
  },
  {
    name: 'debug-sleep',
    lane: 'server',
    defaultOn: true,
    weight: 2,
    description: 'DEBUG SLEEP: the server busy in one command for a hold',
    flags: server({ outage: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(300, 2500)
      return { durationMs: holdMs + 100, params: { holdMs } }
    },
    async run(env, step) {
      const holdMs = num(step, 'holdMs')
      env.started()
      await respCommand(env.server.respTarget, ['DEBUG', 'SLEEP', (holdMs / 1000).toFixed(3)], {
        timeoutMs: holdMs + 10_000,
      })
      env.ended()
    },
  },
  {
    name: 'client-pause',
    lane: 'server',
    defaultOn: true,
    weight: 2,
    description: 'CLIENT PAUSE <hold> ALL: every client command waits until the pause ends',
    flags: server({ outage: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(300, 2500)
      return { durationMs: holdMs + 100, params: { holdMs } }
    },
    async run(env, step) {
      const holdMs = num(step, 'holdMs')
      env.started()
      await respCommand(env.server.respTarget, ['CLIENT', 'PAUSE', holdMs, 'ALL'])
      await sleep(holdMs)
      env.ended()
    },
  },
  {
    name: 'flushall',
    lane: 'server',
    defaultOn: true,
    weight: 1,
    description: 'FLUSHALL while everything is up (queued jobs, done markers, cache values gone)',
    flags: server({ dataLoss: true }),
    plan: () => ({ durationMs: 50, params: {} }),
    async run(env) {
      env.started()
      await respCommand(env.server.respTarget, ['FLUSHALL'])
      env.ended()
    },
  },
  {
    name: 'maxmemory',
    lane: 'server',
    defaultOn: true,
    weight: 2,
    description:
      'CONFIG SET maxmemory 1 byte, policy noeviction (every write refused with OOM), restored after a hold',
    flags: server({ writesRefused: true }),
    plan: (rng) => {
      const holdMs = rng.int(800, 3500)
      return { durationMs: holdMs + 50, params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      await respCommand(env.server.respTarget, ['CONFIG', 'SET', 'maxmemory-policy', 'noeviction'])
      await respCommand(env.server.respTarget, ['CONFIG', 'SET', 'maxmemory', TINY_MAXMEMORY])
      try {
        await sleep(num(step, 'holdMs'))
      } finally {
        await respCommand(env.server.respTarget, ['CONFIG', 'SET', 'maxmemory', '0'])
      }
      env.ended()
    },
  },
  {
    name: 'kill-child-at-recovery',
    lane: 'server',
    defaultOn: true,
    weight: 2,
    description:
      'redis-server SIGKILLed and restarted with its data; right after it answers again, one child is SIGKILLed mid-recovery and restarted with the same spool directory',
    flags: server({ outage: true, expectDown: true }),
    plan: (rng, ctx) => {
      const holdMs = rng.int(300, 1500)
      const delayMs = rng.int(0, 150)
      const downMs = rng.int(200, 1500)
      return {
        durationMs: holdMs + delayMs + downMs + 600,
        params: { holdMs, delayMs, downMs, child: rng.pick(ctx.bases) },
      }
    },
    async run(env, step) {
      env.started()
      await env.server.kill()
      await sleep(num(step, 'holdMs'))
      await env.server.restart({ keepData: true })
      env.ended()
      await sleep(num(step, 'delayMs'))
      const child = String(step.params['child'])
      if (await env.killChild(child)) {
        await sleep(num(step, 'downMs'))
        await env.restartChild(child)
      }
    },
  },
  {
    name: 'rollback',
    lane: 'server',
    defaultOn: false,
    weight: 2,
    description:
      'SAVE, more acknowledged writes for a hold, SIGKILL, restart from the older snapshot (off by default: a later issue)',
    flags: server({ outage: true, dataLoss: true, expectDown: true }),
    plan: (rng) => {
      const holdMs = rng.int(800, 2500)
      return { durationMs: holdMs + 700, params: { holdMs } } // hold: snapshot → kill
    },
    async run(env, step) {
      const snapshot = join(env.runDir, 'rollback.rdb')
      await respCommand(env.server.respTarget, ['SAVE'], { timeoutMs: 10_000 })
      copyFileSync(join(env.server.dataDir, 'dump.rdb'), snapshot)
      env.note('rollback-snapshot', { faultId: step.id })
      await sleep(num(step, 'holdMs'))
      // The fault (an outage that loses data) starts with the kill; what was acknowledged
      // since the snapshot is what it loses.
      env.started()
      await env.server.kill()
      // The AOF (appendonly yes) is replaced by one whose base is the older snapshot: Redis 7
      // loads an RDB base file, and everything acknowledged since the SAVE is gone.
      const aofDir = join(env.server.dataDir, 'appendonlydir')
      rmSync(aofDir, { recursive: true, force: true })
      mkdirSync(aofDir, { recursive: true })
      copyFileSync(snapshot, join(aofDir, 'appendonly.aof.1.base.rdb'))
      writeFileSync(
        join(aofDir, 'appendonly.aof.manifest'),
        'file appendonly.aof.1.base.rdb seq 1 type b\n',
      )
      await env.server.start()
      env.ended()
    },
  },
  // ── network lane ────────────────────────────────────────────────────────────────────────────
  {
    name: 'blackhole-one',
    lane: 'network',
    defaultOn: true,
    weight: 3,
    description:
      "one process's proxy drops every byte both ways (connections stay open), then forwards again",
    flags: (step) => ({
      targets: targetsOf(step),
      outage: true,
      slow: false,
      dataLoss: false,
      expectDown: true,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const holdMs = rng.int(300, 3500)
      return { durationMs: holdMs, target: rng.pick(ctx.bases), params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      for (const p of proxiesOf(env, step)) p.blackhole()
      await sleep(num(step, 'holdMs'))
      for (const p of proxiesOf(env, step)) p.pass()
      env.ended()
    },
  },
  {
    name: 'blackhole-all',
    lane: 'network',
    defaultOn: true,
    weight: 2,
    description: 'every proxy drops every byte both ways, then forwards again',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: true,
      slow: false,
      dataLoss: false,
      expectDown: true,
      writesRefused: false,
    }),
    plan: (rng) => {
      const holdMs = rng.int(300, 3500)
      return { durationMs: holdMs, params: { holdMs } }
    },
    async run(env, step) {
      env.started()
      for (const p of proxiesOf(env, step)) p.blackhole()
      await sleep(num(step, 'holdMs'))
      for (const p of proxiesOf(env, step)) p.pass()
      env.ended()
    },
  },
  {
    name: 'slow-link',
    lane: 'network',
    defaultOn: true,
    weight: 2,
    description:
      'steady latency on one proxy or all: every chunk delayed 50–300 ms (the proxy delay, each way), then normal again',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: false,
      slow: true,
      dataLoss: false,
      expectDown: false,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const holdMs = rng.int(1500, 4000)
      const latencyMs = rng.int(50, 300)
      const target = proxyTarget(rng, ctx)
      return {
        durationMs: holdMs + 2 * latencyMs,
        ...(target !== undefined && { target }),
        params: { holdMs, latencyMs },
      }
    },
    async run(env, step) {
      env.started()
      for (const p of proxiesOf(env, step)) p.latency(num(step, 'latencyMs'))
      await sleep(num(step, 'holdMs'))
      for (const p of proxiesOf(env, step)) p.pass()
      // What was queued with the delay still arrives: the link is normal once that is through.
      await sleep(2 * num(step, 'latencyMs'))
      env.ended()
    },
  },
  {
    name: 'reset',
    lane: 'network',
    defaultOn: true,
    weight: 2,
    description: 'TCP RST on every connection of one proxy or all, 1–3 times, 100–400 ms apart',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: true,
      slow: false,
      dataLoss: false,
      expectDown: false,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const count = rng.int(1, 3)
      const gapMs = rng.int(100, 400)
      const target = proxyTarget(rng, ctx)
      return {
        durationMs: count * gapMs,
        ...(target !== undefined && { target }),
        params: { count, gapMs },
      }
    },
    async run(env, step) {
      env.started()
      for (let i = 0; i < num(step, 'count'); i++) {
        if (i > 0) await sleep(num(step, 'gapMs'))
        for (const p of proxiesOf(env, step)) p.resetAll()
      }
      env.ended()
    },
  },
  {
    name: 'flap',
    lane: 'network',
    defaultOn: true,
    weight: 2,
    description:
      'one proxy or all alternate blackhole / pass in short halves (80–400 ms) for 1–3.5 s',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: true,
      slow: false,
      dataLoss: false,
      expectDown: false,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const halves: number[] = []
      let total = 0
      const until = rng.int(1000, 3500)
      while (total < until) {
        const h = rng.int(80, 400)
        halves.push(h)
        total += h
      }
      if (halves.length % 2 === 1) halves.push(rng.int(80, 400)) // end on a 'pass' half
      const target = proxyTarget(rng, ctx)
      return {
        durationMs: halves.reduce((s, h) => s + h, 0),
        ...(target !== undefined && { target }),
        params: { halves: halves.join(',') },
      }
    },
    async run(env, step) {
      const halves = String(step.params['halves']).split(',').map(Number)
      env.started()
      for (const [i, h] of halves.entries()) {
        for (const p of proxiesOf(env, step)) {
          if (i % 2 === 0) p.blackhole()
          else p.pass()
        }
        await sleep(h)
      }
      for (const p of proxiesOf(env, step)) p.pass()
      env.ended()
    },
  },
  // ── client lane ─────────────────────────────────────────────────────────────────────────────
  {
    name: 'force-fallback',
    lane: 'client',
    defaultOn: true,
    weight: 3,
    description: 'failsoft.health.forceFallback(true) in one child, (false) after a hold',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: false,
      slow: false,
      dataLoss: false,
      expectDown: false,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const holdMs = rng.int(200, 3000)
      return { durationMs: holdMs, target: rng.pick(ctx.bases), params: { holdMs } }
    },
    async run(env, step) {
      const base = step.target!
      env.started()
      const sent = env.force(base, true)
      await sleep(num(step, 'holdMs'))
      if (sent) env.force(base, false)
      env.ended()
    },
  },
  {
    name: 'kill-child',
    lane: 'client',
    defaultOn: true,
    weight: 2,
    description: 'one child SIGKILLed at a random moment, restarted with the same spool directory',
    flags: (step) => ({
      targets: targetsOf(step),
      outage: false,
      slow: false,
      dataLoss: false,
      expectDown: false,
      writesRefused: false,
    }),
    plan: (rng, ctx) => {
      const downMs = rng.int(200, 2000)
      return { durationMs: downMs + 500, target: rng.pick(ctx.bases), params: { downMs } }
    },
    async run(env, step) {
      const base = step.target!
      env.started()
      if (await env.killChild(base)) {
        await sleep(num(step, 'downMs'))
        await env.restartChild(base)
      }
      env.ended()
    },
  },
]

export function faultKind(name: string): FaultKind {
  const kind = FAULT_KINDS.find((k) => k.name === name)
  if (kind === undefined) {
    throw new Error(
      `unknown fault kind "${name}"; known: ${FAULT_KINDS.map((k) => k.name).join(', ')}`,
    )
  }
  return kind
}

/**
 * `--faults` syntax: a comma-separated list. Plain names = only these (plus any `+name`);
 * `+name` adds a kind (also one off by default), `-name` removes one. `all` = every kind,
 * `none` = no fault at all (the harness' own baseline).
 */
export function selectKinds(spec: string | undefined): string[] {
  const defaults = FAULT_KINDS.filter((k) => k.defaultOn).map((k) => k.name)
  if (spec === undefined || spec.trim() === '') return defaults
  const items = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const plain = items.filter((i) => !i.startsWith('+') && !i.startsWith('-'))
  let selected = new Set<string>(
    plain.length === 0 ? defaults : plain.includes('all') ? FAULT_KINDS.map((k) => k.name) : [],
  )
  for (const name of plain)
    if (name !== 'all' && name !== 'none') selected.add(faultKind(name).name)
  for (const item of items) {
    if (item.startsWith('+')) selected.add(faultKind(item.slice(1)).name)
    if (item.startsWith('-')) selected.delete(faultKind(item.slice(1)).name)
  }
  selected = new Set(FAULT_KINDS.map((k) => k.name).filter((n) => selected.has(n)))
  return [...selected]
}
