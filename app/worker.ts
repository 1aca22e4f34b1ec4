import type { WorkerHandle } from 'failsoft'
import { runAsMain } from './cli.js'
import { resolveConfig, type StartOptions } from './main.js'
import {
  createLogger,
  createServices,
  defaultProcessName,
  logStartTarget,
  type Services,
} from './services.js'

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
  const logger = createLogger(config.logLevel, options.logger, config.logFormat)
  const processName = options.processName ?? defaultProcessName('worker')
  logStartTarget(config, logger, processName, 'task worker')
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

runAsMain(import.meta.url, 'the task worker', () => startWorker())
