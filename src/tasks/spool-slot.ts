import { randomUUID } from 'node:crypto'
import { constants, promises as fs, readFileSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { hostname, uptime } from 'node:os'
import { safeJsonParse } from '../util/json.js'
import { LOCK_STALE_MS } from '../tunables.js'

const READ_CHUNK = 1024 * 1024
const CURSOR_WIDTH = 20

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
export class SlotFile {
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
