/**
 * `failsoft/keyv`: a Keyv storage adapter on failsoft's cache, so Keyv and cache-manager v7
 * keep answering while Redis is down and never serve a value deleted or overwritten during the
 * outage once it is back.
 *
 * ```ts
 * import Keyv from 'keyv'
 * import { createCache } from 'cache-manager'
 * import { createFailsoft } from 'failsoft'
 * import { failsoftStore } from 'failsoft/keyv'
 *
 * const failsoft = createFailsoft({ redis: process.env.REDIS_URL })
 * const keyv = new Keyv({ store: failsoftStore(failsoft), namespace: 'sessions' })
 * const cache = createCache({ stores: [new Keyv({ store: failsoftStore(failsoft) })] })
 * ```
 *
 * Nothing here imports `keyv` (an optional peer dependency): the store follows Keyv v5's store
 * contract structurally. See docs/keyv.md.
 */
import type { Cache } from './cache/cache.js'
import {
  FailsoftKeyvStore,
  type FailsoftStoreOptions,
  type FailsoftStoreTarget,
} from './keyv/store.js'

export { FailsoftKeyvStore } from './keyv/store.js'
export type {
  FailsoftStoreOptions,
  FailsoftStoreTarget,
  KeyvCacheOptions,
  KeyvStoreEntry,
} from './keyv/store.js'
export { DEFAULT_NAMESPACE_PREFIX, failsoftNamespace } from './keyv/namespace.js'
export { decodeValue, encodeValue, textSerializer } from './keyv/encoding.js'

/**
 * A Keyv store on failsoft. `target` is
 * - a failsoft instance: each Keyv namespace gets its own cache, `keyv.<namespace>` (see
 *   `failsoftNamespace`), created on first use with `options.cache`; `disconnect()` leaves the
 *   instance open;
 * - one of its caches (`failsoft.cache(...)`): every Keyv namespace shares it (keys stay apart,
 *   Keyv prefixes them, but `clear()` empties the whole cache); `disconnect()` leaves it open;
 * - failsoft options (`{ redis: 'redis://…' }`): the store creates its own instance, and
 *   `disconnect()` closes it.
 */
export function failsoftStore(
  target: FailsoftStoreTarget,
  options?: FailsoftStoreOptions,
): FailsoftKeyvStore {
  return new FailsoftKeyvStore(target, options)
}

export type { Cache }
