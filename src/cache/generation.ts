import type { CacheBus } from './bus.js'
import type { RedisStore, Runner } from './redis-store.js'

export interface GenerationDeps {
  readonly redis: RedisStore
  readonly run: Runner
  readonly bus: CacheBus | null
  /** The fence window (see `fresh`), in ms. */
  readonly fenceMs: number
  /** The generation moved (adopted already): memory copies belong to the old one. */
  readonly onChanged: () => void
  readonly background: (error: unknown) => void
}

/**
 * This instance's hold on the namespace generation. Every `generationCheckMs` (and on demand)
 * one script learns a generation moved by another process, marks this instance clean for the
 * others' peer waits, and reports the generation it uses (see RedisStore.heartbeat).
 *
 * A confirmation lasts `fenceMs`: an operation on Redis with no confirmation sent within it
 * first asks again (`fresh`, then `beat`). Another instance that moves the generation waits for
 * every instance marked within the same window to use the new one, and does not wait for one
 * silent for longer — which, being unconfirmed, asks before its next operation. So no read or
 * write that starts after a move completed uses the old generation, in any process.
 */
export class GenerationKeeper {
  readonly #deps: GenerationDeps
  #checking: Promise<void> | null = null
  /** performance.now() at which the last confirmation was sent. */
  #confirmedAt = -Infinity
  #sweeping = false
  /** Server time (ms) of this instance's last clean mark; null before the first. */
  lastCleanAt: number | null = null

  constructor(deps: GenerationDeps) {
    this.#deps = deps
  }

  get checking(): boolean {
    return this.#checking !== null
  }

  /** True while the last confirmation is recent enough to use the generation without asking. */
  fresh(): boolean {
    return performance.now() - this.#confirmedAt <= this.#deps.fenceMs
  }

  /**
   * A reply read the current generation (adopted if it moved) from a command sent at `sentAt`:
   * until `sentAt + fenceMs` the generation may be used without asking again.
   */
  confirmed(sentAt: number, changed: boolean): void {
    if (changed) this.#deps.onChanged()
    if (sentAt > this.#confirmedAt) this.#confirmedAt = sentAt
  }

  /** One check and clean mark (shared by the timer and by operations that need one). Never rejects. */
  beat(): Promise<void> {
    this.#checking ??= (async () => {
      await this.#deps.bus?.connect()
      const sentAt = performance.now()
      const { changed, at } = await this.#deps.redis.heartbeat(this.#deps.run)
      this.lastCleanAt = at
      this.confirmed(sentAt, changed)
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
