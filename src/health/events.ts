/** Something that can be undone: the return value of `on(...)`. */
export interface Disposable {
  dispose(): void
}

type Listener<T> = (payload: T) => void

/**
 * A small typed event emitter. Unlike Node's EventEmitter it has no special 'error' event that
 * crashes the process, and a listener that throws is reported through `onListenerError`
 * instead of breaking the emitter or the other listeners.
 */
export class TypedEvents<Events extends { [K in keyof Events]: unknown }> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>()

  constructor(
    private readonly onListenerError: (event: string, error: unknown) => void,
    /** Sees every event, listeners or not (the monitor publishes them on diagnostics channels). */
    private readonly onEmit?: <K extends keyof Events>(event: K, payload: Events[K]) => void,
  ) {}

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): Disposable {
    let set = this.#listeners.get(event)
    if (!set) {
      set = new Set()
      this.#listeners.set(event, set)
    }
    const entry = listener as Listener<never>
    set.add(entry)
    return { dispose: () => void this.#listeners.get(event)?.delete(entry) }
  }

  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): Disposable {
    const disposable = this.on(event, (payload) => {
      disposable.dispose()
      listener(payload)
    })
    return disposable
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    this.onEmit?.(event, payload)
    const set = this.#listeners.get(event)
    if (!set) return
    for (const listener of [...set]) {
      try {
        ;(listener as Listener<Events[K]>)(payload)
      } catch (error) {
        this.onListenerError(String(event), error)
      }
    }
  }

  clear(): void {
    this.#listeners.clear()
  }
}
