import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { pino, type Logger } from 'pino'
import WebSocket from 'ws'
import { startApp, type RunningApp, type StartOptions } from '../../app/main.js'
import {
  RedisServer,
  waitFor,
  type AfterHook,
  type RedisServerOptions,
} from '../support/fault-kit.js'

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

// ── headless Chromium for the browser tests ─────────────────────────────────────────────────

const CHROMIUM_NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/**
 * The Chromium the browser tests drive: `CHROMIUM_PATH` if set, else the first of chromium,
 * chromium-browser, google-chrome, google-chrome-stable found on PATH; null if none is.
 */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.CHROMIUM_PATH) return executable(env.CHROMIUM_PATH) ? env.CHROMIUM_PATH : null
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean)
  for (const name of CHROMIUM_NAMES) {
    for (const dir of dirs) {
      const candidate = join(dir, name)
      if (executable(candidate)) return candidate
    }
  }
  return null
}

export const CHROMIUM = findChromium()
/** The skip reason when no Chromium is found (a failure under CI: scripts/run-tests.mjs). */
export const CHROMIUM_MISSING = process.env.CHROMIUM_PATH
  ? `CHROMIUM_PATH=${process.env.CHROMIUM_PATH} is not an executable file`
  : `no ${CHROMIUM_NAMES.join(' / ')} on PATH (Debian package chromium; or set CHROMIUM_PATH)`

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
]

let counter = 0
export const uniquePrefix = (): string => `apptest-${process.pid}-${++counter}`

const cleanups = new WeakMap<AfterHook, Array<() => unknown>>()

/**
 * Run `fn` after the test, in reverse order of registration (node:test runs `t.after` hooks
 * first-in first-out): apps close before the Redis they use is stopped, so a shutdown never
 * starts against a Redis that has just vanished.
 */
export function defer(t: AfterHook, fn: () => unknown): void {
  let stack = cleanups.get(t)
  if (stack === undefined) {
    const created: Array<() => unknown> = []
    stack = created
    cleanups.set(t, created)
    t.after(async () => {
      for (let fn = created.pop(); fn !== undefined; fn = created.pop()) await fn()
    })
  }
  stack.push(fn)
}

/** A real redis-server, stopped after everything registered after it. */
export async function redis(t: AfterHook, options?: RedisServerOptions): Promise<RedisServer> {
  const server = await RedisServer.start(options)
  defer(t, () => server.stop())
  return server
}

/** A temp directory removed after the test. */
export function tempDir(t: AfterHook): string {
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-app-'))
  defer(t, () => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A pino logger writing JSON lines into memory. */
export function captureLogs(): {
  logger: Logger
  text: () => string
  records: () => Array<Record<string, unknown>>
} {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
      callback()
    },
  })
  return {
    logger: pino({ level: 'debug' }, stream),
    text: () => lines.join('\n'),
    records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
  }
}

/** The app in this process, on a free port, fast health timings, closed after the test. */
export async function startTestApp(
  t: AfterHook,
  options: StartOptions & { redisUrl: string | null },
): Promise<RunningApp> {
  const dir = options.databasePath === undefined ? tempDir(t) : undefined
  const app = await startApp({
    port: 0,
    host: '127.0.0.1',
    prefix: uniquePrefix(),
    logger: false,
    fastHealth: true,
    compostEveryMs: 3_600_000,
    env: {},
    ...(dir !== undefined && { databasePath: join(dir, 'app.db') }),
    ...options,
  })
  defer(t, () => app.close())
  return app
}

export interface HttpResult<T = Record<string, unknown>> {
  status: number
  headers: Headers
  body: T
}

/** fetch + JSON, never throws on an HTTP error status. */
export async function http<T = Record<string, unknown>>(
  url: string,
  init: {
    method?: string
    body?: unknown
    headers?: Record<string, string>
    raw?: string | Uint8Array
  } = {},
): Promise<HttpResult<T>> {
  const headers: Record<string, string> = { ...init.headers }
  let body: string | Uint8Array | undefined = init.raw
  if (init.body !== undefined) {
    headers['content-type'] ??= 'application/json'
    body = JSON.stringify(init.body)
  }
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers,
    ...(body !== undefined && { body }),
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // not JSON (e.g. /metrics): keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed as T }
}

/** A WebSocket client that records every JSON message and waits for the ones it needs. */
export class WsClient {
  readonly messages: Array<Record<string, unknown>> = []
  readonly socket: WebSocket
  closed: { code: number; reason: string } | null = null
  readonly #opened: Promise<void>

  constructor(url: string, options: { origin?: string } = {}) {
    const wsUrl = url.replace(/^http/, 'ws') + '/ws'
    this.socket = new WebSocket(
      wsUrl,
      options.origin === undefined ? {} : { origin: options.origin },
    )
    this.socket.on('message', (data) => {
      this.messages.push(JSON.parse(data.toString()) as Record<string, unknown>)
    })
    this.socket.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
    })
    this.#opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('error', reject)
      this.socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`handshake refused: HTTP ${res.statusCode}`)),
      )
    })
    // Errors after the handshake surface as 'close'; keep them from being unhandled.
    this.socket.on('error', () => undefined)
  }

  static async open(
    t: AfterHook,
    url: string,
    options: { origin?: string } = {},
  ): Promise<WsClient> {
    const client = new WsClient(url, options)
    defer(t, () => client.close())
    await client.opened()
    return client
  }

  opened(): Promise<void> {
    return this.#opened
  }

  send(message: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(message))
  }

  /** The first recorded message (from `from`) matching, waiting up to `timeoutMs`. */
  async next(
    predicate: (message: Record<string, unknown>) => boolean,
    {
      timeoutMs = 3000,
      from = 0,
      message,
    }: { timeoutMs?: number; from?: number; message?: string } = {},
  ): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined
    await waitFor(
      () => {
        found = this.messages.slice(from).find(predicate)
        return found !== undefined
      },
      { timeoutMs, message: message ?? 'expected WebSocket message' },
    )
    return found as Record<string, unknown>
  }

  chatTexts(): string[] {
    return this.messages.filter((m) => m.type === 'chat.message').map((m) => String(m.text))
  }

  lastStatus(): Record<string, unknown> & {
    redis: { available: boolean; state: string; forced: boolean }
  } {
    const statuses = this.messages.filter((m) => m.type === 'status')
    return statuses[statuses.length - 1] as ReturnType<WsClient['lastStatus']>
  }

  close(): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return Promise.resolve()
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve())
      this.socket.terminate()
    })
  }
}

/** Join a chat room and wait for its history (the membership is then in place). */
export async function joinRoom(client: WsClient, room: string, name: string): Promise<void> {
  const from = client.messages.length
  client.send({ type: 'chat.join', room, name })
  await client.next((m) => m.type === 'chat.history' && m.room === room, { from })
}

// ── the app as a child process ───────────────────────────────────────────────────────────────

export interface ChildApp {
  readonly url: string
  readonly child: ChildProcess
  readonly output: () => string
  stop(): Promise<void>
}

/**
 * `node --import tsx app/<entry>.ts` with the given environment; resolves once it logged
 * its start line (the web process's URL for 'main').
 */
export async function spawnApp(
  t: AfterHook,
  env: Record<string, string>,
  entry: 'main' | 'worker' = 'main',
): Promise<ChildApp> {
  const child = spawn(process.execPath, ['--import', 'tsx', join('app', `${entry}.ts`)], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      PORT: '0',
      HOST: '127.0.0.1',
      FAST_HEALTH: '1',
      COMPOST_EVERY_MS: '3600000',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const wanted = entry === 'main' ? 'reference app listening' : 'task worker started'
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`app did not start:\n${output}`)), 30_000)
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8')
      for (const line of output.split('\n')) {
        if (!line.includes(wanted)) continue
        clearTimeout(timer)
        // A JSON line, or a LOG_FORMAT=pretty one (`… url=http://127.0.0.1:PORT …`).
        let url = /\burl=(\S+)/.exec(line)?.[1] ?? ''
        if (line.startsWith('{')) url = (JSON.parse(line) as { url?: string }).url ?? ''
        resolve(url)
        return
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8')
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`app exited with ${code}:\n${output}`))
    })
  })
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const force = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(force)
  }
  defer(t, stop)
  return { url, child, output: () => output, stop }
}
