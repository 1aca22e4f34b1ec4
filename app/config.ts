import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveLogFormat, type LogFormat } from './log-format.js'

/** Everything the reference app reads from its environment, resolved once at start-up. */
export interface AppConfig {
  /** TCP port of the HTTP + WebSocket server (`PORT`, default 3000; 0 picks a free one). */
  port: number
  /** Interface to listen on (`HOST`, default '0.0.0.0'). */
  host: string
  /**
   * Redis URL (`REDIS_URL`, default `redis://127.0.0.1:6379`). `none` (or `memory`) runs
   * without Redis at all: failsoft's memory-only mode, which never opens a socket.
   */
  redisUrl: string | null
  /** Prefix of every Redis key the app writes (`FAILSOFT_PREFIX`, default 'failsoft-app'). */
  prefix: string
  /** SQLite file (`DATABASE_PATH`, default `app/data/app.db`), created and seeded on first start. */
  databasePath: string
  /**
   * Durable task spool (`SPOOL_PATH`, default `spool.jsonl` next to the database): jobs that
   * wait for Redis survive a restart of the app.
   */
  spoolPath: string
  /** Bearer token of the operator switch (`ADMIN_TOKEN`); null disables the switch. */
  adminToken: string | null
  /**
   * Origins allowed to open the WebSocket (`ALLOWED_ORIGINS`, comma-separated, e.g.
   * `https://app.example.org`). Empty: only the page's own host.
   */
  allowedOrigins: string[]
  /** Period of the "compost" batch (`COMPOST_EVERY_MS`, default 300000 = 5 min). */
  compostEveryMs: number
  /** Run a task worker inside the web process (`RUN_WORKER`, default true; `0` to disable). */
  runWorker: boolean
  /** Largest accepted request body, in bytes (`BODY_LIMIT_BYTES`, default 65536). */
  bodyLimitBytes: number
  /** Client WebSocket frames allowed per socket per second (`WS_RATE_LIMIT`, default 10). */
  wsMessagesPerSecond: number
  /** pino level (`LOG_LEVEL`, default 'info'). */
  logLevel: string
  /**
   * `LOG_FORMAT`: 'json' (pino's JSON lines), 'pretty' (one readable line per record) or 'auto'
   * (the default): pretty when stdout is a terminal, JSON otherwise (a pipe, a file).
   */
  logFormat: LogFormat
  /** Faster health timings (`FAST_HEALTH=1`): used by the tests only. */
  fastHealth: boolean
}

const appDir = fileURLToPath(new URL('.', import.meta.url))

export const defaultDatabasePath = resolve(appDir, 'data', 'app.db')

/** Where `npm start` connects when REDIS_URL is unset: whatever Redis listens there. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number) {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`)
  }
  return value
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  throw new ConfigError(`${name} must be a boolean (1/0, true/false), got "${raw}"`)
}

/** Read the configuration from the environment; throws ConfigError naming a bad variable. */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  stdoutIsTTY: boolean | undefined = process.stdout.isTTY,
): AppConfig {
  const rawRedis = env.REDIS_URL || DEFAULT_REDIS_URL
  const redisUrl = /^(none|memory)$/i.test(rawRedis) ? null : rawRedis
  if (redisUrl !== null && !/^(rediss?|redis-sentinel):\/\//.test(redisUrl)) {
    // Never echo the value: it may hold a password.
    throw new ConfigError(
      'REDIS_URL must start with redis://, rediss:// or redis-sentinel:// (or be "none")',
    )
  }
  const databasePath = resolve(env.DATABASE_PATH || defaultDatabasePath)
  const prefix = env.FAILSOFT_PREFIX || 'failsoft-app'
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) {
    throw new ConfigError('FAILSOFT_PREFIX must be 1 to 64 letters, digits, "-", "_" or "."')
  }
  const adminToken = env.ADMIN_TOKEN ? env.ADMIN_TOKEN : null
  if (adminToken !== null && adminToken.length < 16) {
    throw new ConfigError('ADMIN_TOKEN must be at least 16 characters long')
  }
  const allowedOrigins = (env.ALLOWED_ORIGINS ?? '')
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0)
  for (const origin of allowedOrigins) {
    if (!/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(
        `ALLOWED_ORIGINS entries must look like https://host[:port]: "${origin}"`,
      )
    }
  }
  const logFormat = resolveLogFormat(env.LOG_FORMAT, stdoutIsTTY)
  if (logFormat === null) {
    throw new ConfigError(`LOG_FORMAT must be auto, pretty or json, got "${env.LOG_FORMAT}"`)
  }
  return {
    port: integer(env, 'PORT', 3000, 0, 65_535),
    host: env.HOST || '0.0.0.0',
    redisUrl,
    prefix,
    databasePath,
    spoolPath: resolve(env.SPOOL_PATH || resolve(databasePath, '..', 'spool.jsonl')),
    adminToken,
    allowedOrigins,
    compostEveryMs: integer(env, 'COMPOST_EVERY_MS', 300_000, 1000, 86_400_000),
    runWorker: flag(env, 'RUN_WORKER', true),
    bodyLimitBytes: integer(env, 'BODY_LIMIT_BYTES', 64 * 1024, 1024, 10 * 1024 * 1024),
    wsMessagesPerSecond: integer(env, 'WS_RATE_LIMIT', 10, 1, 1000),
    logLevel: env.LOG_LEVEL || 'info',
    logFormat,
    fastHealth: flag(env, 'FAST_HEALTH', false),
  }
}
