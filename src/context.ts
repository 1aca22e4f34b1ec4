import type { HealthMonitor } from './health/monitor.js'
import type { Logger } from './logger.js'

/**
 * What a component receives from `createFailsoft`: the one health monitor, the key prefix and
 * a logger. Components never import each other nor `failsoft.ts` (which imports them); this is
 * their only shared dependency.
 */
export interface FailsoftContext {
  readonly monitor: HealthMonitor
  /** Every Redis key a component writes starts with `${prefix}:`. */
  readonly prefix: string
  readonly logger: Logger
  /** Throws ClosedError once the instance is closed. */
  assertOpen(): void
}
