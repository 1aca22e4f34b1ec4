import type { CacheBus } from './bus.js'
import type { RedisStore, Runner } from './redis-store.js'

export interface GenerationDeps {
  readonly redis: RedisStore
  readonly run: Runner
  readonly bus: CacheBus | null
  readonly background: (error: unknown) => void
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
      const { at } = await this.#deps.redis.heartbeat(this.#deps.run)
      this.lastCleanAt = at
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
