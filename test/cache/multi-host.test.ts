// Multi-host: three app processes, each in a network namespace of its own (its own "host",
// its own link to the Redis host), sharing one Redis. One of them is partitioned from Redis
// (its link down: a blackhole, both ways) while the other two keep it; all three keep using the
// cache and dispatching tasks; then the link heals. The invariants of docs/guarantees.md must
// hold across the hosts:
//   - the partitioned process degrades (its status says Redis is down) and serves without
//     throwing; the other two never leave Redis;
//   - no process, while on Redis, reads a value that an acknowledged write replaced — a write
//     by a process on Redis counts from its acknowledgement, a degraded write of the
//     partitioned process from the moment it is back on Redis (reconciled); while degraded, the
//     partitioned process reads its own writes;
//   - the partitioned process returns to Redis by itself after the heal;
//   - every task a dispatch accepted runs, and none runs twice.
// The run itself is in multi-host-run.ts (shared with the Sentinel variant,
// multi-host-sentinel.test.ts). Needs root and `ip netns` (test/support/netns.ts); skips, saying
// why, without them.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startRedis } from '../support/fault-kit.js'
import { NetnsLab } from '../support/netns.js'
import { guardUnhandled } from './helpers.js'
import { PROCESSES, assertCommon, runMultiHost } from './multi-host-run.js'

guardUnhandled()

const skip = await NetnsLab.unavailable()
if (skip !== undefined) console.log(`multi-host test skipped: ${skip}`)

test(
  'multi-host: one of three processes partitioned from Redis, the others keep it — the invariants hold',
  { skip: skip ?? false, timeout: 90_000 },
  async (t) => {
    const lab = await NetnsLab.create(t, PROCESSES)
    const server = await startRedis(t, { args: lab.redisArgs() })
    const r = await runMultiHost(t, { lab, redis: `redis://${lab.hostAddress}:${server.port}` })
    assertCommon(r)
    assert.deepEqual(
      r.othersOff.map((o) => o.what),
      [],
      'the other processes never left Redis',
    )
  },
)
