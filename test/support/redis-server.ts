// Real redis-server processes for tests and benchmarks, with fault injection (kill, freeze,
// restart with or without data). Every process started here is tracked in a module-level
// registry and SIGKILLed synchronously when the Node process exits, even if a test failed.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'

const REDIS_BIN = process.env['FAILSOFT_REDIS_SERVER'] ?? 'redis-server'
const HOST = '127.0.0.1'
const START_TIMEOUT_MS = 10_000
const LOG_TAIL_CHARS = 16_384

// ---------------------------------------------------------------------------------------------
// Process registry: nothing started here may outlive the test process.

const liveProcesses = new Set<ChildProcess>()
const frozenPids = new Set<number>()
const tempDirs = new Set<string>()
let hooksInstalled = false

function isDeadSync(pid: number): boolean {
  try {
    // Killed but not yet reaped by us: a zombie no longer touches its files.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return / [ZX] /.test(stat.slice(stat.lastIndexOf(')')))
  } catch {
    return true // gone (or no /proc: nothing better to do)
  }
}

function killAllSync(): void {
  const pids: number[] = []
  for (const child of liveProcesses) {
    const pid = child.pid
    if (pid === undefined) continue
    try {
      if (frozenPids.has(pid)) process.kill(pid, 'SIGCONT')
      process.kill(pid, 'SIGKILL')
      pids.push(pid)
    } catch {
      // already gone
    }
  }
  liveProcesses.clear()
  frozenPids.clear()
  // Wait (≤1 s) until they are really dead so their temp dirs can be removed afterwards.
  const tick = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + 1000
  while (pids.some((pid) => !isDeadSync(pid)) && Date.now() < deadline) Atomics.wait(tick, 0, 0, 5)
}

function removeTempDirsSync(): void {
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {
      // best effort at exit
    }
  }
  tempDirs.clear()
}

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    killAllSync()
    removeTempDirsSync()
  })
  // 'exit' does not run when the process dies from a signal: clean up, then let the signal act.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAllSync()
      removeTempDirsSync()
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
}

/** SIGKILL every redis-server started by this module (synchronous; also runs on process exit). */
export function killAllRedisServers(): void {
  killAllSync()
}

// ---------------------------------------------------------------------------------------------
// Small helpers

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** A free TCP port on 127.0.0.1, picked by binding port 0 and releasing it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))))
    })
  })
}

function run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')} failed: ${error.message}\n${stderr}`))
      else resolve({ stdout, stderr })
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Minimal RESP2 client (no dependency, no retries) used by cli() and readiness checks.

/** An error reply from Redis (`-ERR ...`). `code` is the first word, e.g. 'ERR', 'OOM', 'NOAUTH'. */
export class RespError extends Error {
  readonly code: string
  constructor(message: string) {
    super(message)
    this.name = 'RespError'
    this.code = message.split(' ', 1)[0] ?? 'ERR'
  }
}

export type RespValue = string | number | bigint | null | RespError | RespValue[]

type Parsed = { value: RespValue; next: number } | undefined

function parseReply(buf: Buffer, offset: number): Parsed {
  if (offset >= buf.length) return undefined
  const lineEnd = buf.indexOf('\r\n', offset)
  if (lineEnd === -1) return undefined
  const type = String.fromCharCode(buf[offset] ?? 0)
  const line = buf.toString('utf8', offset + 1, lineEnd)
  const after = lineEnd + 2
  switch (type) {
    case '+':
      return { value: line, next: after }
    case '-':
      return { value: new RespError(line), next: after }
    case ':': {
      const n = Number(line)
      return { value: Number.isSafeInteger(n) ? n : BigInt(line), next: after }
    }
    case '$': {
      const len = Number(line)
      if (len < 0) return { value: null, next: after }
      if (buf.length < after + len + 2) return undefined
      return { value: buf.toString('utf8', after, after + len), next: after + len + 2 }
    }
    case '*': {
      const count = Number(line)
      if (count < 0) return { value: null, next: after }
      const items: RespValue[] = []
      let pos = after
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos)
        if (item === undefined) return undefined
        items.push(item.value)
        pos = item.next
      }
      return { value: items, next: pos }
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`)
  }
}

function encodeCommand(args: ReadonlyArray<string | number | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const data = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg))
    parts.push(Buffer.from(`$${data.length}\r\n`), data, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

export interface RespTarget {
  host: string
  port: number
  /** Connect with TLS, trusting `ca`. */
  tls?: { ca?: Buffer | undefined } | undefined
  username?: string | undefined
  password?: string | undefined
}

/**
 * Send several commands on one short-lived connection (AUTH first when a password is given).
 * Resolves every reply in order; error replies are returned as RespError values, not thrown.
 * Rejects with code 'ETIMEDOUT' if the replies do not arrive within timeoutMs (default 2000),
 * or with the socket error (e.g. ECONNREFUSED, ECONNRESET).
 */
export function respCommands(
  target: RespTarget,
  commands: ReadonlyArray<ReadonlyArray<string | number | Buffer>>,
  options: { timeoutMs?: number } = {},
): Promise<RespValue[]> {
  const timeoutMs = options.timeoutMs ?? 2000
  const all: Array<ReadonlyArray<string | number | Buffer>> = []
  if (target.password !== undefined) {
    all.push(
      target.username !== undefined
        ? ['AUTH', target.username, target.password]
        : ['AUTH', target.password],
    )
  }
  all.push(...commands)
  const skip = all.length - commands.length
  return new Promise((resolve, reject) => {
    const socket: net.Socket = target.tls
      ? tls.connect({ host: target.host, port: target.port, ca: target.tls.ca })
      : net.connect({ host: target.host, port: target.port })
    let buffer: Buffer = Buffer.alloc(0)
    let offset = 0
    const replies: RespValue[] = []
    let settled = false
    const finish = (error: Error | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (error) reject(error)
      else resolve(replies.slice(skip))
    }
    const timer = setTimeout(() => {
      const error = new Error(
        `no reply from ${target.host}:${target.port} within ${timeoutMs} ms ` +
          `(${commands.map((c) => c[0]).join(', ')})`,
      ) as NodeJS.ErrnoException
      error.code = 'ETIMEDOUT'
      finish(error)
    }, timeoutMs)
    socket.once(target.tls ? 'secureConnect' : 'connect', () => {
      socket.write(Buffer.concat(all.map(encodeCommand)))
    })
    socket.on('data', (chunk: Buffer) => {
      buffer = offset === buffer.length ? chunk : Buffer.concat([buffer.subarray(offset), chunk])
      offset = 0
      try {
        for (;;) {
          const parsed = parseReply(buffer, offset)
          if (parsed === undefined) break
          offset = parsed.next
          replies.push(parsed.value)
          if (replies.length <= skip && parsed.value instanceof RespError) {
            finish(parsed.value)
            return
          }
          if (replies.length === all.length) {
            finish(undefined)
            return
          }
        }
      } catch (error) {
        finish(error as Error)
      }
    })
    socket.on('error', (error) => finish(error))
    socket.on('close', () =>
      finish(
        Object.assign(new Error(`connection to ${target.host}:${target.port} closed early`), {
          code: 'ECONNRESET',
        }),
      ),
    )
  })
}

/** One command on a short-lived connection; an error reply rejects with a RespError. */
export async function respCommand(
  target: RespTarget,
  args: ReadonlyArray<string | number | Buffer>,
  options: { timeoutMs?: number } = {},
): Promise<RespValue> {
  const [reply] = await respCommands(target, [args], options)
  if (reply instanceof RespError) throw reply
  return reply ?? null
}

// ---------------------------------------------------------------------------------------------
// TLS material

async function generateTlsFiles(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  mkdirSync(dir, { recursive: true })
  const ca = join(dir, 'ca.crt')
  const caKey = join(dir, 'ca.key')
  const cert = join(dir, 'server.crt')
  const key = join(dir, 'server.key')
  const csr = join(dir, 'server.csr')
  const ext = join(dir, 'server.ext')
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const caSubject = ['-subj', '/CN=failsoft test CA']
  await run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', caKey, '-out', ca, ...caSubject])
  await run('openssl', [
    'req',
    '-new',
    ...ec,
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    '/CN=127.0.0.1',
  ])
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n')
  const signing = ['-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-days', '2', '-extfile', ext]
  await run('openssl', ['x509', '-req', '-in', csr, '-out', cert, ...signing])
  return { ca, cert, key }
}

// ---------------------------------------------------------------------------------------------

export interface RedisServerOptions {
  /** AOF with appendfsync always, so data survives a SIGKILL. Default false (no persistence: --save '' --appendonly no). */
  persistence?: boolean
  /** Fixed port; default: a free port picked by binding port 0 and releasing it. */
  port?: number
  /** `requirepass` for the default user. */
  password?: string
  /** Extra ACL user created at start: `ACL SETUSER <name> on >pass ~* &* +@all` (passed as `--user`, so it also exists right after every restart). */
  aclUser?: { username: string; password: string }
  /** Start with TLS only (--port 0 --tls-port P) using a CA + server cert generated with openssl into the temp dir; clients must use rediss:// and ca from `server.tlsCa`. */
  tls?: boolean
  /** Extra redis-server arguments, e.g. ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']. */
  args?: string[]
  /**
   * Run as a Redis Sentinel (`redis-server <conf> --sentinel`) monitoring one primary. The
   * config file lives in the temp dir and is rewritten by Sentinel itself (it must be
   * writable); it survives restarts, as a real Sentinel's does.
   */
  sentinel?: {
    name: string
    primary: { host: string; port: number }
    quorum: number
    downAfterMs: number
    failoverTimeoutMs: number
    /**
     * Addresses to listen on (default 127.0.0.1 only). Any address other than 127.0.0.1 also
     * turns protected mode off (it refuses every non-loopback client without a password).
     */
    bind?: string[]
    /** `sentinel announce-ip`: the address this Sentinel gives the others in its hellos. */
    announceIp?: string
  }
}

class StartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message)
  }
}

let tlsSupportedPromise: Promise<boolean> | undefined

export class RedisServer {
  readonly host = HOST
  readonly port: number
  readonly url: string
  /** URL authenticating as the extra ACL user (undefined without `aclUser`). */
  readonly aclUrl: string | undefined
  readonly tlsCa: Buffer | undefined
  /** Root temp dir (data in `<dir>/data`, TLS material in `<dir>/tls`, log tail via `log`). */
  readonly dir: string
  readonly dataDir: string

  readonly #options: RedisServerOptions
  readonly #tlsFiles: { ca: string; cert: string; key: string } | undefined
  #child: ChildProcess | undefined
  #exited: Promise<void> = Promise.resolve()
  #frozen = false
  #stopped = false
  #snapshots = 0
  /** Arguments for the next launch only, after the configured ones. */
  #extraArgs: string[] = []
  #log = ''

  private constructor(
    options: RedisServerOptions,
    port: number,
    dir: string,
    tlsFiles: { ca: string; cert: string; key: string } | undefined,
  ) {
    this.#options = options
    this.port = port
    this.dir = dir
    this.dataDir = join(dir, 'data')
    this.#tlsFiles = tlsFiles
    this.tlsCa = tlsFiles ? readFileSync(tlsFiles.ca) : undefined
    const scheme = options.tls === true ? 'rediss' : 'redis'
    const auth = options.password !== undefined ? `:${encodeURIComponent(options.password)}@` : ''
    this.url = `${scheme}://${auth}${HOST}:${port}`
    const acl = options.aclUser
    this.aclUrl = acl
      ? `${scheme}://${encodeURIComponent(acl.username)}:${encodeURIComponent(acl.password)}@${HOST}:${port}`
      : undefined
  }

  /** Start a fresh redis-server; resolves once it answers PING. */
  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    installExitHooks()
    const dir = mkdtempSync(join(tmpdir(), 'failsoft-redis-'))
    tempDirs.add(dir)
    let server: RedisServer | undefined
    try {
      const tlsFiles = options.tls === true ? await generateTlsFiles(join(dir, 'tls')) : undefined
      for (let attempt = 0; ; attempt++) {
        const port = options.port ?? (await freePort())
        server = new RedisServer(options, port, dir, tlsFiles)
        try {
          await server.#launch()
          return server
        } catch (error) {
          // Another process grabbed the port between picking and binding: pick another one.
          const retry = error instanceof StartError && error.addressInUse
          if (!retry || options.port !== undefined || attempt >= 4) throw error
        }
      }
    } catch (error) {
      await server?.kill()
      rmSync(dir, { recursive: true, force: true })
      tempDirs.delete(dir)
      throw error
    }
  }

  /** Whether this redis-server binary (and openssl) can serve TLS. Probes once, cached. */
  static tlsSupported(): Promise<boolean> {
    tlsSupportedPromise ??= (async () => {
      try {
        const server = await RedisServer.start({ tls: true })
        await server.stop()
        return true
      } catch {
        return false
      }
    })()
    return tlsSupportedPromise
  }

  get pid(): number | undefined {
    return this.running ? this.#child?.pid : undefined
  }

  get running(): boolean {
    const child = this.#child
    return child !== undefined && child.exitCode === null && child.signalCode === null
  }

  get frozen(): boolean {
    return this.#frozen && this.running
  }

  /** Last lines redis-server wrote to its log (stdout). */
  get log(): string {
    return this.#log
  }

  /** Connection details for respCommand/respCommands (default user). */
  get respTarget(): RespTarget {
    return {
      host: HOST,
      port: this.port,
      tls: this.tlsCa ? { ca: this.tlsCa } : undefined,
      password: this.#options.password,
    }
  }

  /** SIGKILL; resolves when the process has exited. No-op if not running. */
  async kill(): Promise<void> {
    const child = this.#child
    if (child === undefined) return
    if (this.running && child.pid !== undefined) {
      if (this.#frozen) child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
    // The child is unref'd: keep the event loop alive until its exit has been seen.
    const keepAlive = setInterval(() => undefined, 1000)
    try {
      await this.#exited
    } finally {
      clearInterval(keepAlive)
    }
  }

  /** SIGSTOP: TCP connections stay open (the kernel still accepts), nothing answers. */
  freeze(): void {
    const pid = this.#requireRunning('freeze')
    process.kill(pid, 'SIGSTOP')
    this.#frozen = true
    frozenPids.add(pid)
  }

  /** SIGCONT. */
  thaw(): void {
    const pid = this.#child?.pid
    if (pid !== undefined && this.running) process.kill(pid, 'SIGCONT')
    if (pid !== undefined) frozenPids.delete(pid)
    this.#frozen = false
  }

  /**
   * Start again on the SAME port. keepData: true keeps the data set (non-persistent servers SAVE
   * before the kill and load dump.rdb; the dump is deleted once loaded, so a later kill()+start()
   * comes back empty like a real non-persistent Redis); false wipes the data dir (empty, new
   * run_id). A running (or frozen) process is SIGKILLed first.
   */
  async restart(options: { keepData: boolean; delayMs?: number }): Promise<void> {
    this.#requireNotStopped('restart')
    let savedDump = false
    if (this.running) {
      if (this.#frozen) this.thaw()
      if (options.keepData && this.#options.persistence !== true) {
        await respCommand(this.respTarget, ['SAVE'], { timeoutMs: 10_000 })
        savedDump = true
      }
      await this.kill()
    }
    if (!options.keepData) {
      rmSync(this.dataDir, { recursive: true, force: true })
    }
    if (options.delayMs !== undefined && options.delayMs > 0) await sleep(options.delayMs)
    await this.#launchSamePort()
    if (savedDump) rmSync(join(this.dataDir, 'dump.rdb'), { force: true })
  }

  /**
   * Take an RDB snapshot now (`SAVE`) and keep a copy of it aside: `restartFromSnapshot(path)`
   * later brings the server back with this data, as a Redis restarted from an older snapshot
   * (every write after this moment forgotten, though acknowledged).
   */
  async snapshot(): Promise<string> {
    this.#requireRunning('snapshot')
    await respCommand(this.respTarget, ['SAVE'], { timeoutMs: 10_000 })
    const path = join(this.dir, `snapshot-${++this.#snapshots}.rdb`)
    copyFileSync(join(this.dataDir, 'dump.rdb'), path)
    return path
  }

  /** SIGKILL, then start on the same port loading only the snapshot at `path` (see snapshot()). */
  async restartFromSnapshot(path: string, options: { delayMs?: number } = {}): Promise<void> {
    this.#requireNotStopped('restart')
    if (this.running) {
      if (this.#frozen) this.thaw()
      await this.kill()
    }
    rmSync(this.dataDir, { recursive: true, force: true })
    mkdirSync(this.dataDir, { recursive: true })
    copyFileSync(path, join(this.dataDir, 'dump.rdb'))
    if (options.delayMs !== undefined && options.delayMs > 0) await sleep(options.delayMs)
    this.#extraArgs = ['--appendonly', 'no'] // the snapshot, not an AOF, is what loads
    try {
      await this.#launchSamePort()
    } finally {
      this.#extraArgs = []
    }
    rmSync(join(this.dataDir, 'dump.rdb'), { force: true })
  }

  /** Start again after kill(): same port, same data dir as it was. */
  async start(): Promise<void> {
    this.#requireNotStopped('start')
    if (this.running) throw new Error(`redis-server on port ${this.port} is already running`)
    await this.#launchSamePort()
  }

  /** One command on a short-lived connection; error replies reject (RespError); ≤2 s timeout. */
  cli(...args: Array<string | number>): Promise<unknown> {
    return respCommand(this.respTarget, args, { timeoutMs: 2000 })
  }

  /** Kill and remove the temp dir. Idempotent. */
  async stop(): Promise<void> {
    this.#stopped = true
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
    tempDirs.delete(this.dir)
  }

  // -------------------------------------------------------------------------------------------

  #requireRunning(action: string): number {
    const pid = this.#child?.pid
    if (!this.running || pid === undefined) {
      throw new Error(`cannot ${action}: redis-server on port ${this.port} is not running`)
    }
    return pid
  }

  #requireNotStopped(action: string): void {
    if (this.#stopped) throw new Error(`cannot ${action}: server on port ${this.port} was stopped`)
  }

  async #launchSamePort(): Promise<void> {
    // The port was ours a moment ago; if something holds it briefly, wait for it.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#launch()
        return
      } catch (error) {
        if (!(error instanceof StartError && error.addressInUse) || attempt >= 20) throw error
        await sleep(100)
      }
    }
  }

  #args(): string[] {
    const o = this.#options
    if (o.sentinel !== undefined) return this.#sentinelArgs(o.sentinel)
    const args = ['--bind', HOST, '--dir', this.dataDir, '--dbfilename', 'dump.rdb']
    args.push('--logfile', '', '--daemonize', 'no', '--enable-debug-command', 'local')
    if (this.#tlsFiles) {
      const f = this.#tlsFiles
      args.push('--port', '0', '--tls-port', String(this.port))
      args.push('--tls-cert-file', f.cert, '--tls-key-file', f.key, '--tls-ca-cert-file', f.ca)
      args.push('--tls-auth-clients', 'no')
    } else {
      args.push('--port', String(this.port))
    }
    args.push('--save', '')
    if (o.persistence === true) args.push('--appendonly', 'yes', '--appendfsync', 'always')
    else args.push('--appendonly', 'no')
    if (o.password !== undefined) args.push('--requirepass', o.password)
    if (o.aclUser) {
      args.push('--user', o.aclUser.username, 'on', `>${o.aclUser.password}`, '~*', '&*', '+@all')
    }
    args.push(...(o.args ?? []), ...this.#extraArgs)
    return args
  }

  #sentinelArgs(sentinel: NonNullable<RedisServerOptions['sentinel']>): string[] {
    const conf = join(this.dir, 'sentinel.conf')
    if (!existsSync(conf)) {
      const { name, primary } = sentinel
      const bind = sentinel.bind ?? [HOST]
      const open = bind.some((address) => address !== HOST)
      writeFileSync(
        conf,
        [
          `port ${this.port}`,
          `bind ${bind.join(' ')}`,
          ...(open ? ['protected-mode no'] : []),
          ...(sentinel.announceIp !== undefined
            ? [`sentinel announce-ip ${sentinel.announceIp}`]
            : []),
          'daemonize no',
          'logfile ""',
          `dir ${this.dataDir}`,
          `sentinel monitor ${name} ${primary.host} ${primary.port} ${sentinel.quorum}`,
          `sentinel down-after-milliseconds ${name} ${sentinel.downAfterMs}`,
          `sentinel failover-timeout ${name} ${sentinel.failoverTimeoutMs}`,
          `sentinel parallel-syncs ${name} 1`,
          '',
        ].join('\n'),
      )
    }
    return [conf, '--sentinel', ...(this.#options.args ?? [])]
  }

  async #launch(): Promise<void> {
    mkdirSync(this.dataDir, { recursive: true })
    this.#log = ''
    this.#frozen = false
    const child = spawn(REDIS_BIN, this.#args(), { stdio: ['ignore', 'pipe', 'pipe'] })
    this.#child = child
    liveProcesses.add(child)
    const onOutput = (chunk: Buffer): void => {
      this.#log = (this.#log + chunk.toString('utf8')).slice(-LOG_TAIL_CHARS)
    }
    child.stdout?.on('data', onOutput)
    child.stderr?.on('data', onOutput)
    // A server a failed test forgot must not keep the test process alive: the exit hook kills it.
    child.unref()
    for (const stream of [child.stdout, child.stderr]) (stream as Partial<net.Socket>)?.unref?.()
    let exitInfo: string | undefined
    let spawnError: Error | undefined
    this.#exited = new Promise<void>((resolve) => {
      const done = (): void => {
        liveProcesses.delete(child)
        if (child.pid !== undefined) frozenPids.delete(child.pid)
        resolve()
      }
      child.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${code}`
        done()
      })
      child.once('error', (error) => {
        spawnError = error
        if (child.pid === undefined) done() // never started; 'exit' will not follow
      })
    })

    const deadline = Date.now() + START_TIMEOUT_MS
    let lastError: unknown
    while (Date.now() < deadline) {
      if (spawnError && child.pid === undefined) {
        throw new StartError(`cannot spawn ${REDIS_BIN}: ${spawnError.message}`, false)
      }
      if (exitInfo !== undefined) {
        await sleep(20) // let the last log lines arrive
        const log = this.#log
        const addressInUse = /address already in use/i.test(log)
        let message = `redis-server on port ${this.port} exited during start (${exitInfo})`
        if (this.#options.tls === true && /tls|bad directive/i.test(log)) {
          message = `redis-server could not start with TLS (is it built with TLS support?): ${message}`
        }
        throw new StartError(`${message}\n--- log ---\n${log.slice(-4000)}`, addressInUse)
      }
      try {
        const reply = await respCommand(this.respTarget, ['PING'], { timeoutMs: 1000 })
        if (reply === 'PONG') return
        lastError = new Error(`unexpected PING reply ${JSON.stringify(reply)}`)
      } catch (error) {
        lastError = error // ECONNREFUSED while starting, LOADING while loading data, ...
      }
      await sleep(15)
    }
    await this.kill()
    throw new StartError(
      `redis-server on port ${this.port} did not answer PING within ${START_TIMEOUT_MS} ms ` +
        `(last error: ${String(lastError)})\n--- log ---\n${this.#log.slice(-4000)}`,
      false,
    )
  }
}
