import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'

/** A project as the API returns it. */
export interface Project {
  id: number
  title: string
  description: string
  owner: string
  supporters: number
  impactScore: number
  createdAt: string
  updatedAt: string
}

export interface NewProject {
  title: string
  description: string
  owner: string
}

export interface ProjectPatch {
  title?: string
  description?: string
  owner?: string
}

export interface OutboxEmail {
  id: number
  taskId: string
  to: string
  subject: string
  body: string
  /** Where the task ran: 'worker', 'inline' or 'local'. */
  mode: string
  process: string
  createdAt: string
}

export interface BatchRun {
  id: number
  taskId: string
  mode: string
  process: string
  projects: number
  durationMs: number
  createdAt: string
}

export interface ChatMessage {
  id: number
  room: string
  author: string
  text: string
  process: string
  at: string
}

export interface Poll {
  id: number
  question: string
  options: string[]
}

export interface PollResults {
  poll: number
  counts: number[]
  total: number
}

interface ProjectRow {
  id: number
  title: string
  description: string
  owner: string
  supporters: number
  impact_score: number
  created_at: string
  updated_at: string
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS projects (
  id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  owner TEXT NOT NULL DEFAULT '',
  supporters INTEGER NOT NULL DEFAULT 0,
  impact_score REAL NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
  project_id INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
  vector BLOB NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  task_id TEXT NOT NULL UNIQUE,
  recipient TEXT NOT NULL,
  subject TEXT NOT NULL,
  body TEXT NOT NULL,
  mode TEXT NOT NULL,
  process TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_runs (
  id INTEGER PRIMARY KEY,
  task_id TEXT NOT NULL UNIQUE,
  mode TEXT NOT NULL,
  process TEXT NOT NULL,
  projects INTEGER NOT NULL,
  duration_ms REAL NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_runs (
  id INTEGER PRIMARY KEY,
  task_id TEXT NOT NULL,
  task TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  mode TEXT NOT NULL,
  process TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS task_runs_by_task_id ON task_runs (task_id);
CREATE TABLE IF NOT EXISTS chat_messages (
  id INTEGER PRIMARY KEY,
  room TEXT NOT NULL,
  author TEXT NOT NULL,
  text TEXT NOT NULL,
  process TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_messages_room ON chat_messages (room, id);
CREATE TABLE IF NOT EXISTS polls (
  id INTEGER PRIMARY KEY,
  question TEXT NOT NULL,
  options TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS poll_votes (
  poll_id INTEGER NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
  voter TEXT NOT NULL,
  option INTEGER NOT NULL,
  voted_at TEXT NOT NULL,
  PRIMARY KEY (poll_id, voter)
);
`

const SEED_PROJECTS: NewProject[] = [
  {
    title: 'Community compost network',
    description:
      'Shared compost bins in every courtyard of the district, collected by bike every week and turned into soil for the school gardens.',
    owner: 'Amina',
  },
  {
    title: 'Repair café on Saturdays',
    description:
      'Volunteers repair lamps, bikes, clothes and small electronics with their owners, so fewer things end up in the bin.',
    owner: 'Jonas',
  },
  {
    title: 'Rooftop solar cooperative',
    description:
      'Neighbours buy shares in solar panels installed on public rooftops and share the electricity savings.',
    owner: 'Lucía',
  },
  {
    title: 'School garden and seed library',
    description:
      'Children grow vegetables in the school garden, keep the seeds and lend them to families through a seed library.',
    owner: 'Kofi',
  },
  {
    title: 'Tool library',
    description:
      'Borrow a drill, a ladder or garden tools instead of buying them; members repair and maintain the tools together.',
    owner: 'Mei',
  },
  {
    title: 'Bike repair workshop',
    description:
      'A weekly workshop where cyclists learn to repair their own bikes, with donated parts and shared tools.',
    owner: 'Ravi',
  },
]

const SEED_POLLS: Array<{ question: string; options: string[] }> = [
  {
    question: 'Which project should the district fund first?',
    options: ['Compost network', 'Repair café', 'Solar cooperative', 'Tool library'],
  },
  {
    question: 'When should the next community meeting take place?',
    options: ['Weekday evening', 'Saturday morning', 'Sunday afternoon'],
  },
]

const now = (): string => new Date().toISOString()

/** The compost batch's score: content, support, and a 30-day half-life since the last edit. */
export function impactScore(
  project: Pick<Project, 'description' | 'supporters' | 'updatedAt'>,
  nowMs: number,
): number {
  const words = project.description.split(/\s+/).filter(Boolean).length
  const base = 10 + 5 * Math.sqrt(words) + 20 * Math.log2(1 + project.supporters)
  const ageDays = Math.max(0, (nowMs - Date.parse(project.updatedAt)) / 86_400_000)
  return Math.round(base * 0.5 ** (ageDays / 30) * 10) / 10
}

function toProject(row: ProjectRow): Project {
  return {
    id: row.id,
    title: row.title,
    description: row.description,
    owner: row.owner,
    supporters: row.supporters,
    impactScore: row.impact_score,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

/** Messages kept per chat room; older ones are pruned as new ones arrive. */
const CHAT_KEEP = 200

/**
 * The app's embedded SQLite database: created and seeded on first open. Several app
 * processes may share one file (WAL mode, busy timeout), as they share one Redis.
 */
export class AppDatabase {
  readonly path: string
  /** True when this open created and seeded the database. */
  seeded = false
  readonly #db: Database.Database

  constructor(path: string) {
    this.path = path
    mkdirSync(dirname(path), { recursive: true })
    this.#db = new Database(path, { timeout: 5000 })
    this.#db.pragma('journal_mode = WAL')
    this.#db.pragma('foreign_keys = ON')
    this.#db.pragma('synchronous = NORMAL')
    this.#db.exec(SCHEMA)
    this.#seed()
  }

  #seed(): void {
    // One transaction: a second process opening the same new file sees all of it or none.
    this.#db
      .transaction(() => {
        const count = this.#db.prepare('SELECT COUNT(*) AS n FROM projects').get() as { n: number }
        if (count.n > 0) return
        for (const project of SEED_PROJECTS) this.createProject(project)
        this.seeded = true
        const insertPoll = this.#db.prepare(
          'INSERT INTO polls (question, options, created_at) VALUES (?, ?, ?)',
        )
        for (const poll of SEED_POLLS) {
          insertPoll.run(poll.question, JSON.stringify(poll.options), now())
        }
      })
      .immediate()
  }

  close(): void {
    if (this.#db.open) this.#db.close()
  }

  // ── projects ────────────────────────────────────────────────────────────────────────────

  listProjects(limit = 500): Project[] {
    const rows = this.#db
      .prepare('SELECT * FROM projects ORDER BY impact_score DESC, id ASC LIMIT ?')
      .all(limit) as ProjectRow[]
    return rows.map(toProject)
  }

  getProject(id: number): Project | undefined {
    const row = this.#db.prepare('SELECT * FROM projects WHERE id = ?').get(id) as
      ProjectRow | undefined
    return row === undefined ? undefined : toProject(row)
  }

  projectCount(): number {
    return (this.#db.prepare('SELECT COUNT(*) AS n FROM projects').get() as { n: number }).n
  }

  /** A new project starts with its impact score; the compost batch keeps it current. */
  createProject(input: NewProject): Project {
    const at = now()
    const score = impactScore({ ...input, supporters: 0, updatedAt: at }, Date.parse(at))
    const result = this.#db
      .prepare(
        `INSERT INTO projects (title, description, owner, impact_score, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(input.title, input.description, input.owner, score, at, at)
    return this.getProject(Number(result.lastInsertRowid)) as Project
  }

  updateProject(id: number, patch: ProjectPatch): Project | undefined {
    const current = this.getProject(id)
    if (current === undefined) return undefined
    this.#db
      .prepare(
        'UPDATE projects SET title = ?, description = ?, owner = ?, updated_at = ? WHERE id = ?',
      )
      .run(
        patch.title ?? current.title,
        patch.description ?? current.description,
        patch.owner ?? current.owner,
        now(),
        id,
      )
    return this.getProject(id)
  }

  supportProject(id: number): Project | undefined {
    const result = this.#db
      .prepare('UPDATE projects SET supporters = supporters + 1 WHERE id = ?')
      .run(id)
    return result.changes === 0 ? undefined : this.getProject(id)
  }

  /** Write every project's new impact score in one transaction. */
  setImpactScores(scores: ReadonlyArray<{ id: number; score: number }>): void {
    const update = this.#db.prepare('UPDATE projects SET impact_score = ? WHERE id = ?')
    this.#db.transaction(() => {
      for (const { id, score } of scores) update.run(score, id)
    })()
  }

  // ── embeddings ──────────────────────────────────────────────────────────────────────────

  saveEmbedding(projectId: number, vector: Float32Array): boolean {
    const result = this.#db
      .prepare(
        `INSERT INTO embeddings (project_id, vector, updated_at)
         SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM projects WHERE id = ?)
         ON CONFLICT (project_id) DO UPDATE SET vector = excluded.vector, updated_at = excluded.updated_at`,
      )
      .run(
        projectId,
        Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength),
        now(),
        projectId,
      )
    return result.changes > 0
  }

  embeddings(): Array<{ projectId: number; vector: Float32Array }> {
    const rows = this.#db.prepare('SELECT project_id, vector FROM embeddings').all() as Array<{
      project_id: number
      vector: Buffer
    }>
    return rows.map((row) => ({
      projectId: row.project_id,
      // Copy: the Buffer may be a view into a larger pool with any alignment.
      vector: new Float32Array(new Uint8Array(row.vector).buffer),
    }))
  }

  // ── outbox and batch runs (task side effects, idempotent by task id) ─────────────────────

  /**
   * One row per handler run that completed, whatever its side effect did. The side effects are
   * idempotent by task id, so they hide a second run; this audit trail does not: two rows
   * with one task id mean the task ran twice (what `npm run chaos` checks).
   */
  recordTaskRun(run: {
    taskId: string
    task: string
    attempt: number
    mode: string
    process: string
  }): void {
    this.#db
      .prepare(
        `INSERT INTO task_runs (task_id, task, attempt, mode, process, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(run.taskId, run.task, run.attempt, run.mode, run.process, now())
  }

  /** The first recorded run of a task id (by any process sharing the database), if any. */
  taskRun(taskId: string): { mode: string; process: string } | undefined {
    return this.#db
      .prepare('SELECT mode, process FROM task_runs WHERE task_id = ? ORDER BY id LIMIT 1')
      .get(taskId) as { mode: string; process: string } | undefined
  }

  /** False when this task id already wrote its email (a retried or replayed job). */
  insertOutbox(email: Omit<OutboxEmail, 'id' | 'createdAt'>): boolean {
    const result = this.#db
      .prepare(
        `INSERT OR IGNORE INTO outbox (task_id, recipient, subject, body, mode, process, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(email.taskId, email.to, email.subject, email.body, email.mode, email.process, now())
    return result.changes > 0
  }

  listOutbox(limit = 50): OutboxEmail[] {
    const rows = this.#db
      .prepare('SELECT * FROM outbox ORDER BY id DESC LIMIT ?')
      .all(limit) as Array<{
      id: number
      task_id: string
      recipient: string
      subject: string
      body: string
      mode: string
      process: string
      created_at: string
    }>
    return rows.map((row) => ({
      id: row.id,
      taskId: row.task_id,
      to: row.recipient,
      subject: row.subject,
      body: row.body,
      mode: row.mode,
      process: row.process,
      createdAt: row.created_at,
    }))
  }

  insertBatchRun(run: Omit<BatchRun, 'id' | 'createdAt'>): boolean {
    const result = this.#db
      .prepare(
        `INSERT OR IGNORE INTO batch_runs (task_id, mode, process, projects, duration_ms, created_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(run.taskId, run.mode, run.process, run.projects, run.durationMs, now())
    return result.changes > 0
  }

  listBatchRuns(limit = 20): BatchRun[] {
    const rows = this.#db
      .prepare('SELECT * FROM batch_runs ORDER BY id DESC LIMIT ?')
      .all(limit) as Array<{
      id: number
      task_id: string
      mode: string
      process: string
      projects: number
      duration_ms: number
      created_at: string
    }>
    return rows.map((row) => ({
      id: row.id,
      taskId: row.task_id,
      mode: row.mode,
      process: row.process,
      projects: row.projects,
      durationMs: row.duration_ms,
      createdAt: row.created_at,
    }))
  }

  // ── chat ────────────────────────────────────────────────────────────────────────────────

  addChatMessage(message: Omit<ChatMessage, 'id' | 'at'>): ChatMessage {
    const at = now()
    const result = this.#db
      .prepare(
        'INSERT INTO chat_messages (room, author, text, process, created_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run(message.room, message.author, message.text, message.process, at)
    const id = Number(result.lastInsertRowid)
    if (id % 50 === 0) {
      this.#db
        .prepare('DELETE FROM chat_messages WHERE room = ? AND id <= ?')
        .run(message.room, id - CHAT_KEEP)
    }
    return { ...message, id, at }
  }

  recentChat(room: string, limit = 50): ChatMessage[] {
    const rows = this.#db
      .prepare(
        'SELECT id, room, author, text, process, created_at AS at FROM chat_messages WHERE room = ? ORDER BY id DESC LIMIT ?',
      )
      .all(room, limit) as ChatMessage[]
    return rows.reverse()
  }

  // ── polls ───────────────────────────────────────────────────────────────────────────────

  listPolls(): Poll[] {
    const rows = this.#db
      .prepare('SELECT id, question, options FROM polls ORDER BY id')
      .all() as Array<{
      id: number
      question: string
      options: string
    }>
    return rows.map((row) => ({
      id: row.id,
      question: row.question,
      options: JSON.parse(row.options) as string[],
    }))
  }

  getPoll(id: number): Poll | undefined {
    return this.listPolls().find((poll) => poll.id === id)
  }

  /** One vote per voter per poll; voting again moves the vote. */
  vote(pollId: number, voter: string, option: number): void {
    this.#db
      .prepare(
        `INSERT INTO poll_votes (poll_id, voter, option, voted_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (poll_id, voter) DO UPDATE SET option = excluded.option, voted_at = excluded.voted_at`,
      )
      .run(pollId, voter, option, now())
  }

  pollResults(poll: Poll): PollResults {
    const rows = this.#db
      .prepare('SELECT option, COUNT(*) AS n FROM poll_votes WHERE poll_id = ? GROUP BY option')
      .all(poll.id) as Array<{ option: number; n: number }>
    const counts = poll.options.map(() => 0)
    for (const row of rows)
      if (row.option >= 0 && row.option < counts.length) counts[row.option] = row.n
    return { poll: poll.id, counts, total: counts.reduce((a, b) => a + b, 0) }
  }
}
