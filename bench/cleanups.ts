// Cleanup hooks for a bench scenario: registered like node:test's `t.after`, run in reverse.

/** What a scenario registers its teardown with (the test kit's AfterHook shape). */
export class Cleanups {
  readonly #fns: Array<() => unknown> = []
  readonly #onError: ((error: unknown) => void) | null
  readonly #capMs: number | null

  /**
   * `onError`: a failing teardown is reported there and the others still run (without it, the
   * first failure rejects `run()`). `capMs`: a teardown still pending after this long is left.
   */
  constructor(options: { onError?: (error: unknown) => void; capMs?: number } = {}) {
    this.#onError = options.onError ?? null
    this.#capMs = options.capMs ?? null
  }

  after(fn: () => unknown): void {
    this.#fns.push(fn)
  }

  async run(): Promise<void> {
    for (const fn of this.#fns.reverse()) {
      let step = Promise.resolve().then(fn)
      if (this.#onError !== null) step = step.catch(this.#onError)
      if (this.#capMs !== null) {
        const capMs = this.#capMs
        step = Promise.race([step, new Promise<void>((r) => setTimeout(r, capMs).unref())])
      }
      await step
    }
  }
}
