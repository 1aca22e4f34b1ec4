// A small HTTP/1.1 JSON client over node:http with keep-alive: the load generators' only way
// to talk to the app. Never throws: a network error or a timeout is an answer with status 0.
import http from 'node:http'

export interface HttpAnswer {
  /** HTTP status; 0 for a network error or a timeout. */
  status: number
  /** Parsed JSON body (null if none or not JSON). */
  body: unknown
  headers: http.IncomingHttpHeaders
  /** Wall time from the call to the last byte, in ms. */
  ms: number
  /** Network error or timeout, when status is 0. */
  error?: string
}

/** Below the server's keep-alive timeout (5 s, Node's default). */
const IDLE_SOCKET_TIMEOUT_MS = 4000

export class HttpClient {
  readonly #agent: http.Agent
  readonly #base: URL
  readonly #timeoutMs: number

  constructor(baseUrl: string, options: { maxSockets?: number; timeoutMs?: number } = {}) {
    this.#base = new URL(baseUrl)
    if (this.#base.hostname !== '127.0.0.1') throw new Error('chaos load is loopback only')
    // An idle keep-alive socket is closed by this side after 4 s, before the app's server
    // closes it (Node's keepAliveTimeout, 5 s): otherwise a request written just as the server
    // closes its socket fails with "socket hang up" (seen once in ~16 000 requests, a PATCH),
    // a race of the client's making, not a failure of the app. A request sets its own timeout.
    this.#agent = new http.Agent({
      keepAlive: true,
      maxSockets: options.maxSockets ?? 16,
      timeout: IDLE_SOCKET_TIMEOUT_MS,
    })
    this.#timeoutMs = options.timeoutMs ?? 10_000
  }

  /**
   * A keep-alive socket the server closes (its keepAliveTimeout) just as a request is written
   * fails with ECONNRESET. Node's documentation recommends retrying an idempotent request once
   * when that happens on a reused socket, as browsers and undici do; the retry is counted in
   * `retries` and its time is included in the answer's `ms`.
   */
  async request(method: string, path: string, json?: unknown): Promise<HttpAnswer> {
    const started = performance.now()
    const first = await this.#once(method, path, json, started)
    if (first.reusedSocketReset !== true || (method !== 'GET' && method !== 'HEAD')) return first
    this.retries++
    return this.#once(method, path, json, started)
  }

  /** Requests retried after a reused keep-alive socket was reset (see request). */
  retries = 0

  #once(
    method: string,
    path: string,
    json: unknown,
    started: number,
  ): Promise<HttpAnswer & { reusedSocketReset?: boolean }> {
    const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json))
    return new Promise((resolve) => {
      let settled = false
      const done = (answer: Omit<HttpAnswer, 'ms'> & { reusedSocketReset?: boolean }): void => {
        if (settled) return
        settled = true
        resolve({ ...answer, ms: performance.now() - started })
      }
      const req = http.request(
        {
          agent: this.#agent,
          host: this.#base.hostname,
          port: this.#base.port,
          method,
          path,
          headers: {
            accept: 'application/json',
            ...(payload !== undefined && {
              'content-type': 'application/json',
              'content-length': String(payload.length),
            }),
          },
          timeout: this.#timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('error', (error) =>
            done({ status: 0, body: null, headers: {}, error: error.message }),
          )
          res.on('end', () => {
            let body: unknown = null
            const text = Buffer.concat(chunks).toString('utf8')
            if (text !== '') {
              try {
                body = JSON.parse(text)
              } catch {
                body = null
              }
            }
            done({ status: res.statusCode ?? 0, body, headers: res.headers })
          })
        },
      )
      req.on('timeout', () => {
        req.destroy(new Error(`timeout after ${this.#timeoutMs} ms`))
      })
      req.on('error', (error: NodeJS.ErrnoException) =>
        done({
          status: 0,
          body: null,
          headers: {},
          error: req.reusedSocket
            ? `${error.message} (on a reused keep-alive socket)`
            : error.message,
          ...(req.reusedSocket && error.code === 'ECONNRESET' && { reusedSocketReset: true }),
        }),
      )
      req.end(payload)
    })
  }

  close(): void {
    this.#agent.destroy()
  }
}
