import { randomUUID } from 'node:crypto'

/** Fast detection for tests: a killed Redis is noticed at once, a frozen one within ~150 ms. */
export const FAST_HEALTH = {
  probeIntervalMs: 50,
  heartbeatIntervalMs: 50,
  heartbeatTimeoutMs: 100,
  commandTimeoutMs: 100,
  connectTimeoutMs: 500,
} as const

/** A key prefix of its own for each test, so tests sharing a redis-server never collide. */
export function uniquePrefix(): string {
  return `t${randomUUID().slice(0, 8)}`
}
