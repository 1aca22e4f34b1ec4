import type { Logger } from '../logger.js'

/**
 * Logs at most one line per kind of event per period: outages and bad input repeat, and a log
 * line per occurrence would bury the transition lines that matter.
 */
export class LogLimiter {
  readonly #last = new Map<string, number>()

  constructor(
    private readonly logger: Logger,
    private readonly everyMs: number,
  ) {}

  log(
    kind: string,
    level: 'warn' | 'error',
    fields: Record<string, unknown>,
    message: string,
  ): void {
    const now = Date.now()
    if (now - (this.#last.get(kind) ?? 0) < this.everyMs) return
    this.#last.set(kind, now)
    this.logger[level](fields, message)
  }
}
