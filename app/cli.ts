import { pathToFileURL } from 'node:url'
import { ConfigError } from './config.js'

interface Running {
  services: {
    logger: {
      info(fields: object, message: string): void
      error(fields: object, message: string): void
    }
  }
  close(): Promise<void>
}

/**
 * Run `start` when `moduleUrl` is the process's entry point (`node app/main.ts`, not an import
 * from a test): a configuration error exits 1 with its message, SIGINT/SIGTERM close the app
 * gracefully (forced exit after 10 s).
 */
export function runAsMain(moduleUrl: string, what: string, start: () => Promise<Running>): void {
  if (process.argv[1] === undefined || moduleUrl !== pathToFileURL(process.argv[1]).href) return
  const main = async (): Promise<void> => {
    let running: Running
    try {
      running = await start()
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
  main().catch((error: unknown) => {
    process.stderr.write(`${what} could not start: ${String(error)}\n`)
    process.exit(1)
  })
}
