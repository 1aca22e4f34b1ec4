// The reference app's processes as the chaos run sees them: spawned like a user would run them
// (`node --import tsx app/main.ts` with environment variables), logs captured to files and
// scanned line by line, resident memory read from /proc.
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { sleep } from '../test/support/fault-kit.js'

/** What the log scan found in one process's output. */
export interface LogScan {
  /** Lines mentioning an uncaught exception or an unhandled rejection (stdout or stderr). */
  unhandled: string[]
  /** stderr lines that are not pino JSON (warnings, stack traces). First 20 kept. */
  stderr: string[]
  stderrCount: number
  /** pino records at level ≥ 50 (error, fatal), counted by message. */
  errors: Record<string, number>
  /** pino records at level 40 (warn), counted by message. */
  warnings: Record<string, number>
  /** Lines that mention a failed HTTP request inside the app ('request failed'). */
  requestFailures: number
}

export interface AppProcessOptions {
  name: string
  root: string
  port: number
  env: Record<string, string>
  logDir: string
}

type PinoRecord = { level?: unknown; msg?: unknown; primary?: unknown; time?: unknown }

const UNHANDLED = /uncaught|unhandled/i
/** Node prints these on stderr when started with --inspect; they are not the app's output. */
const INSPECTOR =
  /^Debugger (?:listening on (ws:\/\/\S+)|attached\.|ending on )|^For help, see: https:\/\/nodejs\.org|^Waiting for the debugger to disconnect/
const KEEP = 20

/** One app process. */
export class AppProcess {
  readonly name: string
  readonly port: number
  readonly url: string
  readonly logPath: string
  readonly scan: LogScan = {
    unhandled: [],
    stderr: [],
    stderrCount: 0,
    errors: {},
    warnings: {},
    requestFailures: 0,
  }
  /**
   * The primary failsoft said it was on, from its health records ("Redis available", "Redis is
   * back…": `primary`, host:port), with the record's own time (epoch ms).
   */
  readonly primaries: Array<{ time: number; primary: string }> = []
  /** The V8 inspector of the process (loopback, random port), once it printed its address. */
  inspectorUrl: string | null = null
  /** Set when the process exited; `expected` once stop() was called. */
  exit: { code: number | null; signal: string | null; expected: boolean } | null = null

  readonly #child: ChildProcess
  readonly #log: WriteStream
  readonly #exited: Promise<void>
  #stopping = false

  private constructor(options: AppProcessOptions, child: ChildProcess) {
    this.name = options.name
    this.port = options.port
    this.url = `http://127.0.0.1:${options.port}`
    this.logPath = join(options.logDir, `app-${options.name}.log`)
    this.#child = child
    this.#log = createWriteStream(this.logPath)
    this.#exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal, expected: this.#stopping }
        resolve()
      })
    })
    this.#lines(child.stdout, 'stdout')
    this.#lines(child.stderr, 'stderr')
  }

  /** Spawn the web process and wait until GET /healthz answers (≤ 30 s). */
  static async start(options: AppProcessOptions): Promise<AppProcess> {
    // The inspector (loopback, port chosen by the OS) lets the harness force a full garbage
    // collection before it measures memory; nothing else uses it.
    const child = spawn(
      process.execPath,
      ['--inspect=127.0.0.1:0', '--import', 'tsx', 'app/main.ts'],
      {
        cwd: options.root,
        env: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          HOME: process.env.HOME ?? '/tmp',
          NODE_ENV: 'production',
          HOST: '127.0.0.1',
          PORT: String(options.port),
          ...options.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const app = new AppProcess(options, child)
    const deadline = Date.now() + 30_000
    for (;;) {
      if (app.exit !== null) {
        throw new Error(
          `app ${app.name} exited during start (${app.exit.signal ?? app.exit.code}); see ${app.logPath}`,
        )
      }
      try {
        const response = await fetch(`${app.url}/healthz`, { signal: AbortSignal.timeout(1000) })
        await response.arrayBuffer()
        if (response.ok) return app
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await app.stop()
        throw new Error(`app ${app.name} did not answer /healthz within 30 s; see ${app.logPath}`)
      }
      await sleep(100)
    }
  }

  get pid(): number | undefined {
    return this.#child.pid
  }

  get running(): boolean {
    return this.exit === null
  }

  /** Resident set size in KiB (VmRSS from /proc/<pid>/status), null if unreadable. */
  rssKiB(): number | null {
    const pid = this.#child.pid
    if (pid === undefined || this.exit !== null) return null
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
      return match?.[1] === undefined ? null : Number(match[1])
    } catch {
      return null
    }
  }

  /**
   * A full, precise garbage collection in the process (the inspector's
   * HeapProfiler.collectGarbage): afterwards the V8 heap holds only live objects and has
   * given back what it can. Rejects after 10 s or when the inspector is not there.
   */
  async collectGarbage(): Promise<void> {
    const url = this.inspectorUrl
    if (url === null) throw new Error(`app ${this.name}: no inspector address seen on stderr`)
    const socket = new WebSocket(url)
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('inspector: no answer in 10 s')), 10_000)
        socket.on('error', (error) => {
          clearTimeout(timer)
          reject(error)
        })
        socket.on('open', () =>
          socket.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' })),
        )
        socket.on('message', (data) => {
          const reply = JSON.parse(String(data)) as { id?: number; error?: { message: string } }
          if (reply.id !== 1) return
          clearTimeout(timer)
          if (reply.error) reject(new Error(`inspector: ${reply.error.message}`))
          else resolve()
        })
      })
    } finally {
      socket.terminate()
    }
  }

  /** SIGTERM (the app's graceful shutdown), SIGKILL after 12 s. Resolves once it exited. */
  async stop(): Promise<void> {
    this.#stopping = true
    if (this.exit === null) {
      this.#child.kill('SIGTERM')
      const timer = setTimeout(() => this.#child.kill('SIGKILL'), 12_000)
      await this.#exited
      clearTimeout(timer)
    }
    if (!this.#log.writableEnded) await new Promise<void>((resolve) => this.#log.end(resolve))
  }

  /** SIGKILL without waiting for anything (harness clean-up on a crash). */
  killNow(): void {
    if (this.exit === null) this.#child.kill('SIGKILL')
  }

  #lines(stream: NodeJS.ReadableStream | null, source: 'stdout' | 'stderr'): void {
    if (stream === null) return
    let rest = ''
    stream.on('data', (chunk: Buffer) => {
      this.#log.write(chunk)
      const text = rest + chunk.toString('utf8')
      const lines = text.split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) this.#scanLine(line, source)
    })
    stream.on('end', () => {
      if (rest !== '') this.#scanLine(rest, source)
    })
  }

  #scanLine(line: string, source: 'stdout' | 'stderr'): void {
    if (line.trim() === '') return
    const inspector = source === 'stderr' ? INSPECTOR.exec(line) : null
    if (inspector !== null) {
      if (inspector[1] !== undefined) this.inspectorUrl = inspector[1]
      return
    }
    const scan = this.scan
    if (UNHANDLED.test(line) && scan.unhandled.length < KEEP)
      scan.unhandled.push(line.slice(0, 500))
    else if (UNHANDLED.test(line)) scan.unhandled.push('…')
    let record: PinoRecord | null = null
    if (line.startsWith('{')) {
      try {
        record = JSON.parse(line) as PinoRecord
      } catch {
        record = null
      }
    }
    if (record === null) {
      if (source === 'stderr') {
        scan.stderrCount++
        if (scan.stderr.length < KEEP) scan.stderr.push(line.slice(0, 500))
      }
      return
    }
    if (
      typeof record.primary === 'string' &&
      typeof record.time === 'number' &&
      (record.msg === 'Redis available' ||
        record.msg === 'Redis is back; components returned to Redis')
    ) {
      this.primaries.push({ time: record.time, primary: record.primary })
    }
    const level = typeof record.level === 'number' ? record.level : 30
    const msg = typeof record.msg === 'string' ? record.msg : '(no message)'
    if (msg === 'request failed') scan.requestFailures++
    if (level >= 50) scan.errors[msg] = (scan.errors[msg] ?? 0) + 1
    else if (level === 40) scan.warnings[msg] = (scan.warnings[msg] ?? 0) + 1
  }
}
