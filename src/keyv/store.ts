import { EventEmitter } from 'node:events'
import type { Cache } from '../cache/cache.js'
import { InvalidTtlError, InvalidValueError } from '../cache/errors.js'
import type { CacheOptions } from '../cache/options.js'
import { invalidOption } from '../errors.js'
import { createFailsoft, type Failsoft } from '../failsoft.js'
import type { FailsoftOptions } from '../options.js'
import { decodeValue, encodeValue, textSerializer, UnencodableValueError } from './encoding.js'
import { checkNamespacePrefix, DEFAULT_NAMESPACE_PREFIX, failsoftNamespace } from './namespace.js'

/** Options of the caches the store creates, one per Keyv namespace. */
export type KeyvCacheOptions = Omit<
  Partial<CacheOptions>,
  'namespace' | 'serializer' | 'defaultTtlSeconds'
>

export interface FailsoftStoreOptions {
  /**
   * Options of the failsoft caches the store creates (bounds, memory mode …): everything but
   * `namespace` (mapped from Keyv's), `serializer` (the store's own) and `defaultTtlSeconds`
   * (Keyv decides every TTL: its `ttl` option, or none). Checked by `failsoft.cache()` when a
   * namespace is first used: a mistake is an `error` event at the first operation.
   * Only with a failsoft instance (or its options), not with a cache.
   */
  cache?: KeyvCacheOptions
  /**
   * Failsoft namespace of a Keyv namespace: `<namespacePrefix>.<keyv namespace>` (see
   * `failsoftNamespace`). `''` uses the Keyv namespace itself. Default `'keyv'`.
   * Only with a failsoft instance (or its options), not with a cache.
   */
  namespacePrefix?: string
}

/** What the store works on. */
export type FailsoftStoreTarget = Failsoft | Cache | FailsoftOptions

/** One entry of `setMany`, as Keyv passes it (`ttl` in milliseconds). */
export interface KeyvStoreEntry {
  key: string
  value: unknown
  ttl?: number | undefined
}

type Source =
  | { readonly kind: 'failsoft'; readonly failsoft: Failsoft; readonly owned: boolean }
  | { readonly kind: 'cache'; readonly cache: Cache }

/**
 * A Keyv storage adapter on failsoft's cache: Redis while it answers, the bounded in-process
 * memory tier while it does not, reconciled on the way back (a key deleted or overwritten
 * during an outage is never served again afterwards).
 *
 * It follows Keyv v5's store contract without importing Keyv. No method ever rejects: a
 * programmer error (a key too long, a value too large or not serializable, a bad TTL, a closed
 * instance) is emitted as an `error` event, which Keyv forwards to its own `error` listeners,
 * and the operation answers like a miss (`undefined`, `false`). Redis being down is not an
 * error at all: failsoft answers from memory.
 */
export class FailsoftKeyvStore extends EventEmitter {
  /**
   * The Keyv namespace, set by Keyv (its `namespace` option, `'keyv'` by default; also when
   * `keyv.namespace` is assigned). Each namespace is its own failsoft cache, so `clear()`
   * empties only this one. Use one store per Keyv: a store shared by two Keyvs has the
   * namespace of the last one, as with every Keyv store.
   */
  namespace: string | undefined = undefined
  /** Part of Keyv's store shape (Keyv and its test suite read and write it); unused here. */
  readonly opts: Record<string, unknown> = { dialect: 'failsoft' }

  readonly #source: Source
  readonly #cacheOptions: KeyvCacheOptions
  readonly #prefix: string
  readonly #caches = new Map<string | undefined, Cache>()
  #lastNamespace: string | undefined = undefined
  #last: Cache | null = null
  readonly #warned = new Set<string>()

  constructor(target: FailsoftStoreTarget, options: FailsoftStoreOptions = {}) {
    super()
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw invalidOption('keyv store options', 'an object', options)
    }
    for (const key of Object.keys(options)) {
      if (key !== 'cache' && key !== 'namespacePrefix') {
        throw invalidOption(`keyv.${key}`, 'one of cache, namespacePrefix (unknown option)', key)
      }
    }
    this.#prefix = checkNamespacePrefix(
      options.namespacePrefix ?? DEFAULT_NAMESPACE_PREFIX,
      'keyv.namespacePrefix',
    )
    this.#cacheOptions = checkCacheOptions(options.cache)
    if (isCache(target)) {
      if (options.cache !== undefined || options.namespacePrefix !== undefined) {
        throw new TypeError(
          'failsoft/keyv: `cache` and `namespacePrefix` apply to the caches the store creates; with a cache given, configure that cache instead',
        )
      }
      this.#source = { kind: 'cache', cache: target }
    } else if (isFailsoft(target)) {
      this.#source = { kind: 'failsoft', failsoft: target, owned: false }
    } else if (typeof target === 'object' && target !== null && !Array.isArray(target)) {
      this.#source = { kind: 'failsoft', failsoft: createFailsoft(target), owned: true }
    } else {
      throw invalidOption(
        'keyv store target',
        'a failsoft instance, one of its caches or failsoft options',
        target,
      )
    }
  }

  /**
   * The failsoft cache that holds a Keyv namespace (default: the store's current one), for
   * `status()`, `backend` or `getOrSet`. Throws, unlike the Keyv methods, if it cannot be
   * created (the instance is closed, the namespace exists with other options).
   */
  cacheFor(keyvNamespace: string | undefined = this.namespace): Cache {
    const source = this.#source
    if (source.kind === 'cache') return source.cache
    let cache = this.#caches.get(keyvNamespace)
    if (cache === undefined) {
      cache = source.failsoft.cache({
        ...this.#cacheOptions,
        namespace: failsoftNamespace(keyvNamespace, this.#prefix),
        serializer: textSerializer,
        defaultTtlSeconds: null,
      })
      this.#caches.set(keyvNamespace, cache)
    }
    return cache
  }

  // ── Keyv's store contract ──────────────────────────────────────────────────────────────────

  /**
   * The value Keyv stored (its serialized string, or its object), or undefined. `Value` is
   * only what the caller expects (as in Keyv's own type for a store): nothing is checked.
   */
  async get<Value = unknown>(key: string): Promise<Value | undefined> {
    try {
      const text = await this.#cache().get<string>(key)
      return text === undefined ? undefined : (this.#decode(key, text) as Value | undefined)
    } catch (error) {
      this.#report(error)
      return undefined
    }
  }

  async getMany<Value = unknown>(keys: string[]): Promise<Array<Value | undefined>> {
    if (!Array.isArray(keys)) {
      this.#report(new TypeError('failsoft/keyv: getMany expects an array of keys'))
      return []
    }
    return Promise.all(keys.map((key) => this.get<Value>(key)))
  }

  /**
   * Store a value; `ttl` in milliseconds as Keyv gives it. `undefined` or 0 means no expiry,
   * stored without one (never a default TTL). Resolves false when the value was not stored:
   * a programmer error (emitted), or a write failsoft refused (Redis OOM, or a value larger
   * than the memory tier while memory is the active backend; counted in the cache's status).
   */
  async set(key: string, value: unknown, ttl?: number): Promise<boolean> {
    try {
      const ttlSeconds = toTtlSeconds(ttl)
      const cache = this.#cache()
      return await cache.set(key, this.#encode(key, value), { ttlSeconds })
    } catch (error) {
      this.#report(error)
      return false
    }
  }

  async setMany(entries: KeyvStoreEntry[]): Promise<boolean[]> {
    if (!Array.isArray(entries)) {
      this.#report(new TypeError('failsoft/keyv: setMany expects an array of { key, value, ttl }'))
      return []
    }
    return Promise.all(
      entries.map(async (entry) => {
        if (typeof entry === 'object' && entry !== null) {
          return this.set(entry.key, entry.value, entry.ttl)
        }
        this.#report(
          new TypeError('failsoft/keyv: a setMany entry is an object { key, value, ttl }'),
        )
        return false
      }),
    )
  }

  /** True when the key existed (in the active backend). */
  async delete(key: string): Promise<boolean> {
    try {
      return await this.#cache().delete(key)
    } catch (error) {
      this.#report(error)
      return false
    }
  }

  /** Deletes every key; true when at least one of them existed (as @keyv/redis answers). */
  async deleteMany(keys: string[]): Promise<boolean> {
    if (!Array.isArray(keys)) {
      this.#report(new TypeError('failsoft/keyv: deleteMany expects an array of keys'))
      return false
    }
    const deleted = await Promise.all(keys.map((key) => this.delete(key)))
    return deleted.some(Boolean)
  }

  async has(key: string): Promise<boolean> {
    try {
      return await this.#cache().has(key)
    } catch (error) {
      this.#report(error)
      return false
    }
  }

  async hasMany(keys: string[]): Promise<boolean[]> {
    if (!Array.isArray(keys)) {
      this.#report(new TypeError('failsoft/keyv: hasMany expects an array of keys'))
      return []
    }
    return Promise.all(keys.map((key) => this.has(key)))
  }

  /**
   * Empties this Keyv namespace: its failsoft cache (a new generation in Redis, then the old
   * keys removed; while Redis is down, memory now and Redis at recovery). Never FLUSHDB. With
   * a cache given to the store, that whole cache.
   */
  async clear(): Promise<void> {
    try {
      await this.#cache().clear()
    } catch (error) {
      this.#report(error)
    }
  }

  /**
   * Closes the failsoft instance only if the store created it (from failsoft options). A
   * failsoft instance or cache you passed in stays open: close it yourself, it may serve others.
   */
  async disconnect(): Promise<void> {
    const source = this.#source
    if (source.kind !== 'failsoft' || !source.owned) return
    try {
      await source.failsoft.close()
    } catch (error) {
      this.#report(error)
    }
  }

  // ── internals ──────────────────────────────────────────────────────────────────────────────

  /** The cache of the current namespace: one comparison when the namespace did not change. */
  #cache(): Cache {
    const namespace = this.namespace
    if (this.#last !== null && this.#lastNamespace === namespace) return this.#last
    const cache = this.cacheFor(namespace)
    this.#last = cache
    this.#lastNamespace = namespace
    return cache
  }

  #encode(key: string, value: unknown): string {
    try {
      return encodeValue(value)
    } catch (error) {
      if (error instanceof UnencodableValueError) {
        throw new InvalidValueError(String(key), value, error.message, error.cause)
      }
      throw error
    }
  }

  #decode(key: string, text: string): unknown {
    const value = decodeValue(text)
    if (value === undefined) {
      this.#report(
        new Error(
          `failsoft/keyv: the text stored under "${String(key).slice(0, 120)}" was not written by this store; served as a miss`,
        ),
      )
    }
    return value
  }

  /**
   * Errors go to the `error` event (Keyv listens and forwards them). Without any listener they
   * would be lost: each distinct kind is then written once as a process warning instead.
   */
  #report(error: unknown): void {
    if (this.listenerCount('error') > 0) {
      this.emit('error', error)
      return
    }
    const code = (error as { code?: unknown } | null)?.code
    const kind = typeof code === 'string' ? code : error instanceof Error ? error.name : 'other'
    if (this.#warned.has(kind)) return
    this.#warned.add(kind)
    process.emitWarning(
      `failsoft/keyv: ${error instanceof Error ? error.message : String(error)} (no 'error' listener; further ${kind} errors are not reported)`,
    )
  }
}

/**
 * Keyv's TTL (milliseconds) → failsoft's (seconds). Keyv means "no expiry" by `undefined`
 * (and turns 0 into it): stored with `ttlSeconds: null`, never with the cache's default.
 */
function toTtlSeconds(ttl: unknown): number | null {
  if (ttl === undefined || ttl === null || ttl === 0) return null
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) {
    throw new InvalidTtlError(
      ttl,
      'a Keyv ttl is a positive number of milliseconds (0 or undefined: no expiry)',
    )
  }
  return ttl / 1000
}

function checkCacheOptions(options: unknown): KeyvCacheOptions {
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOption('keyv.cache', 'an object of cache options', options)
  }
  for (const key of ['namespace', 'serializer', 'defaultTtlSeconds']) {
    if (key in options) {
      throw invalidOption(
        `keyv.cache.${key}`,
        'left out (the store sets it: namespaces follow Keyv, TTLs are Keyv’s)',
        (options as Record<string, unknown>)[key],
      )
    }
  }
  return options as KeyvCacheOptions
}

function isCache(target: unknown): target is Cache {
  const t = target as Partial<Cache> | null
  return (
    typeof t === 'object' &&
    t !== null &&
    typeof t.getOrSet === 'function' &&
    typeof t.clear === 'function' &&
    typeof t.namespace === 'string'
  )
}

function isFailsoft(target: unknown): target is Failsoft {
  const t = target as Partial<Failsoft> | null
  return (
    typeof t === 'object' &&
    t !== null &&
    typeof t.cache === 'function' &&
    typeof t.close === 'function'
  )
}
