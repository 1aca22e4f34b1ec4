import type { Journal } from './journal.js'
import type { RedisStore, Runner } from './redis-store.js'

/** Keys deleted per UNLINK during reconciliation. */
const RECONCILE_BATCH = 500

/** What one reconciliation did. */
export interface Reconciled {
  readonly keys: number
  /** The keys deleted by this step (Redis acknowledged it). */
  readonly deleted: readonly string[]
  readonly generationBumped: boolean
}

/**
 * Make Redis forget what this process changed without it: delete the journaled keys — DEL,
 * never SET, so a newer value written meanwhile by another process is never overwritten — or
 * bump the generation after an overflow, a clear while degraded, or when a SET that was in
 * flight at the failure could still land later (`fenced` false: the monitor could not close the
 * old connection in Redis), since a DEL now would not stop it. Keys whose DEL failed go back to
 * the journal (the error is rethrown: the recovery step runs again).
 */
export async function reconcile(
  journal: Journal,
  redis: RedisStore,
  run: Runner,
  fenced: boolean,
  onProgress: (done: Reconciled) => void,
): Promise<void> {
  if (journal.unsure && !fenced) journal.requireGenerationBump()
  if (journal.needsGenerationBump) {
    await redis.bumpGeneration(run)
    journal.generationBumped()
    onProgress({ keys: 0, deleted: [], generationBumped: true })
  }
  while (journal.size > 0) {
    const keys = journal.take(RECONCILE_BATCH)
    try {
      await redis.unlinkMany(keys, run)
    } catch (error) {
      journal.restore(keys)
      throw error
    }
    onProgress({ keys: keys.length, deleted: keys, generationBumped: false })
  }
  journal.reconciled()
}
