import type { Redis } from 'ioredis'
import { ChannelLayer } from './channels/layer.js'
import type { ChannelLayerInput } from './channels/options.js'
import type { Cache } from './cache/cache.js'
import type { CacheStatus } from './cache/status.js'
import type { ChannelLayerStatus } from './channels/status.js'
import type { TaskQueueStatus } from './tasks/status.js'
import { createCache } from './cache/registry.js'
import type { CacheOptions } from './cache/options.js'
import { ClosedError } from './errors.js'
import type { TaskQueueInput } from './tasks/options.js'
import type { TaskQueue } from './tasks/queue.js'
import { taskQueue } from './tasks/registry.js'
import type { FailsoftContext } from './context.js'
import { HealthMonitor, type Health, type HealthState, type RedisStatus } from './health/monitor.js'
import { resolveOptions, type FailsoftOptions } from './options.js'

/** What every entry of `FailsoftStatus.components` holds, whatever the component. */
export interface ComponentStatus {
  /** Whether the component uses Redis now, or its fallback. */
  backend: 'redis' | 'memory'
  /** Operations its fallback served since the instance started. */
  fallbackOps: number
}

/**
 * `failsoft.status().components`: one entry per component created so far, keyed by its name,
 * each typed by its kind — `components['cache:api']` is a CacheStatus, `channels:<name>` a
 * ChannelLayerStatus, `tasks:<queue>` a TaskQueueStatus (each with ComponentStatus' fields).
 */
export interface ComponentStatuses {
  [cache: `cache:${string}`]: CacheStatus & ComponentStatus
  [layer: `channels:${string}`]: ChannelLayerStatus & ComponentStatus
  [queue: `tasks:${string}`]: TaskQueueStatus & ComponentStatus
  [name: string]: ComponentStatus
}

/** JSON-safe snapshot of an instance, for status pages and readiness probes. */
export interface FailsoftStatus {
  redis: RedisStatus
  components: ComponentStatuses
}

export type { FailsoftContext }

export class Failsoft {
  /** The one health monitor every component reads. */
  readonly health: Health
  readonly #monitor: HealthMonitor
  readonly #context: FailsoftContext
  readonly #channelLayers = new Map<string, ChannelLayer>()
  #closed = false

  constructor(options?: FailsoftOptions) {
    const resolved = resolveOptions(options)
    this.#monitor = new HealthMonitor({
      target: resolved.target,
      prefix: resolved.prefix,
      timings: resolved.timings,
      logger: resolved.logger,
    })
    this.health = this.#monitor
    this.#context = {
      monitor: this.#monitor,
      prefix: resolved.prefix,
      logger: resolved.logger,
      assertOpen: () => {
        if (this.#closed) throw new ClosedError()
      },
    }
  }

  /** @internal Used by the components' factories and by tests. */
  get context(): FailsoftContext {
    return this.#context
  }

  /**
   * Resolves once the first health decision is made: 'up' when Redis answered, 'down' when it
   * did not within `health.connectTimeoutMs` (or at once when the connection is refused, or
   * in memory-only mode). Never rejects. Operations issued before it resolves are served by
   * the fallbacks; none of them waits for a first connection.
   */
  ready(): Promise<HealthState> {
    return this.#monitor.ready()
  }

  /**
   * The channel layer named `options.name` ('default'): created on the first call, the same
   * instance afterwards (so `safeGroupSend` from `failsoft/compat` reaches the consumers the
   * application mounted). Options are only accepted on the call that creates it.
   */
  channels(options?: ChannelLayerInput): ChannelLayer {
    this.#context.assertOpen()
    const name = options?.name ?? 'default'
    const existing = this.#channelLayers.get(name)
    if (existing !== undefined && !existing.closed) {
      const extra = Object.keys(options ?? {}).filter((key) => key !== 'name')
      if (extra.length > 0) {
        throw new RangeError(
          `failsoft: channel layer "${name}" already exists; pass options only on the first channels() call`,
        )
      }
      return existing
    }
    const layer = new ChannelLayer(this.#context, options)
    this.#channelLayers.set(name, layer)
    return layer
  }

  /**
   * The cache for `options.namespace` ('default'): Redis while it is available, a bounded
   * in-process LRU while it is not, reconciled on the way back. The same namespace with the
   * same options returns the same cache.
   */
  cache(options?: Partial<CacheOptions>): Cache {
    return createCache(this.#context, options)
  }

  /**
   * The task queue `options.queue` ('default'): BullMQ while Redis is available; while it is
   * not, each task's fallback (inline, spool or drop). Created on the first call, the same
   * object afterwards; options are only accepted on the call that creates it.
   */
  tasks(options?: TaskQueueInput): TaskQueue {
    return taskQueue(this.#context, options)
  }

  status(): FailsoftStatus {
    return {
      redis: this.#monitor.status(),
      components: this.#monitor.componentStatuses() as ComponentStatuses,
    }
  }

  /**
   * A Redis connection with failsoft's defaults for its role, closed by `close()`. For
   * components and advanced use; most applications never need one.
   */
  connection(role: 'subscriber' | 'blocking', name: string): Redis {
    this.#context.assertOpen()
    return this.#monitor.createConnection(role, name)
  }

  /** Closes every component, connection and timer this instance opened. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#monitor.close()
  }
}

/** Create a failsoft instance: one per process, shared by its cache, channels and tasks. */
export function createFailsoft(options?: FailsoftOptions): Failsoft {
  return new Failsoft(options)
}
