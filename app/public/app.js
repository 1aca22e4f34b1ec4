/* global document, window, location, localStorage, WebSocket, fetch, crypto, Node */
// The reference app's page: plain DOM, no framework. Every piece of data reaches the page
// through textContent or an attribute — never innerHTML — so a project title or a chat
// message cannot inject markup.

// ── DOM helpers ──────────────────────────────────────────────────────────────────────────────

/** h('div', { class: 'x', onclick: fn }, 'text', child) — children are text or nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function')
      el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value)
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

const $ = (id) => document.getElementById(id)
const clear = (el) => el.replaceChildren()
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '—')

function ago(iso) {
  if (!iso) return ''
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  return `${Math.floor(s / 3600)} h ago`
}

const SOURCE_LABEL = {
  redis: 'Redis',
  memory: 'memory (fallback)',
  database: 'database (cache miss)',
}
const MODE_LABEL = {
  queued: 'queued on Redis',
  inline: 'ran inline',
  local: 'ran here',
  spooled: 'spooled',
  deferred: 'deferred',
  dropped: 'dropped',
  duplicate: 'already done',
  rejected: 'rejected',
  unconfirmed: 'unconfirmed',
}
const MODE_TITLE = {
  queued: 'Redis accepted the job; a worker runs it.',
  inline: 'Redis was unavailable: it ran in the request, in this process.',
  local:
    'Redis was unavailable: the batch ran in this process now instead of waiting in the spool for Redis.',
  spooled:
    'Redis was unavailable: written to the durable spool, handed to the queue once Redis is back.',
  deferred: 'Memory-only, delayed: runs in this process when due.',
  dropped: 'Redis was unavailable and this task drops while it is: it will not run.',
  duplicate:
    'Not run again: this idempotency key already ran in this process (for an embedding, this version of the project — same id and last edit — is already embedded).',
  rejected: 'Not accepted: nothing will run.',
  unconfirmed:
    'Sent to Redis without an answer, and the spool was full: it runs once if Redis took it, otherwise never.',
}

/** Memory-only is a mode, not an outage: "memory" and "inline" are then the normal case. */
const memoryOnly = () => Boolean(state.status && state.status.redis.mode === 'memory-only')

function modeBadge(record) {
  const failed = record.ok === false || record.mode === 'rejected'
  let label = MODE_LABEL[record.mode] || record.mode
  let title = record.error || MODE_TITLE[record.mode] || ''
  let settled = ''
  if (record.mode === 'spooled' && record.ran) {
    label = `spooled → ran (${record.ran.mode})`
    title = `Handed from the spool to the queue once Redis was back; ran on ${record.ran.process}.`
    settled = ' settled'
  } else if (record.mode === 'spooled' && record.handedOver) {
    label = 'spooled → handed over'
    title = 'Handed from the spool to the queue once Redis was back; a worker runs it.'
    settled = ' settled'
  }
  const neutral = memoryOnly() && record.mode === 'inline' ? ' neutral' : ''
  return h(
    'span',
    {
      class: `badge mode-${record.mode}${failed ? ' failed' : ''}${settled}${neutral}`,
      title,
      'data-mode': record.mode,
    },
    label,
    failed ? ' ✗' : '',
  )
}

// ── API ─────────────────────────────────────────────────────────────────────────────────────

class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`)
    this.status = status
    this.code = error && error.code
    this.field = error && error.field
  }
}

async function api(method, path, body) {
  const init = { method, headers: {} }
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const res = await fetch(path, init)
  const data = await res.json().catch(() => null)
  if (!res.ok) throw new ApiError(res.status, data && data.error)
  return { data, cache: res.headers.get('x-cache') }
}

// ── WebSocket: chat, polls, live status ─────────────────────────────────────────────────────

const state = {
  socket: null,
  retryMs: 500,
  room: null,
  name: localStorage.getItem('name') || `guest-${Math.floor(Math.random() * 900 + 100)}`,
  polls: new Set(),
  status: null,
  handlers: new Map(),
}

function voterId() {
  let id = localStorage.getItem('voter')
  if (!id) {
    id = crypto.randomUUID()
    localStorage.setItem('voter', id)
  }
  return id
}

function on(type, handler) {
  state.handlers.set(type, handler)
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message))
    return true
  }
  return false
}

function setSocketState(value, text) {
  const el = $('ws-state')
  el.dataset.state = value
  el.textContent = text
}

function connect() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
  const socket = new WebSocket(url)
  state.socket = socket
  setSocketState('connecting', 'connecting')
  socket.addEventListener('open', () => {
    state.retryMs = 500
    setSocketState('open', 'live')
    if (state.room) send({ type: 'chat.join', room: state.room, name: state.name })
    for (const poll of state.polls) send({ type: 'poll.subscribe', poll })
  })
  socket.addEventListener('message', (event) => {
    let message
    try {
      message = JSON.parse(event.data)
    } catch {
      return
    }
    const handler = state.handlers.get(message.type)
    if (handler) handler(message)
  })
  socket.addEventListener('close', () => {
    setSocketState('closed', 'reconnecting…')
    $('status-redis').dataset.stale = 'true'
    setTimeout(connect, state.retryMs)
    state.retryMs = Math.min(5000, state.retryMs * 2)
  })
}

on('hello', (message) => {
  $('process-name').textContent = message.process
})

on('error', (message) => toast(message.message || 'error', 'error'))

// ── status panel ─────────────────────────────────────────────────────────────────────────────

on('status', (status) => {
  state.status = status
  renderStatus()
})

function statusView(status) {
  const r = status.redis
  if (r.mode === 'memory-only') {
    return {
      state: 'memory',
      title: 'Memory-only',
      detail: 'No Redis configured: every component runs in this process.',
    }
  }
  if (r.available)
    return {
      state: 'up',
      title: 'Redis — connected',
      detail: 'Cache, channels and tasks use Redis.',
    }
  if (r.forced)
    return {
      state: 'forced',
      title: 'Degraded — forced by the operator',
      detail: 'Every component is on its fallback.',
    }
  if (r.state === 'starting') return { state: 'starting', title: 'Starting…', detail: '' }
  return {
    state: 'down',
    title: 'Degraded — Redis unavailable',
    detail: 'Serving from the fallbacks.',
  }
}

function fact(dl, term, value) {
  dl.append(h('dt', {}, term), h('dd', {}, value))
}

function startText(start) {
  if (!start) return '—'
  const where = {
    redis: 'on Redis',
    fallback: 'without Redis (unreachable)',
    'memory-only': 'memory-only',
  }[start.on]
  return `${where || start.on} at ${time(start.at)}`
}

function renderStatus() {
  const status = state.status
  if (!status) return
  const mem = memoryOnly()
  const view = statusView(status)
  const box = $('status-redis')
  box.dataset.state = view.state
  delete box.dataset.stale
  $('status-title').textContent = view.title
  // Memory-only: failsoft's "error" only says that Redis is not configured, which the title says.
  $('status-detail').textContent =
    status.redis.error && !status.redis.available && !mem && !status.redis.forced
      ? `${view.detail} (${status.redis.error})`
      : view.detail
  $('status-since').textContent = `${time(status.redis.since)} (${ago(status.redis.since)})`
  $('status-start').textContent = startText(status.redis.start)
  const last = status.redis.lastTransition
  $('status-last').textContent = last
    ? `${last.to === 'up' ? 'back on Redis' : last.to} at ${time(last.at)}`
    : mem
      ? '— (no Redis: nothing to switch)'
      : 'none since the start'
  const t = status.redis.transitions
  $('status-transitions').textContent = mem ? '—' : `down ${t.down} · up ${t.up} · reset ${t.reset}`
  $('status-fallback-ops').textContent = mem
    ? '— (memory-only: nothing falls back)'
    : String(status.fallbackOps)

  const rows = $('status-components')
  clear(rows)
  for (const c of status.components) {
    const backend = mem
      ? { cls: 'local', text: 'in-process', title: 'Memory-only mode: this is its normal backend.' }
      : c.backend === 'redis'
        ? { cls: 'redis', text: 'Redis', title: '' }
        : {
            cls: 'memory',
            text: 'memory (fallback)',
            title: 'Redis is unavailable: the fallback serves.',
          }
    rows.append(
      h(
        'tr',
        {},
        h('td', {}, c.name),
        h(
          'td',
          {},
          h(
            'span',
            { class: `backend backend-${backend.cls}`, title: backend.title },
            backend.text,
          ),
        ),
        h('td', { class: 'num' }, mem ? '—' : String(c.fallbackOps)),
      ),
    )
  }

  const more = $('status-more')
  clear(more)
  const ch = status.channels
  const k = status.tasks.counts
  if (mem) {
    fact(more, 'Channel layer', 'in-process (memory-only: one process)')
    fact(more, 'WebSocket clients', String(ch.websocketClients))
    fact(more, 'Dropped', `${ch.skippedFull} full · ${ch.expired} expired`)
    fact(more, 'Tasks', `${k.inlineOk + k.inlineFailed} run in-process · ${k.deferred} deferred`)
  } else {
    fact(
      more,
      'Channel layer',
      ch.backend === 'redis' ? 'Redis (all processes)' : 'in-process only',
    )
    fact(more, 'WebSocket clients', String(ch.websocketClients))
    const oldest = Math.round(ch.bufferedOldestMs / 1000)
    fact(
      more,
      'Buffered for Redis',
      ch.buffered === 0
        ? '0 messages'
        : `${ch.buffered} message(s), oldest ${oldest} s` +
            (oldest > 30 ? ' (past the 30 s bound: dropped, not sent, when Redis is back)' : ''),
    )
    fact(more, 'Dropped', `${ch.skippedFull} full · ${ch.expired} expired`)
    fact(
      more,
      'Tasks',
      `${k.queued} queued · ${k.inlineOk + k.inlineFailed} inline · ${k.spooled} spooled`,
    )
    fact(more, 'Spool depth', `${status.tasks.spoolDepth} job(s)`)
  }

  const list = $('status-dispatches')
  clear(list)
  if (status.dispatches.length === 0) list.append(h('li', { class: 'muted' }, 'none yet'))
  for (const d of status.dispatches.slice(0, 6)) {
    list.append(
      h(
        'li',
        {},
        h('span', { class: 'task' }, d.task),
        modeBadge(d),
        h('span', { class: 'muted' }, time(d.at)),
      ),
    )
  }

  const enabled = status.admin.enabled
  $('admin-hint').textContent = enabled
    ? 'Force every component onto its fallback, e.g. before Redis maintenance.'
    : 'Disabled: start the app with ADMIN_TOKEN set.'
  for (const el of $('admin-form').querySelectorAll('input, button')) el.disabled = !enabled
  drawTimeline()
}

// ── timeline: the last minutes of the status stream, sampled once a second ─────────────────

const TIMELINE_SECONDS = 300
const SVG_NS = 'http://www.w3.org/2000/svg'
const STATE_COLOR = {
  up: '#1f8a4c',
  down: '#b54708',
  forced: '#6941c6',
  memory: '#98a2b3',
  starting: '#d0d5dd',
  stale: '#e4e7ec',
}
const timeline = { samples: [], lastOps: null }

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag)
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value))
  for (const child of children) el.append(child instanceof Node ? child : String(child))
  return el
}

/** One sample per second from the last status received (the page keeps no other history). */
function sampleTimeline() {
  const status = state.status
  if (!status) return
  const now = Date.now()
  const socketOpen = state.socket && state.socket.readyState === WebSocket.OPEN
  const ops = status.fallbackOps
  const previous = timeline.samples[timeline.samples.length - 1]
  // failsoft's fallbackOps counts the current outage: a drop means a new count started.
  let rate = 0
  if (previous && timeline.lastOps !== null) {
    const delta = ops >= timeline.lastOps ? ops - timeline.lastOps : ops
    rate = delta / Math.max(0.001, (now - previous.t) / 1000)
  }
  timeline.lastOps = ops
  timeline.samples.push({
    t: now,
    state: socketOpen ? statusView(status).state : 'stale',
    rate: memoryOnly() ? 0 : rate,
    outbox: status.channels.buffered,
    spool: status.tasks.spoolDepth,
  })
  while (timeline.samples.length > 0 && now - timeline.samples[0].t > TIMELINE_SECONDS * 1000)
    timeline.samples.shift()
  drawTimeline()
}

function drawTimeline() {
  const box = $('status-timeline')
  if (!box) return
  const samples = timeline.samples
  const W = 300
  const now = samples.length > 0 ? samples[samples.length - 1].t : Date.now()
  // The last 5 minutes; a younger page shows what it has, over at least one minute.
  const span = samples.length > 0 ? (now - samples[0].t) / 1000 : 0
  const windowSeconds = Math.min(TIMELINE_SECONDS, Math.max(60, Math.ceil(span / 60) * 60))
  const x = (t) => Math.max(0, W - ((now - t) / 1000) * (W / windowSeconds))
  const root = svg('svg', {
    id: 'timeline-svg',
    viewBox: `0 0 ${W} 130`,
    width: '100%',
    role: 'img',
    'aria-label':
      'Redis state, fallback operations per second, outbox and spool depth over the last 5 minutes',
    'data-samples': samples.length,
  })
  // State band: one rect per run of samples in the same state.
  const band = svg('g', { 'data-series': 'state' })
  for (let i = 0; i < samples.length;) {
    let j = i
    while (j + 1 < samples.length && samples[j + 1].state === samples[i].state) j++
    const x0 = x(samples[i].t)
    const x1 = j + 1 < samples.length ? x(samples[j + 1].t) : W
    band.append(
      svg('rect', {
        x: x0.toFixed(1),
        y: 0,
        width: Math.max(1, x1 - x0).toFixed(1),
        height: 12,
        fill: STATE_COLOR[samples[i].state] || STATE_COLOR.starting,
        'data-state': samples[i].state,
      }),
    )
    i = j + 1
  }
  root.append(band)
  const mem = memoryOnly()
  const series = [
    { key: 'rate', label: 'fallback ops/s', color: '#b54708', unit: '' },
    { key: 'outbox', label: 'outbox (messages)', color: '#2f6fdb', unit: '' },
    { key: 'spool', label: 'spool (jobs)', color: '#6941c6', unit: '' },
  ]
  series.forEach((s, row) => {
    const top = 18 + row * 38
    const height = 26
    const values = samples.map((sample) => sample[s.key])
    const max = Math.max(1, ...values)
    const current = values.length > 0 ? values[values.length - 1] : 0
    const shown = s.key === 'rate' ? current.toFixed(current < 10 ? 1 : 0) : String(current)
    const peak = Math.max(0, ...values)
    const group = svg('g', {
      'data-series': s.key,
      'data-value': current,
      'data-peak': Math.round(peak * 10) / 10,
    })
    group.append(
      svg('line', { x1: 0, x2: W, y1: top + height, y2: top + height, stroke: '#e3e6eb' }),
      svg(
        'text',
        { x: 0, y: top + 6, 'font-size': 9, fill: '#667085' },
        mem
          ? `${s.label}: none (memory-only)`
          : `${s.label}: ${shown}${s.unit} (max ${Math.round(max)})`,
      ),
    )
    if (samples.length > 1) {
      const points = samples
        .map(
          (sample) =>
            `${x(sample.t).toFixed(1)},${(top + height - (sample[s.key] / max) * (height - 8)).toFixed(1)}`,
        )
        .join(' ')
      group.append(svg('polyline', { points, fill: 'none', stroke: s.color, 'stroke-width': 1.5 }))
    }
    root.append(group)
  })
  root.append(
    svg('text', { x: 0, y: 128, 'font-size': 8, fill: '#98a2b3' }, `−${windowSeconds / 60} min`),
  )
  root.append(
    svg('text', { x: W, y: 128, 'font-size': 8, fill: '#98a2b3', 'text-anchor': 'end' }, 'now'),
  )
  box.replaceChildren(root)
}

setInterval(sampleTimeline, 1000)

setInterval(() => {
  if (state.status)
    $('status-since').textContent =
      `${time(state.status.redis.since)} (${ago(state.status.redis.since)})`
}, 1000)

$('admin-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const force = event.submitter && event.submitter.dataset.force === 'true'
  const token = $('admin-token').value
  const result = $('admin-result')
  try {
    const res = await fetch('/api/admin/fallback', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ force }),
    })
    const data = await res.json().catch(() => null)
    if (!res.ok) throw new ApiError(res.status, data && data.error)
    result.textContent = data.forced
      ? 'Fallbacks forced.'
      : 'Released: back to Redis if it answers.'
  } catch (error) {
    result.textContent = error.message
  }
})

// ── toasts ──────────────────────────────────────────────────────────────────────────────────

function toast(text, kind = 'info') {
  const box =
    document.querySelector('.toasts') || document.body.appendChild(h('div', { class: 'toasts' }))
  const item = h('div', { class: `toast toast-${kind}`, role: 'status' }, text)
  box.append(item)
  setTimeout(() => item.remove(), 4000)
}

function dispatchLine(records) {
  return h(
    'p',
    { class: 'dispatch-line' },
    'Tasks: ',
    records.map((r) => h('span', { class: 'dispatch' }, h('code', {}, r.task), ' ', modeBadge(r))),
  )
}

// ── views ───────────────────────────────────────────────────────────────────────────────────

const view = $('view')

function page(title, ...children) {
  clear(view)
  view.append(h('h1', {}, title), ...children.flat())
}

function errorBox(error) {
  return h('p', { class: 'error', role: 'alert' }, error.message)
}

function cacheBadge(source) {
  if (!source) return null
  const label =
    source === 'memory' && memoryOnly() ? 'memory (memory-only mode)' : SOURCE_LABEL[source]
  return h(
    'span',
    {
      class: `badge cache-${source}${memoryOnly() ? ' neutral' : ''}`,
      title: 'x-cache response header',
    },
    `served from ${label || source}`,
  )
}

async function projectsView() {
  page('Projects', h('p', { class: 'muted' }, 'Loading…'))
  let res
  try {
    res = await api('GET', '/api/projects')
  } catch (error) {
    return page('Projects', errorBox(error))
  }
  const list = h('ul', { class: 'cards', id: 'project-list' })
  for (const p of res.data.projects) {
    list.append(
      h(
        'li',
        { class: 'card' },
        h('a', { href: `#/projects/${p.id}`, class: 'card-title' }, p.title),
        h(
          'p',
          { class: 'card-text' },
          p.description.length > 160 ? `${p.description.slice(0, 160)}…` : p.description,
        ),
        h(
          'p',
          { class: 'meta' },
          p.owner ? `by ${p.owner} · ` : '',
          `impact ${p.impactScore} · ${p.supporters} supporter${p.supporters === 1 ? '' : 's'}`,
        ),
      ),
    )
  }
  page(
    'Projects',
    h(
      'div',
      { class: 'toolbar' },
      cacheBadge(res.cache),
      h('a', { href: '#/projects/new', class: 'button primary' }, 'New project'),
    ),
    list,
  )
}

async function projectView(id) {
  let res
  try {
    res = await api('GET', `/api/projects/${id}`)
  } catch (error) {
    return page('Project', errorBox(error))
  }
  const p = res.data.project
  const similar = h(
    'div',
    { class: 'similar' },
    h('p', { class: 'muted' }, 'Loading similar projects…'),
  )
  const notes = h('div', {})
  const support = async () => {
    try {
      await api('POST', `/api/projects/${id}/support`)
      projectView(id)
    } catch (error) {
      notes.replaceChildren(errorBox(error))
    }
  }
  const reembed = async () => {
    try {
      const r = await api('POST', `/api/projects/${id}/embed`)
      notes.replaceChildren(dispatchLine([r.data.dispatch]))
      if (r.data.dispatch.mode === 'duplicate')
        notes.append(
          h(
            'p',
            { class: 'muted' },
            'Already embedded: the embedding task is keyed by the project and its last edit, and this version ran already (after the edit). Edit the project to embed it again.',
          ),
        )
      loadSimilar(id, similar)
    } catch (error) {
      notes.replaceChildren(errorBox(error))
    }
  }
  page(
    p.title,
    h(
      'div',
      { class: 'toolbar' },
      cacheBadge(res.cache),
      h('a', { href: '#/projects' }, '← all projects'),
    ),
    h('p', { class: 'description' }, p.description || '(no description)'),
    h(
      'p',
      { class: 'meta' },
      p.owner ? `by ${p.owner} · ` : '',
      `impact ${p.impactScore} · ${p.supporters} supporter${p.supporters === 1 ? '' : 's'} · updated ${new Date(p.updatedAt).toLocaleString()}`,
    ),
    h(
      'div',
      { class: 'row' },
      h('button', { type: 'button', onclick: support, class: 'primary' }, 'Support'),
      h('a', { href: `#/projects/${id}/edit`, class: 'button' }, 'Edit'),
      h('button', { type: 'button', onclick: reembed }, 'Recompute embedding'),
    ),
    notes,
    h('h2', {}, 'Similar projects'),
    similar,
  )
  loadSimilar(id, similar)
}

async function loadSimilar(id, box) {
  try {
    const { data } = await api('GET', `/api/projects/${id}/similar`)
    if (!data.embedded)
      return box.replaceChildren(
        h('p', { class: 'muted' }, 'No embedding yet (the task has not run).'),
      )
    if (data.similar.length === 0)
      return box.replaceChildren(h('p', { class: 'muted' }, 'Nothing similar.'))
    box.replaceChildren(
      h(
        'ul',
        { class: 'plain' },
        data.similar.map((s) =>
          h(
            'li',
            {},
            h('a', { href: `#/projects/${s.id}` }, s.title),
            h('span', { class: 'muted' }, ` similarity ${s.score}`),
          ),
        ),
      ),
    )
  } catch (error) {
    box.replaceChildren(errorBox(error))
  }
}

function field(label, input, hint) {
  return h(
    'label',
    { class: 'field' },
    h('span', {}, label),
    input,
    hint ? h('small', { class: 'muted' }, hint) : null,
  )
}

async function projectForm(id) {
  let current = { title: '', description: '', owner: '' }
  if (id !== undefined) {
    try {
      current = (await api('GET', `/api/projects/${id}`)).data.project
    } catch (error) {
      return page('Edit project', errorBox(error))
    }
  }
  const title = h('input', {
    name: 'title',
    required: true,
    minlength: 3,
    maxlength: 120,
    value: current.title,
  })
  const description = h('textarea', { name: 'description', rows: 6, maxlength: 4000 })
  description.value = current.description
  const owner = h('input', { name: 'owner', maxlength: 80, value: current.owner })
  const email = h('input', { name: 'email', type: 'email', maxlength: 254 })
  const result = h('div', {})
  const form = h(
    'form',
    { class: 'form', novalidate: true },
    field('Title', title, '3 to 120 characters'),
    field('Description', description),
    field('Owner', owner),
    id === undefined
      ? field(
          'Email for the welcome message (optional)',
          email,
          'goes to the outbox, never stored with the project',
        )
      : null,
    h(
      'div',
      { class: 'row' },
      h('button', { type: 'submit', class: 'primary' }, id === undefined ? 'Create' : 'Save'),
    ),
    result,
  )
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid')
    const body = { title: title.value, description: description.value, owner: owner.value }
    if (id === undefined && email.value.trim()) body.email = email.value
    try {
      const res =
        id === undefined
          ? await api('POST', '/api/projects', body)
          : await api('PATCH', `/api/projects/${id}`, body)
      const project = res.data.project
      location.hash = `#/projects/${project.id}`
      toast(`Saved "${project.title}"`)
    } catch (error) {
      if (error.field && form.elements[error.field])
        form.elements[error.field].classList.add('invalid')
      result.replaceChildren(errorBox(error))
    }
  })
  page(id === undefined ? 'New project' : 'Edit project', form)
  title.focus()
}

// Chat

const chat = { log: null, room: null }

function chatLine(m) {
  return h(
    'li',
    { class: 'chat-msg', 'data-id': m.id },
    h('span', { class: 'chat-author' }, m.author),
    h('span', { class: 'chat-text' }, m.text),
    h('span', { class: 'chat-meta' }, `${time(m.at)} · ${m.process}`),
  )
}

function appendChat(m) {
  if (!chat.log || m.room !== chat.room) return
  if (chat.log.querySelector(`[data-id="${Number(m.id)}"]`)) return
  chat.log.append(chatLine(m))
  chat.log.scrollTop = chat.log.scrollHeight
}

on('chat.history', (m) => {
  if (!chat.log || m.room !== chat.room) return
  clear(chat.log)
  for (const line of m.messages) chat.log.append(chatLine(line))
  chat.log.scrollTop = chat.log.scrollHeight
})

on('chat.message', appendChat)

function chatView(room) {
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(room)) room = 'general'
  chat.room = room
  state.room = room
  chat.log = h('ol', { class: 'chat-log', id: 'chat-log', 'aria-live': 'polite' })
  const name = h('input', {
    id: 'chat-name',
    maxlength: 32,
    value: state.name,
    'aria-label': 'Your name',
  })
  const roomInput = h('input', {
    id: 'chat-room',
    maxlength: 32,
    value: room,
    'aria-label': 'Room',
  })
  const input = h('input', {
    id: 'chat-input',
    maxlength: 500,
    placeholder: 'Write a message…',
    autocomplete: 'off',
    'aria-label': 'Message',
  })
  const join = () => {
    state.name = name.value.trim() || state.name
    localStorage.setItem('name', state.name)
    send({ type: 'chat.join', room, name: state.name })
  }
  name.addEventListener('change', join)
  roomInput.addEventListener('change', () => {
    const next = roomInput.value.trim().toLowerCase()
    if (/^[a-z0-9][a-z0-9-]{0,31}$/.test(next)) location.hash = `#/chat/${next}`
    else toast('Room: letters, digits and "-"', 'error')
  })
  const form = h(
    'form',
    { id: 'chat-form', class: 'chat-form' },
    input,
    h('button', { type: 'submit', class: 'primary' }, 'Send'),
  )
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const text = input.value.trim()
    if (!text) return
    if (send({ type: 'chat.message', text })) input.value = ''
    else toast('Not connected; retrying…', 'error')
  })
  page(
    `Chat · #${room}`,
    h('div', { class: 'row chat-settings' }, field('Name', name), field('Room', roomInput)),
    h(
      'p',
      { class: 'muted' },
      'Messages reach every app process through Redis; while Redis is down, only people on this process.',
    ),
    chat.log,
    form,
  )
  join()
  input.focus()
}

// Polls

const pollBoxes = new Map()

on('poll.results', (m) => {
  const box = pollBoxes.get(m.poll)
  if (box) box.update(m)
})

function pollCard(poll) {
  const bars = poll.options.map((label, index) => {
    const fill = h('span', { class: 'bar-fill' })
    const count = h('span', { class: 'bar-count' }, '0')
    const button = h(
      'button',
      {
        type: 'button',
        class: 'vote',
        onclick: () => send({ type: 'poll.vote', poll: poll.id, option: index, voter: voterId() }),
      },
      label,
    )
    return {
      row: h('div', { class: 'poll-option' }, button, h('span', { class: 'bar' }, fill), count),
      fill,
      count,
    }
  })
  const total = h('p', { class: 'muted' })
  const update = (results) => {
    results.counts.forEach((n, i) => {
      const bar = bars[i]
      if (!bar) return
      bar.count.textContent = String(n)
      bar.fill.style.width = results.total ? `${Math.round((100 * n) / results.total)}%` : '0%'
    })
    total.textContent = `${results.total} vote${results.total === 1 ? '' : 's'}`
  }
  update(poll.results)
  pollBoxes.set(poll.id, { update })
  state.polls.add(poll.id)
  send({ type: 'poll.subscribe', poll: poll.id })
  return h(
    'section',
    { class: 'card poll' },
    h('h2', {}, poll.question),
    bars.map((b) => b.row),
    total,
  )
}

async function pollsView() {
  pollBoxes.clear()
  try {
    const { data } = await api('GET', '/api/polls')
    page(
      'Live polls',
      h(
        'p',
        { class: 'muted' },
        'Votes are counted in the database and pushed to everyone watching, in every app process.',
      ),
      data.polls.map(pollCard),
    )
  } catch (error) {
    page('Live polls', errorBox(error))
  }
}

// Tasks: impact (compost batch), outbox (emails), embeddings are on each project page

async function tasksView() {
  let impact, outbox
  try {
    ;[impact, outbox] = await Promise.all([api('GET', '/api/impact'), api('GET', '/api/outbox')])
  } catch (error) {
    return page('Tasks', errorBox(error))
  }
  const notes = h('div', {})
  const recompute = async () => {
    try {
      const r = await api('POST', '/api/impact/recompute')
      notes.replaceChildren(dispatchLine([r.data.dispatch]))
      setTimeout(() => {
        if (location.hash === '#/tasks') tasksView()
      }, 1500)
    } catch (error) {
      notes.replaceChildren(errorBox(error))
    }
  }
  const ranking = h(
    'table',
    { class: 'table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'Project'),
        h('th', { class: 'num' }, 'Impact'),
        h('th', { class: 'num' }, 'Supporters'),
      ),
    ),
    h(
      'tbody',
      {},
      impact.data.projects.map((p) =>
        h(
          'tr',
          {},
          h('td', {}, h('a', { href: `#/projects/${p.id}` }, p.title)),
          h('td', { class: 'num' }, String(p.impactScore)),
          h('td', { class: 'num' }, String(p.supporters)),
        ),
      ),
    ),
  )
  const runs = h(
    'ul',
    { class: 'plain' },
    impact.data.runs.length === 0 ? h('li', { class: 'muted' }, 'No batch has run yet.') : null,
    impact.data.runs.map((r) =>
      h(
        'li',
        {},
        `${time(r.createdAt)} · ${r.projects} projects in ${r.durationMs} ms · `,
        h('span', { class: 'badge' }, r.mode),
        ` · ${r.process}`,
      ),
    ),
  )
  const to = h('input', {
    name: 'to',
    type: 'email',
    maxlength: 254,
    placeholder: 'someone@example.org',
  })
  const subject = h('input', { name: 'subject', maxlength: 150, placeholder: 'Subject' })
  const body = h('textarea', { name: 'body', rows: 3, maxlength: 5000, placeholder: 'Message' })
  const mailNotes = h('div', {})
  const mailForm = h(
    'form',
    { class: 'form compact', novalidate: true },
    field('To', to),
    field('Subject', subject),
    field('Body', body),
    h(
      'div',
      { class: 'row' },
      h('button', { type: 'submit', class: 'primary' }, 'Send notification'),
    ),
    mailNotes,
  )
  mailForm.addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      const r = await api('POST', '/api/notifications', {
        to: to.value,
        subject: subject.value,
        body: body.value,
      })
      mailNotes.replaceChildren(dispatchLine([r.data.dispatch]))
      setTimeout(() => {
        if (location.hash === '#/tasks') tasksView()
      }, 1000)
    } catch (error) {
      mailNotes.replaceChildren(errorBox(error))
    }
  })
  const mails = h(
    'ul',
    { class: 'outbox' },
    outbox.data.emails.length === 0 ? h('li', { class: 'muted' }, 'The outbox is empty.') : null,
    outbox.data.emails.map((m) =>
      h(
        'li',
        {},
        h('strong', {}, m.subject),
        h('span', { class: 'muted' }, ` → ${m.to}`),
        h(
          'div',
          { class: 'meta' },
          `${time(m.createdAt)} · ran on `,
          h('span', { class: 'badge' }, m.mode),
          ` · ${m.process}`,
        ),
      ),
    ),
  )
  page(
    'Tasks',
    h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Impact ranking (compost batch)'),
      h(
        'p',
        { class: 'muted' },
        'Recomputed periodically by the compost task. While Redis is unavailable, "Recompute now" runs the batch here, in this process (it recomputes from the database: running it again later changes nothing), and each process runs the periodic batch locally.',
      ),
      h(
        'div',
        { class: 'row' },
        h('button', { type: 'button', class: 'primary', onclick: recompute }, 'Recompute now'),
      ),
      notes,
      ranking,
      h('h3', {}, 'Recent batch runs'),
      runs,
    ),
    h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Outbox (send_email task)'),
      h(
        'p',
        { class: 'muted' },
        'Emails are written here instead of SMTP: queued on Redis and sent by a worker, or sent inline while Redis is down.',
      ),
      mailForm,
      mails,
    ),
  )
}

// ── router ──────────────────────────────────────────────────────────────────────────────────

function route() {
  const parts = (location.hash || '#/projects').slice(2).split('/')
  const tab = parts[0] || 'projects'
  for (const link of document.querySelectorAll('.tabs a')) {
    if (link.dataset.tab === tab) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  if (tab !== 'chat' && state.room) {
    send({ type: 'chat.leave' })
    state.room = null
    chat.log = null
  }
  if (tab === 'chat') return chatView(parts[1] || 'general')
  if (tab === 'polls') return pollsView()
  if (tab === 'tasks') return tasksView()
  if (parts[1] === 'new') return projectForm()
  if (parts[1] && /^\d+$/.test(parts[1])) {
    return parts[2] === 'edit' ? projectForm(Number(parts[1])) : projectView(Number(parts[1]))
  }
  return projectsView()
}

window.addEventListener('hashchange', route)
connect()
route()
