// The checker on hand-made histories: each invariant with a history that must pass and one that
// must fail. No Redis, no failsoft: the checker is a pure function of the events.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { check, parseHistory, type Family, type RawEvent } from '../../check/checker/index.js'

/** A tiny history builder: times in ms from the start of the run. */
class Hist {
  readonly events: RawEvent[] = []
  #opId = 0

  ev(
    ms: number,
    kind: RawEvent['kind'],
    process: string,
    op: string,
    fields: Record<string, unknown> = {},
  ): this {
    this.events.push({
      kind,
      process,
      op,
      t: String(BigInt(Math.round(ms * 1000)) * 1000n + 10n ** 12n),
      ...fields,
    })
    return this
  }

  harness(ms: number, op: string, fields: Record<string, unknown> = {}): this {
    return this.ev(ms, 'info', 'harness', op, fields)
  }

  /** A child: spawned, started, up and ready at `ms`. */
  child(name: string, role: 'web' | 'worker', ms = 0): this {
    const base = name.slice(0, name.lastIndexOf('.'))
    this.harness(ms, 'child-spawn', { child: name, base, role })
    this.ev(ms + 1, 'info', name, 'start', { base, role })
    this.ev(ms + 2, 'info', name, 'health', { state: 'up' })
    return this.ev(ms + 3, 'info', name, 'ready', { state: 'up' })
  }

  health(ms: number, process: string, state: 'up' | 'down', forced = false): this {
    return this.ev(ms, 'info', process, 'health', { state, forced })
  }

  /** One operation: invoke at `from`, ok at `to` (undefined: never completed). */
  op(
    process: string,
    op: string,
    from: number,
    to: number | undefined,
    fields: Record<string, unknown> = {},
    done: Record<string, unknown> = {},
  ): this {
    const opId = ++this.#opId
    const up = { state: 'up', backend: 'redis' }
    this.ev(from, 'invoke', process, op, { opId, ...up, ...fields })
    if (to !== undefined) this.ev(to, 'ok', process, op, { opId, ...up, ...fields, ...done })
    return this
  }

  set(
    p: string,
    key: string,
    value: string,
    from: number,
    to: number,
    extra: Record<string, unknown> = {},
  ): this {
    return this.op(p, 'cache.set', from, to, { key, value, ...extra }, { result: true })
  }

  get(
    p: string,
    key: string,
    value: string | null,
    from: number,
    to: number,
    extra: Record<string, unknown> = {},
  ): this {
    return this.op(p, 'cache.get', from, to, { key, ...extra }, { value })
  }

  fault(
    id: string,
    fault: string,
    from: number,
    to: number,
    flags: Record<string, unknown> = {},
  ): this {
    this.harness(from, 'fault-start', {
      faultId: id,
      fault,
      targets: ['*'],
      outage: true,
      slow: false,
      dataLoss: false,
      expectDown: true,
      writesRefused: false,
      ...flags,
    })
    return this.harness(to, 'fault-end', { faultId: id, fault })
  }

  run(families?: Family[]): ReturnType<typeof check> {
    this.harness(-1, 'run', { seed: 42 })
    const history = parseHistory([this.events.map((e) => JSON.stringify(e)).join('\n')])
    return check(history, families !== undefined ? { families } : {})
  }
}

/** The invariants a history breaks; only those of `families` (default: all of them). */
const invariants = (
  h: Hist,
  severity: 'violation' | 'documented' = 'violation',
  families?: Family[],
): string[] =>
  h
    .run(families)
    .violations.filter((v) => v.severity === severity)
    .map((v) => v.invariant)

const cacheInvariants = (h: Hist, severity: 'violation' | 'documented' = 'violation'): string[] =>
  invariants(h, severity, ['cache'])
const taskInvariants = (h: Hist, severity: 'violation' | 'documented' = 'violation'): string[] =>
  invariants(h, severity, ['tasks'])

const twoWebs = (): Hist => new Hist().child('web1.1', 'web').child('web2.1', 'web')

describe('cache', () => {
  test('a read after a write sees it (pass); a read of a replaced value fails', () => {
    const ok = twoWebs().set('web1.1', 'k', 'a', 10, 11).get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(ok), [])
    const stale = twoWebs()
      .set('web1.1', 'k', 'a', 10, 11)
      .set('web1.1', 'k', 'b', 12, 13)
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(stale), ['cache.stale-read'])
  })

  test('a delete replaces too; a miss is always allowed', () => {
    const h = twoWebs()
      .set('web1.1', 'k', 'a', 10, 11)
      .op('web1.1', 'cache.delete', 12, 13, { key: 'k' }, { result: true })
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(h), ['cache.stale-read'])
    const miss = twoWebs().set('web1.1', 'k', 'a', 10, 11).get('web2.1', 'k', null, 20, 21)
    assert.deepEqual(cacheInvariants(miss), [])
  })

  test('a write concurrent with the read, or with the first write, does not count', () => {
    const overlapRead = twoWebs()
      .set('web1.1', 'k', 'a', 10, 11)
      .set('web1.1', 'k', 'b', 12, 25)
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(overlapRead), [])
    const overlapWrite = twoWebs()
      .set('web1.1', 'k', 'a', 10, 15)
      .set('web2.1', 'k', 'b', 12, 13)
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(overlapWrite), [])
  })

  test('a value never written, or read before its write, is a phantom', () => {
    assert.deepEqual(cacheInvariants(twoWebs().get('web2.1', 'k', 'zzz', 20, 21)), [
      'cache.phantom-value',
    ])
    const early = twoWebs().get('web2.1', 'k', 'a', 5, 6).set('web1.1', 'k', 'a', 10, 11)
    assert.deepEqual(cacheInvariants(early), ['cache.phantom-value'])
  })

  test("a degraded read owes only its own process' writes (read-your-writes)", () => {
    const degraded = { state: 'down', backend: 'memory' }
    const others = twoWebs()
      .set('web2.1', 'k', 'a', 10, 11)
      .health(15, 'web2.1', 'down')
      .set('web1.1', 'k', 'b', 20, 21)
      .get('web2.1', 'k', 'a', 30, 31, degraded)
    assert.deepEqual(cacheInvariants(others), [])
    const own = twoWebs()
      .set('web1.1', 'k', 'a', 10, 11)
      .health(15, 'web2.1', 'down')
      .set('web2.1', 'k', 'b', 20, 21, degraded)
      .get('web2.1', 'k', 'a', 30, 31, degraded)
    assert.deepEqual(cacheInvariants(own), ['cache.read-your-writes'])
  })

  test("a degraded process' write is owed to the others once it is back up", () => {
    const degraded = { state: 'down', backend: 'memory' }
    const base = (): Hist =>
      twoWebs()
        .set('web2.1', 'k', 'a', 10, 11)
        .health(15, 'web1.1', 'down')
        .op('web1.1', 'cache.delete', 20, 21, { key: 'k', ...degraded }, { result: true })
    assert.deepEqual(cacheInvariants(base().get('web2.1', 'k', 'a', 30, 31)), [])
    const after = base().health(40, 'web1.1', 'up').get('web2.1', 'k', 'a', 50, 51)
    assert.deepEqual(cacheInvariants(after), ['cache.stale-read'])
  })

  test("a degraded write is not owed while its process's cache stays on memory after 'up' (a reconciliation refused)", () => {
    const degraded = { state: 'down', backend: 'memory' }
    const onMemory = { state: 'up', backend: 'memory' }
    const base = (): Hist =>
      twoWebs()
        .set('web2.1', 'k', 'a', 10, 11)
        .health(15, 'web1.1', 'down')
        .op('web1.1', 'cache.delete', 20, 21, { key: 'k', ...degraded }, { result: true })
        .health(40, 'web1.1', 'up')
        .op('web1.1', 'cache.get', 42, 43, { key: 'x', ...onMemory }, { value: null })
    assert.deepEqual(cacheInvariants(base().get('web2.1', 'k', 'a', 50, 51)), [])
    const reconciled = base()
      .op('web1.1', 'cache.get', 45, 46, { key: 'x' }, { value: null })
      .get('web2.1', 'k', 'a', 50, 51)
    assert.deepEqual(cacheInvariants(reconciled), ['cache.stale-read'])
    // On memory with nothing journaled is the peer wait: reconciled, the write is owed.
    const waiting = base()
      .op('web1.1', 'cache.get', 45, 46, { key: 'x', ...onMemory, journal: 0 }, { value: null })
      .get('web2.1', 'k', 'a', 50, 51)
    assert.deepEqual(cacheInvariants(waiting), ['cache.stale-read'])
    // No operation in between: the next one, still journaling on memory, says it was not.
    const quiet = (journal: number): Hist =>
      twoWebs()
        .set('web2.1', 'k', 'a', 10, 11)
        .health(15, 'web1.1', 'down')
        .op('web1.1', 'cache.delete', 20, 21, { key: 'k', ...degraded }, { result: true })
        .health(40, 'web1.1', 'up')
        .get('web2.1', 'k', 'a', 50, 51)
        .op('web1.1', 'cache.get', 60, 61, { key: 'x', ...onMemory, journal }, { value: null })
    assert.deepEqual(cacheInvariants(quiet(1)), [])
    assert.deepEqual(cacheInvariants(quiet(0)), ['cache.stale-read'])
  })

  test('a set answered false must not be read afterwards', () => {
    const h = twoWebs()
      .op('web1.1', 'cache.set', 10, 11, { key: 'k', value: 'a' }, { result: false })
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(h), ['cache.stale-read'])
  })

  test("another process' stale read right after a clear() is a violation (no window)", () => {
    const h = twoWebs()
      .op('web1.1', 'cache.clear', 5, 6)
      .set('web2.1', 'k', 'a', 10, 11) // web2.1 still on the old generation
      .set('web1.1', 'k', 'b', 12, 13)
      .get('web2.1', 'k', 'a', 20, 21)
    assert.deepEqual(cacheInvariants(h), ['cache.stale-read'])
    assert.deepEqual(cacheInvariants(h, 'documented'), [])
  })
})

const dispatch = (
  h: Hist,
  p: string,
  from: number,
  to: number,
  mode: string,
  id: string,
  task = 'quick',
  key?: string,
): Hist => h.op(p, 'task.dispatch', from, to, { task, ...(key && { key }) }, { mode, id })
const run = (
  h: Hist,
  p: string,
  runId: string,
  id: string,
  from: number,
  to: number | undefined,
  ctxMode = 'worker',
  ok = true,
): Hist => {
  h.ev(from, 'info', p, 'task.run-start', { runId, id, task: 'quick', ctxMode, attempt: 1 })
  if (to !== undefined) h.ev(to, 'info', p, 'task.run-end', { runId, id, ok })
  return h
}
const withWorker = (): Hist => twoWebs().child('worker1.1', 'worker')

describe('tasks', () => {
  test('a queued task that runs once passes; one that never runs is lost', () => {
    const ok = run(
      dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1'),
      'worker1.1',
      'r1',
      't1',
      20,
      30,
    )
    assert.deepEqual(taskInvariants(ok), [])
    const lost = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1')
    assert.deepEqual(taskInvariants(lost), ['tasks.lost'])
  })

  test('a task lost because Redis lost its data afterwards is not counted', () => {
    const h = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1').fault(
      'f1',
      'flushall',
      50,
      51,
      {
        outage: false,
        expectDown: false,
        dataLoss: true,
      },
    )
    assert.deepEqual(taskInvariants(h), [])
    assert.equal(h.run().stats.tasks.lostWithRedisData, 1)
  })

  test('a dropped task that runs fails; a dropped key accepted elsewhere may run', () => {
    const h = run(
      dispatch(withWorker(), 'web1.1', 10, 11, 'dropped', 't1', 'droppy'),
      'worker1.1',
      'r1',
      't1',
      20,
      30,
    )
    assert.deepEqual(taskInvariants(h), ['tasks.refused-ran'])
    const keyed = dispatch(withWorker(), 'web1.1', 10, 11, 'dropped', 'k-1', 'droppy', 'key')
    dispatch(keyed, 'web2.1', 12, 13, 'queued', 'k-1', 'droppy', 'key')
    run(keyed, 'worker1.1', 'r1', 'k-1', 20, 30)
    assert.deepEqual(taskInvariants(keyed), [])
  })

  test('two overlapping runs of one id fail', () => {
    const h = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1')
    run(h, 'worker1.1', 'r1', 't1', 20, 300)
    run(h, 'worker1.1', 'r2', 't1', 200, 400)
    assert.deepEqual(taskInvariants(h), ['tasks.overlap'])
  })

  test('a run after a successful one fails; after a failed one it is a retry', () => {
    const h = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1')
    run(h, 'worker1.1', 'r1', 't1', 20, 30)
    run(h, 'worker1.1', 'r2', 't1', 40, 50)
    assert.deepEqual(taskInvariants(h), ['tasks.ran-after-success'])
    const retry = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1')
    run(retry, 'worker1.1', 'r1', 't1', 20, 30, 'worker', false)
    run(retry, 'worker1.1', 'r2', 't1', 40, 50)
    assert.deepEqual(taskInvariants(retry), [])
  })

  test('a run cut by its process being killed ends there', () => {
    const h = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 't1')
    run(h, 'worker1.1', 'r1', 't1', 20, undefined)
    h.harness(100, 'child-kill', { child: 'worker1.1' }).child('worker1.2', 'worker', 150)
    run(h, 'worker1.2', 'r2', 't1', 200, 220)
    assert.deepEqual(taskInvariants(h), [])
  })

  test('a key run inline in two processes during one outage is documented', () => {
    const h = withWorker().health(5, 'web1.1', 'down').health(5, 'web2.1', 'down')
    dispatch(h, 'web1.1', 10, 20, 'inline', 'k-1', 'quick', 'key')
    run(h, 'web1.1', 'a', 'k-1', 11, 19, 'inline')
    dispatch(h, 'web2.1', 30, 40, 'inline', 'k-1', 'quick', 'key')
    run(h, 'web2.1', 'b', 'k-1', 31, 39, 'inline')
    assert.deepEqual(taskInvariants(h), [])
    assert.deepEqual(taskInvariants(h, 'documented'), ['tasks.ran-after-success'])
  })

  test('a key run by a worker while the process that ran it inline is still down is documented', () => {
    const h = withWorker().health(5, 'web1.1', 'down')
    dispatch(h, 'web1.1', 10, 20, 'inline', 'k-1', 'quick', 'key')
    run(h, 'web1.1', 'a', 'k-1', 11, 19, 'inline')
    dispatch(h, 'web2.1', 30, 31, 'queued', 'k-1', 'quick', 'key')
    run(h, 'worker1.1', 'b', 'k-1', 40, 50)
    assert.deepEqual(taskInvariants(h), [])
    assert.deepEqual(taskInvariants(h, 'documented'), ['tasks.ran-after-success'])
    h.health(25, 'web1.1', 'up') // had it recovered first, its marker would be in Redis
    assert.deepEqual(taskInvariants(h), ['tasks.ran-after-success'])
  })

  test('a key done by a worker and run inline again later fails', () => {
    const h = dispatch(withWorker(), 'web1.1', 10, 11, 'queued', 'k-1', 'quick', 'key')
    run(h, 'worker1.1', 'r1', 'k-1', 20, 30)
    h.health(50, 'web2.1', 'down')
    dispatch(h, 'web2.1', 60, 70, 'inline', 'k-1', 'quick', 'key')
    run(h, 'web2.1', 'b', 'k-1', 61, 69, 'inline')
    assert.deepEqual(taskInvariants(h), ['tasks.ran-after-success'])
  })
})

const send = (h: Hist, p: string, seq: number, from: number, state = 'up'): Hist =>
  h.op(p, 'chan.send', from, from + 0.1, {
    group: 'g',
    seq,
    state,
    backend: state === 'up' ? 'redis' : 'memory',
  })
const recv = (h: Hist, p: string, channel: string, pub: string, seq: number, at: number): Hist =>
  h.ev(at, 'info', p, 'chan.recv', { channel, pub, seq })
const members = (): Hist =>
  twoWebs()
    .op('web1.1', 'chan.join', 4, 5, { channel: 'c1', group: 'g' })
    .op('web2.1', 'chan.join', 4, 5, { channel: 'c2', group: 'g' })

describe('channels', () => {
  test('every member receiving every message once, in order, passes', () => {
    const h = members()
    for (let s = 1; s <= 3; s++) {
      send(h, 'web1.1', s, 2000 + s * 10)
      recv(h, 'web1.1', 'c1', 'web1.1', s, 2000 + s * 10 + 1)
      recv(h, 'web2.1', 'c2', 'web1.1', s, 2000 + s * 10 + 2)
    }
    assert.deepEqual(invariants(h), [])
  })

  test('a local member missing a message of its own process fails', () => {
    const h = members()
    send(h, 'web1.1', 1, 2000)
    recv(h, 'web2.1', 'c2', 'web1.1', 1, 2001)
    assert.deepEqual(invariants(h), ['channels.local-loss'])
  })

  test('duplicates and reorders fail, separately', () => {
    const h = members()
    send(h, 'web1.1', 1, 2000)
    send(h, 'web1.1', 2, 2010)
    recv(h, 'web1.1', 'c1', 'web1.1', 1, 2001)
    recv(h, 'web1.1', 'c1', 'web1.1', 2, 2011)
    recv(h, 'web2.1', 'c2', 'web1.1', 2, 2012)
    recv(h, 'web2.1', 'c2', 'web1.1', 1, 2013)
    recv(h, 'web2.1', 'c2', 'web1.1', 1, 2014)
    assert.deepEqual(invariants(h).sort(), ['channels.duplicate', 'channels.reorder'])
  })

  test('an outbox message must reach the other process after the publisher recovers', () => {
    const build = (deliver: boolean): Hist => {
      const h = members()
        .fault('f1', 'freeze', 1000, 3000)
        .health(1200, 'web1.1', 'down')
        .health(1210, 'web2.1', 'down')
      send(h, 'web1.1', 1, 1500, 'down')
      recv(h, 'web1.1', 'c1', 'web1.1', 1, 1501)
      h.harness(3005, 'redis-answers', { path: 'web1' })
        .harness(3005, 'redis-answers', { path: 'web2' })
        .health(3100, 'web1.1', 'up')
        .health(3150, 'web2.1', 'up')
      if (deliver) recv(h, 'web2.1', 'c2', 'web1.1', 1, 3600)
      return h.harness(9000, 'phase', { phase: 'close' })
    }
    assert.deepEqual(invariants(build(true)), [])
    assert.deepEqual(invariants(build(false)), ['channels.cross-loss'])
  })

  test('a receiver cut off alone when the outbox is flushed is exempt', () => {
    const h = members()
      .fault('f1', 'freeze', 1000, 3000)
      .fault('f2', 'blackhole-one', 2900, 4500, { targets: ['web2'] })
      .health(1200, 'web1.1', 'down')
      .health(1210, 'web2.1', 'down')
    send(h, 'web1.1', 1, 1500, 'down')
    recv(h, 'web1.1', 'c1', 'web1.1', 1, 1501)
    h.health(3100, 'web1.1', 'up')
      .health(4700, 'web2.1', 'up')
      .harness(9000, 'phase', { phase: 'close' })
    assert.deepEqual(invariants(h), [])
  })
})

describe('health', () => {
  test('a freeze noticed 1.2 s in: detect-slow, unless a slow link was active (its deadline grew)', () => {
    const build = (slow: boolean): Hist => {
      const h = new Hist().child('web1.1', 'web')
      if (slow)
        h.fault('f0', 'slow-link', 500, 4000, { slow: true, outage: false, expectDown: false })
      return h
        .fault('f1', 'freeze', 1000, 3000)
        .health(2200, 'web1.1', 'down')
        .harness(3005, 'redis-answers', { path: 'web1' })
        .health(3200, 'web1.1', 'up')
        .harness(9000, 'phase', { phase: 'close' })
    }
    assert.ok(invariants(build(false)).includes('health.detect-slow'))
    assert.ok(!invariants(build(true)).includes('health.detect-slow'))
  })

  test('down during a freeze, up soon after Redis answers: pass; up 2 s later: recovery-slow', () => {
    const build = (upAt: number): Hist =>
      new Hist()
        .child('web1.1', 'web')
        .fault('f1', 'freeze', 1000, 2000)
        .health(1300, 'web1.1', 'down')
        .harness(2005, 'redis-answers', { path: 'web1' })
        .health(upAt, 'web1.1', 'up')
        .harness(9000, 'phase', { phase: 'close' })
    assert.deepEqual(invariants(build(2300)), [])
    assert.deepEqual(invariants(build(4100)), ['health.recovery-slow'])
  })

  test('down on a slow link is a violation (the first, just after the step, is documented); down with no fault is spurious; forced is fine', () => {
    const slow = new Hist()
      .child('web1.1', 'web')
      .fault('f1', 'slow-link', 1000, 3000, { outage: false, slow: true, expectDown: false })
      .health(1400, 'web1.1', 'down')
      .health(1600, 'web1.1', 'up')
      .health(2500, 'web1.1', 'down')
      .harness(3005, 'redis-answers', { path: 'web1' })
      .health(3200, 'web1.1', 'up')
    assert.deepEqual(invariants(slow), ['health.slow-link-outage'])
    assert.deepEqual(invariants(slow, 'documented'), ['health.slow-link-outage'])
    const spurious = new Hist()
      .child('web1.1', 'web')
      .health(1400, 'web1.1', 'down')
      .health(1500, 'web1.1', 'up')
    assert.deepEqual(invariants(spurious), ['health.spurious-down'])
    const forced = new Hist()
      .child('web1.1', 'web')
      .ev(1399, 'info', 'web1.1', 'force', { on: true })
      .health(1400, 'web1.1', 'down', true)
      .ev(2000, 'info', 'web1.1', 'force', { on: false })
      .health(2100, 'web1.1', 'up')
    assert.deepEqual(invariants(forced), [])
  })

  test('a process still down after a second fault that began before it was due up is reported', () => {
    const h = new Hist()
      .child('web1.1', 'web')
      .fault('f1', 'freeze', 1000, 2000)
      .health(1300, 'web1.1', 'down')
      .harness(2005, 'redis-answers', { path: 'web1' })
      .fault('f2', 'blackhole-all', 2500, 3000)
      .harness(3005, 'redis-answers', { path: 'web1' })
      .harness(9000, 'phase', { phase: 'close' })
    const result = h.run(['health'])
    assert.deepEqual(
      result.violations.map((v) => v.invariant),
      ['health.recovery-slow'],
    )
    assert.match(
      result.violations[0]!.message,
      /never came back up after Redis answered again on its path at 300\d/,
    )
  })

  test("a down while the harness' own PING to Redis stalled is documented", () => {
    const h = new Hist()
      .child('web1.1', 'web')
      .harness(1450, 'redis-stall', {
        sentT: String(BigInt(1100 * 1000) * 1000n + 10n ** 12n),
        rttMs: 350,
      })
      .health(1400, 'web1.1', 'down')
      .harness(1460, 'redis-answers', { path: 'web1' })
      .health(1500, 'web1.1', 'up')
    assert.deepEqual(invariants(h, 'violation', ['health']), [])
    assert.deepEqual(invariants(h, 'documented', ['health']), ['health.spurious-down'])
  })

  test('a freeze nobody notices fails detection', () => {
    const h = new Hist()
      .child('web1.1', 'web')
      .fault('f1', 'freeze', 1000, 3000)
      .harness(3005, 'redis-answers', { path: 'web1' })
    assert.deepEqual(invariants(h), ['health.detect-slow'])
  })
})

describe('processes and the API', () => {
  test('a crash and an operation that threw fail', () => {
    const h = new Hist().child('web1.1', 'web').ev(50, 'info', 'web1.1', 'crash', { error: 'boom' })
    h.ev(10, 'invoke', 'web1.1', 'cache.get', { opId: 99, key: 'k' }).ev(
      11,
      'fail',
      'web1.1',
      'cache.get',
      {
        opId: 99,
        error: 'Error: nope',
      },
    )
    assert.deepEqual(invariants(h).sort(), ['api.threw', 'process.crash'])
  })

  test('a violation names the events involved', () => {
    const result = twoWebs()
      .set('web1.1', 'k', 'a', 10, 11)
      .set('web1.1', 'k', 'b', 12, 13)
      .get('web2.1', 'k', 'a', 20, 21)
      .run()
    const v = result.violations[0]!
    const ops = v.events.filter((e) => e.op.startsWith('cache.')).map((e) => `${e.op}:${e.kind}`)
    assert.deepEqual(ops, [
      'cache.set:invoke',
      'cache.set:ok',
      'cache.set:invoke',
      'cache.set:ok',
      'cache.get:invoke',
      'cache.get:ok',
    ])
  })
})
