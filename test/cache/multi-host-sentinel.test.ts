// Multi-host against a Sentinel set (issue 14): the run of multi-host.test.ts (three app
// processes in three network namespaces; one partitioned while the others keep their links —
// see multi-host-run.ts), with the processes reaching Redis through a real Sentinel set — a
// primary, replicas and three Sentinels, every node and Sentinel listening on the lab's bridge
// and announcing that address (test/support/sentinel.ts, `host`), so what Sentinel names is
// reachable from inside the namespaces. The partitioned process is cut off from every node and
// every Sentinel at once (they all sit behind its one link).
//   1. The partition alone (the `redis-sentinel://…#name` URL): the same invariants as with one
//      Redis — the other two never leave Redis, all three on the same primary at the end.
//   2. A failover while the process is cut off (`{ sentinels, name }` options): the primary
//      SIGKILLed, or a planned `SENTINEL FAILOVER`. The other two leave Redis only around the
//      failover and are on the new primary before the heal; after it, the cut process finds
//      the new primary by itself; no operation throws, no read is stale by the checker's rule
//      (the cut process's degraded writes owed from its return, reconciled on the new primary),
//      every accepted task runs once.
// Needs root and `ip netns`; skips, saying why, without them.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { sleep } from '../support/fault-kit.js'
import { NetnsLab } from '../support/netns.js'
import { SentinelSet } from '../support/sentinel.js'
import { guardUnhandled } from './helpers.js'
import {
  CUT,
  PROCESSES,
  assertCommon,
  runMultiHost,
  type MultiHostResult,
} from './multi-host-run.js'

guardUnhandled()

const skip = await NetnsLab.unavailable()
if (skip !== undefined) console.log(`multi-host Sentinel tests skipped: ${skip}`)

const now = (): number => performance.timeOrigin + performance.now()
/**
 * Sentinel's down-after, in ms. Not SentinelSet's 400: with it, on a loaded 2-core machine, the
 * Sentinels judged a just-promoted replica down within half a second and failed over again
 * (and again: five switches between the two replicas in 5 s, two nodes answering as primary at
 * once) — the same on loopback, with no namespace involved. 1000 (as bench/suites/sentinel.ts)
 * gives one failover.
 */
const DOWN_AFTER_MS = 1000
/** How long after the Sentinels name the new primary the others may still be off Redis, in ms. */
const FOLLOW_MS = 5000

/** The lab's namespaces, and a Sentinel set listening on its bridge (every node announced there). */
async function labWithSentinels(
  t: { after(fn: () => unknown): void },
  replicas: number,
): Promise<{ lab: NetnsLab; set: SentinelSet }> {
  const lab = await NetnsLab.create(t, PROCESSES)
  const set = await SentinelSet.start(t, {
    replicas,
    host: lab.hostAddress,
    downAfterMs: DOWN_AFTER_MS,
  })
  return { lab, set }
}

/** Each process's last polled status names `primary` and is on Redis. */
function assertAllOn(r: MultiHostResult, primary: string): void {
  const where = r.last.map((s, proc) =>
    s === undefined ? `p${proc}: no status` : `p${proc}: ${s.redis.primary} ${s.redis.state}`,
  )
  assert.deepEqual(
    where,
    r.last.map((_, proc) => `p${proc}: ${primary} up`),
    `every process on ${primary} at the end`,
  )
}

test(
  'multi-host on Sentinel: one of three processes partitioned from every node and Sentinel, the others keep them — the invariants hold',
  { skip: skip ?? false, timeout: 90_000 },
  async (t) => {
    const { lab, set } = await labWithSentinels(t, 1)
    const primary = `${lab.hostAddress}:${await set.primaryPort()}`
    const r = await runMultiHost(t, { lab, redis: set.url })
    assertCommon(r)
    assert.deepEqual(
      r.othersOff.map((o) => o.what),
      [],
      'the other processes never left Redis',
    )
    assert.equal(`${lab.hostAddress}:${await set.primaryPort()}`, primary, 'no failover happened')
    assertAllOn(r, primary)
  },
)

for (const how of ['the primary SIGKILLed', 'SENTINEL FAILOVER'] as const) {
  test(
    `multi-host on Sentinel: a failover (${how}) while one process is partitioned — the others follow, the cut one finds the new primary, the invariants hold`,
    { skip: skip ?? false, timeout: 90_000 },
    async (t) => {
      const { lab, set } = await labWithSentinels(t, 2)
      const oldPrimary = `${lab.hostAddress}:${await set.primaryPort()}`
      let failoverAt = NaN
      let promotedAt = NaN
      let newPrimary = ''
      const r = await runMultiHost(t, {
        lab,
        redis: set.options,
        partitionMs: 7000,
        duringPartition: async () => {
          await sleep(1000) // the cut process is degraded by now
          assert.ok(lab.isPartitioned(CUT))
          failoverAt = now()
          const promoted =
            how === 'SENTINEL FAILOVER' ? await set.failover() : (await set.killPrimary()).promoted
          promotedAt = now()
          newPrimary = `${lab.hostAddress}:${promoted.port}`
        },
      })
      function others(): number[] {
        return [...Array(PROCESSES).keys()].filter((p) => p !== CUT)
      }
      function backAt(proc: number): number {
        // The first status on Redis naming the new primary, after the failover began.
        const s = r.statuses.find(
          (s) =>
            s.proc === proc &&
            s.at >= failoverAt &&
            s.redis.available &&
            s.state.onRedis &&
            s.redis.primary === newPrimary,
        )
        return s?.at ?? Infinity
      }
      function offSpan(): number[] {
        const times = r.othersOff.map((o) => o.at).filter((at) => Number.isFinite(at))
        return times.length === 0
          ? []
          : [
              Math.round(Math.min(...times) - failoverAt),
              Math.round(Math.max(...times) - promotedAt),
            ]
      }
      t.diagnostic(
        JSON.stringify({
          failoverMs: Math.round(promotedAt - failoverAt),
          othersOffFromFailoverStartToAfterPromotionMs: offSpan(),
          othersBackAfterPromotionMs: others().map((p) => Math.round(backAt(p) - promotedAt)),
        }),
      )

      assertCommon(r)
      assert.notEqual(newPrimary, oldPrimary, 'Sentinel promoted another node')
      assert.ok(promotedAt < r.healedAt, 'the failover was over before the heal')
      const outside = r.othersOff
        .filter((o) => !(o.at >= failoverAt && o.at <= promotedAt + FOLLOW_MS))
        .map((o) => o.what)
      assert.deepEqual(outside, [], 'the other processes left Redis only around the failover')
      for (const proc of others()) {
        assert.ok(
          backAt(proc) < r.healedAt,
          `p${proc} on the new primary ${newPrimary} before the heal (${Math.round(backAt(proc) - promotedAt)} ms after the promotion)`,
        )
      }
      const cutFirst = r.statuses.find(
        (s) => s.proc === CUT && s.at >= r.healedAt && s.redis.available && s.state.onRedis,
      )
      assert.equal(
        cutFirst?.redis.primary,
        newPrimary,
        'the cut process, back on Redis after the heal, is on the new primary',
      )
      assertAllOn(r, newPrimary)
    },
  )
}
