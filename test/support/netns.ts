// Network namespaces as separate hosts, for multi-host tests: each app process runs in a
// namespace of its own, joined to the root namespace by a veth pair on a bridge. Redis (started
// by the fault kit in the root namespace) listens on the bridge's address, so each namespace
// reaches it over its own link — and one link can be cut while the others keep working.
//
//   const skip = await NetnsLab.unavailable()          // a reason, or undefined (root + ip netns)
//   const lab = await NetnsLab.create(t, 3)            // torn down by t.after, and at exit
//   const server = await startRedis(t, { args: lab.redisArgs() }) // loopback + the bridge
//   const child = lab.spawn(0, process.execPath, ['--import', 'tsx', fixture], { stdio })
//   await lab.partition(0)   // its link goes down: packets both ways are dropped (a blackhole)
//   await lab.heal(0)
//
// Every run picks a random id for its names (namespaces `failsoft-<id>-<i>`, links
// `fs<id>br` / `fs<id>h<i>` / `fs<id>n<i>`) and a private /24 in 10.128.0.0/9 that no address
// or route of the root namespace uses, so parallel runs do not collide. Everything created here
// (namespaces, links, the processes spawned into them) is removed by close(), by the test's
// `after` hook, and synchronously when the Node process exits.
import {
  execFile,
  execFileSync,
  spawn,
  type ChildProcess,
  type SpawnOptions,
} from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import type { AfterHook } from './fault-kit.js'

const IP = 'ip'

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(IP, args, { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`ip ${args.join(' ')} failed: ${error.message.trim()} ${stderr}`))
      else resolve(stdout)
    })
  })
}

function ipSync(args: string[]): void {
  try {
    execFileSync(IP, args, { stdio: 'ignore', timeout: 5000 })
  } catch {
    // best effort (already gone)
  }
}

// ---------------------------------------------------------------------------------------------
// Registry: nothing created here may outlive the test process.

const liveLabs = new Set<NetnsLab>()
let hooksInstalled = false

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroySync()
  })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      for (const lab of liveLabs) lab.destroySync()
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
}

/** One namespace: a "host" of its own, with one link to the root namespace. */
export interface NetnsHost {
  /** The namespace's name (`ip netns exec <name> …`). */
  readonly name: string
  /** Its own address on the lab's subnet. */
  readonly address: string
  /** The root-namespace end of its veth pair (a bridge port): what partition() brings down. */
  readonly hostLink: string
  /** The namespace's end of the pair. */
  readonly link: string
}

export class NetnsLab {
  /** The root namespace's address on the lab's subnet (the bridge's): bind Redis to it. */
  readonly hostAddress: string
  readonly hosts: readonly NetnsHost[]
  readonly bridge: string
  readonly #children = new Set<ChildProcess>()
  readonly #partitioned = new Set<number>()
  #closed = false

  private constructor(bridge: string, hostAddress: string, hosts: NetnsHost[]) {
    this.bridge = bridge
    this.hostAddress = hostAddress
    this.hosts = hosts
  }

  /**
   * Why namespaces cannot be used here (not root, no `ip`, `ip netns` refused), or undefined
   * when they can: creates and deletes one throwaway namespace.
   */
  static async unavailable(): Promise<string | undefined> {
    if (process.platform !== 'linux') return `network namespaces need Linux (${process.platform})`
    if (process.getuid?.() !== 0) return `network namespaces need root (uid ${process.getuid?.()})`
    const probe = `failsoft-probe-${randomBytes(3).toString('hex')}`
    try {
      await ip(['netns', 'add', probe])
    } catch (error) {
      return `ip netns is unavailable: ${(error as Error).message}`
    }
    await ip(['netns', 'del', probe]).catch(() => undefined)
    return undefined
  }

  /** Create `count` namespaces on one bridge; torn down by `t.after` (and at exit). */
  static async create(t: AfterHook | null, count: number): Promise<NetnsLab> {
    if (count < 1 || count > 200) throw new RangeError(`count must be 1-200, got ${count}`)
    installExitHooks()
    const id = randomBytes(3).toString('hex')
    const subnet = await freeSubnet()
    const bridge = `fs${id}br`
    const hosts: NetnsHost[] = []
    for (let i = 0; i < count; i++) {
      hosts.push({
        name: `failsoft-${id}-${i}`,
        address: `${subnet}.${10 + i}`,
        hostLink: `fs${id}h${i}`,
        link: `fs${id}n${i}`,
      })
    }
    const lab = new NetnsLab(bridge, `${subnet}.1`, hosts)
    liveLabs.add(lab)
    t?.after(() => lab.close())
    try {
      await ip(['link', 'add', bridge, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0'])
      await ip(['addr', 'add', `${lab.hostAddress}/24`, 'dev', bridge])
      await ip(['link', 'set', bridge, 'up'])
      for (const host of hosts) {
        await ip(['netns', 'add', host.name])
        await ip(['-n', host.name, 'link', 'set', 'lo', 'up'])
        await ip(['link', 'add', host.hostLink, 'type', 'veth', 'peer', 'name', host.link])
        await ip(['link', 'set', host.link, 'netns', host.name])
        await ip(['link', 'set', host.hostLink, 'master', bridge])
        await ip(['link', 'set', host.hostLink, 'up'])
        await ip(['-n', host.name, 'addr', 'add', `${host.address}/24`, 'dev', host.link])
        await ip(['-n', host.name, 'link', 'set', host.link, 'up'])
      }
    } catch (error) {
      await lab.close()
      throw error
    }
    return lab
  }

  /**
   * Run `command` inside namespace `index` (`ip netns exec`, which execs in place: the child's
   * pid is the command's). Killed by close(). `options.stdio` may include 'ipc'.
   */
  spawn(index: number, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (this.#closed) throw new Error('the lab is closed')
    const host = this.#host(index)
    const child = spawn(IP, ['netns', 'exec', host.name, command, ...args], options)
    this.#children.add(child)
    child.once('exit', () => this.#children.delete(child))
    return child
  }

  /**
   * Cut namespace `index` off: the root end of its link goes down, so every packet between it
   * and the root namespace (Redis) is dropped, both ways — open connections hang, new ones time
   * out (no reset, no refusal). The other namespaces keep their links.
   */
  async partition(index: number): Promise<void> {
    await ip(['link', 'set', this.#host(index).hostLink, 'down'])
    this.#partitioned.add(index)
  }

  /** Bring namespace `index`'s link back up. */
  async heal(index: number): Promise<void> {
    await ip(['link', 'set', this.#host(index).hostLink, 'up'])
    this.#partitioned.delete(index)
  }

  /**
   * redis-server arguments to listen on loopback and on the lab's bridge only. Protected mode
   * is off: it refuses every client not on loopback when there is no password, and the only
   * other address is this run's private bridge.
   */
  redisArgs(): string[] {
    return ['--bind', '127.0.0.1', this.hostAddress, '--protected-mode', 'no']
  }

  isPartitioned(index: number): boolean {
    return this.#partitioned.has(index)
  }

  /** SIGKILL every child still running, delete the namespaces and links. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const exits: Array<Promise<unknown>> = []
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null) {
        exits.push(new Promise((resolve) => child.once('exit', resolve)))
        child.kill('SIGKILL')
      }
    }
    await Promise.race([Promise.all(exits), new Promise((resolve) => setTimeout(resolve, 2000))])
    for (const host of this.hosts) {
      await this.#killInside(host.name)
      // Deleting the namespace deletes its end of the veth pair, and with it the root end.
      await ip(['netns', 'del', host.name]).catch(() => undefined)
      await ip(['link', 'del', host.hostLink]).catch(() => undefined)
    }
    await ip(['link', 'del', this.bridge]).catch(() => undefined)
    liveLabs.delete(this)
  }

  /** @internal Synchronous teardown for the exit hooks. */
  destroySync(): void {
    this.#closed = true
    for (const child of this.#children) child.kill('SIGKILL')
    for (const host of this.hosts) {
      for (const pid of pidsInside(host.name)) killQuietly(pid)
      ipSync(['netns', 'del', host.name])
      ipSync(['link', 'del', host.hostLink])
    }
    ipSync(['link', 'del', this.bridge])
    liveLabs.delete(this)
  }

  async #killInside(name: string): Promise<void> {
    // Only processes in this run's own namespace: whatever a fixture may have started.
    const pids = pidsInside(name)
    for (const pid of pids) killQuietly(pid)
    if (pids.length > 0) await new Promise((resolve) => setTimeout(resolve, 100))
  }

  #host(index: number): NetnsHost {
    const host = this.hosts[index]
    if (host === undefined) throw new RangeError(`no namespace ${index} (${this.hosts.length})`)
    return host
  }
}

function pidsInside(name: string): number[] {
  try {
    const out = execFileSync(IP, ['netns', 'pids', name], { encoding: 'utf8', timeout: 5000 })
    return out
      .split(/\s+/)
      .filter((s) => /^\d+$/.test(s))
      .map(Number)
  } catch {
    return []
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // gone
  }
}

/** A random 10.x.y.0/24 (x ≥ 128) that no address or route of the root namespace overlaps. */
async function freeSubnet(): Promise<string> {
  const text =
    (await ip(['-4', 'addr', 'show'])) + (await ip(['-4', 'route', 'show', 'table', 'all']))
  const used: Array<[base: number, bits: number]> = []
  for (const [, address = '', bits] of text.matchAll(/\b(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?\b/g)) {
    const prefix = bits === undefined ? 32 : Number(bits)
    if (prefix >= 8) used.push([toInt(address), prefix]) // a default route is no subnet in use
  }
  const overlaps = (base: number): boolean =>
    used.some(([other, bits]) => {
      const common = Math.min(bits, 24)
      const mask = common === 0 ? 0 : (~0 << (32 - common)) >>> 0
      return (other & mask) >>> 0 === (base & mask) >>> 0
    })
  for (let attempt = 0; attempt < 100; attempt++) {
    const subnet = `10.${randomInt(128, 255)}.${randomInt(0, 256)}`
    if (!overlaps(toInt(`${subnet}.0`))) return subnet
  }
  throw new Error('no free 10.x.y.0/24 subnet found')
}

function toInt(address: string): number {
  return address.split('.').reduce((n, part) => ((n << 8) | Number(part)) >>> 0, 0)
}
