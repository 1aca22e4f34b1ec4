import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { ChannelLayer, Failsoft, TaskQueue } from 'failsoft'
import type { Logger } from 'pino'
import { HttpError, objectBody, type Router } from './http.js'
import type { AppTasks, DispatchRecord } from './tasks.js'

/**
 * The live status panel's data: what this process sees of Redis and of each failsoft
 * component, pushed to every WebSocket client of this process when it changes (at once on a
 * health transition, otherwise checked every second). Built from an allow-list of fields:
 * no Redis address, no credentials, no token ever reaches it.
 */

export interface StatusPayload {
  type: 'status'
  process: string
  at: string
  redis: {
    state: string
    available: boolean
    since: string
    forced: boolean
    mode: string
    error: string | null
    /**
     * How this process started: on Redis, on the fallbacks (Redis unreachable) or memory-only;
     * null until failsoft's first decision. A start is not a transition.
     */
    start: { on: 'redis' | 'fallback' | 'memory-only'; at: string } | null
    /** The last transition after the start (null if there was none). */
    lastTransition: { to: string; at: string } | null
    /** Transitions after the start (failsoft's own counts include its first decision). */
    transitions: { down: number; up: number; reset: number }
  }
  components: Array<{ name: string; backend: string; fallbackOps: number }>
  fallbackOps: number
  channels: {
    backend: string
    websocketClients: number
    skippedFull: number
    expired: number
    undeliverable: number
    /** Cross-process messages waiting in the outbox for Redis, and the age of the oldest. */
    buffered: number
    bufferedOldestMs: number
  }
  tasks: {
    counts: Record<string, number>
    spoolDepth: number
    workers: number
  }
  dispatches: DispatchRecord[]
  admin: { enabled: boolean }
}

/** Error messages may quote a URL: never let credentials through. */
export function redactSecrets(message: string): string {
  return message
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/@]*@/gi, '$1[redacted]@')
    .replace(/(password|pass|token|secret)=\S+/gi, '$1=[redacted]')
    .slice(0, 300)
}

const num = (value: unknown): number => (typeof value === 'number' ? value : 0)

export interface StatusDeps {
  failsoft: Failsoft
  layer: ChannelLayer
  queue: TaskQueue
  tasks: AppTasks
  processName: string
  adminEnabled: boolean
}

export class StatusHub {
  readonly #deps: StatusDeps
  readonly #subscribers = new Set<(payload: StatusPayload) => void>()
  readonly #disposers: Array<() => void> = []
  readonly #timer: NodeJS.Timeout
  #last = ''
  #scheduled = false
  /** failsoft's first decision ('up' or 'down'), once seen; null before (or if unknown). */
  #start: { to: 'up' | 'down'; at: string } | null = null

  constructor(deps: StatusDeps) {
    this.#deps = deps
    const health = deps.failsoft.health
    if (health.state === 'starting') {
      // The first transition is the start's decision: the panel shows it as the start.
      const first = (to: 'up' | 'down') => (event: { at: number }) => {
        if (this.#start === null) this.#start = { to, at: new Date(event.at).toISOString() }
        up.dispose()
        down.dispose()
      }
      const up = health.once('up', first('up'))
      const down = health.once('down', first('down'))
      this.#disposers.push(
        () => up.dispose(),
        () => down.dispose(),
      )
    }
    for (const event of ['down', 'up', 'reset'] as const) {
      const disposable = health.on(event, () => this.pushSoon())
      this.#disposers.push(() => disposable.dispose())
    }
    this.#disposers.push(deps.tasks.onDispatch(() => this.pushSoon()))
    this.#timer = setInterval(() => this.#push(false), 1000)
    this.#timer.unref()
  }

  snapshot(): StatusPayload {
    const { failsoft, layer, queue, tasks, processName, adminEnabled } = this.#deps
    const status = failsoft.status()
    const redis = status.redis
    const transitions = (redis.transitions ?? {}) as Record<string, unknown>
    const last = redis.lastTransition as { to: string; at: string } | null | undefined
    const memoryOnly = redis.mode === 'memory-only'
    // failsoft counts its first decision (starting → up/down) as a transition; the panel
    // shows it as the start instead.
    const start = this.#start
    const counts = {
      down: num(transitions.down) - (start?.to === 'down' ? 1 : 0),
      up: num(transitions.up) - (start?.to === 'up' ? 1 : 0),
      reset: num(transitions.reset),
    }
    const lastAfterStart = last && counts.down + counts.up > 0 ? { to: last.to, at: last.at } : null
    const channel = layer.status()
    const outbox = (channel.outbox ?? {}) as Record<string, unknown>
    const queueStatus = queue.status()
    tasks.refreshSpooled(queueStatus.spoolDepth)
    const taskCounts: Record<string, number> = {}
    for (const [key, value] of Object.entries(queueStatus.counts)) taskCounts[key] = num(value)
    return {
      type: 'status',
      process: processName,
      at: new Date().toISOString(),
      redis: {
        state: redis.state,
        available: redis.available,
        since: redis.since,
        forced: redis.forced === true,
        mode: typeof redis.mode === 'string' ? redis.mode : 'redis',
        error: redis.error === null ? null : redactSecrets(String(redis.error)),
        start: memoryOnly
          ? { on: 'memory-only', at: redis.since }
          : start === null
            ? null
            : { on: start.to === 'up' ? 'redis' : 'fallback', at: start.at },
        lastTransition: lastAfterStart,
        transitions: counts,
      },
      components: Object.entries(status.components).map(([name, component]) => ({
        name,
        backend: component.backend,
        fallbackOps: num(component.fallbackOps),
      })),
      fallbackOps: num(redis.fallbackOps),
      channels: {
        backend: layer.backend,
        websocketClients: num(channel.websocketClients),
        skippedFull: num(channel.skippedFull),
        expired: num(channel.expired),
        undeliverable: num(channel.undeliverable),
        buffered: num(outbox.size),
        bufferedOldestMs: num(outbox.oldestAgeMs),
      },
      tasks: {
        counts: taskCounts,
        spoolDepth: queueStatus.spoolDepth,
        workers: queueStatus.workers.length,
      },
      dispatches: tasks.recent(),
      admin: { enabled: adminEnabled },
    }
  }

  /** Send the current status to `send` now and on every change; returns the unsubscribe. */
  subscribe(send: (payload: StatusPayload) => void): () => void {
    this.#subscribers.add(send)
    send(this.snapshot())
    return () => this.#subscribers.delete(send)
  }

  /** Push on the next tick (health events fire before every component switched). */
  pushSoon(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#push(true)
    })
  }

  #push(force: boolean): void {
    if (this.#subscribers.size === 0) return
    const payload = this.snapshot()
    const key = JSON.stringify({ ...payload, at: '' })
    if (!force && key === this.#last) return
    this.#last = key
    for (const send of this.#subscribers) send(payload)
  }

  close(): void {
    clearInterval(this.#timer)
    for (const dispose of this.#disposers) dispose()
    this.#subscribers.clear()
  }
}

// ── the operator switch ──────────────────────────────────────────────────────────────────────

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** Constant-time check of `Authorization: Bearer <token>` (hashes first: equal lengths). */
export function bearerMatches(req: IncomingMessage, token: string): boolean {
  const header = req.headers.authorization
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false
  return timingSafeEqual(digest(header.slice('Bearer '.length)), digest(token))
}

/**
 * Failed attempts at the operator switch, per minute: at most `perClient` from one client
 * address (an IPv6 client by its /64, which one host can rotate through), and `global` from
 * all of them together — far higher, so that a guesser is slowed down without locking the
 * operator out, and a guess from many addresses still meets a ceiling. Memory is bounded:
 * addresses without a failure in the window are forgotten, and past `maxClients` tracked
 * addresses a new one is held to the global ceiling only.
 */
export interface FailureLimits {
  perClient: number
  global: number
  windowMs: number
  maxClients: number
}

export const DEFAULT_FAILURE_LIMITS: FailureLimits = {
  perClient: 10,
  global: 1000,
  windowMs: 60_000,
  maxClients: 10_000,
}

/** The key failures are counted under: an IPv4 address, or the /64 of an IPv6 one. */
export function clientKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown'
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (v4?.[1] !== undefined) return v4[1]
  const [head = '', tail = ''] = address.toLowerCase().split('%')[0]!.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === '' ? [] : tail.split(':')
  const groups = address.includes('::')
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    : left
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`
}

export class FailureLimiter {
  readonly #limits: FailureLimits
  readonly #clients = new Map<string, number[]>()
  #all: number[] = []

  constructor(limits: FailureLimits = DEFAULT_FAILURE_LIMITS) {
    this.#limits = limits
  }

  /** Seconds until `key` may try again; 0 when it may try now. */
  retryAfter(key: string, now = Date.now()): number {
    this.#prune(now)
    const { perClient, global, windowMs } = this.#limits
    const own = this.#clients.get(key) ?? []
    let until = 0
    if (own.length >= perClient) until = own[own.length - perClient]! + windowMs
    if (this.#all.length >= global) {
      until = Math.max(until, this.#all[this.#all.length - global]! + windowMs)
    }
    return until === 0 ? 0 : Math.max(1, Math.ceil((until - now) / 1000))
  }

  fail(key: string, now = Date.now()): void {
    this.#all.push(now)
    const own = this.#clients.get(key)
    if (own !== undefined) own.push(now)
    else if (this.#clients.size < this.#limits.maxClients) this.#clients.set(key, [now])
  }

  get trackedClients(): number {
    return this.#clients.size
  }

  #prune(now: number): void {
    const since = now - this.#limits.windowMs
    if (this.#all.length > 0 && this.#all[0]! <= since)
      this.#all = this.#all.filter((t) => t > since)
    for (const [key, times] of this.#clients) {
      if (times[times.length - 1]! <= since) this.#clients.delete(key)
      else if (times[0]! <= since)
        this.#clients.set(
          key,
          times.filter((t) => t > since),
        )
    }
  }
}

export function statusRoutes(
  router: Router,
  deps: {
    hub: StatusHub
    failsoft: Failsoft
    adminToken: string | null
    logger: Logger
    failureLimits?: FailureLimits
  },
): void {
  const { hub, failsoft, adminToken, logger } = deps
  const failures = new FailureLimiter(deps.failureLimits)

  router.get('/api/status', () => ({ body: hub.snapshot() }))

  router.post('/api/admin/fallback', async ({ req, json }) => {
    if (adminToken === null) {
      throw new HttpError(403, 'admin_disabled', 'the operator switch is disabled (no ADMIN_TOKEN)')
    }
    const client = clientKey(req.socket.remoteAddress)
    const wait = failures.retryAfter(client)
    if (wait > 0) {
      throw new HttpError(
        429,
        'too_many_attempts',
        'too many failed attempts; retry later',
        undefined,
        { 'retry-after': String(wait) },
      )
    }
    if (!bearerMatches(req, adminToken)) {
      failures.fail(client)
      logger.warn({ path: '/api/admin/fallback', client }, 'operator switch: authentication failed')
      throw new HttpError(401, 'unauthorized', 'a valid admin token is required', undefined, {
        'www-authenticate': 'Bearer',
      })
    }
    const body = objectBody(await json(), ['force'])
    if (typeof body.force !== 'boolean') {
      throw new HttpError(400, 'invalid_type', 'force must be a boolean', 'force')
    }
    failsoft.health.forceFallback(body.force)
    logger.warn({ force: body.force }, 'operator switch used')
    hub.pushSoon()
    return { body: { forced: failsoft.health.forced, state: failsoft.health.state } }
  })
}
