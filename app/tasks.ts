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
  /** 'queued' | 'inline' | 'spooled' | 'deferred' | 'dropped' | 'duplicate' | 'rejected' */
  mode: DispatchResult['mode']
  /** Inline runs only: whether the handler succeeded. */
  ok?: boolean
  error?: string
  at: string
  process: string
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
    const { db, cache, logger, processName } = deps
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
      { attempts: 3, backoff: { type: 'exponential', delayMs: 500 }, timeoutMs: 10_000 },
    )

    queue.define<CompostArgs, { projects: number; durationMs: number }>(
      'compost',
      audited(async (_args: CompostArgs, ctx) => {
        const started = performance.now()
        const projects = db.listProjects()
        const now = Date.now()
        db.setImpactScores(projects.map((p) => ({ id: p.id, score: impactScore(p, now) })))
        await invalidateProjects(
          cache,
          projects.map((p) => p.id),
        )
        const durationMs = Math.round((performance.now() - started) * 10) / 10
        db.insertBatchRun({
          taskId: ctx.id,
          mode: ctx.mode,
          process: processName,
          projects: projects.length,
          durationMs,
        })
        logger.info({ projects: projects.length, mode: ctx.mode, durationMs }, 'compost batch ran')
        return { projects: projects.length, durationMs }
      }),
      // A batch is not for a request path: while Redis is down a manual run waits in the spool
      // for a worker. The periodic run recomputes from the database (idempotent), so each
      // replica may run it locally during an outage.
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
      { attempts: 2, backoff: { type: 'fixed', delayMs: 200 }, timeoutMs: 10_000 },
    )
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

  /** Newest first. */
  recent(): DispatchRecord[] {
    return [...this.#recent]
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
    this.#recent.unshift(record)
    if (this.#recent.length > RECENT) this.#recent.length = RECENT
    for (const listener of this.#listeners) {
      try {
        listener(record)
      } catch (error) {
        this.#deps.logger.error({ err: error }, 'a dispatch listener threw')
      }
    }
    return record
  }
}
