import { invalidOption } from '../errors.js'
import type { Logger } from '../logger.js'
import { loggableError } from '../logger.js'
import { NAME } from './options.js'
import type { TaskDefinition } from './task.js'

/** Options of `tasks.schedule(name, options)`. */
export interface ScheduleOptions {
  /** Period, in ms (at least 1000). */
  everyMs: number
  /** Arguments each run receives (JSON). Default `{}`. */
  args?: unknown
  /** Scheduler id, unique per queue. Default: the task name. */
  id?: string | undefined
}

/** What `tasks.schedule()` resolves with. */
export interface ScheduleResult {
  readonly id: string
  /**
   * 'scheduled': the BullMQ job scheduler exists in Redis. 'pending': Redis is unavailable;
   * it is created as soon as Redis is back (and re-created whenever Redis loses its data).
   */
  readonly state: 'scheduled' | 'pending'
}

export interface ScheduleEntry {
  readonly id: string
  readonly name: string
  readonly everyMs: number
  readonly args: unknown
  readonly definition: TaskDefinition
  /** True once upserted in the current Redis data set. */
  synced: boolean
  localTimer: NodeJS.Timeout | null
  localRunning: boolean
  localRuns: number
  localSkipped: number
}

export interface SchedulerDeps {
  readonly logger: Logger
  /** Run a periodic job in this process (Redis unavailable, `whileDown: 'local'`). */
  readonly runLocal: (entry: ScheduleEntry) => Promise<'ran' | 'busy'>
}

/**
 * The periodic tasks of one queue. While Redis is up they are BullMQ job schedulers (one run
 * per period across all replicas). The list is also kept here, so it can be re-created when
 * Redis comes back empty and, for tasks marked `whileDown: 'local'`, run on a local timer
 * while Redis is unavailable. Other periodic tasks are skipped while Redis is down: with N
 * replicas, local runs would happen N times.
 */
export class Schedules {
  readonly #deps: SchedulerDeps
  readonly #entries = new Map<string, ScheduleEntry>()
  readonly #removals = new Set<string>()
  #local = false
  #closed = false

  constructor(deps: SchedulerDeps) {
    this.#deps = deps
  }

  static validate(name: string, options: ScheduleOptions): { id: string; everyMs: number } {
    if (typeof options !== 'object' || options === null) {
      throw invalidOption('schedule options', 'an object with everyMs', options)
    }
    const { everyMs, id = name } = options
    if (typeof everyMs !== 'number' || !Number.isInteger(everyMs)) {
      throw invalidOption('everyMs', 'an integer number of ms', everyMs)
    }
    if (everyMs < 1000 || everyMs > 366 * 86_400_000) {
      throw invalidOption('everyMs', 'between 1000 and 31622400000 ms', everyMs, 'range')
    }
    if (typeof id !== 'string' || !NAME.test(id)) {
      throw invalidOption('id', '1 to 64 letters, digits, "-", "_" or "."', id, 'range')
    }
    return { id, everyMs }
  }

  add(
    entry: Omit<
      ScheduleEntry,
      'synced' | 'localTimer' | 'localRunning' | 'localRuns' | 'localSkipped'
    >,
  ): ScheduleEntry {
    const previous = this.#entries.get(entry.id)
    if (previous) this.#stopLocal(previous)
    this.#removals.delete(entry.id)
    const full: ScheduleEntry = {
      ...entry,
      synced: false,
      localTimer: null,
      localRunning: false,
      localRuns: 0,
      localSkipped: 0,
    }
    this.#entries.set(entry.id, full)
    if (this.#local) this.#startLocal(full)
    return full
  }

  delete(id: string): boolean {
    const entry = this.#entries.get(id)
    if (entry === undefined) return false
    this.#stopLocal(entry)
    this.#entries.delete(id)
    this.#removals.add(id)
    return true
  }

  /** The scheduler was deleted from Redis. */
  removed(id: string): void {
    this.#removals.delete(id)
  }

  get(id: string): ScheduleEntry | undefined {
    return this.#entries.get(id)
  }

  needsSync(): boolean {
    if (this.#removals.size > 0) return true
    for (const entry of this.#entries.values()) if (!entry.synced) return true
    return false
  }

  /** Redis lost its data: every scheduler must be created again. */
  invalidate(): void {
    for (const entry of this.#entries.values()) entry.synced = false
  }

  /**
   * Create what is missing in Redis, delete what was removed meanwhile. `upsert` and
   * `remove` reject when Redis fails (the rest waits for the next call).
   */
  async sync(
    upsert: (entry: ScheduleEntry) => Promise<void>,
    remove: (id: string) => Promise<void>,
  ): Promise<void> {
    for (const id of [...this.#removals]) {
      await remove(id)
      this.#removals.delete(id)
    }
    for (const entry of [...this.#entries.values()]) {
      if (entry.synced || this.#entries.get(entry.id) !== entry) continue
      await upsert(entry)
      entry.synced = true
    }
  }

  /** Redis unavailable (or memory-only): local timers for the tasks that allow it. */
  startLocal(): void {
    if (this.#closed || this.#local) return
    this.#local = true
    for (const entry of this.#entries.values()) this.#startLocal(entry)
  }

  stopLocal(): void {
    this.#local = false
    for (const entry of this.#entries.values()) this.#stopLocal(entry)
  }

  #startLocal(entry: ScheduleEntry): void {
    if (entry.localTimer !== null || !this.#runsLocally(entry)) return
    entry.localTimer = setInterval(() => this.#tick(entry), entry.everyMs)
    entry.localTimer.unref()
  }

  #runsLocally(entry: ScheduleEntry): boolean {
    return entry.definition.options.whileDown === 'local' || this.#memoryOnly
  }

  #memoryOnly = false

  /** Memory-only instances have no replicas to coordinate with: every schedule runs locally. */
  setMemoryOnly(): void {
    this.#memoryOnly = true
  }

  #stopLocal(entry: ScheduleEntry): void {
    if (entry.localTimer !== null) clearInterval(entry.localTimer)
    entry.localTimer = null
  }

  #tick(entry: ScheduleEntry): void {
    if (!this.#local || this.#closed) return
    if (entry.localRunning) {
      // The previous local run is still going: never two at once.
      entry.localSkipped++
      return
    }
    entry.localRunning = true
    this.#deps
      .runLocal(entry)
      .then(
        (outcome) => {
          if (outcome === 'ran') entry.localRuns++
          else entry.localSkipped++
        },
        (error: unknown) => {
          entry.localSkipped++
          this.#deps.logger.warn(
            { err: loggableError(error), schedule: entry.id },
            'local periodic run failed to start',
          )
        },
      )
      .finally(() => {
        entry.localRunning = false
      })
  }

  status(): ScheduleStatus[] {
    return [...this.#entries.values()].map((e) => ({
      id: e.id,
      task: e.name,
      everyMs: e.everyMs,
      synced: e.synced,
      whileDown: this.#runsLocally(e) ? ('local' as const) : ('skip' as const),
      localRuns: e.localRuns,
      localSkipped: e.localSkipped,
    }))
  }

  close(): void {
    this.#closed = true
    this.stopLocal()
  }
}

/** One periodic task (in `tasks.status().schedules`). */
export interface ScheduleStatus {
  id: string
  task: string
  everyMs: number
  /** The BullMQ job scheduler exists in Redis as defined here. */
  synced: boolean
  /** What happens to its runs while Redis is unavailable. */
  whileDown: 'local' | 'skip'
  localRuns: number
  localSkipped: number
}
