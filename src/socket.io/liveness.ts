/**
 * Which other servers of a namespace are alive, for the requests that wait for their answers
 * (`fetchSockets`, `serverSideEmit` with an acknowledgement, broadcasts with
 * acknowledgements count them too).
 *
 * socket.io-adapter's own rule drops a server not heard of for `heartbeatTimeout`, by the
 * wall clock. During a Redis outage nobody is heard of, so after 10 s every other server would
 * be dropped, and right after recovery a request would count on no one and answer with this
 * server's part alone, as if complete. Here silence only counts while Redis is available: the
 * clock of every server restarts when Redis comes back, and a server that did die during the
 * outage is dropped `heartbeatTimeout` after recovery (requests meanwhile time out, as they do
 * for any server that dies between two heartbeats).
 */
export class Liveness {
  readonly #lastSeen = new Map<string, number>()
  /** When Redis last became available to this process (0: never unavailable). */
  #resumedAt = 0

  get size(): number {
    return this.#lastSeen.size
  }

  seen(uid: string, at: number): void {
    this.#lastSeen.set(uid, at)
  }

  forget(uid: string): void {
    this.#lastSeen.delete(uid)
  }

  /** Redis is available again: silence before now no longer counts. */
  resumed(at: number): void {
    this.#resumedAt = at
  }

  /** The servers silent for longer than `timeoutMs` of available time; they are forgotten. */
  expire(now: number, timeoutMs: number): string[] {
    const dead: string[] = []
    for (const [uid, lastSeen] of this.#lastSeen) {
      if (now - Math.max(lastSeen, this.#resumedAt) > timeoutMs) dead.push(uid)
    }
    for (const uid of dead) this.#lastSeen.delete(uid)
    return dead
  }
}
