import type { ResolvedCacheOptions } from './options.js'

/** Options of one write. */
export interface SetOptions {
  /** Seconds until the value expires; `null` for never. Default: the cache's `defaultTtlSeconds`. */
  ttlSeconds?: number | null | undefined
}

/** Counters and bounds of one cache, for `failsoft.status()` and dashboards. JSON-safe. */
export interface CacheStatus {
  backend: 'redis' | 'memory'
  namespace: string
  memoryMode: ResolvedCacheOptions['memory']['mode']
  generation: string | null
  memory: {
    entries: number
    bytes: number
    maxEntries: number
    maxBytes: number
    evictions: number
  }
  journal: { keys: number; maxKeys: number; overflows: number; pendingGenerationBump: boolean }
  /** Operations served from memory because Redis was unavailable, since creation. */
  fallbackOps: number
  /** Keys deleted in Redis by reconciliation, since creation. */
  reconciledKeys: number
  generationBumps: number
  /**
   * Recoveries after which this cache reconciled writes Redis may have forgotten (a restart from
   * older data, a failover; see docs/high-availability.md): their keys deleted, or the
   * generation moved.
   */
  rollbacks: number
  /** Reads served from the memory tier while Redis was up ('l1' mode). */
  memoryHits: number
  /** Redis answered with an error for one command (e.g. OOM): that write failed, the key was invalidated. */
  replyErrors: number
  /** Stored text the serializer could not read back: served as a miss. */
  decodeErrors: number
  /** 'l1' mode: whether other processes' invalidations are being received. */
  busConnected: boolean | null
  /**
   * `getOrSet` loads whose result was returned but not stored because the key was deleted or
   * set (here or in another process) while the loader ran, or its lease expired.
   */
  fillsSuperseded: number
  /**
   * After an outage, reads wait off Redis until the other instances of this namespace confirm
   * their own reconciliation (`peerWaitMs`): whether this instance is waiting now, how many
   * such waits it went through, and how many ended at the deadline with peers unconfirmed.
   */
  peerWait: { waiting: boolean; waits: number; timeouts: number }
}
