import type { FailsoftContext } from '../context.js'
import type { HealthMonitor } from '../health/monitor.js'
import { Cache } from './cache.js'
import { resolveCacheOptions, type CacheOptions } from './options.js'

const caches = new WeakMap<
  HealthMonitor,
  Map<string, { cache: Cache; signature: string; serializer: unknown }>
>()

/**
 * `failsoft.cache(options)`: one cache per namespace per instance. Asking again for a
 * namespace with the same options returns the same cache; with different options it is a
 * programmer error (two parts of an app would disagree on TTLs or bounds).
 */
export function createCache(context: FailsoftContext, options?: Partial<CacheOptions>): Cache {
  context.assertOpen()
  const resolved = resolveCacheOptions(options)
  const signature = JSON.stringify({ ...resolved, serializer: undefined })
  let byNamespace = caches.get(context.monitor)
  if (byNamespace === undefined) {
    byNamespace = new Map()
    caches.set(context.monitor, byNamespace)
  }
  const existing = byNamespace.get(resolved.namespace)
  if (existing !== undefined) {
    if (existing.signature === signature && existing.serializer === resolved.serializer) {
      return existing.cache
    }
    throw new RangeError(
      `failsoft: cache namespace "${resolved.namespace}" already exists with other options`,
    )
  }
  const cache = new Cache(context, resolved, () => byNamespace.delete(resolved.namespace))
  byNamespace.set(resolved.namespace, { cache, signature, serializer: resolved.serializer })
  return cache
}
