export { createFailsoft, Failsoft } from './failsoft.js'
export type { ComponentStatus, ComponentStatuses, FailsoftStatus } from './failsoft.js'
export type { FailsoftContext } from './context.js'
export type { FailsoftOptions } from './options.js'
export type {
  Health,
  HealthEvents,
  HealthSnapshot,
  HealthState,
  ComponentRegistration,
  ComponentHandle,
  RecoveryContext,
  RedisStatus,
} from './health/monitor.js'
export { defaultTimings } from './health/timings.js'
export type { HealthTimings } from './health/timings.js'
export type { Disposable } from './health/events.js'
export type { Logger } from './logger.js'
export { FailsoftError, RedisUnavailableError, RedisTimeoutError, ClosedError } from './errors.js'
export {
  ChannelFullError,
  InvalidMessageError,
  InvalidNameError,
  MessageTooLargeError,
} from './errors.js'
export { ChannelLayer } from './channels/layer.js'
export type {
  ChannelBackend,
  ChannelLayerStatus,
  ChannelListener,
  GroupSendOptions,
  ReceiveOptions,
} from './channels/layer.js'
export type { ChannelLayerApi } from './channels/api.js'
export type { ChannelMessage } from './channels/message.js'
export { defaultChannelLayerOptions } from './channels/options.js'
export type { ChannelLayerOptions, ChannelLayerInput } from './channels/options.js'
export { ChannelWebSocketServer, CloseCode } from './channels/websocket.js'
export type {
  ChannelWebSocketOptions,
  ClientMessage,
  Consumer,
  ConsumerContext,
  ChannelWebSocketCounters,
  ChannelWebSocketStatus,
} from './channels/websocket.js'
export { Cache } from './cache/cache.js'
export type { CacheStatus, SetOptions } from './cache/cache.js'
export { defaultCacheOptions } from './cache/options.js'
export type {
  CacheOptions,
  MemoryMode,
  MemoryTierOptions,
  PeerTimeoutAction,
} from './cache/options.js'
export type { Serializer } from './cache/serializer.js'
export { jsonSerializer } from './cache/serializer.js'
export {
  InvalidKeyError,
  InvalidTtlError,
  InvalidValueError,
  ValueTooLargeError,
} from './cache/errors.js'
export {
  InlineBusyError,
  InlineRateLimitedError,
  FlowUnavailableError,
  InvalidFlowError,
  InvalidTaskArgsError,
  LeaseLostError,
  InvalidProgressError,
  SpoolFullError,
  TaskDroppedError,
  TaskFailedError,
  TaskResultTimeoutError,
  TaskResultUnavailableError,
  TaskTimeoutError,
  UnknownTaskError,
} from './errors.js'
export type { TaskResultUnavailableReason } from './errors.js'
export { TaskQueue } from './tasks/queue.js'
export type { TaskCounts, TaskQueueStatus } from './tasks/queue.js'
export type { SpoolStatus } from './tasks/spool.js'
export type { ScheduleStatus } from './tasks/scheduler.js'
export { Task } from './tasks/task.js'
export { MAX_PROGRESS_BYTES } from './tasks/task.js'
export type {
  DispatchHandle,
  DispatchOptions,
  DispatchResult,
  PassThroughJobOptions,
  TaskContext,
  TaskHandler,
  TaskProgress,
  TaskResultHandle,
  TaskResultOptions,
} from './tasks/task.js'
export type {
  TaskEventListener,
  TaskEventMode,
  TaskEventName,
  TaskEvents,
} from './tasks/results.js'
export { defaultTaskOptions, defaultTaskQueueOptions } from './tasks/options.js'
export type {
  BackoffStrategy,
  TaskBackoff,
  TaskFallback,
  TaskOptions,
  TaskOptionsInput,
  TaskQueueInput,
  TaskQueueOptions,
} from './tasks/options.js'
export type { WorkOptions, WorkerHandle, WorkerStatus } from './tasks/worker.js'
export { MAX_FLOW_DEPTH, MAX_FLOW_NODES } from './tasks/flow.js'
export type { FlowHandle, FlowIds, FlowNode } from './tasks/flow.js'
export type { ScheduleDate, ScheduleOptions, ScheduleResult } from './tasks/scheduler.js'
export type { FailsoftErrorCode } from './errors.js'
export { channelNames } from './diagnostics/channels.js'
export type {
  CacheOperationMessage,
  ChannelOperationMessage,
  DispatchMessage,
  FailsoftMessage,
  HealthTransitionMessage,
  RecoveryMessage,
  RecoveryStepMessage,
  RedisCommandMessage,
  TaskRunMessage,
} from './diagnostics/channels.js'
