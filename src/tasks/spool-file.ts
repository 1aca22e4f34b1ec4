import { promises as fs } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { SpoolFullError } from '../errors.js'
import { LOCK_TOUCH_MS } from '../tunables.js'
import { SlotFile } from './spool-slot.js'
import {
  BATCH,
  decodeEntry,
  encodeEntry,
  type JobJournal,
  type ReplayBudget,
  type ReplayOutcome,
  type ReplaySender,
  type SpoolEntry,
  type SpooledJob,
  type SpoolStatus,
} from './spool.js'

const MAX_SLOTS = 64

interface QueuedWrite {
  readonly line: Buffer
  readonly resolve: () => void
  readonly reject: (error: Error) => void
}

/**
 * The durable journal: one JSON line per job, appended and fsynced before the dispatch is
 * acknowledged (appends arriving together share one write + fsync), a cursor file recording
 * how far replay got, and a lock file so that no two live processes write the same file.
 */
export class FileSpool implements JobJournal {
  readonly durable = true
  readonly #path: string
  readonly #maxRecords: number
  readonly #maxBytes: number
  readonly #onError: (error: unknown, what: string) => void
  #slot: SlotFile | null = null
  #claiming: Promise<SlotFile> | null = null
  #queue: QueuedWrite[] = []
  #queuedBytes = 0
  /** Records taken from the queue, being written: not yet counted by the slot. */
  #writing = 0
  #flushing: Promise<void> | null = null
  /** Serializes file mutations: appends, the truncation after a full replay. */
  #io: Promise<void> = Promise.resolve()
  #orphansMayExist = true
  #touchTimer: NodeJS.Timeout | null = null
  #replayed = 0
  #corrupt = 0
  #adopted = 0
  #closed = false

  constructor(options: {
    path: string
    maxRecords: number
    maxBytes: number
    onError: (error: unknown, what: string) => void
  }) {
    this.#path = resolve(options.path)
    this.#maxRecords = options.maxRecords
    this.#maxBytes = options.maxBytes
    this.#onError = options.onError
  }

  /** The file this process appends to, once claimed. */
  get path(): string | null {
    return this.#slot?.path ?? null
  }

  get pending(): number {
    return (this.#slot?.pending ?? 0) + this.#writing + this.#queue.length
  }

  hasWork(): boolean {
    return this.pending > 0 || this.#orphansMayExist
  }

  /**
   * Look for journals of dead processes again at the next replay: a process that dies while
   * this one runs leaves its spool behind, and nobody else may be starting to adopt it.
   */
  rescan(): void {
    this.#orphansMayExist = true
  }

  append(entry: SpoolEntry): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('spool is closed'))
    const line = Buffer.from(encodeEntry(entry))
    if (this.pending >= this.#maxRecords) {
      return Promise.reject(new SpoolFullError('maxRecords', this.#maxRecords))
    }
    const committed = this.#slot?.committed ?? 0
    if (committed + this.#queuedBytes + line.length > this.#maxBytes) {
      return Promise.reject(new SpoolFullError('maxBytes', this.#maxBytes))
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ line, resolve, reject })
      this.#queuedBytes += line.length
      this.#flushing ??= this.#flush()
    })
  }

  /** Group commit: everything queued while the previous write+fsync ran goes in the next one. */
  async #flush(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue
        this.#queue = []
        const bytes = this.#queuedBytes
        this.#writing = batch.length
        try {
          const slot = await this.#claim()
          await this.#exclusive(async () => {
            await slot.write(
              Buffer.concat(
                batch.map((w) => w.line),
                bytes,
              ),
            )
            slot.pending += batch.length
            this.#writing = 0
          })
          this.#queuedBytes -= bytes
          for (const w of batch) w.resolve()
        } catch (error) {
          this.#writing = 0
          this.#queuedBytes -= bytes
          const failure = error instanceof Error ? error : new Error(String(error))
          for (const w of batch) w.reject(failure)
        }
      }
    } finally {
      this.#flushing = null
    }
  }

  #exclusive(fn: () => Promise<void>): Promise<void> {
    const run = this.#io.then(fn)
    this.#io = run.catch((error: unknown) => this.#onError(error, 'spool file operation'))
    return run
  }

  /** The first free slot (this path, then `.1`, `.2`…); a stale one is taken over. */
  #claim(): Promise<SlotFile> {
    if (this.#slot !== null) return Promise.resolve(this.#slot)
    this.#claiming ??= (async () => {
      try {
        await fs.mkdir(dirname(this.#path), { recursive: true })
        for (let n = 0; n < MAX_SLOTS; n++) {
          const slot = await SlotFile.claim(slotPath(this.#path, n))
          if (slot !== null) {
            this.#slot = slot
            this.#touchTimer = setInterval(() => {
              slot.touch().catch((error: unknown) => this.#onError(error, 'spool lock touch'))
            }, LOCK_TOUCH_MS)
            this.#touchTimer.unref()
            return slot
          }
        }
        throw new Error(`no free spool slot next to ${this.#path} (${MAX_SLOTS} are locked)`)
      } finally {
        this.#claiming = null
      }
    })()
    return this.#claiming
  }

  async replay(send: ReplaySender, budget: ReplayBudget): Promise<ReplayOutcome> {
    let replayed = 0
    let corrupt = 0
    // Appends waiting for their fsync are not acknowledged yet: let them land first so the
    // replay sees them (and the caller's needsRecovery check sees a consistent depth).
    if (this.#flushing) await this.#flushing
    const own = this.#slot
    if (own !== null && own.pending > 0) {
      const r = await replaySlot(own, send, budget, (fn) => this.#exclusive(fn))
      replayed += r.replayed
      corrupt += r.corrupt
    }
    let orphansDone = true
    if (this.#orphansMayExist && !overBudget(budget)) {
      const r = await this.#replayOrphans(send, budget)
      replayed += r.replayed
      corrupt += r.corrupt
      orphansDone = r.done
      if (r.done) this.#orphansMayExist = false
    }
    this.#replayed += replayed
    this.#corrupt += corrupt
    return { replayed, corrupt, done: this.pending === 0 && orphansDone && !this.#orphansMayExist }
  }

  /** Journals of processes that died (or of this process before a restart). */
  async #replayOrphans(send: ReplaySender, budget: ReplayBudget): Promise<ReplayOutcome> {
    let names: string[]
    try {
      names = await fs.readdir(dirname(this.#path))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT')
        return { replayed: 0, corrupt: 0, done: true }
      throw error
    }
    const present = new Set(names)
    let replayed = 0
    let corrupt = 0
    let done = true
    for (let n = 0; n < MAX_SLOTS; n++) {
      const path = slotPath(this.#path, n)
      if (path === this.#slot?.path || !present.has(basename(path))) continue
      if (overBudget(budget)) return { replayed, corrupt, done: false }
      const slot = await SlotFile.claim(path)
      if (slot === null) continue // a live process owns it
      this.#adopted++
      let finished = false
      try {
        const r = await replaySlot(slot, send, budget, (fn) => fn())
        replayed += r.replayed
        corrupt += r.corrupt
        finished = slot.pending === 0
      } finally {
        await slot.release(finished)
      }
      if (!finished) done = false
    }
    return { replayed, corrupt, done }
  }

  status(): SpoolStatus {
    return {
      durable: true,
      path: this.#slot?.path ?? this.#path,
      depth: this.pending,
      bytes: (this.#slot?.committed ?? 0) - (this.#slot?.cursor ?? 0) + this.#queuedBytes,
      replayed: this.#replayed,
      corrupt: this.#corrupt,
      adopted: this.#adopted,
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#touchTimer !== null) clearInterval(this.#touchTimer)
    if (this.#flushing) await this.#flushing
    await this.#io
    const slot = this.#slot
    this.#slot = null
    if (slot !== null) await slot.release(slot.pending === 0)
  }
}

function overBudget(budget: ReplayBudget): boolean {
  return Date.now() >= budget.deadline || budget.signal?.aborted === true
}

/** Replay one file from its cursor, batch by batch, moving the cursor after each success. */
async function replaySlot(
  slot: SlotFile,
  send: ReplaySender,
  budget: ReplayBudget,
  exclusive: (fn: () => Promise<void>) => Promise<void>,
): Promise<{ replayed: number; corrupt: number }> {
  let replayed = 0
  let corrupt = 0
  let batch: SpooledJob[] = []
  let lines = 0
  let batchEnd = slot.cursor
  const flush = async (): Promise<void> => {
    if (batch.length > 0) await send(batch)
    await slot.saveCursor(batchEnd)
    slot.pending -= lines
    replayed += batch.length
    batch = []
    lines = 0
  }
  // Only what is committed now; appends arriving meanwhile are picked up by the next round.
  for await (const { line, end } of slot.lines(slot.cursor, slot.committed)) {
    const job = decodeEntry(line)
    if (job === null) corrupt++
    else batch.push(job)
    lines++
    batchEnd = end
    if (lines >= BATCH) {
      await flush()
      if (overBudget(budget)) return { replayed, corrupt }
    }
  }
  if (lines > 0) await flush()
  // Handed over entirely and nothing appended since: empty the file so it does not grow.
  await exclusive(async () => {
    if (slot.cursor === slot.committed && slot.pending === 0 && slot.committed > 0) {
      await slot.reset()
    }
  })
  return { replayed, corrupt }
}

function slotPath(path: string, n: number): string {
  if (n === 0) return path
  return path.endsWith('.jsonl') ? `${path.slice(0, -6)}.${n}.jsonl` : `${path}.${n}`
}

/** For tests and tools: the file names a spool may use next to `path`. */
export function spoolFiles(path: string): string[] {
  const dir = dirname(resolve(path))
  return Array.from({ length: MAX_SLOTS }, (_, n) =>
    join(dir, basename(slotPath(resolve(path), n))),
  )
}
