import type { RedisOptions } from 'ioredis'
import { invalidOption } from '../errors.js'

/** Where failsoft connects, parsed once; `label` is safe to log (no credentials). */
export interface RedisTarget {
  readonly options: RedisOptions
  /** host:port/db — never a username or password. */
  readonly label: string
  readonly tls: boolean
  /** Strings that must never appear in a log line or a status payload. */
  readonly secrets: readonly string[]
}

const DEFAULT_URL = 'redis://127.0.0.1:6379'

/**
 * Parse the `redis` option: a `redis://` / `rediss://` URL (user:password@ for ACL users, /db),
 * or an ioredis options object. `undefined` means the local default; `null` is handled by the
 * caller (memory-only mode).
 */
export function parseRedisTarget(input: string | RedisOptions | undefined): RedisTarget {
  if (input === undefined) return parseRedisTarget(DEFAULT_URL)
  if (typeof input === 'string') return fromUrl(input)
  if (typeof input === 'object' && input !== null && !Array.isArray(input))
    return fromOptions(input)
  throw invalidOption(
    'redis',
    'a redis:// or rediss:// URL, an ioredis options object, or null',
    input,
  )
}

function fromUrl(raw: string): RedisTarget {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    // Never echo the raw string: it may carry a password.
    throw invalidOption('redis', 'a valid redis:// or rediss:// URL', redactUrl(raw))
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw invalidOption('redis', 'a URL with the redis: or rediss: scheme', `${url.protocol}//…`)
  }
  const options: RedisOptions = { host: url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1' }
  options.port = url.port ? Number(url.port) : 6379
  if (url.username) options.username = decodeURIComponent(url.username)
  if (url.password) options.password = decodeURIComponent(url.password)
  const dbText = url.pathname.replace(/^\//, '') || url.searchParams.get('db') || '0'
  const db = Number(dbText)
  if (!Number.isInteger(db) || db < 0)
    throw invalidOption('redis', 'a URL whose path is a database number', dbText, 'range')
  options.db = db
  const tls = url.protocol === 'rediss:'
  if (tls) options.tls = { servername: options.host }
  return fromOptions(options)
}

function fromOptions(options: RedisOptions): RedisTarget {
  const host = options.host ?? '127.0.0.1'
  const port = options.port ?? 6379
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw invalidOption('redis.port', 'an integer port between 1 and 65535', port, 'range')
  }
  const db = options.db ?? 0
  const where = options.path
    ? `unix:${options.path}`
    : `${host.includes(':') ? `[${host}]` : host}:${port}`
  const secrets = [options.password].filter(
    (s): s is string => typeof s === 'string' && s.length > 0,
  )
  return {
    options: { ...options, host, port, db },
    label: `${where}/${db}`,
    tls: options.tls !== undefined,
    secrets,
  }
}

/** Strip credentials from anything that looks like a URL (for error messages). */
export function redactUrl(text: string): string {
  return text.replace(/(\w+:\/\/)([^@/\s]*)@/g, '$1[redacted]@')
}
