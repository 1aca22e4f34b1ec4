import { LRUCache } from 'lru-cache'
import type { CacheStore } from './store.js'

/**
 * Where a memory entry came from:
 * - `local`: written while Redis was unavailable. The newest value this process knows; its key
 *   is in the journal and is reconciled (deleted in Redis) when Redis returns.
 * - `copy`: a copy of what Redis held when this process last read or wrote it (the warm tier).
 *   Its expiry is capped by `maxStaleSeconds` so that it is never served when older than that.
 */
export type EntryOrigin = 'local' | 'copy'

export interface MemoryEntry {
  readonly text: string
  /** Monotonic ms (the store's clock); Infinity for no expiry. */
  readonly expiresAt: number
  readonly origin: EntryOrigin
}

export interface MemoryStoreOptions {
  /** Most entries held at once; the least recently used is evicted beyond it. */
  maxEntries: number
  /** Most bytes held at once (approximate: UTF-16 size of keys and texts plus per-entry overhead). */
  maxBytes: number
  /** Monotonic clock in ms; injectable for tests. Default `performance.now`. */
  now?: () => number
}

/** Per-entry bookkeeping counted against maxBytes (the entry object, the LRU's slots). */
const ENTRY_OVERHEAD_BYTES = 64

/**
 * The bounded in-process LRU with per-entry TTL. Synchronous: a fallback read costs a map
 * lookup, not a promise. Both bounds hold at every moment (lru-cache evicts before it
 * inserts), so an outage of any length cannot grow the process.
 */
export class MemoryStore implements CacheStore {
  readonly kind = 'memory' as const
  readonly maxEntries: number
  readonly maxBytes: number
  readonly #lru: LRUCache<string, MemoryEntry>
  readonly #now: () => number
  #evictions = 0

  constructor(options: MemoryStoreOptions) {
    this.maxEntries = options.maxEntries
    this.maxBytes = options.maxBytes
    this.#now = options.now ?? (() => performance.now())
    this.#lru = new LRUCache<string, MemoryEntry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry, key) => entrySize(key, entry.text),
      dispose: (_entry, _key, reason) => {
        if (reason === 'evict') this.#evictions++
      },
    })
  }

  get entries(): number {
    return this.#lru.size
  }

  get bytes(): number {
    return this.#lru.calculatedSize
  }

  /** Entries dropped to respect maxEntries / maxBytes since the store was created. */
  get evictions(): number {
    return this.#evictions
  }

  now(): number {
    return this.#now()
  }

  get(key: string): string | undefined {
    return this.entry(key)?.text
  }

  /** The live entry (expired entries are dropped on the way), refreshing its LRU position. */
  entry(key: string): MemoryEntry | undefined {
    const entry = this.#lru.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= this.#now()) {
      this.#lru.delete(key)
      return undefined
    }
    return entry
  }

  set(key: string, text: string, ttlMs: number | null): boolean {
    return this.put(key, text, ttlMs, 'local')
  }

  /**
   * Store an entry; `ttlMs` null means no expiry. False (and any previous entry for the key
   * removed, so a smaller older value is never left behind) when the entry alone exceeds
   * maxBytes.
   */
  put(key: string, text: string, ttlMs: number | null, origin: EntryOrigin): boolean {
    if (entrySize(key, text) > this.maxBytes) {
      this.#lru.delete(key)
      return false
    }
    const expiresAt = ttlMs === null ? Infinity : this.#now() + ttlMs
    this.#lru.set(key, { text, expiresAt, origin })
    return true
  }

  delete(key: string): boolean {
    const entry = this.#lru.peek(key)
    if (entry === undefined) return false
    this.#lru.delete(key)
    return entry.expiresAt > this.#now()
  }

  has(key: string): boolean {
    const entry = this.#lru.peek(key)
    if (entry === undefined) return false
    if (entry.expiresAt <= this.#now()) {
      this.#lru.delete(key)
      return false
    }
    return true
  }

  clear(): void {
    this.#lru.clear()
  }
}

function entrySize(key: string, text: string): number {
  return 2 * (key.length + text.length) + ENTRY_OVERHEAD_BYTES
}
