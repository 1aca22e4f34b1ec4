import { randomUUID } from 'node:crypto'
import { constants, promises as fs, readFileSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { hostname, uptime } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { SpoolFullError } from '../errors.js'
import { safeJsonParse } from '../util/json.js'

/** A job waiting for Redis, as appended. `payload` is the arguments' JSON text. */
export interface SpoolEntry {
  readonly id: string
  readonly name: string
  readonly payload: string
  /** Dispatch time (ms since the epoch). */
  readonly at: number
  /** Due time for a delayed job (ms since the epoch), 0 for "now". */
  readonly due: number
}

/** A job read back for replay. */
export interface SpooledJob {
  readonly id: string
  readonly name: string
  readonly args: unknown
  readonly at: number
  readonly due: number
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
  status(): Record<string, unknown>
  close(): Promise<void>
}

const BATCH = 100
const READ_CHUNK = 1024 * 1024
const MAX_SLOTS = 64
const CURSOR_WIDTH = 20

export function encodeEntry(entry: SpoolEntry): string {
  return (
    `{"id":${JSON.stringify(entry.id)},"name":${JSON.stringify(entry.name)},` +
    `"at":${entry.at},"due":${entry.due},"args":${entry.payload}}\n`
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
  }
}

// ── in-memory journal ────────────────────────────────────────────────────────────────────────

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

  status(): Record<string, unknown> {
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

// ── durable file journal ─────────────────────────────────────────────────────────────────────

/** Identifies this machine boot, so a lock written before a reboot is known to be stale. */
function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  } catch {
    // Not Linux: the boot time, to the minute, stands in for a boot id.
    return `${hostname()}@${Math.round((Date.now() - uptime() * 1000) / 60_000)}`
  }
}

const BOOT = bootId()
/** Tells this process from an earlier one that had the same pid (PID 1 in a container). */
const PROCESS_TOKEN = randomUUID()

interface LockInfo {
  pid: number
  boot: string
  token: string
  /** The owner's start time (clock ticks since boot, /proc/<pid>/stat); absent when unknown. */
  start?: string
  /** The owner's host name: a lock from another host (a shared volume) is judged by its age. */
  host?: string
}

const HOST = hostname()

/**
 * A process' start time, in clock ticks since boot (field 22 of /proc/<pid>/stat): with the PID,
 * it names one process, even after the PID is reused. Null where /proc is not available.
 */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19] ?? null
  } catch {
    return null
  }
}

const START = startTime(process.pid)

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * The owner of a live lock touches it this often, and a lock written on another host (a spool
 * directory on a shared volume, where its PID means nothing here) is stale once untouched for
 * LOCK_STALE_MS.
 */
export const LOCK_TOUCH_MS = 10_000
const LOCK_STALE_MS = 60_000

/** A lock held by a process that no longer exists (or that ran before a reboot). */
function isStale(lock: LockInfo | null, lockAgeMs: number): boolean {
  // An unreadable lock is either being written right now or was torn by a crash.
  if (lock === null) return lockAgeMs > 10_000
  if (lock.host !== undefined && lock.host !== HOST) return lockAgeMs > LOCK_STALE_MS
  if (lock.boot !== BOOT) return true
  if (lock.pid === process.pid) return lock.token !== PROCESS_TOKEN
  if (!isAlive(lock.pid)) return true
  // Alive — but the PID may have been reused by another program since its owner died.
  if (lock.start === undefined) return false
  const start = startTime(lock.pid)
  return start !== null && start !== lock.start
}

/** One journal file with its cursor and lock: `x.jsonl`, `x.jsonl.cursor`, `x.jsonl.lock`. */
class SlotFile {
  readonly path: string
  readonly #lockPath: string
  readonly #cursorPath: string
  #file: FileHandle | null = null
  #cursorFile: FileHandle | null = null
  /** Bytes durably written (everything before is fsynced). */
  committed = 0
  /** Bytes already handed to the queue. */
  cursor = 0
  /** Complete records between cursor and committed. */
  pending = 0

  private constructor(path: string) {
    this.path = path
    this.#lockPath = `${path}.lock`
    this.#cursorPath = `${path}.cursor`
  }

  /** Take the slot's lock (free or stale) and open it; null if a live process holds it. */
  static async claim(path: string): Promise<SlotFile | null> {
    const slot = new SlotFile(path)
    if (!(await slot.#lock())) return null
    try {
      await slot.#open()
      return slot
    } catch (error) {
      await slot.release(false)
      throw error
    }
  }

  async #lock(): Promise<boolean> {
    const info: LockInfo = {
      pid: process.pid,
      boot: BOOT,
      token: PROCESS_TOKEN,
      ...(START === null ? {} : { start: START }),
      host: HOST,
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await fs.open(this.#lockPath, 'wx')
        try {
          await handle.writeFile(JSON.stringify(info))
          await handle.sync()
        } finally {
          await handle.close()
        }
        return true
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      }
      const { lock, ageMs } = await readLock(this.#lockPath)
      if (!isStale(lock, ageMs)) return false
      // Stale: take it over. Two processes racing for the same stale lock is possible in
      // theory; the loser of the `wx` create below just tries the next slot.
      await fs.rm(this.#lockPath, { force: true })
    }
    return false
  }

  async #open(): Promise<void> {
    this.#file = await fs.open(this.path, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND)
    const size = (await this.#file.stat()).size
    this.#cursorFile = await fs.open(this.#cursorPath, constants.O_RDWR | constants.O_CREAT)
    const raw = Buffer.alloc(CURSOR_WIDTH)
    const { bytesRead } = await this.#cursorFile.read(raw, 0, CURSOR_WIDTH, 0)
    const cursor = Number.parseInt(raw.toString('utf8', 0, bytesRead).trim() || '0', 10)
    // A cursor past the end: the file was emptied after a full replay and the crash came
    // before the cursor was reset. A torn cursor reads as NaN: replay from the start (the
    // queue deduplicates by job id).
    this.cursor = Number.isFinite(cursor) && cursor >= 0 && cursor <= size ? cursor : 0
    // A torn last line (a crash mid-append) was never acknowledged: cut it off so appends
    // start on a clean line.
    const { complete, records } = await this.#scan(this.cursor, size)
    if (complete < size) await this.#file.truncate(complete)
    this.committed = complete
    this.pending = records
  }

  /** Count complete lines between two offsets; `complete` is the end of the last one. */
  async #scan(from: number, to: number): Promise<{ complete: number; records: number }> {
    let records = 0
    let complete = from
    for await (const { end } of this.lines(from, to)) {
      records++
      complete = end
    }
    return { complete, records }
  }

  /** Complete lines between two offsets, with the offset just past each. */
  async *lines(from: number, to: number): AsyncGenerator<{ line: string; end: number }> {
    const file = this.#file
    if (file === null) return
    let position = from
    let carry = Buffer.alloc(0)
    while (position < to) {
      const size = Math.min(READ_CHUNK, to - position)
      const chunk = Buffer.alloc(size)
      const { bytesRead } = await file.read(chunk, 0, size, position)
      if (bytesRead === 0) break
      const data =
        carry.length > 0
          ? Buffer.concat([carry, chunk.subarray(0, bytesRead)])
          : chunk.subarray(0, bytesRead)
      const base = position - carry.length
      let start = 0
      for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
        yield { line: data.toString('utf8', start, nl), end: base + nl + 1 }
        start = nl + 1
      }
      carry = Buffer.from(data.subarray(start))
      position += bytesRead
    }
  }

  async write(buffer: Buffer): Promise<void> {
    const file = this.#file
    if (file === null) throw new Error('spool file is closed')
    try {
      await file.write(buffer)
      await file.datasync()
    } catch (error) {
      // A partial line would glue itself to the next append: cut back to the last good one.
      await file.truncate(this.committed).catch(() => undefined)
      throw error
    }
    this.committed += buffer.length
  }

  async saveCursor(cursor: number): Promise<void> {
    const file = this.#cursorFile
    if (file === null) throw new Error('spool cursor file is closed')
    // Fixed width, one small write: a crash cannot leave half of an old and a new value.
    await file.write(String(cursor).padStart(CURSOR_WIDTH, ' '), 0, 'utf8')
    await file.datasync()
    this.cursor = cursor
  }

  /** Keep the lock's age fresh (see LOCK_TOUCH_MS). */
  async touch(): Promise<void> {
    const now = new Date()
    await fs.utimes(this.#lockPath, now, now)
  }

  /** Everything was handed over: start the file again from zero. */
  async reset(): Promise<void> {
    const file = this.#file
    if (file === null) return
    await file.truncate(0)
    await file.datasync()
    this.committed = 0
    await this.saveCursor(0)
  }

  /** Close and unlock; `remove` also deletes the (empty) journal and its cursor. */
  async release(remove: boolean): Promise<void> {
    await this.#file?.close()
    await this.#cursorFile?.close()
    this.#file = null
    this.#cursorFile = null
    if (remove) {
      await fs.rm(this.path, { force: true })
      await fs.rm(this.#cursorPath, { force: true })
    }
    await fs.rm(this.#lockPath, { force: true })
  }
}

async function readLock(path: string): Promise<{ lock: LockInfo | null; ageMs: number }> {
  try {
    const [text, stat] = await Promise.all([fs.readFile(path, 'utf8'), fs.stat(path)])
    const ageMs = Date.now() - stat.mtimeMs
    const value = safeJsonParse(text) as Partial<LockInfo> | null
    if (
      value !== null &&
      typeof value === 'object' &&
      typeof value.pid === 'number' &&
      typeof value.boot === 'string' &&
      typeof value.token === 'string'
    ) {
      return { lock: value as LockInfo, ageMs }
    }
    return { lock: null, ageMs }
  } catch (error) {
    // Gone between the failed create and this read: free now.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { lock: null, ageMs: Infinity }
    return { lock: null, ageMs: 0 }
  }
}

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

  status(): Record<string, unknown> {
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
