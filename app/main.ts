import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ChannelWebSocketServer, WorkerHandle } from 'failsoft'
import type { Logger } from 'pino'
import { contentRoutes } from './api/content-views.js'
import { impactRoutes } from './api/impact-views.js'
import { projectRoutes } from './api/projects.js'
import { runAsMain } from './cli.js'
import { loadConfig, type AppConfig } from './config.js'
import { chatAndPollConsumer, originVerifier, pollRoutes } from './consumers.js'
import { Router, sendJson, sendText, staticFiles } from './http.js'
import { createMetrics } from './metrics.js'
import {
  createLogger,
  createServices,
  defaultProcessName,
  logStartTarget,
  type Services,
} from './services.js'
import { StatusHub, statusRoutes } from './status.js'

/**
 * The reference app's web process: HTTP API + static page + WebSocket endpoint, with a task
 * worker inside unless RUN_WORKER=0. `npm start` runs it; `startApp()` runs it in a test.
 */

export interface StartOptions extends Partial<AppConfig> {
  /** A pino logger, or false for none. Default: pino to stdout at `logLevel`. */
  logger?: Logger | false
  /** Shown in the UI and written with each side effect. Default `web-<host>-<pid>`. */
  processName?: string
  /** Environment read for the options not given. Default `process.env`. */
  env?: NodeJS.ProcessEnv
}

export interface RunningApp {
  /** `http://127.0.0.1:<port>` (or the host it listens on). */
  readonly url: string
  readonly port: number
  readonly services: Services
  close(): Promise<void>
}

const publicDir = resolve(dirname(fileURLToPath(import.meta.url)), 'public')

export function resolveConfig(options: StartOptions): AppConfig {
  const { logger: _logger, processName: _name, env, ...overrides } = options
  const base = loadConfig(env ?? process.env)
  const config: AppConfig = { ...base }
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) (config as unknown as Record<string, unknown>)[key] = value
  }
  // A database given without a spool path gets its spool next to it.
  if (overrides.databasePath !== undefined && overrides.spoolPath === undefined) {
    config.spoolPath = resolve(dirname(config.databasePath), 'spool.jsonl')
  }
  return config
}

export async function startApp(options: StartOptions = {}): Promise<RunningApp> {
  const config = resolveConfig(options)
  const logger = createLogger(config.logLevel, options.logger, config.logFormat)
  const processName = options.processName ?? defaultProcessName('web')
  logStartTarget(config, logger, processName, 'reference app')
  const services = createServices(config, logger, processName)
  const { db, failsoft, cache, queue, tasks } = services
  const layer = failsoft.channels({ capacity: 100, expirySeconds: 60 })

  let worker: WorkerHandle | null = null
  let wsServer: ChannelWebSocketServer | null = null
  let hub: StatusHub | null = null
  let closing = false
  const server = createServer()
  const metrics = createMetrics({ failsoft })
  try {
    tasks.onDispatch((record) => metrics.recordDispatch(record))
    hub = new StatusHub({
      failsoft,
      layer,
      queue,
      tasks,
      processName,
      adminEnabled: config.adminToken !== null,
    })

    const router = new Router({
      bodyLimitBytes: config.bodyLimitBytes,
      logger: logger.child({ component: 'http' }),
    })
    router.get('/healthz', () => ({ body: { status: 'ok' } }))
    router.get('/readyz', () => {
      // Ready even while degraded: every feature is served from a fallback. Only a process
      // that is shutting down is not ready.
      if (closing) return { status: 503, body: { status: 'shutting-down' } }
      const redis = failsoft.health
      return {
        body: {
          status: redis.available ? 'ok' : 'degraded',
          redis: redis.state,
          forced: redis.forced,
          process: processName,
        },
      }
    })
    router.get('/metrics', async ({ res }) => {
      sendText(res, 200, await metrics.text(), metrics.contentType)
      return {}
    })
    projectRoutes(router, { db, cache, tasks })
    impactRoutes(router, { db, tasks, failsoft })
    contentRoutes(router, { db, tasks })
    pollRoutes(router, { db })
    statusRoutes(router, { hub, failsoft, adminToken: config.adminToken, logger })

    const serveStatic = staticFiles(publicDir)
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const started = performance.now()
      let route = 'unmatched'
      res.on('finish', () =>
        metrics.recordRequest(
          req.method ?? 'GET',
          route,
          res.statusCode,
          (performance.now() - started) / 1000,
        ),
      )
      let url: URL
      try {
        url = new URL(req.url ?? '/', 'http://localhost')
      } catch {
        sendJson(res, 400, { error: { code: 'bad_request', message: 'malformed URL' } })
        return
      }
      router.handle(req, res, url).then(
        (matched) => {
          if (matched !== null) {
            route = matched
            return
          }
          if (serveStatic(req, res, url)) {
            route = 'static'
            return
          }
          sendJson(res, 404, { error: { code: 'not_found', message: 'no such route' } })
        },
        (error: unknown) => router.fail(req, res, error),
      )
    })
    server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
      else socket.destroy()
    })
    server.headersTimeout = 10_000
    server.requestTimeout = 30_000

    wsServer = layer.websocket({
      server,
      path: '/ws',
      consumer: chatAndPollConsumer({
        db,
        layer,
        hub,
        logger: logger.child({ component: 'ws' }),
        processName,
      }),
      verifyOrigin: originVerifier(config.allowedOrigins),
      rateLimit: { messages: config.wsMessagesPerSecond, intervalMs: 1000 },
      maxPayloadBytes: 8 * 1024,
      heartbeatMs: 20_000,
    })

    if (config.runWorker) worker = queue.work({ concurrency: 4 })
    await failsoft.ready()
    await tasks.scheduleCompost(config.compostEveryMs)
    if (db.seeded) {
      // A new database: embed the seeded projects through the task queue, like any new one.
      for (const project of db.listProjects()) await tasks.embedProject(project)
    }

    await new Promise<void>((done, fail) => {
      server.once('error', fail)
      server.listen(config.port, config.host, () => {
        server.off('error', fail)
        done()
      })
    })
  } catch (error) {
    hub?.close()
    metrics.close()
    await wsServer?.close()
    await worker?.close()
    await services.close()
    if (server.listening) server.close()
    throw error
  }

  const address = server.address() as AddressInfo
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`
  logger.info(
    {
      url,
      process: processName,
      redis: failsoft.health.state,
      target: failsoft.status().redis.target,
      database: config.databasePath,
      worker: config.runWorker,
    },
    'reference app listening',
  )

  let closed: Promise<void> | null = null
  return {
    url,
    port: address.port,
    services,
    close() {
      closed ??= (async () => {
        closing = true
        hub?.close()
        metrics.close()
        const stopped = new Promise<void>((done) => server.close(() => done()))
        server.closeIdleConnections()
        await wsServer?.close()
        // Jobs are short; a shutdown does not wait for a stuck one longer than this.
        await worker?.close({ timeoutMs: 5000 })
        await services.close()
        server.closeAllConnections()
        await stopped
        logger.info({ process: processName }, 'reference app stopped')
      })()
      return closed
    },
  }
}

runAsMain(import.meta.url, 'the reference app', () => startApp())
