// A real Redis Sentinel deployment on free loopback ports: one primary, its replicas and three
// Sentinels, every one a `redis-server` process started by the fault kit (RedisServer), so the
// kit's kill / freeze / restart and its exit hooks apply to each. Timings are short (a primary
// is "down" after `downAfterMs`, 400 ms by default) so that a failover takes about a second.
//
//   const set = await SentinelSet.start(t, { replicas: 2 })
//   set.options            // ioredis options: { sentinels, name } — what an app passes
//   await set.primary()    // the RedisServer Sentinel currently names
//   await set.failover()   // SENTINEL FAILOVER; resolves when the Sentinels name a new primary
//   await set.killPrimary() // SIGKILL; resolves when a replica has been promoted
//
// By default everything listens on 127.0.0.1 only. With `host` (e.g. a NetnsLab's bridge
// address, test/support/netns.ts) every node and Sentinel also listens on that address, with
// protected mode off, and every address the set hands out is on it: the Sentinels monitor the
// primary there, replicas replicate from it and announce it (`replica-announce-ip`), Sentinels
// announce it to each other (`sentinel announce-ip`) — so a client that can reach only that
// address (one in another network namespace) gets from Sentinel a primary it can reach. The
// set's own commands (cli, primaryPort, failover…) keep using loopback.
import { RedisServer, sleep, type RedisServerOptions } from './redis-server.js'

const HOST = '127.0.0.1'

export interface SentinelSetOptions {
  /** Replicas of the primary (default 1). */
  replicas?: number
  /** Sentinels (default 3; quorum is a majority). */
  sentinels?: number
  name?: string
  downAfterMs?: number
  failoverTimeoutMs?: number
  /** Applied to the primary and every replica (e.g. persistence, extra args). */
  server?: RedisServerOptions
  /**
   * The address the set is reached at and announces (default 127.0.0.1). Another address must
   * be one of this host's; every node and Sentinel then listens on it as well as on 127.0.0.1.
   */
  host?: string
}

interface AfterHook {
  after(fn: () => unknown): void
}

export class SentinelSet {
  readonly name: string
  /** Every data node (the primary and its replicas at the start), by port. */
  readonly nodes: RedisServer[]
  readonly sentinels: RedisServer[]
  /** The address clients reach the set at, and the one Sentinel announces. */
  readonly host: string

  private constructor(name: string, nodes: RedisServer[], sentinels: RedisServer[], host: string) {
    this.name = name
    this.host = host
    this.nodes = nodes
    this.sentinels = sentinels
  }

  static async start(t: AfterHook | null, options: SentinelSetOptions = {}): Promise<SentinelSet> {
    const name = options.name ?? 'failsoft'
    const replicaCount = options.replicas ?? 1
    const sentinelCount = options.sentinels ?? 3
    const host = options.host ?? HOST
    // Another address: listen on it too, announce it (replicas; Sentinels below).
    const nodeArgs =
      host === HOST
        ? []
        : ['--bind', HOST, host, '--protected-mode', 'no', '--replica-announce-ip', host]
    const started: RedisServer[] = []
    const cleanup = async (): Promise<void> => {
      await Promise.all(started.map((s) => s.stop()))
    }
    t?.after(cleanup)
    try {
      const primary = await RedisServer.start({
        ...options.server,
        args: [...(options.server?.args ?? []), ...nodeArgs],
      })
      started.push(primary)
      const replicas: RedisServer[] = []
      for (let i = 0; i < replicaCount; i++) {
        const replica = await RedisServer.start({
          ...options.server,
          args: [
            ...(options.server?.args ?? []),
            ...nodeArgs,
            '--replicaof',
            host,
            String(primary.port),
          ],
        })
        started.push(replica)
        replicas.push(replica)
      }
      const sentinels: RedisServer[] = []
      for (let i = 0; i < sentinelCount; i++) {
        const sentinel = await RedisServer.start({
          sentinel: {
            name,
            primary: { host, port: primary.port },
            quorum: Math.floor(sentinelCount / 2) + 1,
            downAfterMs: options.downAfterMs ?? 400,
            failoverTimeoutMs: options.failoverTimeoutMs ?? 2000,
            ...(host === HOST ? {} : { bind: [HOST, host], announceIp: host }),
          },
        })
        started.push(sentinel)
        sentinels.push(sentinel)
      }
      const set = new SentinelSet(name, [primary, ...replicas], sentinels, host)
      await set.#settled(replicaCount, sentinelCount)
      return set
    } catch (error) {
      await cleanup()
      throw error
    }
  }

  /** What an application passes as `redis`: ioredis' Sentinel options. */
  get options(): { sentinels: Array<{ host: string; port: number }>; name: string } {
    return {
      sentinels: this.sentinels.map((s) => ({ host: this.host, port: s.port })),
      name: this.name,
    }
  }

  /** The same as a URL: `redis-sentinel://host:port1,host:port2,…#name`. */
  get url(): string {
    const list = this.sentinels.map((s) => `${this.host}:${s.port}`).join(',')
    return `redis-sentinel://${list}#${encodeURIComponent(this.name)}`
  }

  /** The port every live Sentinel names as the primary (throws if they disagree or none answers). */
  async primaryPort(): Promise<number> {
    const ports = new Set<number>()
    for (const sentinel of this.sentinels) {
      if (!sentinel.running || sentinel.frozen) continue
      try {
        const reply = await sentinel.cli('SENTINEL', 'get-master-addr-by-name', this.name)
        if (Array.isArray(reply)) ports.add(Number(reply[1]))
      } catch {
        // a Sentinel that cannot answer does not vote here
      }
    }
    if (ports.size !== 1) throw new Error(`Sentinels name ${ports.size} primaries: ${[...ports]}`)
    return [...ports][0]!
  }

  async primary(): Promise<RedisServer> {
    return this.node(await this.primaryPort())
  }

  node(port: number): RedisServer {
    const node = this.nodes.find((n) => n.port === port)
    if (node === undefined) throw new Error(`no node on port ${port}`)
    return node
  }

  /** The nodes other than the current primary. */
  async replicas(): Promise<RedisServer[]> {
    const primary = await this.primaryPort()
    return this.nodes.filter((n) => n.port !== primary)
  }

  /** Wait until every live Sentinel names a primary other than `oldPort`; returns it. */
  async waitForNewPrimary(oldPort: number, timeoutMs = 15_000): Promise<RedisServer> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        const port = await this.primaryPort()
        if (port !== oldPort) {
          const node = this.node(port)
          // Promoted and answering as a primary.
          const role = await node.cli('ROLE')
          if (Array.isArray(role) && role[0] === 'master') return node
        }
      } catch {
        // mid-failover: Sentinels may disagree for a moment
      }
      if (Date.now() > deadline) throw new Error(`no failover away from port ${oldPort}`)
      await sleep(50)
    }
  }

  /** `SENTINEL FAILOVER` (a clean, manual failover); resolves with the new primary. */
  async failover(): Promise<RedisServer> {
    const old = await this.primaryPort()
    await this.sentinels[0]!.cli('SENTINEL', 'FAILOVER', this.name)
    return this.waitForNewPrimary(old)
  }

  /** SIGKILL the primary; resolves with the replica the Sentinels promoted. */
  async killPrimary(): Promise<{ old: RedisServer; promoted: RedisServer }> {
    const old = await this.primary()
    await old.kill()
    return { old, promoted: await this.waitForNewPrimary(old.port) }
  }

  /**
   * Cut replication so that what the primary acknowledges from now on never reaches the
   * replicas (the case where a failover loses acknowledged writes). On loopback a SIGSTOPped
   * replica still receives the stream into its socket buffer and applies it on SIGCONT, so
   * each replica is frozen and then the primary drops its replica links: a frozen replica
   * cannot reconnect. Thaw them with `resumeReplicas()`.
   */
  async isolateReplicas(): Promise<void> {
    const primary = await this.primary()
    const replicas = await this.replicas()
    for (const replica of replicas) replica.freeze()
    await primary.cli('CLIENT', 'KILL', 'TYPE', 'replica')
    const deadline = Date.now() + 5000
    for (;;) {
      const info = String(await primary.cli('INFO', 'replication'))
      if (/connected_slaves:0/.test(info)) return
      if (Date.now() > deadline) throw new Error('replicas still connected')
      await sleep(20)
    }
  }

  resumeReplicas(): void {
    for (const node of this.nodes) if (node.frozen) node.thaw()
  }

  async stop(): Promise<void> {
    await Promise.all([...this.sentinels, ...this.nodes].map((s) => s.stop()))
  }

  /** Every Sentinel sees every replica and the other Sentinels. */
  async #settled(replicas: number, sentinels: number): Promise<void> {
    const deadline = Date.now() + 20_000
    for (;;) {
      let ready = true
      for (const sentinel of this.sentinels) {
        const info = await sentinel.cli('SENTINEL', 'MASTER', this.name).catch(() => null)
        if (!Array.isArray(info)) {
          ready = false
          break
        }
        const fields = new Map<string, string>()
        for (let i = 0; i + 1 < info.length; i += 2)
          fields.set(String(info[i]), String(info[i + 1]))
        if (
          Number(fields.get('num-slaves')) < replicas ||
          Number(fields.get('num-other-sentinels')) < sentinels - 1
        ) {
          ready = false
          break
        }
      }
      if (ready) {
        for (const node of this.nodes.slice(1)) {
          const info = String(await node.cli('INFO', 'replication'))
          if (!/master_link_status:up/.test(info)) ready = false
        }
      }
      if (ready) return
      if (Date.now() > deadline) throw new Error('Sentinels did not discover the deployment')
      await sleep(50)
    }
  }
}
