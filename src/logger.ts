import { pino } from 'pino'

/**
 * The subset of pino's API failsoft uses. Any pino logger fits; so does a thin adapter over
 * another logger. Fields come first, the message second, the error under `err`.
 */
export interface Logger {
  error(fields: Record<string, unknown>, message: string): void
  warn(fields: Record<string, unknown>, message: string): void
  info(fields: Record<string, unknown>, message: string): void
  debug(fields: Record<string, unknown>, message: string): void
  child(bindings: Record<string, unknown>): Logger
}

/** The logger used when none is injected: pino to stdout, level from FAILSOFT_LOG_LEVEL (info). */
export function defaultLogger(): Logger {
  return pino({
    name: 'failsoft',
    level: process.env.FAILSOFT_LOG_LEVEL ?? 'info',
    // Defence in depth: failsoft never passes credentials to the logger, but a caller's
    // bindings might.
    redact: { paths: ['password', '*.password', 'redis.password'], censor: '[redacted]' },
  })
}

const noop = (): void => {}

/** A logger that drops everything (`logger: false`). */
export const silentLogger: Logger = {
  error: noop,
  warn: noop,
  info: noop,
  debug: noop,
  child: () => silentLogger,
}

/**
 * A plain, log-safe copy of an error: name, message, code and stack only. ioredis attaches the
 * failed command (with its arguments — for AUTH, the password) to its errors, and pino's error
 * serializer copies every enumerable property, so raw ioredis errors must never reach a logger.
 * `secrets` are scrubbed from the message and stack as a last guard.
 */
export function loggableError(
  error: unknown,
  secrets: readonly string[] = [],
): Record<string, unknown> {
  const scrub = (text: string): string =>
    secrets.reduce((acc, secret) => (secret ? acc.split(secret).join('[redacted]') : acc), text)
  // A null-prototype object: pino's error serializer would otherwise report its type as
  // 'Object' instead of the original error's name.
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  if (!(error instanceof Error)) {
    out.type = typeof error
    out.message = scrub(String(error))
    return out
  }
  out.type = error.name
  out.message = scrub(error.message)
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' || typeof code === 'number') out.code = code
  if (error.stack) out.stack = scrub(error.stack)
  return out
}
