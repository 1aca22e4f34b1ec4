// The fault schedules: real faults on the one redis-server the two app processes share (through
// a TCP proxy for the network faults), or, in the Sentinel profile (`--sentinel`), on the primary
// of a Sentinel set; each fault with a healthy gap before and after.
import { sleep, type RedisServer, type TcpProxy } from '../test/support/fault-kit.js'
import type { SentinelSet } from '../test/support/sentinel.js'
import {
  FAILOVER_TIMEOUT_MS,
  sentinelEvents,
  waitForAnnouncement,
  waitSettled,
} from './sentinel.js'

export interface FaultEnv {
  server: RedisServer
  proxy: TcpProxy
}

/** What the Sentinel profile's faults act on, and what they may tell the report. */
export interface SentinelFaultEnv {
  set: SentinelSet
  /** A line for the report's notes (prefixed with the fault's name). */
  note(message: string): void
  /** Write requests (PATCH, POST) the apps have acknowledged so far. */
  acknowledgedWrites(): number
}

/** heal() may say when Redis was back, if that was before it resolved (performance.now()). */
export interface Healed {
  at: number
  /** A failover: the new primary (host:port) each process must be on to count as recovered. */
  primary?: string
}

export interface Fault<E = FaultEnv> {
  /** Short id used in the report and the JSON. */
  name: string
  /** What is done, for the report. */
  label: string
  /** How long the fault lasts between inject() and heal(), ms. */
  holdMs: number
  /**
   * The outage lasts until heal() resolves, not until it is called: heal() waits for Sentinel
   * to fail over rather than undoing anything. The p99 "during the outage" window then ends
   * when heal() resolves.
   */
  outageUntilHealed?: boolean
  inject(env: E): Promise<void>
  /** Undo the fault; resolves once Redis answers again (this is the recovery's t0). */
  heal(env: E): Promise<Healed | void>
  /**
   * Put the deployment back in order for the next fault (the old primary restarted or thawed,
   * every node replicating again). Runs at the start of the healthy gap after the fault's row,
   * so whatever it does to the apps is measured in that gap.
   */
  restore?(env: E): Promise<void>
}

export type ProfileName = 'full' | 'quick' | 'smoke'

export interface Schedule<E = FaultEnv> {
  /** Load runs, no measurement counted in the targets; RSS baseline taken at its end. */
  warmupMs: number
  /** Healthy gap before the first fault and after each fault, ms. */
  gapMs: number
  /** After heal(): the fault row lasts at least this long, and at most until both processes are back or settleMaxMs. */
  settleMinMs: number
  settleMaxMs: number
  /** After the load stopped: how long to wait for accepted tasks to run and messages to arrive. */
  drainMs: number
  faults: Array<Fault<E>>
}

/**
 * "200 ms latency": the proxy's `latency(ms)` delays every chunk by ms in EACH direction, so a
 * command's round trip grows by 2 × ms. 200 is the literal figure of the issue (≈ 400 ms added
 * per round trip, above failsoft's 250 ms command deadline).
 */
export const LATENCY_MS = 200

/** Smallest non-zero maxmemory: every write that allocates is refused with OOM. */
const TINY_MAXMEMORY = '1'

function faults(holdMs: number): Fault[] {
  return [
    {
      name: 'kill',
      label: 'redis-server SIGKILLed, restarted with its data (AOF) after the hold',
      holdMs,
      inject: async ({ server }) => server.kill(),
      heal: async ({ server }) => server.start(),
    },
    {
      name: 'freeze',
      label: 'redis-server SIGSTOPped, SIGCONT after the hold',
      holdMs,
      inject: async ({ server }) => server.freeze(),
      heal: async ({ server }) => server.thaw(),
    },
    {
      name: 'blackhole',
      label: 'proxy drops every byte both ways (connections stay open), then forwards again',
      holdMs,
      inject: async ({ proxy }) => proxy.blackhole(),
      heal: async ({ proxy }) => proxy.pass(),
    },
    {
      name: 'latency',
      label: `proxy delays every chunk ${LATENCY_MS} ms each way (+${2 * LATENCY_MS} ms per round trip)`,
      holdMs,
      inject: async ({ proxy }) => proxy.latency(LATENCY_MS),
      heal: async ({ proxy }) => proxy.pass(),
    },
    {
      name: 'restart-empty',
      label: 'redis-server SIGKILLed and restarted at once with an empty data set (new run_id)',
      holdMs: 0,
      inject: async ({ server }) => server.restart({ keepData: false }),
      heal: async () => undefined,
    },
    {
      name: 'restart-data',
      label: 'redis-server SIGKILLed and restarted at once with its data (AOF)',
      holdMs: 0,
      inject: async ({ server }) => server.restart({ keepData: true }),
      heal: async () => undefined,
    },
    {
      name: 'maxmemory',
      label:
        'CONFIG SET maxmemory 1 byte (policy noeviction): every write gets OOM, reads work; restored after the hold',
      holdMs,
      inject: async ({ server }) => {
        await server.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
        await server.cli('CONFIG', 'SET', 'maxmemory', TINY_MAXMEMORY)
      },
      heal: async ({ server }) => {
        await server.cli('CONFIG', 'SET', 'maxmemory', '0')
      },
    },
  ]
}

/** The schedule of a profile, optionally reduced to the named faults (`--only kill,freeze`). */
export function schedule(profile: ProfileName, only?: readonly string[]): Schedule {
  return reduced(fullSchedule(profile), only)
}

function reduced<E>(plan: Schedule<E>, only?: readonly string[]): Schedule<E> {
  if (only === undefined || only.length === 0) return plan
  const unknown = only.filter((name) => !plan.faults.some((f) => f.name === name))
  if (unknown.length > 0) {
    throw new Error(
      `unknown fault(s) ${unknown.join(', ')}; choose from ${plan.faults.map((f) => f.name).join(', ')}`,
    )
  }
  return { ...plan, faults: plan.faults.filter((f) => only.includes(f.name)) }
}

function fullSchedule(profile: ProfileName): Schedule {
  switch (profile) {
    case 'full':
      // 20 + 7 × ~(15 + 2) + 8 × 15 s ≈ 4.5 min of load, plus start-up and drain: < 6 min.
      return {
        warmupMs: 20_000,
        gapMs: 15_000,
        settleMinMs: 2000,
        settleMaxMs: 10_000,
        drainMs: 30_000,
        faults: faults(15_000),
      }
    case 'quick':
      // 5 + 7 × ~(4 + 1) + 8 × 4 s ≈ 75 s of load: < 90 s with start-up and drain.
      return {
        warmupMs: 5000,
        gapMs: 4000,
        settleMinMs: 1000,
        settleMaxMs: 5000,
        drainMs: 10_000,
        faults: faults(4000),
      }
    case 'smoke': {
      // The harness's own check: one kill, a few seconds.
      const kill = faults(2000).filter((f) => f.name === 'kill')
      return {
        warmupMs: 2000,
        gapMs: 2000,
        settleMinMs: 500,
        settleMaxMs: 5000,
        drainMs: 5000,
        faults: kill,
      }
    }
  }
}

// ── The Sentinel profile ─────────────────────────────────────────────────────────────────────
//
// The apps reach Redis through three Sentinels (REDIS_URL=redis-sentinel://…). Each fault acts
// on whichever node is the primary at that moment; heal() resolves when every Sentinel names a
// new primary and that node answers as one (the recovery's t0, taken from the start of the
// poll that saw it); restore() brings the old primary back as a replica and waits until the set
// is in order again, at the start of the gap that follows.

const ms = (from: number): string => `${Math.round(performance.now() - from)} ms`

/** The moment of a fault and the primary it hit, shared by inject(), heal() and restore(). */
interface Struck {
  at: number
  old: RedisServer
}

function announced(
  env: SentinelFaultEnv,
  struck: Struck | null,
  timeoutMs?: number,
): Promise<Healed> {
  if (struck === null) throw new Error('heal() before inject()')
  return waitForAnnouncement(env.set, struck.old.port, timeoutMs).then((a) => {
    env.note(
      `primary :${struck.old.port} → :${a.primary.port}; one Sentinel named it ${Math.round(a.firstAt - struck.at)} ms after the fault, every Sentinel ${Math.round(a.allAt - struck.at)} ms after (t0)`,
    )
    return { at: a.allAt, primary: `${a.primary.host}:${a.primary.port}` }
  })
}

async function settled(env: SentinelFaultEnv, what: string, from: number): Promise<void> {
  const { waitedFor } = await waitSettled(env.set)
  env.note(
    `${what}; the set was back in order (every node replicating) ${ms(from)} later, having waited for: ${waitedFor}`,
  )
}

function sentinelFaults(cutMs: number): Array<Fault<SentinelFaultEnv>> {
  let kill: Struck | null = null
  let failover: Struck | null = null
  let freeze: Struck | null = null
  let lagging: Struck | null = null
  return [
    {
      name: 'kill-primary',
      label:
        'the primary SIGKILLed; Sentinel promotes a replica; the old primary restarted (with its AOF) at the start of the next gap, made a replica by Sentinel',
      holdMs: 0,
      outageUntilHealed: true,
      inject: async ({ set }) => {
        const old = await set.primary()
        kill = { at: performance.now(), old }
        await old.kill()
      },
      heal: async (env) => announced(env, kill),
      restore: async (env) => {
        const from = performance.now()
        await kill?.old.start()
        await settled(env, `old primary :${kill?.old.port} restarted`, from)
      },
    },
    {
      name: 'sentinel-failover',
      label: '`SENTINEL FAILOVER` (a clean, planned switch: the old primary demoted by Sentinel)',
      holdMs: 0,
      outageUntilHealed: true,
      inject: async ({ set }) => {
        const old = await set.primary()
        failover = { at: performance.now(), old }
        await set.sentinels[0]?.cli('SENTINEL', 'FAILOVER', set.name)
      },
      // Sentinel may abort a planned failover (seen: the chosen replica missed its pings for
      // down-after while being promoted, -failover-abort-slave-timeout) and leaves the old
      // primary in place: an operator sends it again. Each abort is noted.
      heal: async (env) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await announced(env, failover, 4 * FAILOVER_TIMEOUT_MS)
          } catch (error) {
            if (attempt >= 3) throw error
            const aborts = sentinelEvents(env.set)
              .split('\n')
              .filter((l) => /-failover-abort/.test(l))
            env.note(
              `attempt ${attempt}: no new primary ${4 * FAILOVER_TIMEOUT_MS} ms after \`SENTINEL FAILOVER\` (${aborts[aborts.length - 1]?.replace(/^.*?# /, '') ?? 'no abort logged'}); sent again`,
            )
            await env.set.sentinels[0]?.cli('SENTINEL', 'FAILOVER', env.set.name)
          }
        }
      },
      restore: async (env) => settled(env, 'nothing to restart', performance.now()),
    },
    {
      name: 'freeze-primary',
      label:
        'the primary SIGSTOPped until Sentinel promoted a replica; SIGCONT at the start of the next gap (it comes back believing it is the primary until Sentinel demotes it)',
      holdMs: 0,
      outageUntilHealed: true,
      inject: async ({ set }) => {
        const old = await set.primary()
        freeze = { at: performance.now(), old }
        old.freeze()
      },
      heal: async (env) => announced(env, freeze),
      restore: async (env) => {
        const from = performance.now()
        freeze?.old.thaw()
        await settled(env, `old primary :${freeze?.old.port} thawed`, from)
      },
    },
    {
      name: 'lagging-replica',
      label: `replication cut (replicas SIGSTOPped, \`CLIENT KILL TYPE replica\`, \`connected_slaves:0\` checked), ${cutMs / 1000} s of acknowledged writes on the primary alone, then the primary SIGKILLed and the replicas thawed: Sentinel promotes a replica that missed those writes; the old primary restarted at the start of the next gap`,
      holdMs: 0,
      outageUntilHealed: true,
      inject: async (env) => {
        const { set } = env
        const old = await set.primary()
        const offset = async (): Promise<number> =>
          Number(
            /master_repl_offset:(\d+)/.exec(String(await old.cli('INFO', 'replication')))?.[1] ??
              NaN,
          )
        const before = await offset()
        await set.isolateReplicas()
        const cutAt = performance.now()
        const writes = env.acknowledgedWrites()
        await sleep(cutMs)
        const after = await offset()
        const acknowledged = env.acknowledgedWrites() - writes
        lagging = { at: performance.now(), old }
        await old.kill()
        set.resumeReplicas()
        env.note(
          `replication cut for ${ms(cutAt)} before the kill: ${acknowledged} write requests acknowledged by the apps, the primary's replication offset +${after - before} bytes that no replica received`,
        )
      },
      heal: async (env) => announced(env, lagging),
      restore: async (env) => {
        const from = performance.now()
        await lagging?.old.start()
        await settled(env, `old primary :${lagging?.old.port} restarted`, from)
      },
    },
  ]
}

/** The Sentinel profile's schedule (same phases and timings as the single-Redis one). */
export function sentinelSchedule(
  profile: ProfileName,
  only?: readonly string[],
): Schedule<SentinelFaultEnv> {
  const base = fullSchedule(profile)
  const cutMs = profile === 'full' ? 2000 : 1000
  const faults = sentinelFaults(cutMs)
  return reduced(
    {
      warmupMs: base.warmupMs,
      gapMs: base.gapMs,
      settleMinMs: base.settleMinMs,
      settleMaxMs: base.settleMaxMs,
      drainMs: base.drainMs,
      faults: profile === 'smoke' ? faults.filter((f) => f.name === 'kill-primary') : faults,
    },
    only,
  )
}
