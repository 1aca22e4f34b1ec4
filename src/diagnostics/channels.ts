import {
  channel,
  tracingChannel,
  type Channel,
  type TracingChannel,
} from 'node:diagnostics_channel'
import type { Health, HealthEvents } from '../health/types.js'

/**
 * failsoft's `node:diagnostics_channel` channels: the zero-dependency convention undici and
 * BentoCache follow, so that an APM agent (or `failsoft/otel`, `failsoft/prometheus`) can
 * observe every operation and transition without failsoft knowing it. Each operation is a
 * tracing channel (`start`, `end`, `asyncStart`, `asyncEnd`, `error`, as Node's
 * `TracingChannel.tracePromise` publishes them: `result` or `error` is set on the message by
 * the time `asyncEnd` fires); each transition a plain channel. Every message carries `health`,
 * the `failsoft.health` of the instance it comes from, for subscribers that follow one
 * instance. Nothing is built or published while a channel has no subscriber.
 *
 * The names and shapes are public (docs/observability.md): changing one is a breaking change.
 */

/** Fields every message has. */
export interface FailsoftMessage {
  /** `failsoft.health` of the instance the message comes from. */
  readonly health: Health
}

/** Set by Node on a traced operation's message: the resolved value, or the error. */
interface Outcome<R> {
  result?: R
  error?: unknown
}

export interface CacheOperationMessage extends FailsoftMessage, Outcome<unknown> {
  readonly operation: 'get' | 'set' | 'delete' | 'has' | 'getOrSet' | 'clear'
  readonly namespace: string
  /** The key (null for `clear`). Keys are the application's: a subscriber decides what to keep. */
  readonly key: string | null
}

export interface ChannelOperationMessage extends FailsoftMessage, Outcome<unknown> {
  readonly operation: 'send' | 'groupSend'
  /** The layer's name ('default'). */
  readonly layer: string
  /** The channel (`send`) or group (`groupSend`) name. */
  readonly target: string
}

/** `result` is the dispatch's DispatchResult (`mode`: 'queued', 'inline', 'spooled', 'dropped' …). */
export interface DispatchMessage
  extends FailsoftMessage, Outcome<{ readonly mode: string; readonly id?: string }> {
  readonly queue: string
  readonly task: string
  /** The task id (the job id BullMQ gets). */
  readonly id: string
}

export interface TaskRunMessage extends FailsoftMessage, Outcome<unknown> {
  readonly queue: string
  readonly task: string
  /** The task id (BullMQ's job id when queued). */
  readonly id: string
  /**
   * 'worker': a BullMQ worker of this process; 'inline': the fallback, in the dispatching
   * call; 'local': a periodic run while Redis is unavailable (`whileDown: 'local'`).
   */
  readonly mode: 'worker' | 'inline' | 'local'
  /** The try: 1 for the first (each try is its own message). */
  readonly attempt: number
}

export interface RedisCommandMessage extends FailsoftMessage, Outcome<unknown> {
  /** One round trip through the health monitor's command connection: a command, a pipeline or a script. */
  readonly connection: 'command'
}

export interface RecoveryMessage extends FailsoftMessage, Outcome<void> {
  readonly reset: boolean
  /** Redis may have forgotten acknowledged writes (a restart from older data, a failover). */
  readonly rollback: boolean
  readonly downtimeMs: number
  readonly lateCommandsFenced: boolean
}

export interface RecoveryStepMessage extends FailsoftMessage, Outcome<void> {
  /** The component's name, e.g. 'cache:api', 'channels:default', 'tasks:default'. */
  readonly component: string
}

/**
 * A health transition: the payload of `failsoft.health`'s event of the same name, with
 * `health`. On `down`, `error` is a copy of the cause holding only its name, message (with any
 * credential removed) and code: ioredis attaches the failed command, AUTH's password
 * included, to its errors.
 */
export type HealthTransitionMessage<K extends keyof HealthEvents> = FailsoftMessage &
  HealthEvents[K]

/** A tracing channel with a subscriber check that works on every Node ≥ 20. */
export interface Traced<M extends object> {
  readonly name: string
  readonly channel: TracingChannel<unknown, M>
  /** True when anything listens to any of its five events (read before building a message). */
  readonly active: boolean
}

function traced<M extends object>(name: string): Traced<M> {
  const tc = tracingChannel<unknown, M>(name)
  return {
    name,
    channel: tc,
    // TracingChannel#hasSubscribers is Node ≥ 20.13; the five channels' own flags are older.
    get active() {
      return (
        tc.start.hasSubscribers ||
        tc.end.hasSubscribers ||
        tc.asyncStart.hasSubscribers ||
        tc.asyncEnd.hasSubscribers ||
        tc.error.hasSubscribers
      )
    },
  }
}

/** Every name, for documentation and for subscribers that want them all. */
export const channelNames = {
  cacheGet: 'failsoft:cache.get',
  cacheSet: 'failsoft:cache.set',
  cacheDelete: 'failsoft:cache.delete',
  cacheHas: 'failsoft:cache.has',
  cacheGetOrSet: 'failsoft:cache.getOrSet',
  cacheClear: 'failsoft:cache.clear',
  channelsSend: 'failsoft:channels.send',
  channelsGroupSend: 'failsoft:channels.groupSend',
  tasksDispatch: 'failsoft:tasks.dispatch',
  tasksRun: 'failsoft:tasks.run',
  redisCommand: 'failsoft:redis.command',
  healthRecovery: 'failsoft:health.recovery',
  healthRecoveryStep: 'failsoft:health.recovery.step',
  healthDown: 'failsoft:health.down',
  healthUp: 'failsoft:health.up',
  healthReset: 'failsoft:health.reset',
  healthRollback: 'failsoft:health.rollback',
} as const

export const tracing = {
  cache: {
    get: traced<CacheOperationMessage>(channelNames.cacheGet),
    set: traced<CacheOperationMessage>(channelNames.cacheSet),
    delete: traced<CacheOperationMessage>(channelNames.cacheDelete),
    has: traced<CacheOperationMessage>(channelNames.cacheHas),
    getOrSet: traced<CacheOperationMessage>(channelNames.cacheGetOrSet),
    clear: traced<CacheOperationMessage>(channelNames.cacheClear),
  },
  channels: {
    send: traced<ChannelOperationMessage>(channelNames.channelsSend),
    groupSend: traced<ChannelOperationMessage>(channelNames.channelsGroupSend),
  },
  tasks: {
    dispatch: traced<DispatchMessage>(channelNames.tasksDispatch),
    run: traced<TaskRunMessage>(channelNames.tasksRun),
  },
  redisCommand: traced<RedisCommandMessage>(channelNames.redisCommand),
  recovery: traced<RecoveryMessage>(channelNames.healthRecovery),
  recoveryStep: traced<RecoveryStepMessage>(channelNames.healthRecoveryStep),
} as const

export const transitions: {
  [K in keyof HealthEvents]: Channel<unknown, HealthTransitionMessage<K>>
} = {
  down: channel(channelNames.healthDown) as Channel<unknown, HealthTransitionMessage<'down'>>,
  up: channel(channelNames.healthUp) as Channel<unknown, HealthTransitionMessage<'up'>>,
  reset: channel(channelNames.healthReset) as Channel<unknown, HealthTransitionMessage<'reset'>>,
  rollback: channel(channelNames.healthRollback) as Channel<
    unknown,
    HealthTransitionMessage<'rollback'>
  >,
}
