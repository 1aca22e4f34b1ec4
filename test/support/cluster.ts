// A real Redis Cluster on free loopback ports: `primaries` primaries with one replica each, every
// node a `redis-server --cluster-enabled yes` started by the fault kit (RedisServer), so its
// kill / freeze / restart and its exit hooks apply to each; created with `redis-cli --cluster
// create … --cluster-replicas 1 --cluster-yes`. `cluster-node-timeout` is short (1000 ms by
// default) so that a replica is promoted within about two seconds of its primary failing.
//
//   const cluster = await RedisCluster.start(t)
//   cluster.startupNodes           // [{ host, port }…]: what an app passes to ioredis' Cluster
//   await cluster.primaryFor('key') // the RedisServer serving that key's slot now
//   await cluster.killPrimaryOf('key') // SIGKILL; resolves when its replica has been promoted
//
// A cluster node also listens on its bus port, port + 10000: ports are picked so that both are
// free. Everything listens on 127.0.0.1 only.
import { execFile } from 'node:child_process'
import net from 'node:net'
import { RedisServer, sleep, type RedisServerOptions } from './redis-server.js'

const HOST = '127.0.0.1'
const BUS_OFFSET = 10_000

export interface RedisClusterOptions {
  /** Primaries (default 3), each with one replica. */
  primaries?: number
  /** `cluster-node-timeout` in ms (default 1000). */
  nodeTimeoutMs?: number
  /** `cluster-require-full-coverage` (Redis' default, and ours: true). */
  requireFullCoverage?: boolean
  /** Applied to every node (e.g. persistence, extra args). */
  server?: RedisServerOptions
}

interface AfterHook {
  after(fn: () => unknown): void
}

export interface ClusterNode {
  readonly id: string
  readonly port: number
  readonly role: 'master' | 'slave'
  /** The primary's id, for a replica. */
  readonly primaryId: string | null
  /** Slot ranges [from, to] it serves (primaries). */
  readonly slots: ReadonlyArray<readonly [number, number]>
  readonly failed: boolean
}

export class RedisCluster {
  /** Every node started, by port order (primaries first as created, then their replicas). */
  readonly nodes: RedisServer[]

  private constructor(nodes: RedisServer[]) {
    this.nodes = nodes
  }

  static async start(
    t: AfterHook | null,
    options: RedisClusterOptions = {},
  ): Promise<RedisCluster> {
    const primaries = options.primaries ?? 3
    if (!Number.isInteger(primaries) || primaries < 3) {
      throw new Error(`a Redis Cluster needs at least 3 primaries, not ${String(primaries)}`)
    }
    const started: RedisServer[] = []
    t?.after(() => Promise.all(started.map((s) => s.stop())))
    const args = [
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      'nodes.conf',
      '--cluster-node-timeout',
      String(options.nodeTimeoutMs ?? 1000),
      '--cluster-require-full-coverage',
      options.requireFullCoverage === false ? 'no' : 'yes',
      // A replica takes over however long it was cut off from its primary (tests kill and
      // freeze primaries right after writes).
      '--cluster-replica-validity-factor',
      '0',
    ]
    try {
      for (let i = 0; i < primaries * 2; i++) {
        started.push(
          await RedisServer.start({
            ...options.server,
            port: await clusterPort(started.map((s) => s.port)),
            args: [...(options.server?.args ?? []), ...args],
          }),
        )
      }
      await redisCli([
        '--cluster',
        'create',
        ...started.map((s) => `${HOST}:${s.port}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ])
      const cluster = new RedisCluster(started)
      await cluster.waitHealthy()
      return cluster
    } catch (error) {
      await Promise.all(started.map((s) => s.stop()))
      throw error
    }
  }

  /** What an ioredis `Cluster` (or failsoft) is given: every node, by address. */
  get startupNodes(): Array<{ host: string; port: number }> {
    return this.nodes.map((node) => ({ host: HOST, port: node.port }))
  }

  /** CLUSTER NODES as seen by the first running, unfrozen node. */
  async topology(): Promise<ClusterNode[]> {
    const reporter = this.nodes.find((node) => node.running && !node.frozen)
    if (reporter === undefined) throw new Error('no cluster node is running')
    return parseClusterNodes(String(await reporter.cli('CLUSTER', 'NODES')))
  }

  /** The slot a key hashes to (asked of a running node: CLUSTER KEYSLOT). */
  async slotOf(key: string): Promise<number> {
    const node = this.nodes.find((n) => n.running && !n.frozen)
    if (node === undefined) throw new Error('no cluster node is running')
    return Number(await node.cli('CLUSTER', 'KEYSLOT', key))
  }

  /** The node serving `key`'s slot now (a primary not marked failed). */
  async primaryFor(key: string): Promise<RedisServer> {
    const slot = await this.slotOf(key)
    const owner = (await this.topology()).find(
      (node) =>
        node.role === 'master' &&
        !node.failed &&
        node.slots.some(([a, b]) => slot >= a && slot <= b),
    )
    const server = owner && this.nodes.find((node) => node.port === owner.port)
    if (server === undefined) throw new Error(`no primary serves slot ${slot}`)
    return server
  }

  /** SIGKILL the primary of `key`'s slot; resolves with it once a replica serves the slot. */
  async killPrimaryOf(key: string, timeoutMs = 15_000): Promise<RedisServer> {
    const primary = await this.primaryFor(key)
    await primary.kill()
    await this.#waitFor(
      async () => (await this.primaryFor(key).catch(() => primary)) !== primary,
      timeoutMs,
      `a replica promoted for ${key}'s slot`,
    )
    return primary
  }

  /**
   * Every node that runs reports `cluster_state:ok` and every slot served, and every replica
   * that runs has its link to its primary up.
   */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    await this.#waitFor(
      async () => {
        for (const node of this.nodes) {
          if (!node.running || node.frozen) continue
          const info = String(await node.cli('CLUSTER', 'INFO'))
          if (!/cluster_state:ok/.test(info) || !/cluster_slots_ok:16384/.test(info)) return false
          // A replica still in its first sync would be promoted empty.
          const replication = String(await node.cli('INFO', 'replication'))
          if (/role:slave/.test(replication) && !/master_link_status:up/.test(replication))
            return false
        }
        return true
      },
      timeoutMs,
      'cluster_state:ok on every running node, every replica in sync',
    )
  }

  async #waitFor(
    predicate: () => Promise<boolean>,
    timeoutMs: number,
    what: string,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let last: unknown
    for (;;) {
      try {
        if (await predicate()) return
      } catch (error) {
        last = error // a node restarting, a reply mid-failover: not yet
      }
      if (Date.now() > deadline) {
        throw new Error(`cluster: timed out after ${timeoutMs} ms waiting for ${what}`, {
          cause: last,
        })
      }
      await sleep(50)
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.stop()))
  }
}

/** Parse `CLUSTER NODES` (one line per node: id addr flags primary … slots). */
export function parseClusterNodes(text: string): ClusterNode[] {
  const out: ClusterNode[] = []
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ')
    if (fields.length < 8) continue
    const [id, address, flags, primary] = fields as [string, string, string, string]
    const port = Number(/:(\d+)@/.exec(address)?.[1] ?? NaN)
    const flagSet = new Set(flags.split(','))
    const slots: Array<[number, number]> = []
    for (const range of fields.slice(8)) {
      if (range.startsWith('[')) continue // a slot being migrated or imported
      const [from, to] = range.split('-').map(Number) as [number, number | undefined]
      slots.push([from, to ?? from])
    }
    out.push({
      id,
      port,
      role: flagSet.has('master') ? 'master' : 'slave',
      primaryId: primary === '-' ? null : primary,
      slots,
      failed: flagSet.has('fail') || flagSet.has('fail?'),
    })
  }
  return out
}

/** A port whose bus port (port + 10000) is free too, not among `taken` (or their bus ports). */
async function clusterPort(taken: readonly number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 30_000)
    if (taken.some((p) => Math.abs(p - port) === BUS_OFFSET || p === port)) continue
    if ((await isFree(port)) && (await isFree(port + BUS_OFFSET))) return port
  }
  throw new Error('no free port pair (port, port + 10000) found for a cluster node')
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen(port, HOST, () => server.close(() => resolve(true)))
  })
}

function redisCli(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error)
        reject(new Error(`redis-cli ${args.join(' ')} failed: ${error.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
}
