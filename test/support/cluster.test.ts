// The Redis Cluster test kit itself (test/support/cluster.ts): a real 3 + 3 cluster is created,
// serves keys on every shard through ioredis' Cluster client, and promotes a replica when a
// primary is killed — what the Cluster tests build on.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Cluster } from 'ioredis'
import { RedisCluster, parseClusterNodes } from './cluster.js'

test('CLUSTER NODES lines are parsed: roles, primaries, slot ranges, failure flags', () => {
  const nodes = parseClusterNodes(
    [
      'a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460',
      'b2 127.0.0.1:30002@40002 master,fail - 0 0 2 connected 5461-10922 10923 [10924->-c3]',
      'c3 127.0.0.1:30003@40003 slave a1 0 0 1 connected',
    ].join('\n'),
  )
  assert.deepEqual(
    nodes.map((n) => [n.id, n.port, n.role, n.primaryId, n.slots, n.failed]),
    [
      ['a1', 30001, 'master', null, [[0, 5460]], false],
      [
        'b2',
        30002,
        'master',
        null,
        [
          [5461, 10922],
          [10923, 10923],
        ],
        true,
      ],
      ['c3', 30003, 'slave', 'a1', [], false],
    ],
  )
})

test('a 3 + 3 cluster serves every shard and promotes a replica when a primary is killed', async (t) => {
  const cluster = await RedisCluster.start(t)
  const topology = await cluster.topology()
  assert.equal(topology.filter((n) => n.role === 'master').length, 3)
  assert.equal(topology.filter((n) => n.role === 'slave').length, 3)
  const client = new Cluster(cluster.startupNodes, { lazyConnect: true })
  t.after(() => client.disconnect())
  await client.connect()
  // Keys on every shard.
  const keys = Array.from({ length: 30 }, (_, i) => `k${i}`)
  const owners = new Set<number>()
  for (const key of keys) {
    await client.set(key, key)
    owners.add((await cluster.primaryFor(key)).port)
  }
  assert.equal(owners.size, 3, 'the keys spread over the three primaries')
  const killed = await cluster.killPrimaryOf('k0')
  const promoted = await cluster.primaryFor('k0')
  assert.notEqual(promoted.port, killed.port)
  // The promoted replica has the data; the client follows it.
  assert.equal(await promoted.cli('GET', 'k0'), 'k0')
  let value: string | null = null
  let lastError: unknown
  for (let i = 0; i < 100 && value === null; i++) {
    value = await client.get('k0').catch((error: unknown) => {
      lastError = error
      return null
    })
    if (value === null) await new Promise((r) => setTimeout(r, 100))
  }
  assert.equal(value, 'k0', `read through the client (last error: ${String(lastError)})`)
})
