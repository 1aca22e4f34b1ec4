import { pathToFileURL } from 'node:url'
import type { WorkerHandle } from 'failsoft'
import { ConfigError } from './config.js'
import { resolveConfig, type StartOptions } from './main.js'
import { createLogger, createServices, defaultProcessName, type Services } from './services.js'

/**
 * Worker-only mode (`npm run worker`): no HTTP server, just a task worker for the app's
 * queue and the periodic compost schedule, for multi-process setups (start the web
 * processes with RUN_WORKER=0). While Redis is down the worker idles — the web processes
 * run their tasks inline or spool them — and it resumes by itself when Redis is back.
 */

export interface RunningWorker {
  readonly services: Services
  readonly worker: WorkerHandle
  close(): Promise<void>
}

export async function startWorker(
  options: StartOptions & { concurrency?: number } = {},
): Promise<RunningWorker> {
  const { concurrency = 8, ...rest } = options
  const config = resolveConfig(rest)
  const logger = createLogger(config.logLevel, options.logger)
  const processName = options.processName ?? defaultProcessName('worker')
  const services = createServices(config, logger, processName)
  let worker: WorkerHandle
  try {
    worker = services.queue.work({ concurrency })
    await services.failsoft.ready()
    await services.tasks.scheduleCompost(config.compostEveryMs)
  } catch (error) {
    await services.close()
    throw error
  }
  logger.info(
    { process: processName, concurrency, redis: services.failsoft.health.state },
    'task worker started',
  )
  let closed: Promise<void> | null = null
  return {
    services,
    worker,
    close() {
      closed ??= (async () => {
        await worker.close({ timeoutMs: 5000 })
        await services.close()
        logger.info({ process: processName }, 'task worker stopped')
      })()
      return closed
    },
  }
}

async function main(): Promise<void> {
  let running: RunningWorker
  try {
    running = await startWorker()
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error: ${error.message}\n`)
      process.exit(1)
    }
    throw error
  }
  const stop = (signal: string): void => {
    running.services.logger.info({ signal }, 'shutting down')
    const force = setTimeout(() => process.exit(1), 10_000)
    force.unref()
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        running.services.logger.error({ err: error }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.once('SIGINT', () => stop('SIGINT'))
  process.once('SIGTERM', () => stop('SIGTERM'))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`the task worker could not start: ${String(error)}\n`)
    process.exit(1)
  })
}
