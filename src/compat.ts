/**
 * The seed's function names, for code ported from it: `safeCacheGet/Set/Delete`,
 * `safeGroupSend` and `executeTaskSync`, on a default instance configured from `REDIS_URL`
 * (or by `configureDefault(options)` before the first call). None of them ever throws.
 *
 * ```ts
 * import { safeCacheGet, safeCacheSet } from 'failsoft/compat'
 * const projects = await safeCacheGet('projects', [])
 * ```
 */
import { createFailsoft, type Failsoft } from './failsoft.js'
import type { FailsoftOptions } from './options.js'

let defaultInstance: Failsoft | null = null
let defaultOptions: FailsoftOptions | null = null

/**
 * Configure the default instance used by the compat functions. Call it once at start-up,
 * before the first compat call; calling it again replaces (and closes) the previous one.
 */
export async function configureDefault(options: FailsoftOptions): Promise<Failsoft> {
  const previous = defaultInstance
  defaultInstance = null
  defaultOptions = options
  if (previous) await previous.close()
  return getDefault()
}

/** The default instance, created on first use from `configureDefault` or `REDIS_URL`. */
export function getDefault(): Failsoft {
  if (defaultInstance === null) {
    defaultInstance = createFailsoft(
      defaultOptions ?? { redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    )
  }
  return defaultInstance
}

/** Close the default instance (tests, graceful shutdown). The next compat call creates a new one. */
export async function closeDefault(): Promise<void> {
  const instance = defaultInstance
  defaultInstance = null
  if (instance) await instance.close()
}
