import { hostname } from 'node:os'
import { createFailsoft, type Cache, type Failsoft, type TaskQueue } from 'failsoft'
import { pino, type Logger } from 'pino'
import type { AppConfig } from './config.js'
import { AppDatabase } from './db.js'
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

export function createLogger(level: string, logger?: Logger | false): Logger {
  if (logger === false) return pino({ level: 'silent' })
  if (logger !== undefined) return logger
  return pino({
    name: 'failsoft-app',
    level,
    // Defence in depth: the app never logs these, but a binding might.
    redact: {
      paths: ['password', '*.password', 'authorization', '*.authorization', 'token'],
      censor: '[redacted]',
    },
  })
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
