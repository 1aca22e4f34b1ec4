// Steady, bounded load on the two app processes from loopback clients: HTTP reads and writes of
// projects (with a stale-read check on every read), task dispatches (notification emails, manual
// compost runs, the welcome emails and embeddings that project writes dispatch), WebSocket chat
// in one room with clients on both processes (every message carries a unique id), poll votes,
// and a status socket per process. Every loop is paced, bounded in count and in time.
import { setMaxListeners } from 'node:events'
import WebSocket from 'ws'
import { sleep } from '../test/support/fault-kit.js'
import type { AppProcess } from './apps.js'
import { HttpClient, type HttpAnswer } from './http.js'

/** ms since the start of the run. */
export type Clock = () => number

export type HttpOp = 'list' | 'detail' | 'create' | 'patch' | 'notify' | 'compost'

export interface HttpSample {
  /** Start of the request (run clock, ms). */
  t: number
  ms: number
  op: HttpOp
  app: string
  status: number
  error?: string
  /** The app's x-cache header on reads: redis, memory or database. */
  cache?: string
}

export interface StaleRead {
  t: number
  app: string
  op: 'list' | 'detail'
  project: number
  /** Version the answer carried. */
  got: number
  /** Newest acknowledged version when the read started. */
  acked: number
  /** How long before the read started that version was acknowledged, ms. */
  ackedBeforeMs: number
  /** Which process acknowledged it. */
  ackedBy: string
  cache: string
}

export type TaskKind = 'email' | 'welcome' | 'compost' | 'embed'

export interface DispatchSample {
  t: number
  app: string
  kind: TaskKind
  id: string
  /** queued | inline | spooled | deferred | dropped | duplicate | rejected | local (the app's answer). */
  mode: string
  /** Inline runs: whether the handler succeeded. */
  ok?: boolean
  error?: string
  /** Notification emails: the unique subject that finds its outbox rows. */
  subject?: string
}

export interface ChatSent {
  t: number
  key: string
  from: number
  app: string
  /** The app answered with an error frame for this message (e.g. not_delivered). */
  error?: string
}

export interface StatusSample {
  t: number
  app: string
  available: boolean
  state: string
  /** Every component on Redis. */
  allRedis: boolean
  source: 'ws' | 'poll'
}

export interface LoadProfile {
  /** Reader loops per app process. */
  readersPerApp: number
  /** Period of each reader loop, ms. */
  readPeriodMs: number
  /** Projects patched in turn through both processes (stale-read targets). */
  trackedProjects: number
  patchPeriodMs: number
  createPeriodMs: number
  notifyPeriodMs: number
  compostPeriodMs: number
  /** Chat clients per app process (all in one room). */
  chatClientsPerApp: number
  chatPeriodMs: number
  votePeriodMs: number
}

const ROOM = 'chaos'
const POLL = 1

interface ChatClient {
  index: number
  app: string
  ws: WebSocket
  joined: boolean
  /** key → first receipt time */
  received: Map<string, number>
  duplicates: number
  closed: { t: number; code: number } | null
  /** key of the message being sent, to attribute an error frame. */
  errors: number
}

interface VoteClient {
  app: string
  ws: WebSocket
  results: number
  errors: number
  closed: { t: number; code: number } | null
}

/** Everything the load saw, for the report. */
export interface LoadData {
  http: HttpSample[]
  stale: StaleRead[]
  dispatches: DispatchSample[]
  chatSent: ChatSent[]
  chatClients: Array<{
    index: number
    app: string
    received: Map<string, number>
    duplicates: number
    closed: { t: number; code: number } | null
  }>
  votes: Array<{ t: number; app: string }>
  voteClients: Array<{
    app: string
    results: number
    errors: number
    closed: { t: number; code: number } | null
  }>
  status: StatusSample[]
  /** WebSocket frames the harness could not parse or did not expect. */
  oddFrames: number
}

const versionOf = (title: unknown): number | null => {
  if (typeof title !== 'string') return null
  const match = / v(\d+)$/.exec(title)
  return match?.[1] === undefined ? null : Number(match[1])
}

export class Load {
  readonly data: LoadData = {
    http: [],
    stale: [],
    dispatches: [],
    chatSent: [],
    chatClients: [],
    votes: [],
    voteClients: [],
    status: [],
    oddFrames: 0,
  }

  readonly #apps: AppProcess[]
  readonly #clients: Map<string, HttpClient>
  readonly #monitorClients: Map<string, HttpClient>
  readonly #profile: LoadProfile
  readonly #now: Clock
  /** Tracked project ids and, per id, the newest acknowledged version. */
  readonly #tracked: number[] = []
  readonly #acked = new Map<number, number>()
  /** Per project: when and through which process the newest version was acknowledged. */
  readonly #ackedAt = new Map<number, { t: number; app: string }>()
  readonly #chat: ChatClient[] = []
  readonly #voters: VoteClient[] = []
  readonly #statusSockets: WebSocket[] = []
  readonly #loops: Array<Promise<void>> = []
  #stopAt = 0
  #stopped = false
  /** Sockets closed from here on are closed by the harness, not by the app. */
  #closing = false
  /** Wakes every sleeping loop when the load stops. */
  readonly #wake = new AbortController()
  #seededIds: number[] = []

  constructor(apps: AppProcess[], profile: LoadProfile, now: Clock) {
    // One listener per sleeping loop (a dozen or so): not a leak.
    setMaxListeners(100, this.#wake.signal)
    this.#apps = apps
    this.#profile = profile
    this.#now = now
    this.#clients = new Map(apps.map((app) => [app.name, new HttpClient(app.url)]))
    this.#monitorClients = new Map(
      apps.map((app) => [app.name, new HttpClient(app.url, { maxSockets: 2, timeoutMs: 2000 })]),
    )
  }

  /** Tracked projects, WebSocket clients; throws if the app does not answer as expected. */
  async setup(): Promise<void> {
    const first = this.#client(this.#apps[0]?.name ?? '')
    const list = await first.request('GET', '/api/projects')
    const projects = (list.body as { projects?: Array<{ id: number }> } | null)?.projects
    if (list.status !== 200 || !Array.isArray(projects)) {
      throw new Error(`GET /api/projects answered ${list.status}: the app is not usable`)
    }
    this.#seededIds = projects.map((p) => p.id).slice(0, 6)
    for (let k = 0; k < this.#profile.trackedProjects; k++) {
      const created = await first.request('POST', '/api/projects', {
        title: `chaos-${k} v0`,
        description: 'A project the chaos run patches through both processes.',
        owner: 'chaos',
      })
      const project = (created.body as { project?: { id: number } } | null)?.project
      if (created.status !== 201 || project === undefined) {
        throw new Error(`POST /api/projects answered ${created.status}: the app is not usable`)
      }
      this.#tracked.push(project.id)
      this.#acked.set(project.id, 0)
    }

    const opened: Array<Promise<void>> = []
    let index = 0
    for (const app of this.#apps) {
      for (let i = 0; i < this.#profile.chatClientsPerApp; i++) {
        opened.push(this.#openChat(index++, app))
      }
      opened.push(this.#openVoter(app))
      opened.push(this.#openStatus(app))
    }
    await Promise.all(opened)
  }

  /** Start every loop; they stop by themselves at `stopAt` (run clock). */
  start(stopAt: number): void {
    this.#stopAt = stopAt
    const p = this.#profile
    const seconds = (stopAt - this.#now()) / 1000
    const bound = (periodMs: number): number => Math.ceil((seconds * 1000) / periodMs) + 1
    for (const app of this.#apps) {
      for (let r = 0; r < p.readersPerApp; r++) {
        this.#loop(p.readPeriodMs, bound(p.readPeriodMs), () => this.#read(app.name))
      }
    }
    this.#tracked.forEach((projectId, k) => {
      let version = 0
      this.#loop(p.patchPeriodMs, bound(p.patchPeriodMs), (i) =>
        this.#patch(this.#appAt(k + i).name, projectId, ++version),
      )
    })
    this.#loop(p.createPeriodMs, bound(p.createPeriodMs), (i) => this.#create(i))
    this.#loop(p.notifyPeriodMs, bound(p.notifyPeriodMs), (i) => this.#notify(i))
    this.#loop(p.compostPeriodMs, bound(p.compostPeriodMs), (i) => this.#compost(i))
    for (const client of this.#chat) {
      this.#loop(p.chatPeriodMs, bound(p.chatPeriodMs), (i) => this.#say(client, i))
    }
    this.#voters.forEach((voter, v) => {
      this.#loop(p.votePeriodMs, bound(p.votePeriodMs), (i) => this.#vote(voter, v, i))
    })
  }

  /** Wait until every loop ended (at stopAt). */
  async finished(): Promise<void> {
    await Promise.all(this.#loops)
  }

  /** Stop the loops now (end of the schedule, or a harness failure). */
  abort(): void {
    this.#stopped = true
    this.#wake.abort()
  }

  /** sleep() that ends early when the load stops. */
  #pause(ms: number): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#wake.signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake.signal.addEventListener('abort', done)
    })
  }

  /** Close every socket and HTTP agent; snapshot the WebSocket data. */
  close(): void {
    this.abort()
    this.#closing = true
    for (const client of this.#chat) client.ws.terminate()
    for (const voter of this.#voters) voter.ws.terminate()
    for (const ws of this.#statusSockets) ws.terminate()
    for (const client of this.#clients.values()) client.close()
    for (const client of this.#monitorClients.values()) client.close()
  }

  /** One GET /api/status of `app`, recorded as a status sample (monitoring, not load). */
  async pollStatus(app: string): Promise<StatusSample | null> {
    const t = this.#now()
    const answer = await this.#monitor(app).request('GET', '/api/status')
    if (answer.status !== 200) return null
    const sample = statusSample(answer.body, app, t + answer.ms, 'poll')
    if (sample !== null) this.data.status.push(sample)
    return sample
  }

  // ── loops ──────────────────────────────────────────────────────────────────────────────────

  #loop(periodMs: number, maxCount: number, body: (i: number) => Promise<void>): void {
    const run = async (): Promise<void> => {
      // A random phase so loops with the same period do not fire together.
      await this.#pause(Math.random() * periodMs)
      let next = performance.now()
      for (let i = 0; i < maxCount; i++) {
        if (this.#stopped || this.#now() >= this.#stopAt) return
        await body(i)
        next += periodMs
        const wait = next - performance.now()
        if (wait > 0) await this.#pause(wait)
        else next = performance.now() // late: no burst to catch up
      }
    }
    this.#loops.push(
      run().catch((error: unknown) => {
        // A bug in the harness, not a failure of the app: stop everything, it is reported.
        this.#stopped = true
        throw error
      }),
    )
  }

  #appAt(i: number): AppProcess {
    const app = this.#apps[i % this.#apps.length]
    if (app === undefined) throw new Error('no app process')
    return app
  }

  #client(app: string): HttpClient {
    const client = this.#clients.get(app)
    if (client === undefined) throw new Error(`unknown app ${app}`)
    return client
  }

  #monitor(app: string): HttpClient {
    const client = this.#monitorClients.get(app)
    if (client === undefined) throw new Error(`unknown app ${app}`)
    return client
  }

  async #http(app: string, op: HttpOp, method: string, path: string, body?: unknown) {
    const t = this.#now()
    const answer = await this.#client(app).request(method, path, body)
    const sample: HttpSample = { t, ms: answer.ms, op, app, status: answer.status }
    if (answer.error !== undefined) sample.error = answer.error
    const cache = answer.headers['x-cache']
    if (typeof cache === 'string') sample.cache = cache
    this.data.http.push(sample)
    return { t, answer }
  }

  async #read(app: string): Promise<void> {
    const roll = Math.random()
    if (roll < 0.25) {
      const acked = new Map(this.#acked)
      const { t, answer } = await this.#http(app, 'list', 'GET', '/api/projects')
      if (answer.status !== 200) return
      const projects = (answer.body as { projects?: Array<{ id: number; title: string }> }).projects
      for (const project of projects ?? []) {
        const before = acked.get(project.id)
        if (before !== undefined) this.#checkStale(t, app, 'list', project, before, answer)
      }
      return
    }
    const tracked = roll < 0.75 && this.#tracked.length > 0
    const pool = tracked ? this.#tracked : this.#seededIds
    const projectId = pool[Math.floor(Math.random() * pool.length)] ?? 1
    const before = this.#acked.get(projectId)
    const { t, answer } = await this.#http(app, 'detail', 'GET', `/api/projects/${projectId}`)
    if (answer.status !== 200 || before === undefined) return
    const project = (answer.body as { project?: { id: number; title: string } }).project
    if (project !== undefined) this.#checkStale(t, app, 'detail', project, before, answer)
  }

  #checkStale(
    t: number,
    app: string,
    op: 'list' | 'detail',
    project: { id: number; title: string },
    acked: number,
    answer: HttpAnswer,
  ): void {
    const got = versionOf(project.title)
    if (got === null || got >= acked) return
    const cache = answer.headers['x-cache']
    const ack = this.#ackedAt.get(project.id)
    this.data.stale.push({
      t,
      app,
      op,
      project: project.id,
      got,
      acked,
      ackedBeforeMs: ack === undefined ? 0 : Math.round(t - ack.t),
      ackedBy: ack?.app ?? '?',
      cache: typeof cache === 'string' ? cache : 'unknown',
    })
  }

  async #patch(app: string, projectId: number, version: number): Promise<void> {
    const { t, answer } = await this.#http(app, 'patch', 'PATCH', `/api/projects/${projectId}`, {
      title: `chaos-${this.#tracked.indexOf(projectId)} v${version}`,
    })
    if (answer.status === 200) {
      // Versions of one project are written by one loop, in order: acknowledged = newest.
      this.#acked.set(projectId, version)
      this.#ackedAt.set(projectId, { t: this.#now(), app })
      this.#dispatches(t, app, answer.body)
    }
  }

  async #create(i: number): Promise<void> {
    const app = this.#appAt(i).name
    const { t, answer } = await this.#http(app, 'create', 'POST', '/api/projects', {
      title: `chaos new ${i}`,
      description: `Created by the chaos run (${i}).`,
      owner: 'chaos',
      email: `owner${i}@example.org`,
    })
    if (answer.status === 201) this.#dispatches(t, app, answer.body)
  }

  async #notify(i: number): Promise<void> {
    const app = this.#appAt(i).name
    const subject = `chaos-mail-${i}`
    const { t, answer } = await this.#http(app, 'notify', 'POST', '/api/notifications', {
      to: 'chaos@example.org',
      subject,
      body: `Notification ${i} from the chaos run.`,
    })
    if (answer.status === 202) this.#dispatches(t, app, answer.body, subject)
  }

  async #compost(i: number): Promise<void> {
    const app = this.#appAt(i).name
    const { t, answer } = await this.#http(app, 'compost', 'POST', '/api/impact/recompute')
    if (answer.status === 202) this.#dispatches(t, app, answer.body)
  }

  #dispatches(t: number, app: string, body: unknown, subject?: string): void {
    const b = body as { dispatch?: unknown; dispatches?: unknown } | null
    const list = Array.isArray(b?.dispatches) ? b.dispatches : b?.dispatch ? [b.dispatch] : []
    for (const raw of list as Array<Record<string, unknown>>) {
      const task = raw.task
      const kind: TaskKind | null =
        task === 'send_email'
          ? subject !== undefined
            ? 'email'
            : 'welcome'
          : task === 'compost'
            ? 'compost'
            : task === 'embed_project'
              ? 'embed'
              : null
      if (kind === null || typeof raw.id !== 'string' || typeof raw.mode !== 'string') continue
      const sample: DispatchSample = { t, app, kind, id: raw.id, mode: raw.mode }
      if (typeof raw.ok === 'boolean') sample.ok = raw.ok
      if (typeof raw.error === 'string') sample.error = raw.error
      if (kind === 'email' && subject !== undefined) sample.subject = subject
      this.data.dispatches.push(sample)
    }
  }

  // ── WebSockets ─────────────────────────────────────────────────────────────────────────────

  #connect(app: AppProcess): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${app.port}/ws`)
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`WebSocket to app ${app.name} did not open within 5 s`))
      }, 5000)
      ws.once('open', () => {
        clearTimeout(timer)
        resolve(ws)
      })
      ws.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
    })
  }

  #frames(ws: WebSocket, handle: (frame: Record<string, unknown>) => void): void {
    ws.on('message', (data: WebSocket.RawData) => {
      let frame: unknown
      try {
        frame = JSON.parse(data.toString())
      } catch {
        this.data.oddFrames++
        return
      }
      if (typeof frame !== 'object' || frame === null) {
        this.data.oddFrames++
        return
      }
      handle(frame as Record<string, unknown>)
    })
  }

  async #openChat(index: number, app: AppProcess): Promise<void> {
    const ws = await this.#connect(app)
    const client: ChatClient = {
      index,
      app: app.name,
      ws,
      joined: false,
      received: new Map(),
      duplicates: 0,
      closed: null,
      errors: 0,
    }
    this.#chat.push(client)
    this.data.chatClients.push(client)
    ws.on('error', () => undefined) // reported through 'close'
    ws.on('close', (code) => {
      if (!this.#closing) client.closed = { t: this.#now(), code }
    })
    const joined = new Promise<void>((resolve) => {
      this.#frames(ws, (frame) => {
        if (frame.type === 'chat.history') {
          client.joined = true
          resolve()
        } else if (frame.type === 'chat.message' && typeof frame.text === 'string') {
          if (client.received.has(frame.text)) client.duplicates++
          else client.received.set(frame.text, this.#now())
        } else if (frame.type === 'error') {
          client.errors++
          const last = [...this.data.chatSent].reverse().find((m) => m.from === index)
          if (last !== undefined) last.error = String(frame.code)
        }
      })
    })
    ws.send(JSON.stringify({ type: 'chat.join', room: ROOM, name: `chaos${index}` }))
    await Promise.race([
      joined,
      sleep(5000).then(() => {
        throw new Error(`chat client ${index} on app ${app.name} was not joined within 5 s`)
      }),
    ])
  }

  async #say(client: ChatClient, seq: number): Promise<void> {
    if (client.closed !== null) return
    const key = `chaos:${client.index}:${seq}`
    this.data.chatSent.push({ t: this.#now(), key, from: client.index, app: client.app })
    client.ws.send(JSON.stringify({ type: 'chat.message', text: key }))
  }

  async #openVoter(app: AppProcess): Promise<void> {
    const ws = await this.#connect(app)
    const voter: VoteClient = { app: app.name, ws, results: 0, errors: 0, closed: null }
    this.#voters.push(voter)
    this.data.voteClients.push(voter)
    ws.on('error', () => undefined)
    ws.on('close', (code) => {
      if (!this.#closing) voter.closed = { t: this.#now(), code }
    })
    const subscribed = new Promise<void>((resolve) => {
      this.#frames(ws, (frame) => {
        if (frame.type === 'poll.results') {
          voter.results++
          resolve()
        } else if (frame.type === 'error') voter.errors++
      })
    })
    ws.send(JSON.stringify({ type: 'poll.subscribe', poll: POLL }))
    await Promise.race([
      subscribed,
      sleep(5000).then(() => {
        throw new Error(`vote client on app ${app.name} got no poll results within 5 s`)
      }),
    ])
  }

  async #vote(voter: VoteClient, v: number, i: number): Promise<void> {
    if (voter.closed !== null) return
    this.data.votes.push({ t: this.#now(), app: voter.app })
    voter.ws.send(
      JSON.stringify({
        type: 'poll.vote',
        poll: POLL,
        option: i % 3,
        voter: `chaos-voter-${v}-${i}`,
      }),
    )
  }

  async #openStatus(app: AppProcess): Promise<void> {
    const ws = await this.#connect(app)
    this.#statusSockets.push(ws)
    ws.on('error', () => undefined)
    this.#frames(ws, (frame) => {
      if (frame.type !== 'status') return
      const sample = statusSample(frame, app.name, this.#now(), 'ws')
      if (sample !== null) this.data.status.push(sample)
    })
  }
}

/** A status payload (WebSocket push or GET /api/status) as a sample. */
export function statusSample(
  body: unknown,
  app: string,
  t: number,
  source: 'ws' | 'poll',
): StatusSample | null {
  const b = body as {
    redis?: { available?: unknown; state?: unknown }
    components?: Array<{ backend?: unknown }>
  } | null
  if (b?.redis === undefined) return null
  const components = Array.isArray(b.components) ? b.components : []
  return {
    t,
    app,
    available: b.redis.available === true,
    state: typeof b.redis.state === 'string' ? b.redis.state : 'unknown',
    allRedis: components.length > 0 && components.every((c) => c.backend === 'redis'),
    source,
  }
}
