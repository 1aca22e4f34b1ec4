/** Earlier command sockets remembered for CLIENT KILL, at most (one per unfenced recovery). */
const MAX_TRACKED_SOCKETS = 8

interface TrackedSocket {
  readonly id: number
  readonly runId: string | null
}

/**
 * The server-side ids of this process' command sockets that may still be open in Redis, so
 * that a recovery can close them there before any component reconciles.
 *
 * A command written just before Redis became unreachable may not have run yet: it can sit in
 * a frozen server's input buffer (executed on thaw), in a proxy, or in a TCP retransmission,
 * and run seconds later over newer data. Redis frees a killed client with everything it had
 * not executed, so once CLIENT KILL has answered for every earlier socket of the same Redis
 * process (same `run_id`) — or that process is gone — no late command can run.
 */
export class EarlierSockets {
  #sockets: TrackedSocket[] = []
  /** A command socket was used whose server-side id is unknown (CLIENT ID refused). */
  #untracked = false

  /** The ids to CLIENT KILL on a Redis process with this run_id (the others died with their process). */
  toKill(runId: string | null): number[] {
    if (runId === null) return []
    return this.#sockets.filter((s) => s.runId === runId).map((s) => s.id)
  }

  /**
   * Record what the new socket's CLIENT ID and the kills answered. Returns true when no earlier
   * command can still execute: every earlier socket of this Redis process is proven closed
   * and every earlier socket's id was known.
   */
  settle(
    runId: string | null,
    newId: number | null,
    killed: ReadonlyArray<{ id: number; ok: boolean }>,
  ): boolean {
    let fenced = !this.#untracked
    const kept: TrackedSocket[] = []
    const outcome = new Map(killed.map((k) => [k.id, k.ok]))
    for (const socket of this.#sockets) {
      if (socket.id === newId && socket.runId === runId) continue
      if (runId === null) {
        // Which Redis process answered is unknown: nothing is proven about the earlier sockets.
        fenced = false
        continue
      }
      if (socket.runId !== runId) continue // that Redis process is gone, and its sockets with it
      if (outcome.get(socket.id) === true) continue
      fenced = false
      kept.push(socket) // retried at the next recoveries, a few
    }
    this.#untracked = newId === null
    if (newId !== null) kept.push({ id: newId, runId })
    this.#sockets = kept.slice(-MAX_TRACKED_SOCKETS)
    return fenced
  }
}
