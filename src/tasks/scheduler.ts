import { CronExpressionParser } from 'cron-parser'
import { invalidOption } from '../errors.js'
import type { Logger } from '../logger.js'
import { loggableError } from '../logger.js'
import { NAME } from './options.js'
import type { TaskDefinition } from './task.js'

/** A point in time for `startDate` / `endDate`: a Date, an ISO 8601 string or epoch ms. */
export type ScheduleDate = Date | string | number

interface ScheduleCommon {
  /** Arguments each run receives (JSON). Default `{}`. */
  args?: unknown
  /** Scheduler id, unique per queue. Default: the task name. */
  id?: string | undefined
  /** No run before this time. */
  startDate?: ScheduleDate | undefined
  /** No run after this time. */
  endDate?: ScheduleDate | undefined
  /**
   * At most this many runs (BullMQ's count, kept in Redis). While Redis is unavailable it
   * bounds the local runs of this process only: see docs/tasks.md, "Periodic tasks".
   */
  limit?: number | undefined
}

/** Options of `tasks.schedule(name, options)`: a fixed period, or a cron pattern. */
export type ScheduleOptions =
  | (ScheduleCommon & {
      /** Period, in ms (at least 1000). */
      everyMs: number
      cron?: undefined
      tz?: undefined
    })
  | (ScheduleCommon & {
      /**
       * A cron pattern (cron-parser, as BullMQ: 5 fields, or 6 with seconds first; `@daily`…).
       */
      cron: string
      /** IANA time zone the pattern is read in (default: the process's). */
      tz?: string | undefined
      everyMs?: undefined
    })

/** When a schedule runs, validated (dates as epoch ms). */
export interface ScheduleTiming {
  readonly everyMs?: number
  readonly cron?: string
  readonly tz?: string
  readonly startDate?: number
  readonly endDate?: number
  readonly limit?: number
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
  readonly timing: ScheduleTiming
  readonly args: unknown
  readonly definition: TaskDefinition
  /** True once upserted in the current Redis data set. */
  synced: boolean
  localTimer: NodeJS.Timeout | null
  localRunning: boolean
  localRuns: number
  localSkipped: number
}

/** setTimeout's limit (~24.8 days): a later occurrence is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The BullMQ job id of a scheduler's run due at `at` (epoch ms): BullMQ's own format
 * (`JobScheduler.getSchedulerNextJobId`). A local run of a cron occurrence uses it as its task
 * id, so that its done marker makes workers skip the same occurrence once Redis is back.
 */
export function occurrenceId(id: string, at: number): string {
  return `repeat:${id}:${at}`
}

/**
 * The first cron occurrence strictly after `after` (epoch ms) within the timing's start and
 * end dates, or null when there is none. The computation BullMQ's default repeat strategy
 * makes, with the same parser: both find the same occurrences.
 */
export function nextOccurrence(timing: ScheduleTiming, after: number): number | null {
  if (timing.cron === undefined) return null
  const start = timing.startDate ?? -Infinity
  try {
    return CronExpressionParser.parse(timing.cron, {
      currentDate: new Date(Math.max(after, start)),
      ...(timing.tz !== undefined && { tz: timing.tz }),
      ...(timing.startDate !== undefined && { startDate: new Date(timing.startDate) }),
      ...(timing.endDate !== undefined && { endDate: new Date(timing.endDate) }),
    })
      .next()
      .getTime()
  } catch {
    // Past the end date (cron-parser's "Out of the time span range"), or no date matches.
    return null
  }
}

/** The BullMQ repeat options of a schedule (`upsertJobScheduler`). */
export function repeatOptions(timing: ScheduleTiming): {
  every?: number
  pattern?: string
  tz?: string
  startDate?: number
  endDate?: number
  limit?: number
} {
  return {
    ...(timing.everyMs !== undefined && { every: timing.everyMs }),
    ...(timing.cron !== undefined && { pattern: timing.cron }),
    ...(timing.tz !== undefined && { tz: timing.tz }),
    ...(timing.startDate !== undefined && { startDate: timing.startDate }),
    ...(timing.endDate !== undefined && { endDate: timing.endDate }),
    ...(timing.limit !== undefined && { limit: timing.limit }),
  }
}

export interface SchedulerDeps {
  readonly logger: Logger
  /**
   * Run a periodic job in this process (Redis unavailable, `whileDown: 'local'`): for a cron
   * schedule, its occurrence due at `occurrence` (epoch ms); null for a fixed period.
   */
  readonly runLocal: (entry: ScheduleEntry, occurrence: number | null) => Promise<'ran' | 'busy'>
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

  static validate(name: string, options: ScheduleOptions): { id: string; timing: ScheduleTiming } {
    if (typeof options !== 'object' || options === null) {
      throw invalidOption('schedule options', 'an object with everyMs or cron', options)
    }
    const {
      everyMs,
      cron,
      tz,
      id = name,
    } = options as {
      everyMs?: unknown
      cron?: unknown
      tz?: unknown
      id?: unknown
    }
    if (typeof id !== 'string' || !NAME.test(id)) {
      throw invalidOption('id', '1 to 64 letters, digits, "-", "_" or "."', id, 'range')
    }
    if (everyMs !== undefined && cron !== undefined) {
      throw invalidOption('schedule options', 'either everyMs or cron, not both', options)
    }
    if (everyMs === undefined && cron === undefined) {
      throw invalidOption('schedule options', 'an object with everyMs or cron', options)
    }
    const bounds = validateBounds(options)
    if (everyMs !== undefined) {
      if (tz !== undefined) throw invalidOption('tz', 'absent with everyMs (cron only)', tz)
      if (typeof everyMs !== 'number' || !Number.isInteger(everyMs)) {
        throw invalidOption('everyMs', 'an integer number of ms', everyMs)
      }
      if (everyMs < 1000 || everyMs > 366 * 86_400_000) {
        throw invalidOption('everyMs', 'between 1000 and 31622400000 ms', everyMs, 'range')
      }
      return { id, timing: { everyMs, ...bounds } }
    }
    if (typeof cron !== 'string' || cron.trim().length === 0) {
      throw invalidOption('cron', 'a non-empty cron pattern string', cron)
    }
    if (tz !== undefined && (typeof tz !== 'string' || !isTimeZone(tz))) {
      throw invalidOption('tz', 'an IANA time zone such as "Europe/Paris" or "UTC"', tz, 'range')
    }
    try {
      CronExpressionParser.parse(cron, tz === undefined ? {} : { tz })
    } catch (error) {
      const reason = error instanceof Error ? ` (${error.message})` : ''
      throw invalidOption('cron', `a valid cron pattern${reason}`, cron, 'range')
    }
    return { id, timing: { cron, ...(tz !== undefined && { tz }), ...bounds } }
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
    const { everyMs } = entry.timing
    if (everyMs !== undefined) {
      entry.localTimer = setInterval(() => void this.#tick(entry, null), everyMs)
      entry.localTimer.unref()
    } else {
      this.#armCron(entry, Date.now())
    }
  }

  /** A timer for the first cron occurrence after `after`; none past the end date. */
  #armCron(entry: ScheduleEntry, after: number): void {
    const at = nextOccurrence(entry.timing, after)
    if (at === null) return
    const timer = setTimeout(
      () => {
        if (entry.localTimer !== timer) return
        entry.localTimer = null
        if (!this.#local || this.#closed) return
        // Woken before the occurrence (a wait longer than setTimeout allows, a clock step):
        // wait again for the same one.
        if (Date.now() < at) this.#armCron(entry, at - 1)
        else if (this.#tick(entry, at)) this.#armCron(entry, at)
      },
      Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS),
    )
    timer.unref()
    entry.localTimer = timer
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
    if (entry.localTimer !== null) clearTimeout(entry.localTimer)
    entry.localTimer = null
  }

  /** One local run due now, if the schedule allows it. False: no more local runs. */
  #tick(entry: ScheduleEntry, occurrence: number | null): boolean {
    if (!this.#local || this.#closed) return false
    const { startDate, endDate, limit } = entry.timing
    const now = Date.now()
    // A cron occurrence is already within its dates (nextOccurrence); a period is not.
    if (startDate !== undefined && now < startDate) return true
    const ended = endDate !== undefined && now > endDate
    if (ended || (limit !== undefined && entry.localRuns >= limit)) {
      this.#stopLocal(entry)
      return false
    }
    if (entry.localRunning) {
      // The previous local run is still going: never two at once.
      entry.localSkipped++
      return true
    }
    entry.localRunning = true
    this.#deps
      .runLocal(entry, occurrence)
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
    return true
  }

  status(): ScheduleStatus[] {
    return [...this.#entries.values()].map((e) => ({
      id: e.id,
      task: e.name,
      ...(e.timing.everyMs !== undefined && { everyMs: e.timing.everyMs }),
      ...(e.timing.cron !== undefined && { cron: e.timing.cron }),
      ...(e.timing.tz !== undefined && { tz: e.timing.tz }),
      ...(e.timing.startDate !== undefined && { startDate: iso(e.timing.startDate) }),
      ...(e.timing.endDate !== undefined && { endDate: iso(e.timing.endDate) }),
      ...(e.timing.limit !== undefined && { limit: e.timing.limit }),
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
  /** A fixed period: its length in ms. */
  everyMs?: number
  /** A cron schedule: its pattern, and its time zone when one was given. */
  cron?: string
  tz?: string
  /** ISO 8601, when given. */
  startDate?: string
  endDate?: string
  /** Max runs, when given (BullMQ's count; locally, this process's local runs). */
  limit?: number
  /** The BullMQ job scheduler exists in Redis as defined here. */
  synced: boolean
  /** What happens to its runs while Redis is unavailable. */
  whileDown: 'local' | 'skip'
  localRuns: number
  localSkipped: number
}

function validateBounds(options: ScheduleOptions): {
  startDate?: number
  endDate?: number
  limit?: number
} {
  const startDate = toEpochMs(options.startDate, 'startDate')
  const endDate = toEpochMs(options.endDate, 'endDate')
  if (startDate !== undefined && endDate !== undefined && endDate <= startDate) {
    throw invalidOption('endDate', 'after startDate', options.endDate, 'range')
  }
  const { limit } = options
  if (limit !== undefined) {
    if (typeof limit !== 'number' || !Number.isInteger(limit)) {
      throw invalidOption('limit', 'a positive integer', limit)
    }
    if (limit < 1) throw invalidOption('limit', 'a positive integer', limit, 'range')
  }
  return {
    ...(startDate !== undefined && { startDate }),
    ...(endDate !== undefined && { endDate }),
    ...(limit !== undefined && { limit }),
  }
}

function toEpochMs(value: unknown, option: string): number | undefined {
  if (value === undefined) return undefined
  const ms =
    value instanceof Date
      ? value.getTime()
      : typeof value === 'string' && value.length > 0
        ? Date.parse(value)
        : typeof value === 'number'
          ? value
          : NaN
  if (!Number.isFinite(ms) || Number.isNaN(new Date(ms).getTime())) {
    throw invalidOption(option, 'a Date, an ISO 8601 string or epoch ms', value)
  }
  return Math.trunc(ms)
}

/** An IANA time zone this runtime knows (the database cron-parser's luxon reads too). */
function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
    return true
  } catch {
    return false
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString()
}
