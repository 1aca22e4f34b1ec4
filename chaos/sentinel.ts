// The Sentinel profile's deployment, from the test kit's SentinelSet (a primary, two replicas,
// three `redis-server --sentinel` processes on free loopback ports), and the two waits its
// faults need: the announcement of a new primary (the recovery's t0) and a set back in order
// (every node replicating from the primary, no Sentinel flagging any of them) before the next
// fault. Every wait is bounded.
import { sleep, type RedisServer } from '../test/support/fault-kit.js'
import { SentinelSet } from '../test/support/sentinel.js'

/**
 * Sentinel's `down-after-milliseconds`: 1 s, not the kit's 400 ms. With 400 ms a primary just
 * promoted and busy with a full resync on a loaded 2-core machine misses pings and is failed
 * over again (measured by the Sentinel bench, bench/suites/sentinel.ts).
 */
export const DOWN_AFTER_MS = 1000
export const FAILOVER_TIMEOUT_MS = 2000
export const REPLICAS = 2
export const SENTINELS = 3
const POLL_MS = 10

/** Start the set: AOF (fsync always) and noeviction on every data node, as the single profile. */
export async function startSentinelSet(): Promise<SentinelSet> {
  return SentinelSet.start(null, {
    replicas: REPLICAS,
    sentinels: SENTINELS,
    downAfterMs: DOWN_AFTER_MS,
    failoverTimeoutMs: FAILOVER_TIMEOUT_MS,
    server: { persistence: true, args: ['--maxmemory-policy', 'noeviction'] },
  })
}

/** The app's REDIS_URL for the set (the form docs/high-availability.md documents). */
export function sentinelUrl(set: SentinelSet): string {
  const hosts = set.options.sentinels.map((s) => `${s.host}:${s.port}`).join(',')
  return `redis-sentinel://${hosts}#${set.name}`
}

export interface Announcement {
  /** The promoted node. */
  primary: RedisServer
  /** performance.now() of the first poll in which one Sentinel named it (and it answered as a primary). */
  firstAt: number
  /** performance.now() of the start of the first poll in which every Sentinel named it: t0. */
  allAt: number
}

async function namedPort(sentinel: RedisServer, name: string): Promise<number | null> {
  if (!sentinel.running || sentinel.frozen) return null
  try {
    const reply = await sentinel.cli('SENTINEL', 'get-master-addr-by-name', name)
    return Array.isArray(reply) ? Number(reply[1]) : null
  } catch {
    return null
  }
}

async function answersAsPrimary(node: RedisServer): Promise<boolean> {
  if (!node.running || node.frozen) return false
  try {
    const role = await node.cli('ROLE')
    return Array.isArray(role) && role[0] === 'master'
  } catch {
    return false
  }
}

/**
 * Poll every Sentinel every 10 ms until all of them name a primary other than `oldPort` and that
 * node answers `ROLE` as a primary. A poll starts before its replies, so `allAt` (its start) is
 * at most one poll period after the instant the last Sentinel switched: the recovery measured
 * from it is, if anything, longer than the true one.
 */
export async function waitForAnnouncement(
  set: SentinelSet,
  oldPort: number,
  timeoutMs = 30_000,
): Promise<Announcement> {
  const deadline = performance.now() + timeoutMs
  let firstAt: number | null = null
  for (;;) {
    const start = performance.now()
    const ports = await Promise.all(set.sentinels.map((s) => namedPort(s, set.name)))
    const candidates = [...new Set(ports.filter((p): p is number => p !== null && p !== oldPort))]
    for (const port of candidates) {
      const node = set.nodes.find((n) => n.port === port)
      if (node === undefined || !(await answersAsPrimary(node))) continue
      firstAt ??= start
      if (ports.every((p) => p === port)) return { primary: node, firstAt, allAt: start }
    }
    if (performance.now() > deadline) {
      throw new Error(
        `no failover away from port ${oldPort} within ${timeoutMs} ms (Sentinels name ${ports.join(', ')})\n${sentinelEvents(set)}`,
      )
    }
    await sleep(POLL_MS)
  }
}

function fields(reply: unknown): Map<string, string> {
  const out = new Map<string, string>()
  if (!Array.isArray(reply)) return out
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), String(reply[i + 1]))
  return out
}

/** What is not in order yet (null when the set is settled). */
async function unsettled(set: SentinelSet): Promise<string | null> {
  for (const node of [...set.nodes, ...set.sentinels]) {
    if (!node.running || node.frozen) return `port ${node.port} is not running`
  }
  let primary: number
  try {
    primary = await set.primaryPort()
  } catch (error) {
    return String(error)
  }
  const node = set.node(primary)
  if (!(await answersAsPrimary(node))) return `${primary} does not answer as a primary`
  for (const replica of set.nodes.filter((n) => n.port !== primary)) {
    const info = String(await replica.cli('INFO', 'replication').catch((e: unknown) => e))
    if (!/role:slave/.test(info)) return `${replica.port} is not a replica yet`
    if (!new RegExp(`master_port:${primary}\\b`).test(info))
      return `${replica.port} replicates from another node`
    if (!/master_link_status:up/.test(info)) return `${replica.port}: link to the primary down`
    if (/master_sync_in_progress:1/.test(info)) return `${replica.port}: sync in progress`
  }
  for (const sentinel of set.sentinels) {
    const master = fields(await sentinel.cli('SENTINEL', 'MASTER', set.name).catch(() => null))
    const flags = master.get('flags') ?? '?'
    if (flags !== 'master') return `Sentinel ${sentinel.port}: primary flags ${flags}`
    const replicas = await sentinel.cli('SENTINEL', 'REPLICAS', set.name).catch(() => null)
    if (!Array.isArray(replicas)) return `Sentinel ${sentinel.port}: no replica list`
    const seen = replicas.map(fields)
    for (const other of set.nodes.filter((n) => n.port !== primary)) {
      const entry = seen.find((r) => Number(r.get('port')) === other.port)
      if (entry === undefined) return `Sentinel ${sentinel.port} does not list ${other.port}`
      const f = entry.get('flags') ?? '?'
      if (f !== 'slave') return `Sentinel ${sentinel.port}: ${other.port} flags ${f}`
    }
  }
  return null
}

/** The longest waitSettled() waits. */
export const SETTLE_TIMEOUT_MS = 45_000

/**
 * Wait (≤ timeoutMs) until every node runs, every Sentinel names the same primary and flags
 * nothing, and every other node replicates from it with its link up and no sync in progress.
 * Returns how long it took and what it waited for (each reason with the time it lasted).
 */
export async function waitSettled(
  set: SentinelSet,
  timeoutMs = SETTLE_TIMEOUT_MS,
): Promise<{ ms: number; waitedFor: string }> {
  const start = performance.now()
  let why: string | null = 'not checked'
  const reasons: Array<{ why: string; from: number; to: number }> = []
  const summary = (): string =>
    reasons.map((r) => `${r.why} (${Math.round(r.to - r.from)} ms)`).join(', ') || 'nothing'
  while (performance.now() - start < timeoutMs) {
    const at = performance.now()
    why = await unsettled(set)
    if (why === null) return { ms: performance.now() - start, waitedFor: summary() }
    const last = reasons[reasons.length - 1]
    if (last?.why === why) last.to = performance.now()
    else reasons.push({ why, from: at, to: performance.now() })
    await sleep(100)
  }
  throw new Error(
    `the Sentinel set did not settle in ${timeoutMs} ms: ${why}\n${sentinelEvents(set)}`,
  )
}

/** The failover events in the first Sentinel's log (for a harness error). */
export function sentinelEvents(set: SentinelSet): string {
  return (set.sentinels[0]?.log ?? '')
    .split('\n')
    .filter((l) =>
      /[+-](sdown|odown|failover|switch|elected|selected|promoted|try|abort|demote|convert|fix|reboot|role|slave)/.test(
        l,
      ),
    )
    .slice(-40)
    .join('\n')
}
