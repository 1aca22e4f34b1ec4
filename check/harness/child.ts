// One failsoft process of a run: `node --import tsx [--import clock-offset.ts] child.ts`, its
// configuration in CHECK_CHILD. It uses failsoft only through its public API and records every
// operation in its own history file (see ../checker/events.ts for the format).
//
//   web:    the cache (2 clients), task dispatches, 2 channel-group members and a publisher
//   worker: tasks.work() and 1 channel-group member
//
// Every load loop is bounded by the load phase (the harness sends 'stop-load'); traffic goes
// only to the loopback proxy the harness gave it.
import { createFailsoft, type Cache, type TaskContext } from '../../src/index.js'
import { Rng } from './prng.js'
import {
  GROUP,
  NAMESPACE,
  QUEUE,
  type ChildConfig,
  type FromChild,
  type TaskName,
  type ToChild,
} from './protocol.js'
import { Recorder, errorText } from './recorder.js'

const config = JSON.parse(process.env['CHECK_CHILD'] ?? '{}') as ChildConfig
const rec = new Recorder(config.historyPath, config.name)
const tell = (message: FromChild): void => {
  if (process.connected) process.send?.(message)
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

process.on('uncaughtException', (error) => {
  rec.info('crash', { error: `uncaught exception: ${errorText(error)}`, stack: error.stack })
  process.exit(70)
})
process.on('unhandledRejection', (reason) => {
  rec.info('crash', {
    error: `unhandled rejection: ${errorText(reason)}`,
    stack: reason instanceof Error ? reason.stack : undefined,
  })
  process.exit(71)
})

rec.info('start', {
  base: config.base,
  role: config.role,
  incarnation: config.incarnation,
  pid: process.pid,
  clockOffsetMs: config.clockOffsetMs,
  wallClock: Date.now(),
})

const failsoft = createFailsoft({ redis: config.redisUrl, prefix: config.prefix })
failsoft.health.on('down', ({ forced, error }) =>
  rec.info('health', { state: 'down', forced, error: errorText(error) }),
)
failsoft.health.on('up', ({ reset, downtimeMs }) =>
  rec.info('health', { state: 'up', reset, downtimeMs }),
)
failsoft.health.on('reset', () => rec.info('health', { state: 'reset' }))

// ── tasks: the same definitions in every process ─────────────────────────────────────────────
const tasks = failsoft.tasks({ queue: QUEUE, spool: { path: config.spoolPath } })
let runSeq = 0
function handler(task: TaskName) {
  return async (args: { d: number }, ctx: TaskContext): Promise<string> => {
    const runId = `${config.name}:${++runSeq}`
    rec.info('task.run-start', { runId, id: ctx.id, task, ctxMode: ctx.mode, attempt: ctx.attempt })
    try {
      await abortableSleep(args.d, ctx.signal)
    } catch (error) {
      rec.info('task.run-end', { runId, id: ctx.id, ok: false, error: errorText(error) })
      throw error
    }
    rec.info('task.run-end', { runId, id: ctx.id, ok: true })
    return 'done'
  }
}
tasks.define('quick', handler('quick'), { fallback: 'inline' })
tasks.define('spooly', handler('spooly'), { fallback: 'spool' })
tasks.define('droppy', handler('droppy'), { fallback: 'drop' })
tasks.define('long', handler('long'), { fallback: 'spool' })
const worker =
  config.role === 'worker'
    ? tasks.work({
        concurrency: config.work.concurrency,
        ...(config.work.lockDurationMs !== undefined && {
          lockDurationMs: config.work.lockDurationMs,
        }),
        ...(config.work.stalledIntervalMs !== undefined && {
          stalledIntervalMs: config.work.stalledIntervalMs,
        }),
      })
    : undefined

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error)
      return
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal.reason as Error)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

// ── cache and channels ─────────────────────────────────────────────────────────────────────────
const cache: Cache | undefined =
  config.role === 'web'
    ? failsoft.cache({
        namespace: NAMESPACE,
        defaultTtlSeconds: 3600,
        memory: { mode: config.load.memoryMode },
      })
    : undefined
const layer = failsoft.channels()
const closing = new AbortController()

async function receiveLoop(channel: string): Promise<void> {
  while (!closing.signal.aborted) {
    try {
      const message = await layer.receive(channel, { signal: closing.signal })
      rec.info('chan.recv', { channel, pub: message['pub'], seq: message['seq'] })
    } catch (error) {
      if (closing.signal.aborted) return
      rec.info('chan.recv-error', { channel, error: errorText(error) })
      await sleep(10)
    }
  }
}

// ── load ───────────────────────────────────────────────────────────────────────────────────────
const load = config.load
const rng = new Rng(config.seed + config.incarnation)
let loading = false
/** 'stop-load' came (maybe before this restarted child was ready): no load any more. */
let loadStopped = false
const loops: Array<Promise<void>> = []
const inFlight = new Set<Promise<void>>()
let writeSeq = 0
let dispatchSeq = 0
let sendSeq = 0

const between = (r: Rng, [min, max]: [number, number]): number => r.int(min, max)

async function cacheLoop(c: Cache, r: Rng): Promise<void> {
  // `journal`: what is left to reconcile into Redis — keys changed while degraded, plus 1 for a
  // generation bump still owed (a clear, an overflow, a FLUSHALL seen) — so the checker tells a
  // cache still holding changes from one in its peer wait, both on backend 'memory'.
  const snap = (): Record<string, unknown> => {
    const { journal } = c.status()
    return {
      state: failsoft.health.state,
      backend: c.backend,
      journal: journal.keys + (journal.pendingGenerationBump ? 1 : 0),
    }
  }
  while (loading) {
    const x = r.next()
    const key = `k${r.int(0, load.cacheKeys - 1)}`
    if (x < load.clearShare) {
      const opId = rec.invoke('cache.clear', snap())
      try {
        await c.clear()
        rec.ok('cache.clear', opId, snap())
      } catch (error) {
        rec.fail('cache.clear', opId, error, snap())
      }
    } else if (x < 0.55) {
      const opId = rec.invoke('cache.get', { key, ...snap() })
      try {
        const value = await c.get<string>(key)
        rec.ok('cache.get', opId, { key, value: value ?? null, ...snap() })
      } catch (error) {
        rec.fail('cache.get', opId, error, { key, ...snap() })
      }
    } else if (x < 0.88) {
      const value = `${config.name}-${++writeSeq}`
      const opId = rec.invoke('cache.set', { key, value, ...snap() })
      try {
        const result = await c.set(key, value, { ttlSeconds: 3600 })
        rec.ok('cache.set', opId, { key, value, result, ...snap() })
      } catch (error) {
        rec.fail('cache.set', opId, error, { key, value, ...snap() })
      }
    } else {
      const opId = rec.invoke('cache.delete', { key, ...snap() })
      try {
        const result = await c.delete(key)
        rec.ok('cache.delete', opId, { key, result, ...snap() })
      } catch (error) {
        rec.fail('cache.delete', opId, error, { key, ...snap() })
      }
    }
    await sleep(between(r, load.cacheThinkMs))
  }
}

/** What a dispatch asks besides its key: a BullMQ priority, a delay (the exactly-once and
 * no-loss invariants cover prioritized and delayed jobs too). */
interface Extra {
  priority?: number
  delayMs?: number
}

async function dispatchOne(
  task: TaskName,
  key: string | undefined,
  d: number,
  extra: Extra,
): Promise<void> {
  const opId = rec.invoke('task.dispatch', { task, key, ...extra, state: failsoft.health.state })
  try {
    const result = await tasks.dispatch(
      task,
      { d, by: config.name, n: ++dispatchSeq },
      { ...(key !== undefined && { idempotencyKey: key }), ...extra },
    )
    rec.ok('task.dispatch', opId, {
      task,
      key,
      mode: result.mode,
      id: result.id,
      ...(result.mode === 'inline' && { ok: result.ok }),
      ...('error' in result && { error: errorText(result.error) }),
      state: failsoft.health.state,
    })
  } catch (error) {
    rec.fail('task.dispatch', opId, error, { task, key })
  }
}

async function taskLoop(r: Rng): Promise<void> {
  while (loading) {
    await sleep(between(r, load.dispatchEveryMs))
    if (!loading) break
    if (inFlight.size >= load.maxInFlightDispatches) continue
    const task = r.weighted<TaskName>([
      { item: 'quick', weight: 45 },
      { item: 'spooly', weight: 25 },
      { item: 'droppy', weight: 18 },
      { item: 'long', weight: 12 },
    ])
    const key = r.chance(load.keyShare) ? `key-${r.int(0, load.keyPool - 1)}` : undefined
    const d = task === 'long' ? load.longHandlerMs : between(r, load.quickHandlerMs)
    const extra: Extra = {
      ...(r.chance(load.priorityShare) && { priority: r.int(1, 5) }),
      ...(r.chance(load.delayShare) && { delayMs: r.int(50, load.maxDelayMs) }),
    }
    const p: Promise<void> = dispatchOne(task, key, d, extra).finally(() => inFlight.delete(p))
    inFlight.add(p)
  }
}

async function sendLoop(r: Rng): Promise<void> {
  const snap = (): Record<string, unknown> => ({
    state: failsoft.health.state,
    backend: layer.backend,
  })
  while (loading) {
    await sleep(between(r, load.sendEveryMs))
    if (!loading) break
    const seq = ++sendSeq
    const opId = rec.invoke('chan.send', { group: GROUP, seq, ...snap() })
    try {
      await layer.groupSend(GROUP, { type: 'chk.msg', pub: config.name, seq })
      rec.ok('chan.send', opId, { group: GROUP, seq, ...snap() })
    } catch (error) {
      rec.fail('chan.send', opId, error, { group: GROUP, seq, ...snap() })
    }
  }
}

function startLoad(): void {
  if (loading || loadStopped || closing.signal.aborted) return
  loading = true
  if (cache !== undefined) {
    for (let c = 0; c < load.cacheClients; c++) loops.push(cacheLoop(cache, rng.fork(`cache:${c}`)))
    loops.push(taskLoop(rng.fork('tasks')))
    loops.push(sendLoop(rng.fork('send')))
  }
}

async function stopLoad(): Promise<void> {
  loadStopped = true
  loading = false
  await Promise.all(loops)
  await Promise.all([...inFlight])
  tell({ type: 'load-stopped' })
}

let closeStarted = false
async function close(): Promise<void> {
  if (closeStarted) return
  closeStarted = true
  loading = false
  closing.abort()
  await Promise.race([Promise.all([...loops, ...inFlight]), sleep(3000)])
  // Every component's counters at the end (repairs, gaps, spool, workers): read when a
  // violation needs explaining, never by the checker.
  rec.info('final-status', { status: failsoft.status() })
  try {
    await worker?.close({ timeoutMs: 3000 })
    await failsoft.close()
  } catch (error) {
    rec.info('close-error', { error: errorText(error) })
  }
  rec.info('closed')
  tell({ type: 'closed' })
  process.exit(0)
}

process.on('message', (message: ToChild) => {
  switch (message.type) {
    case 'start-load':
      startLoad()
      break
    case 'stop-load':
      void stopLoad()
      break
    case 'force':
      rec.info('force', { on: message.on })
      failsoft.health.forceFallback(message.on)
      break
    case 'status':
      tell({ type: 'status', state: failsoft.health.state, inFlight: inFlight.size })
      break
    case 'close':
      void close()
      break
  }
})
// The harness went away: nobody will ever close us.
process.on('disconnect', () => void close())

// ── start ──────────────────────────────────────────────────────────────────────────────────────
await failsoft.ready()
const members = config.role === 'web' ? load.membersPerWeb : load.membersPerWorker
for (let i = 0; i < members; i++) {
  const channel = await layer.newChannel()
  const opId = rec.invoke('chan.join', { channel, group: GROUP, state: failsoft.health.state })
  try {
    await layer.groupAdd(GROUP, channel)
    rec.ok('chan.join', opId, { channel, group: GROUP, state: failsoft.health.state })
  } catch (error) {
    rec.fail('chan.join', opId, error, { channel, group: GROUP })
  }
  void receiveLoop(channel)
}
rec.info('ready', { state: failsoft.health.state })
tell({ type: 'ready', state: failsoft.health.state })
if (config.startLoad) startLoad()
