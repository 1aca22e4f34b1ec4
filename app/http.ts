import { readdirSync, readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { extname, join } from 'node:path'
import type { Logger } from 'pino'

/**
 * A tiny router on node:http: exact paths with `:param` segments, JSON in and out, a body
 * size limit, and every failure turned into a JSON error with a 4xx/5xx status.
 */

/** A client mistake (or a refusal): answered as `{ error: { code, message, field? } }`. */
export class HttpError extends Error {
  override readonly name = 'HttpError'
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }
}

export interface Reply {
  status?: number
  body?: unknown
  headers?: Record<string, string>
}

export interface RequestContext {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly url: URL
  readonly params: Readonly<Record<string, string>>
  /** The request body parsed as JSON (415 if not JSON, 413 past the limit, 400 if malformed). */
  json(): Promise<unknown>
}

export type Handler = (context: RequestContext) => Reply | Promise<Reply>

type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE'

interface Route {
  method: Method
  path: string
  segments: string[]
  handler: Handler
}

const SECURITY_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
}

/** The page may load its own script and style and talk to its own host; nothing else. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

export class Router {
  readonly #routes: Route[] = []
  readonly #bodyLimit: number
  readonly #logger: Logger

  constructor(options: { bodyLimitBytes: number; logger: Logger }) {
    this.#bodyLimit = options.bodyLimitBytes
    this.#logger = options.logger
  }

  get(path: string, handler: Handler): this {
    return this.#add('GET', path, handler)
  }

  post(path: string, handler: Handler): this {
    return this.#add('POST', path, handler)
  }

  patch(path: string, handler: Handler): this {
    return this.#add('PATCH', path, handler)
  }

  #add(method: Method, path: string, handler: Handler): this {
    this.#routes.push({ method, path, segments: path.split('/').slice(1), handler })
    return this
  }

  /**
   * Answer the request if a route's path matches and return that route's pattern (a bounded
   * metrics label); null (nothing sent) otherwise.
   */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<string | null> {
    const segments = url.pathname.split('/').slice(1)
    let params: Record<string, string> | null = null
    let route: Route | undefined
    let pattern: string | null = null
    const allowed: string[] = []
    for (const candidate of this.#routes) {
      const match = matchSegments(candidate.segments, segments)
      if (match === null) continue
      allowed.push(candidate.method)
      pattern = candidate.path
      if (
        candidate.method === req.method ||
        (req.method === 'HEAD' && candidate.method === 'GET')
      ) {
        route = candidate
        params = match
        break
      }
    }
    if (pattern === null) return null
    if (route === undefined || params === null) {
      drain(req)
      sendJson(res, 405, errorBody('method_not_allowed', `use ${allowed.join(', ')}`), {
        allow: allowed.join(', '),
      })
      return pattern
    }
    const context: RequestContext = {
      req,
      res,
      url,
      params,
      json: () => readJson(req, this.#bodyLimit),
    }
    try {
      const reply = await route.handler(context)
      if (!res.headersSent) sendJson(res, reply.status ?? 200, reply.body ?? null, reply.headers)
    } catch (error) {
      this.fail(req, res, error)
    }
    return route.path
  }

  /** Turn any error into a JSON answer; only unexpected ones are logged (at ERROR). */
  fail(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    if (res.headersSent) {
      res.destroy()
      return
    }
    if (error instanceof HttpError) {
      // The client may still be sending a body we refused: do not read it, close afterwards.
      if (error.status === 413) res.setHeader('connection', 'close')
      else drain(req)
      sendJson(res, error.status, errorBody(error.code, error.message, error.field), error.headers)
      return
    }
    this.#logger.error(
      { err: plainError(error), method: req.method, path: pathOnly(req.url) },
      'request failed',
    )
    drain(req)
    sendJson(res, 500, errorBody('internal_error', 'internal error'))
  }
}

function matchSegments(pattern: string[], actual: string[]): Record<string, string> | null {
  if (pattern.length !== actual.length) return null
  const params: Record<string, string> = Object.create(null) as Record<string, string>
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i] as string
    const a = actual[i] as string
    if (p.startsWith(':')) {
      if (a.length === 0) return null
      let value: string
      try {
        value = decodeURIComponent(a)
      } catch {
        return null // malformed percent-encoding: no route matches it (404)
      }
      params[p.slice(1)] = value
    } else if (p !== a) return null
  }
  return params
}

function errorBody(code: string, message: string, field?: string): unknown {
  return { error: field === undefined ? { code, message } : { code, message, field } }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(res.req?.method === 'HEAD' ? undefined : text)
}

export function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  contentType = 'text/plain; charset=utf-8',
): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': contentType,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  })
  res.end(res.req?.method === 'HEAD' ? undefined : text)
}

/** Discard an unread request body so the connection can be reused. */
function drain(req: IncomingMessage): void {
  if (!req.readableEnded) req.resume()
}

function pathOnly(url: string | undefined): string {
  if (url === undefined) return '/'
  const q = url.indexOf('?')
  return (q < 0 ? url : url.slice(0, q)).slice(0, 200)
}

/** Name and message only: request objects and bodies never reach the log. */
export function plainError(error: unknown): Record<string, unknown> {
  if (error instanceof Error)
    return { type: error.name, message: error.message, stack: error.stack }
  return { type: typeof error, message: String(error) }
}

/** JSON.parse without prototype pollution: `__proto__` keys are dropped. */
export function safeParse(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => (key === '__proto__' ? undefined : value))
}

const UTF8 = new TextDecoder('utf-8', { fatal: true })

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new HttpError(415, 'unsupported_media_type', 'send the body as application/json')
  }
  const declared = Number(req.headers['content-length'] ?? NaN)
  if (Number.isFinite(declared) && declared > limit) {
    throw new HttpError(413, 'body_too_large', `the body must be at most ${limit} bytes`)
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) {
      throw new HttpError(413, 'body_too_large', `the body must be at most ${limit} bytes`)
    }
    chunks.push(chunk)
  }
  let text: string
  try {
    // Strict: a lenient decode turns bytes that are not UTF-8 (or a surrogate encoded in
    // UTF-8, ED A0 80) into U+FFFD, which would then be stored as if the client had sent it.
    text = UTF8.decode(Buffer.concat(chunks))
  } catch {
    throw new HttpError(400, 'invalid_encoding', 'the body is not valid UTF-8')
  }
  try {
    return safeParse(text)
  } catch {
    throw new HttpError(400, 'invalid_json', 'the body is not valid JSON')
  }
}

// ── validation helpers ─────────────────────────────────────────────────────────────────────

/** The body as a plain object with only the `allowed` keys (400 otherwise). */
export function objectBody(value: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpError(400, 'invalid_body', 'the body must be a JSON object')
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new HttpError(
        400,
        'unknown_field',
        `unknown field; allowed: ${allowed.join(', ')}`,
        key.slice(0, 64),
      )
    }
  }
  return value as Record<string, unknown>
}

export interface TextRule {
  min?: number
  max: number
  /** Reject line breaks and other control characters (titles, names). Default false. */
  singleLine?: boolean
}

// C0 controls except tab/newline/carriage return, DEL, and the C1 range.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/
const LINE_BREAK = /[\r\n\u2028\u2029]/
/** A UTF-16 surrogate not part of a pair (JSON's "\ud800" escape): no character at all. */
const LONE_SURROGATE = /\p{Cs}/u

/** A string field, trimmed, `min`..`max` characters (code points). */
export function text(value: unknown, field: string, rule: TextRule): string {
  if (typeof value !== 'string')
    throw new HttpError(400, 'invalid_type', `${field} must be a string`, field)
  const trimmed = value.trim()
  const length = [...trimmed].length
  const min = rule.min ?? 0
  if (length < min || length > rule.max) {
    throw new HttpError(
      400,
      'invalid_length',
      `${field} must be ${min === 0 ? 'at most' : `${min} to`} ${rule.max} characters`,
      field,
    )
  }
  if (CONTROL.test(trimmed) || (rule.singleLine === true && LINE_BREAK.test(trimmed))) {
    throw new HttpError(400, 'invalid_characters', `${field} contains control characters`, field)
  }
  if (LONE_SURROGATE.test(trimmed)) {
    throw new HttpError(
      400,
      'invalid_characters',
      `${field} contains an unpaired UTF-16 surrogate (not a character)`,
      field,
    )
  }
  return trimmed
}

export function optionalText(value: unknown, field: string, rule: TextRule): string | undefined {
  return value === undefined ? undefined : text(value, field, rule)
}

const EMAIL =
  /^[^\s@<>()[\]\\,;:"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/

export function email(value: unknown, field: string): string {
  const address = text(value, field, { min: 3, max: 254, singleLine: true })
  if (!EMAIL.test(address)) {
    throw new HttpError(400, 'invalid_email', `${field} must be an email address`, field)
  }
  return address
}

/** A positive integer id from a path segment or a body field (1 … 2^31-1). */
export function id(value: unknown, field: string): number {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^[1-9][0-9]{0,9}$/.test(value)
        ? Number(value)
        : NaN
  if (!Number.isInteger(n) || n < 1 || n > 2_147_483_647) {
    throw new HttpError(400, 'invalid_id', `${field} must be a positive integer`, field)
  }
  return n
}

export function notFound(what: string): HttpError {
  return new HttpError(404, 'not_found', `${what} not found`)
}

// ── static files ───────────────────────────────────────────────────────────────────────────

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
}

/**
 * The files of `dir`, read once and served from memory: a fixed allow-list, so no request
 * path ever reaches the file system (no traversal to worry about).
 */
export function staticFiles(
  dir: string,
): (req: IncomingMessage, res: ServerResponse, url: URL) => boolean {
  const files = new Map<string, { body: Buffer; type: string }>()
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name)]
    if (type === undefined) continue
    files.set(`/${name}`, { body: readFileSync(join(dir, name)), type })
  }
  const index = files.get('/index.html')
  if (index !== undefined) files.set('/', index)
  return (req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    const file = files.get(url.pathname)
    if (file === undefined) return false
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'content-type': file.type,
      'content-length': file.body.length,
      'cache-control': 'no-cache',
      ...(file.type.startsWith('text/html') ? { 'content-security-policy': CSP } : {}),
    })
    res.end(req.method === 'HEAD' ? undefined : file.body)
    return true
  }
}
