import type { RedisOptions } from 'ioredis'
import { invalidOption } from './errors.js'
import { resolveTimings, type HealthTimings } from './health/timings.js'
import { defaultLogger, silentLogger, type Logger } from './logger.js'
import { parseRedisTarget, type RedisTarget } from './redis/target.js'

export interface FailsoftOptions {
  /**
   * Where Redis is: a `redis://` or `rediss://` (TLS) URL — `redis://user:password@host:6379/2`
   * for an ACL user and database 2 — or an ioredis options object, or `null` for a memory-only
   * instance that never opens a socket. Default `redis://127.0.0.1:6379`.
   */
  redis?: string | RedisOptions | null | undefined
  /**
   * Prefix of every key failsoft writes (`<prefix>:…`), so several apps can share a Redis.
   * Letters, digits, `-`, `_`, `.`; 1 to 64 characters. Default `'failsoft'`.
   */
  prefix?: string | undefined
  /** A pino (or pino-compatible) logger; `false` for none. Default: pino to stdout. */
  logger?: Logger | false | undefined
  /** Detection and recovery timings (see HealthTimings for each default). */
  health?: Partial<HealthTimings> | undefined
}

export interface ResolvedOptions {
  readonly target: RedisTarget | null
  readonly prefix: string
  readonly logger: Logger
  readonly timings: HealthTimings
}

const KNOWN = new Set(['redis', 'prefix', 'logger', 'health'])
const PREFIX = /^[A-Za-z0-9_.-]{1,64}$/

export function resolveOptions(input: FailsoftOptions | undefined): ResolvedOptions {
  if (input === undefined) input = {}
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('options', 'an object', input)
  }
  for (const key of Object.keys(input)) {
    if (!KNOWN.has(key))
      throw invalidOption(key, `one of ${[...KNOWN].join(', ')} (unknown option)`, key)
  }
  const prefix = input.prefix ?? 'failsoft'
  if (typeof prefix !== 'string') throw invalidOption('prefix', 'a string', prefix)
  if (!PREFIX.test(prefix)) {
    throw invalidOption('prefix', '1 to 64 letters, digits, "-", "_" or "."', prefix, 'range')
  }
  const logger = resolveLogger(input.logger)
  const target = input.redis === null ? null : parseRedisTarget(input.redis)
  return { target, prefix, logger, timings: resolveTimings(input.health) }
}

function resolveLogger(logger: FailsoftOptions['logger']): Logger {
  if (logger === undefined) return defaultLogger()
  if (logger === false) return silentLogger
  const methods = ['error', 'warn', 'info', 'debug', 'child'] as const
  if (
    typeof logger !== 'object' ||
    logger === null ||
    methods.some((m) => typeof logger[m] !== 'function')
  ) {
    throw invalidOption(
      'logger',
      'a pino-compatible logger (error, warn, info, debug, child) or false',
      logger,
    )
  }
  return logger
}
