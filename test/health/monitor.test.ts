import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { createFailsoft, type Failsoft, type FailsoftOptions } from '../../src/index.js'
import { startProxy, startRedis, waitFor, sleep, type RedisServer } from '../support/fault-kit.js'
import { captureLogs, LEVEL } from '../support/log-capture.js'

const unhandled: unknown[] = []
process.on('unhandledRejection', (error) => unhandled.push(error))
process.on('uncaughtException', (error) => unhandled.push(error))
after(() => assert.deepEqual(unhandled, [], 'no unhandled rejection or exception in any fault'))

let prefixCounter = 0
function open(
  t: { after(fn: () => unknown): void },
  options: FailsoftOptions,
): { failsoft: Failsoft; logs: ReturnType<typeof captureLogs> } {
  const logs = captureLogs()
  const failsoft = createFailsoft({
    prefix: `health${++prefixCounter}`,
    logger: logs.logger,
    ...options,
  })
  t.after(() => failsoft.close())
  return { failsoft, logs }
}

function errorsIn(logs: ReturnType<typeof captureLogs>): number {
  return logs.records.filter((r) => r.level === LEVEL.error).length
}

describe('health monitor against a real redis-server', () => {
  test('starts up, logs one INFO, and reports a redacted status', async (t) => {
    const server = await startRedis(t)
    const { failsoft, logs } = open(t, { redis: server.url })
    assert.equal(failsoft.health.state, 'starting')
    assert.equal(await failsoft.ready(), 'up')
    assert.equal(failsoft.health.available, true)
    const status = failsoft.status()
    assert.equal(status.redis.available, true)
    assert.equal(status.redis.state, 'up')
    assert.equal(status.redis.error, null)
    assert.equal(status.redis.target, `127.0.0.1:${server.port}/0`)
    assert.doesNotThrow(() => JSON.stringify(status))
    const infos = logs.records.filter((r) => r.level === LEVEL.info && r.msg === 'Redis available')
    assert.equal(infos.length, 1)
    assert.equal(errorsIn(logs), 0)
  })

  test('goes down at once when Redis is killed, with exactly one ERROR, and back up after restart', async (t) => {
    const server = await startRedis(t)
    const { failsoft, logs } = open(t, { redis: server.url })
    await failsoft.ready()
    const downs: number[] = []
    const ups: Array<{ downtimeMs: number }> = []
    failsoft.health.on('down', ({ at }) => downs.push(at))
    failsoft.health.on('up', (event) => ups.push(event))

    const killedAt = Date.now()
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', {
      timeoutMs: 2000,
      message: 'state down after SIGKILL',
    })
    assert.ok(downs[0]! - killedAt < 1000, `down ${downs[0]! - killedAt} ms after the kill`)
    await sleep(600) // several failed probes: still a single ERROR
    assert.equal(errorsIn(logs), 1)
    const error = logs.records.find((r) => r.level === LEVEL.error)!
    assert.equal(error.target, `127.0.0.1:${server.port}/0`)
    assert.ok(error.err?.message, 'the cause is logged under err')
    assert.match(String(failsoft.status().redis.error), /./)

    await server.start()
    const answeringAt = Date.now()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 3000,
      message: 'state up after restart',
    })
    assert.ok(Date.now() - answeringAt < 2000)
    assert.equal(ups.length, 1)
    assert.ok(ups[0]!.downtimeMs > 0)
    const back = logs.records.filter(
      (r) => r.level === LEVEL.info && r.msg.startsWith('Redis is back'),
    )
    assert.equal(back.length, 1)
    assert.equal(typeof back[0]!.downtimeMs, 'number')
    assert.equal(typeof back[0]!.fallbackOps, 'number')
  })

  test('detects a frozen Redis with no traffic through the heartbeat, and recovers on thaw', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const frozenAt = Date.now()
    server.freeze()
    await waitFor(() => failsoft.health.state === 'down', {
      timeoutMs: 3000,
      message: 'down while frozen',
    })
    assert.ok(Date.now() - frozenAt < 2000, 'noticed well within the bound')
    const snapshot = failsoft.health.snapshot()
    assert.equal(snapshot.state, 'down')
    assert.equal(snapshot.state === 'down' && snapshot.error.name, 'RedisTimeoutError')
    server.thaw()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 3000,
      message: 'up after thaw',
    })
  })

  test('under traffic a freeze rejects every waiting command quickly instead of hanging', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const monitor = failsoft.context.monitor
    server.freeze()
    const started = Date.now()
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => monitor.run((redis) => redis.set(`k${i}`, 'v'))),
    )
    const elapsed = Date.now() - started
    assert.ok(
      results.every((r) => r.status === 'rejected'),
      'every command was rejected',
    )
    assert.ok(elapsed < 2000, `commands settled after ${elapsed} ms`)
    assert.equal(failsoft.health.state, 'down')
    // While down nothing is sent: run() refuses at once.
    const refused = await monitor
      .run((redis) => redis.ping())
      .catch((error: { code?: string }) => error.code)
    assert.equal(refused, 'FAILSOFT_REDIS_UNAVAILABLE')
    server.thaw()
    await waitFor(() => failsoft.health.available, { timeoutMs: 3000, message: 'up after thaw' })
    assert.equal(await monitor.run((redis) => redis.ping()), 'PONG')
  })

  test('a blackholed network path (accepts, never answers) is detected and recovers', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft } = open(t, { redis: proxy.urlFor(server) })
    assert.equal(await failsoft.ready(), 'up')
    proxy.blackhole()
    await waitFor(() => failsoft.health.state === 'down', {
      timeoutMs: 3000,
      message: 'down when blackholed',
    })
    proxy.pass()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 4000,
      message: 'up after the path heals',
    })
  })

  test('a connection reset is detected and recovered from', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    const { failsoft } = open(t, { redis: proxy.urlFor(server) })
    await failsoft.ready()
    const downs: unknown[] = []
    failsoft.health.on('down', (e) => downs.push(e))
    proxy.resetAll()
    await waitFor(() => downs.length === 1, { timeoutMs: 2000, message: 'down after RST' })
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 3000,
      message: 'up after RST',
    })
  })

  test('cold start with Redis refusing connections: ready() resolves down at once, then up when it starts', async (t) => {
    const server = await startRedis(t)
    await server.kill()
    const started = Date.now()
    const { failsoft, logs } = open(t, { redis: server.url })
    assert.equal(await failsoft.ready(), 'down')
    assert.ok(Date.now() - started < 1000, 'refused connections decide immediately')
    assert.equal(errorsIn(logs), 1)
    assert.equal(logs.records.find((r) => r.level === LEVEL.error)?.startup, true)
    await server.start()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 3000,
      message: 'up once Redis starts',
    })
  })

  test('cold start with a blackholed Redis: ready() resolves down within the connect deadline', async (t) => {
    const server = await startRedis(t)
    const proxy = await startProxy(t, server)
    proxy.blackhole()
    const started = Date.now()
    const { failsoft } = open(t, { redis: proxy.urlFor(server) })
    assert.equal(await failsoft.ready(), 'down')
    const elapsed = Date.now() - started
    assert.ok(elapsed < 2500, `decided after ${elapsed} ms (deadline 1000 ms)`)
    proxy.pass()
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 5000,
      message: 'up once the path heals',
    })
  })

  test('restart with data: back up, no reset', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const runId = failsoft.status().redis.runId
    const resets: unknown[] = []
    failsoft.health.on('reset', (e) => resets.push(e))
    await server.restart({ keepData: true })
    await waitFor(() => failsoft.status().redis.runId !== runId && failsoft.health.available, {
      timeoutMs: 4000,
      message: 'up on the restarted server',
    })
    assert.equal(resets.length, 0)
  })

  test('restart empty: emits reset and runs recovery steps with reset=true before up', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const monitor = failsoft.context.monitor
    const steps: Array<{ reset: boolean; stateDuringStep: string }> = []
    monitor.register({
      name: 'probe-component',
      fallback: 'nothing',
      recover: async (ctx) => {
        steps.push({ reset: ctx.reset, stateDuringStep: failsoft.health.state })
        assert.equal(await ctx.run((redis) => redis.ping()), 'PONG')
      },
    })
    const events: string[] = []
    failsoft.health.on('reset', () => events.push('reset'))
    failsoft.health.on('up', (e) => events.push(`up:${e.reset}`))
    await server.restart({ keepData: false })
    await waitFor(() => events.includes('up:true'), {
      timeoutMs: 4000,
      message: 'up after an empty restart',
    })
    assert.deepEqual(events, ['reset', 'up:true'])
    assert.deepEqual(steps, [{ reset: true, stateDuringStep: 'down' }])
  })

  test('a flush while up is detected by the heartbeat and re-runs recovery with reset=true', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    await failsoft.ready()
    const resets: boolean[] = []
    failsoft.context.monitor.register({
      name: 'flush-watcher',
      fallback: 'nothing',
      recover: async (ctx) => void resets.push(ctx.reset),
    })
    await server.cli('FLUSHALL')
    await waitFor(() => resets.includes(true), {
      timeoutMs: 3000,
      message: 'recovery re-run after FLUSHALL',
    })
    assert.equal(failsoft.health.state, 'up')
  })

  test('a failing recovery step keeps every component on fallbacks until it succeeds', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url, health: { probeIntervalMs: 50 } })
    let failures = 2
    failsoft.context.monitor.register({
      name: 'flaky',
      fallback: 'memory',
      recover: async () => {
        if (failures-- > 0) throw new Error('not yet')
      },
    })
    assert.equal(await failsoft.ready(), 'down')
    await waitFor(() => failsoft.health.state === 'up', {
      timeoutMs: 3000,
      message: 'up once the step succeeds',
    })
    assert.equal(failures, -1)
  })

  test('needsRecovery() makes the monitor re-run a step before flipping to up', async (t) => {
    const server = await startRedis(t)
    const { failsoft } = open(t, { redis: server.url })
    let journal = 3
    let runs = 0
    failsoft.context.monitor.register({
      name: 'journaled',
      fallback: 'memory',
      recover: async () => {
        runs++
        journal = Math.max(0, journal - 2) // drains two entries per run
      },
      needsRecovery: () => journal > 0,
    })
    assert.equal(await failsoft.ready(), 'up')
    assert.equal(journal, 0)
    assert.equal(runs, 2)
  })

  test('forceFallback(true) behaves as down without an ERROR; releasing it recovers', async (t) => {
    const server = await startRedis(t)
    const { failsoft, logs } = open(t, { redis: server.url })
    await failsoft.ready()
    let recovered = 0
    failsoft.context.monitor.register({
      name: 'forced-component',
      fallback: 'memory',
      recover: async () => void recovered++,
    })
    const downs: Array<{ forced: boolean }> = []
    failsoft.health.on('down', (e) => downs.push(e))
    failsoft.health.forceFallback(true)
    assert.equal(failsoft.health.state, 'down')
    assert.equal(failsoft.health.available, false)
    assert.equal(failsoft.health.forced, true)
    assert.deepEqual(
      downs.map((d) => d.forced),
      [true],
    )
    assert.equal(failsoft.status().redis.forced, true)
    assert.equal(errorsIn(logs), 0)
    assert.ok(
      logs.records.some((r) => r.level === LEVEL.warn && r.component === 'forced-component'),
    )
    failsoft.health.forceFallback(false)
    await waitFor(() => failsoft.health.available, { timeoutMs: 2000, message: 'up after release' })
    assert.equal(recovered, 1)
    assert.throws(() => failsoft.health.forceFallback('yes' as unknown as boolean), TypeError)
  })

  test('while down: no per-operation log lines, and at most one summary line per interval', async (t) => {
    const server = await startRedis(t)
    const { failsoft, logs } = open(t, { redis: server.url, health: { summaryIntervalMs: 1000 } })
    await failsoft.ready()
    const handle = failsoft.context.monitor.register({ name: 'busy', fallback: 'memory' })
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', { timeoutMs: 2000 })
    for (let i = 0; i < 1000; i++) {
      await failsoft.context.monitor
        .run((redis) => redis.get('x'))
        .catch(() => handle.recordFallback())
    }
    await sleep(2300)
    const summaries = logs.records.filter((r) => r.msg === 'Redis still unavailable')
    assert.ok(summaries.length >= 1 && summaries.length <= 3, `${summaries.length} summary lines`)
    assert.equal(errorsIn(logs), 1)
    assert.ok(
      logs.records.length < 20,
      `${logs.records.length} log lines for 1000 failed operations`,
    )
    assert.equal(summaries.at(-1)?.fallbackOps, 1000)
    assert.equal(failsoft.status().components.busy?.fallbackOps, 1000)
    assert.equal(failsoft.status().components.busy?.backend, 'memory')
  })

  test('a listener that throws is contained and logged', async (t) => {
    const server = await startRedis(t)
    const { failsoft, logs } = open(t, { redis: server.url })
    failsoft.health.on('up', () => {
      throw new Error('listener bug')
    })
    const seen: string[] = []
    failsoft.health.on('up', () => seen.push('second listener ran'))
    await failsoft.ready()
    assert.deepEqual(seen, ['second listener ran'])
    assert.ok(logs.records.some((r) => r.msg.includes('listener threw')))
  })
})

describe('credentials never reach a log line or the status', () => {
  test('password-protected Redis with the right password: up, no password anywhere', async (t) => {
    const password = 'S3cret-pa55word-xyz'
    const server = await startRedis(t, { password })
    const { failsoft, logs } = open(t, { redis: server.url })
    assert.ok(server.url.includes(password), 'the fixture URL carries the password')
    assert.equal(await failsoft.ready(), 'up')
    await server.kill()
    await waitFor(() => failsoft.health.state === 'down', { timeoutMs: 2000 })
    assert.ok(!logs.raw().includes(password))
    assert.ok(!JSON.stringify(failsoft.status()).includes(password))
    assert.equal(failsoft.status().redis.target, `127.0.0.1:${server.port}/0`)
  })

  test('a wrong password: down, the ERROR names the cause, never the password', async (t) => {
    const server = await startRedis(t, { password: 'the-right-one' })
    const wrong = 'Wr0ng-and-secret-123'
    const { failsoft, logs } = open(t, { redis: `redis://:${wrong}@127.0.0.1:${server.port}/0` })
    assert.equal(await failsoft.ready(), 'down')
    await sleep(300)
    assert.ok(!logs.raw().includes(wrong), 'no log line carries the password')
    assert.ok(!JSON.stringify(failsoft.status()).includes(wrong))
    assert.match(logs.raw(), /WRONGPASS|NOAUTH|invalid/i)
  })

  test('an ACL user (user:password@) connects', async (t) => {
    const server = await startRedis(t, { aclUser: { username: 'app', password: 'app-secret-1' } })
    const { failsoft, logs } = open(t, {
      redis: `redis://app:app-secret-1@127.0.0.1:${server.port}/0`,
    })
    assert.equal(await failsoft.ready(), 'up')
    assert.ok(!logs.raw().includes('app-secret-1'))
  })

  test('rediss:// (TLS) connects with the server CA', async (t) => {
    const { RedisServer } = await import('../support/fault-kit.js')
    if (!(await RedisServer.tlsSupported())) return t.skip('redis-server built without TLS')
    const server: RedisServer = await startRedis(t, { tls: true })
    assert.ok(server.url.startsWith('rediss://'))
    const { failsoft } = open(t, {
      redis: {
        host: '127.0.0.1',
        port: server.port,
        tls: { ca: server.tlsCa!, servername: 'localhost' },
      },
    })
    assert.equal(await failsoft.ready(), 'up')
    assert.equal(failsoft.status().redis.tls, true)
  })
})
