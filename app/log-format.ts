/**
 * The app's log output: pino's JSON lines for machines (a pipe, a file, a log collector) and a
 * short readable line per record on a terminal. No dependency: pino-pretty would be one more
 * package to install for a few lines of formatting.
 *
 *   23:41:07.512 INFO  reference app listening  url=http://127.0.0.1:3000 redis=up
 *   23:41:09.004 ERROR [health] Redis unavailable; components switch to their fallbacks  err="connect ECONNREFUSED 127.0.0.1:6379"
 */

export type LogFormat = 'pretty' | 'json'

/** `LOG_FORMAT`: 'pretty' | 'json' | 'auto' (default: pretty when stdout is a terminal). */
export function resolveLogFormat(
  setting: string | undefined,
  isTTY: boolean | undefined,
): LogFormat | null {
  if (setting === undefined || setting === '' || setting === 'auto') {
    return isTTY === true ? 'pretty' : 'json'
  }
  return setting === 'pretty' || setting === 'json' ? setting : null
}

const LEVELS: Record<number, [string, string]> = {
  10: ['TRACE', '\x1b[90m'],
  20: ['DEBUG', '\x1b[36m'],
  30: ['INFO ', '\x1b[32m'],
  40: ['WARN ', '\x1b[33m'],
  50: ['ERROR', '\x1b[31m'],
  60: ['FATAL', '\x1b[35m'],
}
const DIM = '\x1b[2m'
const RESET = '\x1b[0m'

/** Fields every record has, or that the line already shows. */
const SHOWN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'component', 'lib'])

function value(field: unknown): string {
  if (typeof field === 'string') return /^[^\s"=]+$/.test(field) ? field : JSON.stringify(field)
  if (typeof field === 'object' && field !== null) {
    const error = field as { message?: unknown; stack?: unknown }
    if (typeof error.message === 'string') return JSON.stringify(error.message)
    return JSON.stringify(field)
  }
  return String(field)
}

/** One pino JSON line as `HH:MM:SS.mmm LEVEL [component] message  key=value …`. */
export function prettyLine(line: string, color: boolean): string {
  let record: Record<string, unknown>
  try {
    record = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line.endsWith('\n') ? line : `${line}\n` // not one of pino's: pass it through
  }
  const at = typeof record.time === 'number' ? new Date(record.time) : new Date()
  const clock = [at.getHours(), at.getMinutes(), at.getSeconds()]
    .map((n) => String(n).padStart(2, '0'))
    .join(':')
  const time = `${clock}.${String(at.getMilliseconds()).padStart(3, '0')}`
  const [label, tint] = LEVELS[Number(record.level)] ?? [String(record.level), '']
  const component = typeof record.component === 'string' ? `[${record.component}] ` : ''
  const fields = Object.entries(record)
    .filter(([key, field]) => !SHOWN.has(key) && field !== undefined)
    .map(([key, field]) => `${key}=${value(field)}`)
    .join(' ')
  const message = String(record.msg ?? '')
  if (!color) return `${time} ${label} ${component}${message}${fields ? `  ${fields}` : ''}\n`
  return (
    `${DIM}${time}${RESET} ${tint}${label}${RESET} ${component}${message}` +
    `${fields ? `  ${DIM}${fields}${RESET}` : ''}\n`
  )
}

/** A pino destination writing readable lines to `out` (colored when it is a terminal). */
export function prettyDestination(out: NodeJS.WriteStream = process.stdout): {
  write(line: string): void
} {
  const color = out.isTTY === true && process.env.NO_COLOR === undefined
  return {
    write(chunk: string) {
      for (const line of chunk.split('\n')) if (line !== '') out.write(prettyLine(line, color))
    },
  }
}
