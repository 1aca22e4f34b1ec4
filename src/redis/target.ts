import type { RedisOptions } from 'ioredis'
import { invalidOption } from '../errors.js'

/** Where failsoft connects, parsed once; `label` is safe to log (no credentials). */
export interface RedisTarget {
  readonly options: RedisOptions
  /**
   * host:port/db, or `sentinel:<name>@host:port,…/db` for a Sentinel set — never a username or
   * password.
   */
  readonly label: string
  /** One Redis (standalone), or a primary found through Redis Sentinel. */
  readonly topology: 'standalone' | 'sentinel'
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
  if (isClient(input)) {
    // Read as options, a client has no host: failsoft would connect to 127.0.0.1:6379 —
    // on a developer's machine, some other Redis.
    throw invalidOption(
      'redis',
      'connection options or a URL, not a connected client (failsoft opens its own connections, each with the settings its role needs): pass the options you built the client with',
      input,
    )
  }
  if (typeof input === 'object' && input !== null && !Array.isArray(input))
    return fromOptions(input)
  throw invalidOption(
    'redis',
    'a redis:// or rediss:// URL, an ioredis options object, or null',
    input,
  )
}

function fromUrl(raw: string): RedisTarget {
  if (/^rediss?-sentinel:/i.test(raw)) return fromSentinelUrl(raw)
  // A URL may carry a password, and its host is not for logs either: an error about it says
  // what is wrong, never what was received.
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw invalidUrl(raw, whyUnparsable(raw))
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    // Only a scheme written as such (before '://') is shown; 'host:6379' parses as scheme 'host:'.
    const scheme = /^([a-z][a-z0-9+.-]{0,19}):\/\//i.exec(raw)?.[1]
    throw invalidUrl(
      raw,
      scheme === undefined
        ? 'it does not start with redis:// or rediss:// (a host:port needs the scheme in front)'
        : `its scheme is "${scheme.toLowerCase()}:", not redis: or rediss:`,
    )
  }
  const options: RedisOptions = { host: url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1' }
  options.port = url.port ? Number(url.port) : 6379
  if (url.username) options.username = decodeURIComponent(url.username)
  if (url.password) options.password = decodeURIComponent(url.password)
  const dbText = url.pathname.replace(/^\//, '') || url.searchParams.get('db') || '0'
  const db = Number(dbText)
  if (!/^[0-9]+$/.test(dbText) || !Number.isSafeInteger(db)) {
    throw invalidUrl(raw, 'its path must be a database number (/0, /1 …)', 'range')
  }
  options.db = db
  const tls = url.protocol === 'rediss:'
  if (tls) options.tls = { servername: options.host }
  return fromOptions(options)
}

/**
 * A Sentinel set as a URL, in the form Lettuce and redis-py's conventions use:
 * `redis-sentinel://[[user]:password@]host1[:port1][,host2[:port2]…][/db]#name` (the primary's
 * name may also be given as `?name=` or `?sentinelMasterId=`; `?sentinelPassword=` for
 * Sentinels that require AUTH). The credentials are the data nodes'. Ports default to 26379.
 */
function fromSentinelUrl(raw: string): RedisTarget {
  const match =
    /^redis(s?)-sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?(?:#(.*))?$/i.exec(
      raw,
    )
  if (match === null) throw invalidUrl(raw, 'it is not a valid redis-sentinel:// URL')
  const [, tls, userinfo, hosts = '', path = '', query = '', fragment] = match
  if (tls === 's' || tls === 'S') {
    throw invalidUrl(
      raw,
      'rediss-sentinel:// is not supported: pass an options object with tls, sentinelTLS and enableTLSForSentinelMode',
    )
  }
  const sentinels = hosts.split(',').map((part) => {
    const hostPort = /^(\[[^\]]+\]|[^:[\]]+)(?::([0-9]{1,5}))?$/.exec(part)
    if (hostPort === null) {
      throw invalidUrl(raw, 'its Sentinel list must be host[:port] entries separated by commas')
    }
    const port = hostPort[2] === undefined ? 26379 : Number(hostPort[2])
    if (port < 1 || port > 65535) {
      throw invalidUrl(raw, 'a Sentinel port is not a number between 1 and 65535', 'range')
    }
    return { host: hostPort[1]!.replace(/^\[(.*)\]$/, '$1'), port }
  })
  const params = new URLSearchParams(query)
  const options: RedisOptions = { sentinels }
  if (userinfo !== undefined && userinfo !== '') {
    const colon = userinfo.indexOf(':')
    const user = colon < 0 ? userinfo : userinfo.slice(0, colon)
    const password = colon < 0 ? '' : userinfo.slice(colon + 1)
    try {
      if (user !== '') options.username = decodeURIComponent(user)
      if (password !== '') options.password = decodeURIComponent(password)
    } catch {
      throw invalidUrl(raw, 'its username or password is not valid percent-encoding')
    }
  }
  const sentinelPassword = params.get('sentinelPassword')
  if (sentinelPassword !== null && sentinelPassword !== '') {
    options.sentinelPassword = sentinelPassword
  }
  let name: string | undefined
  try {
    name =
      (fragment !== undefined && fragment !== '' ? decodeURIComponent(fragment) : undefined) ??
      params.get('name') ??
      params.get('sentinelMasterId') ??
      undefined
  } catch {
    throw invalidUrl(raw, "the primary's name is not valid percent-encoding")
  }
  if (name === undefined) {
    throw invalidUrl(
      raw,
      "it does not name the primary (add #name, the primary's name in the Sentinels)",
    )
  }
  options.name = name
  const dbText = path || params.get('db') || '0'
  if (!/^[0-9]+$/.test(dbText) || !Number.isSafeInteger(Number(dbText))) {
    throw invalidUrl(raw, 'its path must be a database number (/0, /1 …)', 'range')
  }
  options.db = Number(dbText)
  return fromSentinel(options)
}

/** An ioredis `Redis` or `Cluster` instance (or a node-redis client): not options. */
function isClient(input: unknown): boolean {
  if (typeof input !== 'object' || input === null) return false
  const candidate = input as Record<string, unknown>
  return (
    typeof candidate['sendCommand'] === 'function' ||
    candidate['isCluster'] === true ||
    typeof candidate['connect'] === 'function'
  )
}

function fromOptions(options: RedisOptions): RedisTarget {
  if ('cluster' in options || 'startupNodes' in options) {
    throw invalidOption(
      'redis',
      'a standalone Redis or a Sentinel set (Redis Cluster is not supported yet)',
      'cluster' in options ? 'cluster' : 'startupNodes',
    )
  }
  if (options.sentinels !== undefined && options.sentinels !== null) return fromSentinel(options)
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
    topology: 'standalone',
    tls: options.tls !== undefined,
    secrets,
  }
}

/**
 * ioredis' Sentinel options: `sentinels` (host/port of each Sentinel) and `name` (the primary's
 * name in them); `sentinelPassword` / `sentinelUsername` for Sentinels that require AUTH,
 * `password` / `username` for the data nodes, `role` must stay the primary's.
 */
function fromSentinel(options: RedisOptions): RedisTarget {
  const sentinels = options.sentinels
  if (!Array.isArray(sentinels) || sentinels.length === 0) {
    throw invalidOption('redis.sentinels', 'a non-empty array of { host, port }', sentinels)
  }
  const where = sentinels.map((sentinel, i) => {
    if (typeof sentinel !== 'object' || sentinel === null) {
      throw invalidOption(`redis.sentinels[${i}]`, 'an object { host, port }', sentinel)
    }
    const host = sentinel.host ?? '127.0.0.1'
    const port = sentinel.port ?? 26379
    if (typeof host !== 'string' || host === '') {
      throw invalidOption(`redis.sentinels[${i}].host`, 'a host name or address', host)
    }
    if (!Number.isInteger(port) || port <= 0 || port > 65535) {
      throw invalidOption(
        `redis.sentinels[${i}].port`,
        'an integer between 1 and 65535',
        port,
        'range',
      )
    }
    return `${host.includes(':') ? `[${host}]` : host}:${port}`
  })
  const name = options.name
  if (typeof name !== 'string' || !/^[A-Za-z0-9._:-]{1,200}$/.test(name)) {
    throw invalidOption(
      'redis.name',
      "the primary's name in the Sentinels (letters, digits, . _ : -)",
      name,
    )
  }
  if (options.role !== undefined && options.role !== 'master') {
    throw invalidOption(
      'redis.role',
      "'master' (failsoft writes: it must follow the primary; replicas answer READONLY)",
      options.role,
    )
  }
  const db = options.db ?? 0
  const secrets = [options.password, options.sentinelPassword].filter(
    (s): s is string => typeof s === 'string' && s.length > 0,
  )
  return {
    // ioredis asks the Sentinels for the primary on every connection attempt (failsoft's
    // connections never reconnect by themselves: each probe is a fresh attempt, so each one
    // follows a failover). A Sentinel that names a replica, or a demoted primary, is refused.
    options: { ...options, db, role: 'master' },
    label: `sentinel:${name}@${where.join(',')}/${db}`,
    topology: 'sentinel',
    tls: options.tls !== undefined,
    secrets,
  }
}

/**
 * The error for a `redis` URL that cannot be used: it names the option and what is wrong, and
 * describes the value only by its length (the URL's credentials and host are never echoed).
 */
function invalidUrl(
  raw: string,
  reason: string,
  kind: 'type' | 'range' = 'type',
): TypeError | RangeError {
  const message =
    `failsoft: option \`redis\` must be a redis://, rediss:// or redis-sentinel:// URL, but ${reason}; ` +
    `received a string of ${raw.length} characters (not shown: a URL may hold a password)`
  const error = kind === 'range' ? new RangeError(message) : new TypeError(message)
  Object.assign(error, { code: 'FAILSOFT_INVALID_OPTION', option: 'redis' })
  return error
}

/** Why `new URL` refused it, found without echoing any part of it. */
function whyUnparsable(raw: string): string {
  if (raw.trim() === '') return 'it is empty'
  if (raw !== raw.trim() || /\s/.test(raw)) return 'it contains spaces'
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(raw)
  if (scheme === null) return 'it does not start with redis:// or rediss://'
  const rest = raw.slice(scheme[0].length)
  const at = rest.lastIndexOf('@')
  const userinfo = at < 0 ? '' : rest.slice(0, at)
  if (/[#/?@[\]]/.test(userinfo)) {
    return 'its username or password holds a character that must be percent-encoded (# / ? @ [ ])'
  }
  const authority = (at < 0 ? rest : rest.slice(at + 1)).split(/[/?#]/, 1)[0] ?? ''
  if (authority.startsWith('[') && !authority.includes(']')) return 'its IPv6 host lacks its "]"'
  const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/.exec(authority)?.[1]
  if (port !== undefined && port !== '' && !(/^[0-9]{1,5}$/.test(port) && Number(port) <= 65535)) {
    return 'its port is not a number between 1 and 65535'
  }
  return 'it is not a valid URL'
}
