import { SpoolFullError } from '../errors.js'
import { safeJsonParse } from '../util/json.js'
import { RESERVED_JOB_OPTIONS } from './task.js'

/** A job waiting for Redis, as appended. `payload` is the arguments' JSON text. */
export interface SpoolEntry {
  readonly id: string
  readonly name: string
  readonly payload: string
  /** Dispatch time (ms since the epoch). */
  readonly at: number
  /** Due time for a delayed job (ms since the epoch), 0 for "now". */
  readonly due: number
  /** BullMQ priority and lifo, kept for the replay (absent: none). */
  readonly priority?: number | undefined
  readonly lifo?: boolean | undefined
  /** BullMQ pass-through job options (DispatchOptions.bullmq), kept for the replay. */
  readonly bullmq?: Readonly<Record<string, unknown>> | undefined
}

/** A job read back for replay. */
export interface SpooledJob {
  readonly id: string
  readonly name: string
  readonly args: unknown
  readonly at: number
  readonly due: number
  readonly priority?: number | undefined
  readonly lifo?: boolean | undefined
  readonly bullmq?: Readonly<Record<string, unknown>> | undefined
}

/** Hands a batch to the queue, in order; rejects if Redis failed (the batch is retried later). */
export type ReplaySender = (batch: readonly SpooledJob[]) => Promise<void>

export interface ReplayBudget {
  /** Stop between batches after this time (ms since the epoch); the rest waits for the next call. */
  readonly deadline: number
  readonly signal?: AbortSignal | undefined
}

export interface ReplayOutcome {
  readonly replayed: number
  /** Lines that could not be parsed (a torn write at a crash, a damaged file): skipped, counted. */
  readonly corrupt: number
  /** Everything this journal knows of was handed over. */
  readonly done: boolean
}

/**
 * The contract both journals implement: the durable file spool and the in-memory one
 * (`spool.path: false`). Appends are acknowledged once durable (file) or stored (memory);
 * replay hands jobs over in append order and forgets them only after the sender succeeded —
 * a crash in between re-sends a batch, which the queue deduplicates by job id.
 */
export interface JobJournal {
  readonly durable: boolean
  /** Jobs appended and not yet handed over (this process's journal). */
  readonly pending: number
  append(entry: SpoolEntry): Promise<void>
  /** Also true when journals left by dead processes may be waiting (file spool). */
  hasWork(): boolean
  /** Look again for journals left by dead processes (file spool; nothing for memory). */
  rescan(): void
  replay(send: ReplaySender, budget: ReplayBudget): Promise<ReplayOutcome>
  status(): SpoolStatus
  close(): Promise<void>
}

/** A journal's status (in `tasks.status().spool`). */
export interface SpoolStatus {
  /** File journal (fsynced before a dispatch resolves) or memory (`spool.path: false`). */
  durable: boolean
  /** The file this process appends to (file journal). */
  path?: string
  /** Jobs waiting for Redis. */
  depth: number
  bytes: number
  /** Jobs handed to the queue, since creation. */
  replayed: number
  /** Lines that could not be read (a torn write at a crash): skipped. */
  corrupt: number
  /** Journals of dead processes this process adopted (file journal). */
  adopted?: number
}

/** Jobs handed to the queue per replay batch. */
export const BATCH = 100

export function encodeEntry(entry: SpoolEntry): string {
  return (
    `{"id":${JSON.stringify(entry.id)},"name":${JSON.stringify(entry.name)},` +
    `"at":${entry.at},"due":${entry.due},` +
    (entry.priority !== undefined && entry.priority > 0 ? `"p":${entry.priority},` : '') +
    (entry.lifo === true ? '"l":1,' : '') +
    (entry.bullmq !== undefined ? `"b":${JSON.stringify(entry.bullmq)},` : '') +
    `"args":${entry.payload}}\n`
  )
}

/** Parse one journal line; null when it is not a complete, well-formed record. */
export function decodeEntry(line: string): SpooledJob | null {
  let value: unknown
  try {
    value = safeJsonParse(line)
  } catch {
    return null
  }
  if (typeof value !== 'object' || value === null) return null
  const r = value as Record<string, unknown>
  if (typeof r.id !== 'string' || typeof r.name !== 'string' || !('args' in r)) return null
  return {
    id: r.id,
    name: r.name,
    args: r.args,
    at: typeof r.at === 'number' ? r.at : 0,
    due: typeof r.due === 'number' ? r.due : 0,
    ...(Number.isSafeInteger(r.p) && (r.p as number) > 0 && { priority: r.p as number }),
    ...(r.l === 1 && { lifo: true }),
    ...(typeof r.b === 'object' &&
      r.b !== null &&
      !Array.isArray(r.b) && { bullmq: passThroughOf(r.b as Record<string, unknown>) }),
  }
}

/** A journal's pass-through options without the keys failsoft sets (a damaged or edited file). */
function passThroughOf(b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...b }
  for (const key of RESERVED_JOB_OPTIONS) delete out[key]
  return out
}

/** `spool.path: false`: same contract, not durable (a process crash loses what it holds). */
export class MemorySpool implements JobJournal {
  readonly durable = false
  readonly #entries: SpoolEntry[] = []
  readonly #maxRecords: number
  readonly #maxBytes: number
  #bytes = 0
  #replayed = 0
  #corrupt = 0

  constructor(limits: { maxRecords: number; maxBytes: number }) {
    this.#maxRecords = limits.maxRecords
    this.#maxBytes = limits.maxBytes
  }

  get pending(): number {
    return this.#entries.length
  }

  hasWork(): boolean {
    return this.#entries.length > 0
  }

  rescan(): void {
    // Nothing outlives this process.
  }

  append(entry: SpoolEntry): Promise<void> {
    const size = entry.payload.length + entry.id.length + entry.name.length + 48
    if (this.#entries.length >= this.#maxRecords) {
      return Promise.reject(new SpoolFullError('maxRecords', this.#maxRecords))
    }
    if (this.#bytes + size > this.#maxBytes) {
      return Promise.reject(new SpoolFullError('maxBytes', this.#maxBytes))
    }
    this.#entries.push(entry)
    this.#bytes += size
    return Promise.resolve()
  }

  async replay(send: ReplaySender, budget: ReplayBudget): Promise<ReplayOutcome> {
    let replayed = 0
    let corrupt = 0
    while (this.#entries.length > 0) {
      if (Date.now() >= budget.deadline || budget.signal?.aborted === true) break
      const slice = this.#entries.slice(0, BATCH)
      const batch: SpooledJob[] = []
      for (const e of slice) {
        const job = decodeEntry(encodeEntry(e))
        if (job === null) corrupt++
        else batch.push(job)
      }
      if (batch.length > 0) await send(batch)
      this.#entries.splice(0, slice.length)
      for (const e of slice) this.#bytes -= e.payload.length + e.id.length + e.name.length + 48
      replayed += batch.length
    }
    this.#replayed += replayed
    this.#corrupt += corrupt
    return { replayed, corrupt, done: this.#entries.length === 0 }
  }

  status(): SpoolStatus {
    return {
      durable: false,
      depth: this.#entries.length,
      bytes: this.#bytes,
      replayed: this.#replayed,
      corrupt: this.#corrupt,
    }
  }

  close(): Promise<void> {
    return Promise.resolve()
  }
}
