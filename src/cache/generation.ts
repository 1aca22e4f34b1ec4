import type { CacheBus } from './bus.js'
import type { RedisStore, Runner } from './redis-store.js'
import { PEER_ALIVE_MS } from '../tunables.js'

/** Every this many beats, the beat also lists the peers alive (see `peers`). */
const LIST_PEERS_EVERY = 10

export interface GenerationDeps {
  readonly redis: RedisStore
  readonly run: Runner
  readonly bus: CacheBus | null
  readonly background: (error: unknown) => void
  /** The namespace's write counter went down: Redis forgot writes; the generation moved. */
  readonly onRollback: () => void
  /**
   * This instance is in no peer wait and has settled since it started (its start-up wait, or
   * its decision that none was needed): its marks move the namespace's calm time.
   */
  readonly calm: () => boolean
}

/**
 * The periodic half of the namespace generation: every `generationCheckMs` one script learns a
 * generation moved by another process (every operation on a data key also checks it in its own
 * round trip, so this is not what makes a move visible — it keeps memory copies short-lived and
 * the bus connected) and marks this instance clean for the others' peer waits. After a bump,
 * the old generation's keys are swept.
 */
export class GenerationKeeper {
  readonly #deps: GenerationDeps
  #checking: Promise<void> | null = null
  #sweeping = false
  /** Server time (ms) of this instance's last clean mark; null before the first. */
  lastCleanAt: number | null = null
  /** The namespace's calm time read by the last mark (see RedisStore.calmKey); null: none. */
  calmAt: number | null = null
  /**
   * The other instances of this namespace seen alive in Redis at the last listing (every tenth
   * beat): after Redis is replaced, its members set may have forgotten some of them, and this
   * instance waits for these (see PeerWait). Bounded by the members alive in the last
   * PEER_ALIVE_MS.
   */
  peers: readonly string[] = []
  #beats = 0

  constructor(deps: GenerationDeps) {
    this.#deps = deps
  }

  get checking(): boolean {
    return this.#checking !== null
  }

  /** One check and clean mark. Never rejects. */
  beat(): Promise<void> {
    this.#checking ??= (async () => {
      await this.#deps.bus?.connect()
      const list = this.#beats++ % LIST_PEERS_EVERY === 0
      const { at, peers, rolledBack, calmAt } = await this.#deps.redis.heartbeat(
        this.#deps.run,
        list ? PEER_ALIVE_MS : undefined,
        undefined,
        this.#deps.calm(),
      )
      this.lastCleanAt = at
      this.calmAt = calmAt
      if (peers !== undefined) this.peers = peers
      if (rolledBack) this.#deps.onRollback()
    })()
      .catch((error: unknown) => this.#deps.background(error))
      .finally(() => {
        this.#checking = null
      })
    return this.#checking
  }

  /** After a generation bump, the old generation's keys are unreachable: remove them. */
  sweepSoon(): void {
    if (this.#sweeping) return
    this.#sweeping = true
    this.#deps.redis
      .sweep(this.#deps.run)
      .catch((error: unknown) => this.#deps.background(error))
      .finally(() => {
        this.#sweeping = false
      })
  }
}
