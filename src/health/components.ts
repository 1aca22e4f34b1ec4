import { loggableError, type Logger } from '../logger.js'
import type { ComponentHandle, ComponentRegistration } from './types.js'

interface Registered {
  readonly registration: ComponentRegistration
  readonly logger: Logger
  fallbackOps: number
}

/**
 * The components registered with one health monitor (the cache namespaces, the channel layers,
 * the task queues), in registration order: their recovery steps, clean checks, status and
 * close, the per-component logger, and the count of operations each served from its fallback.
 * Components never import each other; they meet only here.
 */
export class Components {
  readonly #rootLogger: Logger
  readonly #entries: Registered[] = []
  /** Operations served by the fallbacks since the current outage began (for the INFO line). */
  outageFallbackOps = 0

  constructor(rootLogger: Logger) {
    this.#rootLogger = rootLogger
  }

  add(registration: ComponentRegistration, onAdded: (logger: Logger) => void): ComponentHandle {
    if (this.#entries.some((c) => c.registration.name === registration.name)) {
      throw new RangeError(
        `failsoft: a component named "${registration.name}" is already registered`,
      )
    }
    const entry: Registered = {
      registration,
      logger: this.#rootLogger.child({ component: registration.name }),
      fallbackOps: 0,
    }
    this.#entries.push(entry)
    onAdded(entry.logger)
    return {
      logger: entry.logger,
      get fallbackOps() {
        return entry.fallbackOps
      },
      recordFallback: (count = 1) => {
        entry.fallbackOps += count
        this.outageFallbackOps += count
      },
      dispose: () => {
        const index = this.#entries.indexOf(entry)
        if (index >= 0) this.#entries.splice(index, 1)
      },
    }
  }

  registrations(): ComponentRegistration[] {
    return this.#entries.map((c) => c.registration)
  }

  /** True when some component says work arrived during its recovery step. */
  dirty(): boolean {
    return this.#entries.some((c) => c.registration.needsRecovery?.() === true)
  }

  get fallbackOps(): number {
    return this.#entries.reduce((sum, c) => sum + c.fallbackOps, 0)
  }

  /** One WARNING per component: its fallback takes over. */
  warnFallbacks(forced: boolean): void {
    for (const entry of this.#entries) warnFallback(entry.logger, entry.registration, forced)
  }

  statuses(
    available: boolean,
  ): Record<string, { backend: 'redis' | 'memory'; fallbackOps: number }> {
    const out: Record<string, { backend: 'redis' | 'memory'; fallbackOps: number }> = {}
    for (const c of this.#entries) {
      out[c.registration.name] = {
        backend: available ? 'redis' : 'memory',
        fallbackOps: c.fallbackOps,
        ...c.registration.status?.(),
      }
    }
    return out
  }

  /** `failsoft.close()`: every component, last registered first; a failure is logged, not thrown. */
  async closeAll(): Promise<void> {
    for (const entry of [...this.#entries].reverse()) {
      try {
        await entry.registration.close?.()
      } catch (error) {
        entry.logger.error({ err: loggableError(error) }, 'component failed to close cleanly')
      }
    }
  }
}

export function warnFallback(
  logger: Logger,
  registration: ComponentRegistration,
  forced: boolean,
): void {
  logger.warn(
    { fallback: registration.fallback, forced },
    `${registration.name} is using its fallback: ${registration.fallback}`,
  )
}
