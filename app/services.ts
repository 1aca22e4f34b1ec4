import { hostname } from 'node:os'
import { createFailsoft, type Cache, type Failsoft, type TaskQueue } from 'failsoft'
import { pino, type Logger } from 'pino'
import { ConfigError, DEFAULT_REDIS_URL, type AppConfig } from './config.js'
import { AppDatabase } from './db.js'
import { prettyDestination, type LogFormat } from './log-format.js'
import { AppTasks } from './tasks.js'

/**
 * What the web process and the worker-only process share: the database, ONE failsoft
 * instance (one health monitor for cache, channels and tasks), the projects cache and the
 * task queue with the app's tasks defined on it.
 */
export interface Services {
  config: AppConfig
  logger: Logger
  processName: string
  db: AppDatabase
  failsoft: Failsoft
  cache: Cache
  queue: TaskQueue
  tasks: AppTasks
  close(): Promise<void>
}

export function createLogger(
  level: string,
  logger?: Logger | false,
  format: LogFormat = 'json',
): Logger {
  if (logger === false) return pino({ level: 'silent' })
  if (logger !== undefined) return logger
  const options = {
    name: 'failsoft-app',
    level,
    // Defence in depth: the app never logs these, but a binding might.
    redact: {
      paths: ['password', '*.password', 'authorization', '*.authorization', 'token'],
      censor: '[redacted]',
    },
  }
  return format === 'pretty' ? pino(options, prettyDestination()) : pino(options)
}

/** host:port/db of a redis:// URL — never its credentials; null if it cannot be parsed. */
export function redisTargetLabel(redisUrl: string): string | null {
  try {
    const url = new URL(redisUrl)
    const db = url.pathname.replace(/^\//, '') || url.searchParams.get('db') || '0'
    return `${url.hostname || '127.0.0.1'}:${url.port || '6379'}/${db}`
  } catch {
    return null // createFailsoft refuses it with a ConfigError that says why
  }
}

/**
 * The first line a process logs (before failsoft opens anything): where its Redis is
 * (host:port/db, never a credential) and the prefix of every key it writes there. Plain
 * `npm start` connects to whatever Redis listens on 127.0.0.1:6379: the line says so.
 */
export function logStartTarget(
  config: AppConfig,
  logger: Logger,
  processName: string,
  role: string,
): void {
  if (config.redisUrl === null) {
    logger.info(
      { redis: 'none', prefix: `${config.prefix}:`, process: processName },
      `${role} starting without Redis (memory-only: REDIS_URL=none, no socket is opened)`,
    )
    return
  }
  const target = redisTargetLabel(config.redisUrl)
  if (target === null) return
  const note = config.redisUrl === DEFAULT_REDIS_URL ? ' (the default: REDIS_URL is unset)' : ''
  logger.info(
    { redis: target, prefix: `${config.prefix}:`, process: processName },
    `${role} starting: Redis at ${target}${note}, every key under "${config.prefix}:"`,
  )
}

export function defaultProcessName(role: 'web' | 'worker'): string {
  return `${role}-${hostname().slice(0, 20)}-${process.pid}`
}

export function createServices(config: AppConfig, logger: Logger, processName: string): Services {
  const db = new AppDatabase(config.databasePath)
  let failsoft: Failsoft
  try {
    failsoft = createFailsoft({
      redis: config.redisUrl,
      prefix: config.prefix,
      logger: logger.child({ lib: 'failsoft' }),
      ...(config.fastHealth && { health: { probeIntervalMs: 50, connectTimeoutMs: 500 } }),
    })
  } catch (error) {
    db.close()
    const { code, option, message } = error as {
      code?: unknown
      option?: unknown
      message?: string
    }
    if (code === 'FAILSOFT_INVALID_OPTION' && option === 'redis') {
      // failsoft's message says what is wrong without echoing the URL (it may hold a password).
      throw new ConfigError(
        `REDIS_URL ${String(message).replace(/^failsoft: option `redis` /, '')}`,
      )
    }
    throw error
  }
  const cache = failsoft.cache({ namespace: 'projects', defaultTtlSeconds: 300 })
  const queue = failsoft.tasks({ queue: 'app', spool: { path: config.spoolPath } })
  const tasks = new AppTasks(queue, {
    db,
    cache,
    logger: logger.child({ component: 'tasks' }),
    processName,
  })
  let closed = false
  return {
    config,
    logger,
    processName,
    db,
    failsoft,
    cache,
    queue,
    tasks,
    async close() {
      if (closed) return
      closed = true
      try {
        await failsoft.close()
      } finally {
        db.close()
      }
    },
  }
}
