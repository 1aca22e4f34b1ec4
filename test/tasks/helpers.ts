import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  createFailsoft,
  type Failsoft,
  type Logger,
  type TaskQueue,
  type TaskQueueInput,
} from '../../src/index.js'
import type { AfterHook } from '../support/fault-kit.js'

export { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'

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

const fixture = fileURLToPath(new URL('./fixtures/node.ts', import.meta.url))

export interface ChildNode {
  readonly child: ChildProcess
  /** Resolves with the first IPC message whose `event` matches. */
  next<T = Record<string, unknown>>(event: string, timeoutMs?: number): Promise<T>
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>
  /** Ask it to close cleanly, SIGKILL after 5 s. */
  close(): Promise<void>
}

/** A failsoft process (test/tasks/fixtures/node.ts) driven over IPC; killed after the test. */
export function spawnNode(t: AfterHook, env: Record<string, string>): ChildNode {
  const child = fork(fixture, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const messages: Array<Record<string, unknown>> = []
  const waiters: Array<() => void> = []
  child.on('message', (raw: unknown) => {
    messages.push(raw as Record<string, unknown>)
    for (const wake of waiters.splice(0)) wake()
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  t.after(kill)
  return {
    child,
    next<T>(event: string, timeoutMs = 30_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child sent no '${event}' within ${timeoutMs} ms`)),
          timeoutMs,
        )
        const check = (): void => {
          const index = messages.findIndex((m) => m.event === event)
          if (index >= 0) {
            clearTimeout(timer)
            resolve(messages.splice(index, 1)[0] as T)
          } else if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer)
            reject(new Error(`child exited before sending '${event}'`))
          } else {
            waiters.push(check)
          }
        }
        check()
        child.once('exit', () => {
          for (const wake of waiters.splice(0)) wake()
        })
      })
    },
    kill,
    async close(): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.send({ cmd: 'close' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Executions recorded in a file by the worker fixture and by inline handlers: id → count. */
export function countExecutions(path: string): Map<string, number> {
  const counts = new Map<string, number>()
  let text = ''
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return counts
  }
  for (const line of text.split('\n')) {
    const id = line.split(' ')[1]
    if (id) counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}
