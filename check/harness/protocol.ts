// What the harness and a child say to each other: the child's configuration (environment
// variable CHECK_CHILD, JSON) and the IPC messages both ways.
import type { LoadPlan, Role, WorkPlan } from './schedule.js'

export interface ChildConfig {
  /** Incarnation name, `<base>.<n>`. */
  name: string
  base: string
  role: Role
  incarnation: number
  redisUrl: string
  prefix: string
  spoolPath: string
  historyPath: string
  seed: number
  clockOffsetMs: number
  load: LoadPlan
  work: WorkPlan
  /** A restarted child starts its load as soon as it is ready (the load phase is running). */
  startLoad: boolean
}

export type ToChild =
  | { type: 'start-load' }
  | { type: 'stop-load' }
  | { type: 'force'; on: boolean }
  | { type: 'status' }
  | { type: 'close' }

export type FromChild =
  | { type: 'ready'; state: string }
  | { type: 'load-stopped' }
  | { type: 'status'; state: string; inFlight: number }
  | { type: 'closed' }

/** Names shared by every child: the queue, the cache namespace, the group. */
export const QUEUE = 'chk'
export const NAMESPACE = 'chk'
export const GROUP = 'room'
export const TASKS = ['quick', 'spooly', 'droppy', 'long'] as const
export type TaskName = (typeof TASKS)[number]
