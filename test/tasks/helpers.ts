import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  createFailsoft,
  type Failsoft,
  type Logger,
  type TaskQueue,
  type TaskQueueInput,
} from '../../src/index.js'
import type { AfterHook } from '../support/fault-kit.js'

/** Fast detection for tests: a killed Redis is noticed at once, a frozen one within ~150 ms. */
export const FAST_HEALTH = {
  probeIntervalMs: 50,
  heartbeatIntervalMs: 50,
  heartbeatTimeoutMs: 100,
  commandTimeoutMs: 100,
  connectTimeoutMs: 500,
} as const

export function uniquePrefix(): string {
  return `t${randomUUID().slice(0, 8)}`
}

/** A temporary directory removed after the test. */
export function tempDir(t: AfterHook): string {
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-tasks-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface TasksSetup {
  failsoft: Failsoft
  tasks: TaskQueue
  prefix: string
}

/**
 * A failsoft instance with a task queue whose spool lives in a temp dir, closed after the
 * test. Waits for the first health decision.
 */
export async function makeTasks(
  t: AfterHook,
  redisUrl: string | null,
  options: TaskQueueInput & { prefix?: string; logger?: Logger | false; spoolDir?: string } = {},
): Promise<TasksSetup> {
  const { prefix = uniquePrefix(), logger = false, spoolDir, ...queueOptions } = options
  const failsoft = createFailsoft({ redis: redisUrl, prefix, logger, health: FAST_HEALTH })
  t.after(() => failsoft.close())
  const dir = spoolDir ?? tempDir(t)
  const tasks = failsoft.tasks({
    ...queueOptions,
    spool: { path: join(dir, 'spool.jsonl'), ...queueOptions.spool },
  })
  await failsoft.ready()
  return { failsoft, tasks, prefix }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Wall time of an async call, in ms. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now()
  const value = await fn()
  return { value, ms: performance.now() - start }
}
