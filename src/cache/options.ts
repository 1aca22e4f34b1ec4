import { invalidOption } from '../errors.js'
import { jsonSerializer, type Serializer } from './serializer.js'

/**
 * What the memory tier does while Redis is up:
 * - `'fallback'`: nothing. It serves only while Redis is unavailable, so an outage starts cold.
 * - `'warm'` (default): it keeps a copy of every value this process reads from or writes to
 *   Redis, and serves those copies only while Redis is unavailable, never when they are older
 *   than `maxStaleSeconds` — an outage starts warm, with a known bound on staleness.
 * - `'l1'`: like 'warm', and it also serves reads while Redis is up (a two-level cache).
 *   Other processes' writes and deletes reach it through a Redis pub/sub bus; while the bus
 *   is not connected no read is served from memory.
 */
export type MemoryMode = 'fallback' | 'warm' | 'l1'

export interface MemoryTierOptions {
  /** Most entries held in memory; the least recently used is evicted beyond it. Default 10 000. */
  maxEntries: number
  /** Most bytes held in memory (approximate, UTF-16 size of keys and values). Default 64 MiB. */
  maxBytes: number
  /** See MemoryMode. Default `'warm'`. */
  mode: MemoryMode
  /**
   * Oldest a copy of a Redis value may be when the memory tier serves it, in seconds: counted
   * from when this process last read or wrote it in Redis. Also capped by the key's TTL when
   * known. Values written while Redis was down are the newest the process knows and are not
   * subject to it. Default 60.
   */
  maxStaleSeconds: number
}

export interface CacheOptions {
  /**
   * Keys live under `<prefix>:cache:<namespace>:` in Redis; `clear()` empties one namespace.
   * Letters, digits, `-`, `_`, `.`; 1 to 64 characters. Default `'default'`.
   */
  namespace: string
  /** TTL of a `set` without one, in seconds; `null` for no expiry. Default 300. */
  defaultTtlSeconds: number | null
  /** Longest key, in UTF-16 code units. Default 1024. */
  maxKeyLength: number
  /** Largest serialized value, in bytes (UTF-8). Default 1 MiB. */
  maxValueBytes: number
  /** Value ⇄ text. Default JSON, parsed without prototype pollution. */
  serializer: Serializer
  /** The in-process tier (bounded LRU with TTL). */
  memory: Partial<MemoryTierOptions>
  /**
   * Most keys remembered for reconciliation while Redis is unavailable. Past it, recovery
   * bumps the namespace generation instead (everything written before becomes unreachable in
   * O(1)). Default 100 000.
   */
  journalMaxKeys: number
  /**
   * How often a process checks whether another one moved the namespace generation (after
   * `clear()` or a journal overflow), in ms. Default 200.
   */
  generationCheckMs: number
  /**
   * After an outage, reads stay off Redis (served as during the outage) until every other
   * instance of this namespace that was alive just before has confirmed that its own outage
   * writes are reconciled in Redis — or for at most this long, in ms. Without it, a process
   * back first could read, from Redis, a value another process changed in its memory during
   * the outage and has not deleted in Redis yet. Writes go to Redis meanwhile. 0 turns the
   * wait off. Default 1000.
   */
  peerWaitMs: number
  /**
   * What a peer wait does when it reaches `peerWaitMs` with instances still unconfirmed — cut
   * off, slow, or gone (closed or killed while Redis was down, with the keys it changed in
   * memory never deleted in Redis). `'invalidate'` (default): move the namespace to a new
   * generation before reads return to Redis — nothing is served stale, the cache starts cold
   * (once per outage; several instances timing out together move it once). `'read'`: read from
   * Redis anyway (warm, but a value such a peer changed during the outage is served again until
   * its TTL).
   */
  onPeerTimeout: PeerTimeoutAction
}

export type PeerTimeoutAction = 'invalidate' | 'read'
const PEER_TIMEOUT_ACTIONS: readonly PeerTimeoutAction[] = ['invalidate', 'read']

export interface ResolvedCacheOptions extends Omit<CacheOptions, 'memory'> {
  readonly memory: MemoryTierOptions
}

export const defaultCacheOptions: Readonly<ResolvedCacheOptions> = Object.freeze({
  namespace: 'default',
  defaultTtlSeconds: 300,
  maxKeyLength: 1024,
  maxValueBytes: 1024 * 1024,
  serializer: jsonSerializer,
  memory: Object.freeze({
    maxEntries: 10_000,
    maxBytes: 64 * 1024 * 1024,
    mode: 'warm' as MemoryMode,
    maxStaleSeconds: 60,
  }),
  journalMaxKeys: 100_000,
  generationCheckMs: 200,
  peerWaitMs: 1000,
  onPeerTimeout: 'invalidate' as PeerTimeoutAction,
})

/** Longest TTL accepted, in seconds (a little over 68 years: Redis' PX fits it easily). */
export const MAX_TTL_SECONDS = 2_147_483_647

const NAMESPACE = /^[A-Za-z0-9_.-]{1,64}$/
const KNOWN = new Set(Object.keys(defaultCacheOptions))
const KNOWN_MEMORY = new Set(Object.keys(defaultCacheOptions.memory))
const MODES: readonly MemoryMode[] = ['fallback', 'warm', 'l1']

export function resolveCacheOptions(input: unknown): ResolvedCacheOptions {
  if (input === undefined) input = {}
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('cache options', 'an object', input)
  }
  const given = input as Record<string, unknown>
  for (const key of Object.keys(given)) {
    if (!KNOWN.has(key)) {
      throw invalidOption(`cache.${key}`, `one of ${[...KNOWN].join(', ')} (unknown option)`, key)
    }
  }
  const d = defaultCacheOptions
  const namespace = given.namespace ?? d.namespace
  if (typeof namespace !== 'string') throw invalidOption('cache.namespace', 'a string', namespace)
  if (!NAMESPACE.test(namespace)) {
    throw invalidOption(
      'cache.namespace',
      '1 to 64 letters, digits, "-", "_" or "."',
      namespace,
      'range',
    )
  }
  let defaultTtlSeconds: number | null = d.defaultTtlSeconds
  if (given.defaultTtlSeconds !== undefined) {
    defaultTtlSeconds =
      given.defaultTtlSeconds === null
        ? null
        : number('cache.defaultTtlSeconds', given.defaultTtlSeconds, 0.001, MAX_TTL_SECONDS)
  }
  const serializer = given.serializer ?? d.serializer
  if (
    typeof serializer !== 'object' ||
    serializer === null ||
    typeof (serializer as Serializer).serialize !== 'function' ||
    typeof (serializer as Serializer).deserialize !== 'function'
  ) {
    throw invalidOption(
      'cache.serializer',
      'an object with serialize(value) and deserialize(text) functions',
      serializer,
    )
  }
  return {
    namespace,
    defaultTtlSeconds,
    maxKeyLength: integer('cache.maxKeyLength', given.maxKeyLength, d.maxKeyLength, 1, 65_536),
    maxValueBytes: integer(
      'cache.maxValueBytes',
      given.maxValueBytes,
      d.maxValueBytes,
      1,
      512 * 1024 * 1024,
    ),
    serializer: serializer as Serializer,
    memory: resolveMemory(given.memory),
    journalMaxKeys: integer(
      'cache.journalMaxKeys',
      given.journalMaxKeys,
      d.journalMaxKeys,
      1,
      10_000_000,
    ),
    generationCheckMs: integer(
      'cache.generationCheckMs',
      given.generationCheckMs,
      d.generationCheckMs,
      10,
      3_600_000,
    ),
    peerWaitMs: integer('cache.peerWaitMs', given.peerWaitMs, d.peerWaitMs, 0, 60_000),
    onPeerTimeout: oneOf(
      'cache.onPeerTimeout',
      given.onPeerTimeout,
      d.onPeerTimeout,
      PEER_TIMEOUT_ACTIONS,
    ),
  }
}

function resolveMemory(input: unknown): MemoryTierOptions {
  const d = defaultCacheOptions.memory
  if (input === undefined) return { ...d }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('cache.memory', 'an object', input)
  }
  const given = input as Record<string, unknown>
  for (const key of Object.keys(given)) {
    if (!KNOWN_MEMORY.has(key)) {
      throw invalidOption(
        `cache.memory.${key}`,
        `one of ${[...KNOWN_MEMORY].join(', ')} (unknown option)`,
        key,
      )
    }
  }
  const mode = given.mode ?? d.mode
  if (typeof mode !== 'string' || !MODES.includes(mode as MemoryMode)) {
    throw invalidOption('cache.memory.mode', `one of ${MODES.join(', ')}`, mode)
  }
  return {
    maxEntries: integer('cache.memory.maxEntries', given.maxEntries, d.maxEntries, 1, 100_000_000),
    maxBytes: integer('cache.memory.maxBytes', given.maxBytes, d.maxBytes, 1024, 2 ** 40),
    mode: mode as MemoryMode,
    maxStaleSeconds: number(
      'cache.memory.maxStaleSeconds',
      given.maxStaleSeconds ?? d.maxStaleSeconds,
      0,
      MAX_TTL_SECONDS,
    ),
  }
}

function number(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalidOption(name, 'a finite number', value)
  }
  if (value < min || value > max) {
    throw invalidOption(name, `between ${min} and ${max}`, value, 'range')
  }
  return value
}

function oneOf<T extends string>(
  name: string,
  value: unknown,
  fallback: T,
  allowed: readonly T[],
): T {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    throw invalidOption(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value)
  }
  return value as T
}

function integer(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw invalidOption(name, 'an integer', value)
  }
  if (value < min || value > max) {
    throw invalidOption(name, `between ${min} and ${max}`, value, 'range')
  }
  return value
}
