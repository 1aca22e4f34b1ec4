import assert from 'node:assert/strict'
import { after } from 'node:test'
import { createFailsoft, type Failsoft, type FailsoftOptions } from '../../src/index.js'
import { captureLogs } from '../support/log-capture.js'

/** Fail the file if any fault leaked an unhandled rejection or exception. */
export function guardUnhandled(): void {
  const unhandled: unknown[] = []
  process.on('unhandledRejection', (error) => unhandled.push(error))
  process.on('uncaughtException', (error) => unhandled.push(error))
  after(() => assert.deepEqual(unhandled, [], 'no unhandled rejection or exception'))
}

let counter = 0

/**
 * A failsoft instance with a unique prefix, fast probes and captured logs, closed after the
 * test.
 */
export function open(
  t: { after(fn: () => unknown): void },
  options: FailsoftOptions,
): { failsoft: Failsoft; logs: ReturnType<typeof captureLogs>; prefix: string } {
  const logs = captureLogs()
  const prefix = `c${process.pid}x${++counter}`
  const failsoft = createFailsoft({
    prefix,
    logger: logs.logger,
    ...options,
    health: { probeIntervalMs: 50, ...options.health },
  })
  t.after(() => failsoft.close())
  return { failsoft, logs, prefix }
}

/** Run fn, returning its result and how long it took in ms. */
export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now()
  const value = await fn()
  return [value, performance.now() - start]
}
