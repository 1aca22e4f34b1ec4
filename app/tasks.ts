import { randomUUID } from 'node:crypto'
import type { Cache, DispatchOptions, DispatchResult, TaskContext, TaskQueue } from 'failsoft'
import type { Logger } from 'pino'
import { impactScore, type AppDatabase, type Project } from './db.js'
import { embed } from './embedding.js'
import { invalidateProjects } from './api/projects.js'

/**
 * The seed's tasks module: emails, the periodic "compost" batch and embeddings, defined once
 * on a failsoft task queue and dispatched from the views. Every handler is idempotent by job
 * id, because a job may run on a worker of any process, inline in the dispatching one, or be
 * handed over from the spool after an outage.
 */

export interface EmailArgs {
  to: string
  subject: string
  body: string
}

export interface CompostArgs {
  reason?: string
}

export interface EmbedArgs {
  projectId: number
}

/** One dispatch as the UI shows it. */
export interface DispatchRecord {
  task: string
  id: string
  /**
   * What failsoft did: 'queued' | 'inline' | 'spooled' | 'deferred' | 'dropped' | 'duplicate'
   * | 'rejected' — or 'local': the app ran it in this process without the queue (a manual
   * compost batch while Redis is unavailable, see `compostNow`).
   */
  mode: DispatchResult['mode'] | 'local'
  /** Inline and local runs only: whether the handler succeeded. */
  ok?: boolean
  error?: string
  at: string
  process: string
  /**
   * A spooled job that left this process's spool (handed to the queue once Redis was back),
   * and, once a run of it is recorded (by any process), where it ran.
   */
  handedOver?: boolean
  ran?: { mode: string; process: string }
}

export interface TaskDeps {
  db: AppDatabase
  cache: Cache
  logger: Logger
  /** Name of this process, written with each side effect so the UI shows who ran it. */
  processName: string
}

/** Dispatches remembered for the status panel, per process. */
const RECENT = 20

export class AppTasks {
  readonly queue: TaskQueue
  readonly #deps: TaskDeps
  readonly #recent: DispatchRecord[] = []
  readonly #listeners = new Set<(record: DispatchRecord) => void>()

  constructor(queue: TaskQueue, deps: TaskDeps) {
    this.queue = queue
    this.#deps = deps
    const { db, processName } = deps
    // Every completed run is recorded, so a task that ran twice is visible (see recordTaskRun).
    const audited =
      <A, R>(handler: (args: A, ctx: TaskContext) => R | Promise<R>) =>
      async (args: A, ctx: TaskContext): Promise<R> => {
        const result = await handler(args, ctx)
        db.recordTaskRun({
          taskId: ctx.id,
          task: ctx.name,
          attempt: ctx.attempt,
          mode: ctx.mode,
          process: processName,
        })
        return result
      }

    queue.define<EmailArgs, { stored: boolean }>(
      'send_email',
      audited((args: EmailArgs, ctx) => {
        // The outbox table stands in for SMTP; the task id makes a retry or replay a no-op.
        const stored = db.insertOutbox({
          taskId: ctx.id,
          to: args.to,
          subject: args.subject,
          body: args.body,
          mode: ctx.mode,
          process: processName,
        })
        return { stored }
      }),
      // The welcome email is keyed (welcome:<id>). While Redis is down a keyed dispatch is
      // spooled by default (its done marker is out of reach); an email should go out now, and
      // the outbox row is unique per task id, so a second run (another replica during the same
      // outage) stores nothing twice: run it inline.
      {
        attempts: 3,
        backoff: { type: 'exponential', delayMs: 500 },
        timeoutMs: 10_000,
        keyedFallback: 'inline',
      },
    )

    queue.define<CompostArgs, { projects: number; durationMs: number }>(
      'compost',
      audited((_args: CompostArgs, ctx) => this.#compost(ctx.id, ctx.mode)),
      // A batch is not for a request path: while Redis is down a dispatched run waits in the
      // spool for a worker (the manual button runs it here instead: compostNow). The periodic
      // run recomputes from the database (idempotent), so each replica may run it locally
      // during an outage.
      { fallback: 'spool', whileDown: 'local', timeoutMs: 60_000 },
    )

    queue.define<EmbedArgs, { embedded: boolean }>(
      'embed_project',
      audited((args: EmbedArgs, ctx: TaskContext) => {
        const project = db.getProject(args.projectId)
        if (project === undefined) return { embedded: false }
        if (ctx.signal.aborted) throw new Error('embedding aborted')
        const embedded = db.saveEmbedding(
          project.id,
          embed(`${project.title}\n${project.description}`),
        )
        return { embedded }
      }),
      // Keyed by project version; saving an embedding is idempotent: inline while down.
      {
        attempts: 2,
        backoff: { type: 'fixed', delayMs: 200 },
        timeoutMs: 10_000,
        keyedFallback: 'inline',
      },
    )
  }

  /** Recompute every impact score and record the run (`taskId` unique per run). */
  async #compost(taskId: string, mode: string): Promise<{ projects: number; durationMs: number }> {
    const { db, cache, logger, processName } = this.#deps
    const started = performance.now()
    const projects = db.listProjects()
    const now = Date.now()
    db.setImpactScores(projects.map((p) => ({ id: p.id, score: impactScore(p, now) })))
    await invalidateProjects(
      cache,
      projects.map((p) => p.id),
    )
    const durationMs = Math.round((performance.now() - started) * 10) / 10
    db.insertBatchRun({ taskId, mode, process: processName, projects: projects.length, durationMs })
    logger.info({ projects: projects.length, mode, durationMs }, 'compost batch ran')
    return { projects: projects.length, durationMs }
  }

  /**
   * "Recompute now": a compost batch on the queue while Redis is available; while it is not,
   * run here and now (mode 'local') rather than spooled until Redis is back — a process whose
   * Redis never returns would otherwise never run it. The batch recomputes from the database
   * (idempotent), as the periodic run does locally during an outage.
   */
  async compostNow(available: boolean): Promise<DispatchRecord> {
    if (available) return this.compost({ reason: 'manual' })
    const id = `local-${randomUUID()}`
    const record: DispatchRecord = {
      task: 'compost',
      id,
      mode: 'local',
      at: new Date().toISOString(),
      process: this.#deps.processName,
    }
    try {
      await this.#compost(id, 'local')
      this.#deps.db.recordTaskRun({
        taskId: id,
        task: 'compost',
        attempt: 1,
        mode: 'local',
        process: this.#deps.processName,
      })
      record.ok = true
    } catch (error) {
      record.ok = false
      record.error = error instanceof Error ? error.message : String(error)
      this.#deps.logger.warn({ err: error }, 'local compost batch failed')
    }
    this.#remember(record)
    return record
  }

  /**
   * Bring the spooled records up to date: handed over once this process's spool is empty
   * (each process has its own spool, replayed in order), and where they ran once a run is
   * recorded in the shared database. Called before the status is built.
   */
  refreshSpooled(spoolDepth: number): void {
    for (const record of this.#recent) {
      if (record.mode !== 'spooled' || record.ran !== undefined) continue
      const run = this.#deps.db.taskRun(record.id)
      if (run !== undefined) {
        record.handedOver = true
        record.ran = run
      } else if (spoolDepth === 0) record.handedOver = true
    }
  }

  sendEmail(args: EmailArgs, options?: DispatchOptions): Promise<DispatchRecord> {
    return this.#dispatch('send_email', args, options)
  }

  compost(args: CompostArgs = {}, options?: DispatchOptions): Promise<DispatchRecord> {
    return this.#dispatch('compost', args, options)
  }

  embedProject(project: Pick<Project, 'id' | 'updatedAt'>): Promise<DispatchRecord> {
    // One embedding per version of the project: a repeated dispatch is not a second job.
    return this.#dispatch(
      'embed_project',
      { projectId: project.id },
      { idempotencyKey: `embed:${project.id}:${project.updatedAt}` },
    )
  }

  /** The periodic compost batch: one BullMQ job scheduler, shared by every replica. */
  async scheduleCompost(everyMs: number): Promise<void> {
    const result = await this.queue.schedule('compost', {
      everyMs,
      args: { reason: 'periodic' },
    })
    this.#deps.logger.info({ everyMs, state: result.state }, 'compost batch scheduled')
  }

  /** Newest first (copies: the status payload must not change under a pending push). */
  recent(): DispatchRecord[] {
    return this.#recent.map((record) => ({ ...record }))
  }

  onDispatch(listener: (record: DispatchRecord) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  async #dispatch(name: string, args: unknown, options?: DispatchOptions): Promise<DispatchRecord> {
    const result = await this.queue.dispatch(name, args, options)
    const record: DispatchRecord = {
      task: name,
      id: result.id,
      mode: result.mode,
      at: new Date().toISOString(),
      process: this.#deps.processName,
    }
    if (result.mode === 'inline') {
      record.ok = result.ok
      if (!result.ok) record.error = result.error.message
    } else if (result.mode === 'rejected') {
      record.error = result.error.message
    }
    this.#remember(record)
    return record
  }

  #remember(record: DispatchRecord): void {
    this.#recent.unshift(record)
    if (this.#recent.length > RECENT) this.#recent.length = RECENT
    for (const listener of this.#listeners) {
      try {
        listener(record)
      } catch (error) {
        this.#deps.logger.error({ err: error }, 'a dispatch listener threw')
      }
    }
  }
}
