/**
 * Requests waiting for other servers' answers, so that Redis becoming unavailable settles them
 * at once (with a ClusterUnavailableError) instead of at their timeout: their answers, or the
 * requests themselves, now sit in some process' outbox.
 */
export class PendingRequests {
  readonly #failers = new Set<() => void>()

  get size(): number {
    return this.#failers.size
  }

  /**
   * `request`'s outcome, unless `fail()` comes first: then the rejection `failure()` builds.
   * A request settled by `fail()` may still settle later (its own timeout): that is ignored.
   */
  race<T>(request: Promise<T>, failure: () => Promise<Error>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false
      const failer = (): void => {
        if (settled) return
        settled = true
        this.#failers.delete(failer)
        failure().then(reject, reject)
      }
      this.#failers.add(failer)
      request.then(
        (value) => {
          if (settled) return
          settled = true
          this.#failers.delete(failer)
          resolve(value)
        },
        (error: unknown) => {
          if (settled) return
          settled = true
          this.#failers.delete(failer)
          reject(error)
        },
      )
    })
  }

  /** Track a callback-style request; returns the function that stops tracking it. */
  track(fail: () => void): () => void {
    this.#failers.add(fail)
    return () => this.#failers.delete(fail)
  }

  /** Settle every pending request now. */
  failAll(): void {
    for (const fail of [...this.#failers]) fail()
    this.#failers.clear()
  }
}
