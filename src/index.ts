export { createFailsoft, Failsoft } from './failsoft.js'
export type { FailsoftContext, FailsoftStatus } from './failsoft.js'
export type { FailsoftOptions } from './options.js'
export type {
  Health,
  HealthEvents,
  HealthSnapshot,
  HealthState,
  ComponentRegistration,
  ComponentHandle,
  RecoveryContext,
} from './health/monitor.js'
export { defaultTimings } from './health/timings.js'
export type { HealthTimings } from './health/timings.js'
export type { Disposable } from './health/events.js'
export type { Logger } from './logger.js'
export { FailsoftError, RedisUnavailableError, RedisTimeoutError, ClosedError } from './errors.js'
export type { FailsoftErrorCode } from './errors.js'
