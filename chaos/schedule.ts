// The fault schedule: real faults on the one redis-server the two app processes share (through
// a TCP proxy for the network faults), each with a healthy gap before and after.
import type { RedisServer, TcpProxy } from '../test/support/fault-kit.js'

export interface FaultEnv {
  server: RedisServer
  proxy: TcpProxy
}

export interface Fault {
  /** Short id used in the report and the JSON. */
  name: string
  /** What is done, for the report. */
  label: string
  /** How long the fault lasts between inject() and heal(), ms. */
  holdMs: number
  inject(env: FaultEnv): Promise<void>
  /** Undo the fault; resolves once Redis answers again (this is the recovery's t0). */
  heal(env: FaultEnv): Promise<void>
}

export type ProfileName = 'full' | 'quick' | 'smoke'

export interface Schedule {
  /** Load runs, no measurement counted in the targets; RSS baseline taken at its end. */
  warmupMs: number
  /** Healthy gap before the first fault and after each fault, ms. */
  gapMs: number
  /** After heal(): the fault row lasts at least this long, and at most until both processes are back or settleMaxMs. */
  settleMinMs: number
  settleMaxMs: number
  /** After the load stopped: how long to wait for accepted tasks to run and messages to arrive. */
  drainMs: number
  faults: Fault[]
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
  const plan = fullSchedule(profile)
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
