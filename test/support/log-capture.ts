import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Logger } from '../../src/index.js'

export interface LogRecord {
  level: number
  msg: string
  component?: string
  err?: { type?: string; message?: string; stack?: string }
  [key: string]: unknown
}

/**
 * A real pino logger writing JSON lines into memory, so tests assert on whole records exactly
 * as they would reach a log collector (including how errors are serialized).
 */
export function captureLogs(): { logger: Logger; records: LogRecord[]; raw: () => string } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
      callback()
    },
  })
  const logger = pino({ level: 'debug' }, stream)
  return {
    logger,
    /** Every record so far, parsed from the JSON lines. */
    get records(): LogRecord[] {
      return lines.map((line) => JSON.parse(line) as LogRecord)
    },
    raw: () => lines.join('\n'),
  }
}

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const
