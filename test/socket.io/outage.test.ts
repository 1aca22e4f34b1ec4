// failsoft/socket.io through real Redis faults (a redis-server killed and restarted empty,
// frozen with SIGSTOP): broadcasts sent during the outage reach the other server's clients after
// recovery, once each, in order, while this server's clients lose nothing and wait for nothing;
// requests that need the other servers answer at once with a ClusterUnavailableError; the
// heartbeats do not drop the other servers during an outage.
import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import { ClusterUnavailableError } from '../../src/socket.io.js'
import { RedisServer, rejection, waitFor } from '../support/fault-kit.js'
import { setup, sleep, within, type Cluster, type ClusterOptions } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

let redis: RedisServer
let cluster: Cluster | undefined
before(async () => {
  redis = await RedisServer.start()
})
after(() => redis.stop())
afterEach(async () => {
  await cluster?.cleanup()
  cluster = undefined
})

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

async function start(options: ClusterOptions = {}): Promise<Cluster> {
  cluster = await setup(redis.url, { count: 2, transports: ['websocket'], ...options })
  return cluster
}

const allUp = (c: Cluster) => () => c.failsofts.every((failsoft) => failsoft.health.available)
const allDown = (c: Cluster) => () => c.failsofts.every((failsoft) => !failsoft.health.available)

interface Received {
  n: number[]
  /** Delivery latency of each message, ms. */
  latency: number[]
}

/** servers[0] broadcasts `seq` (n, send time) every 10 ms; every client records what it got. */
function steadyBroadcast(c: Cluster): { received: Received[]; stop: () => number } {
  const received: Received[] = c.clientSockets.map(() => ({ n: [], latency: [] }))
  c.clientSockets.forEach((client, i) =>
    client.on('seq', (n: number, sentAt: number) => {
      received[i]!.n.push(n)
      received[i]!.latency.push(Date.now() - sentAt)
    }),
  )
  let next = 0
  const timer = setInterval(() => c.servers[0]!.emit('seq', next++, Date.now()), 10)
  return {
    received,
    stop: () => {
      clearInterval(timer)
      return next
    },
  }
}

async function outageScenario(fault: (c: Cluster) => Promise<void>): Promise<void> {
  const c = await start()
  const { received, stop } = steadyBroadcast(c)
  await sleep(300)
  const sentBefore = received[0]!.n.length
  await fault(c)
  await waitFor(allUp(c), { timeoutMs: 10_000, message: 'every server back on Redis' })
  await sleep(300)
  const sent = stop()
  await waitFor(() => received[1]!.n.length >= sent, {
    timeoutMs: 5000,
    message: `the other server's client got ${received[1]!.n.length} of ${sent}`,
  })
  await sleep(200) // duplicates would arrive meanwhile
  assert.ok(sent - sentBefore > 50, `broadcasts were sent during the outage (${sent})`)
  assert.deepEqual(received[0]!.n, range(sent), 'local client: everything, in order')
  assert.deepEqual(received[1]!.n, range(sent), 'remote client: everything once, in order')
  // local deliveries never waited for Redis (a timer tick on a shared machine aside)
  assert.ok(
    Math.max(...received[0]!.latency) < 250,
    `local ${Math.max(...received[0]!.latency)} ms`,
  )
  const status = c.adapter(0).status()
  assert.equal(status.notPublished, 0)
}

describe('failsoft/socket.io through Redis faults', () => {
  test('kill + restart empty: broadcasts reach the other server once, in order; local clients lose nothing', async () => {
    await outageScenario(async (c) => {
      await redis.kill()
      await waitFor(allDown(c), { message: 'both servers noticed' })
      await sleep(1000)
      await redis.restart({ keepData: false })
    })
  })

  test('freeze (SIGSTOP) then thaw: broadcasts reach the other server once, in order; local clients lose nothing', async () => {
    await outageScenario(async (c) => {
      redis.freeze()
      await waitFor(allDown(c), { message: 'both servers noticed' })
      await sleep(1000)
      redis.thaw()
    })
  })

  test('fetchSockets during an outage rejects at once with ClusterUnavailableError and the local sockets', async () => {
    const c = await start({ count: 3 })
    await redis.kill()
    await waitFor(allDown(c))
    const started = Date.now()
    const error = await rejection(c.servers[0]!.fetchSockets())
    const elapsed = Date.now() - started
    assert.ok(error instanceof ClusterUnavailableError, String(error))
    assert.equal(error.code, 'FAILSOFT_REDIS_UNAVAILABLE')
    assert.equal(error.operation, 'fetchSockets')
    assert.deepEqual(
      error.localSockets.map((socket) => socket.id),
      [c.serverSockets[0]!.id],
    )
    assert.ok(elapsed < 200, `answered in ${elapsed} ms (requestsTimeout is 1000 ms)`)
    assert.equal((await c.servers[0]!.local.fetchSockets()).length, 1, 'local still works')
    // a room filter applies to the local part too
    assert.deepEqual(
      ((await rejection(c.servers[0]!.in('nobody').fetchSockets())) as ClusterUnavailableError)
        .localSockets,
      [],
    )
    assert.equal(c.adapter(0).status().unavailableRequests, 2)
    await redis.restart({ keepData: false })
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    assert.equal((await c.servers[0]!.fetchSockets()).length, 3, 'after recovery: every server')
  })

  test('a fetchSockets in flight when Redis freezes rejects when the outage is detected, not at the timeout', async () => {
    const c = await start({ count: 3, adapter: { requestsTimeout: 5000 } })
    redis.freeze()
    const started = Date.now()
    assert.equal(c.failsofts[0]!.health.available, true, 'asked while Redis still looked up')
    const error = await rejection(c.servers[0]!.fetchSockets())
    assert.ok(error instanceof ClusterUnavailableError, String(error))
    assert.ok(Date.now() - started < 2000, `rejected after ${Date.now() - started} ms`)
    assert.equal(c.adapter(0).status().pendingRequests, 0)
    redis.thaw()
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    assert.equal((await c.servers[0]!.fetchSockets()).length, 3)
  })

  test('serverSideEmit with an acknowledgement during an outage: answered at once; the event arrives after recovery', async () => {
    const c = await start()
    const calls: unknown[][] = []
    c.servers[1]!.on('hello', (...args: unknown[]) => {
      calls.push(args)
      ;(args[args.length - 1] as (v: unknown) => void)('late answer')
    })
    await redis.kill()
    await waitFor(allDown(c))
    const started = Date.now()
    const { error, responses } = await within(
      new Promise<{ error: unknown; responses: unknown[] }>((resolve) =>
        c.servers[0]!.serverSideEmit('hello', 'world', (error: unknown, responses: unknown[]) =>
          resolve({ error, responses }),
        ),
      ),
      500,
      'the acknowledgement',
    )
    assert.ok(Date.now() - started < 200)
    assert.ok(error instanceof ClusterUnavailableError)
    assert.equal(error.operation, 'serverSideEmit')
    assert.deepEqual(responses, [])
    await redis.restart({ keepData: false })
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    await waitFor(() => calls.length === 1, { message: 'the other server got the event' })
    await sleep(200)
    assert.equal(calls.length, 1)
    assert.equal(calls[0]![0], 'world')
    assert.equal(typeof calls[0]![1], 'function', 'its handler still gets a callback')
  })

  test('an outage longer than heartbeatTimeout does not drop the other servers', async () => {
    const c = await start({
      count: 3,
      // A timeout a loaded 2-core machine keeps (a server's beat can be late by a few hundred
      // ms there), far shorter than the outage.
      adapter: { heartbeatInterval: 100, heartbeatTimeout: 1000 },
    })
    assert.equal(await c.servers[0]!.of('/').adapter.serverCount(), 3)
    await redis.kill()
    await waitFor(allDown(c))
    await sleep(2500) // two and a half heartbeat timeouts
    assert.equal(await c.servers[0]!.of('/').adapter.serverCount(), 3)
    await redis.restart({ keepData: false })
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    // right after recovery, a request still waits for every server (nothing partial)
    const sockets = await c.servers[0]!.fetchSockets()
    assert.equal(sockets.length, 3)
    await sleep(1500) // heartbeats resume: nobody is dropped afterwards either
    assert.equal(await c.servers[0]!.of('/').adapter.serverCount(), 3)
  })

  test('a server that died during an outage is dropped heartbeatTimeout after recovery', async () => {
    const c = await start({
      count: 3,
      // A timeout a loaded 2-core machine keeps (a server's beat can be late by a few hundred
      // ms there), far shorter than the outage.
      adapter: { heartbeatInterval: 100, heartbeatTimeout: 1000 },
    })
    await redis.kill()
    await waitFor(allDown(c))
    // server 2 goes away for good while Redis is down: its goodbye never reaches anyone
    const [server2, failsoft2] = [c.servers.pop()!, c.failsofts.pop()!]
    c.clientSockets.pop()!.disconnect()
    c.serverSockets.pop()
    await server2.close()
    await failsoft2.close()
    await redis.restart({ keepData: false })
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    const upAt = Date.now()
    await waitFor(async () => (await c.servers[0]!.of('/').adapter.serverCount()) === 2, {
      timeoutMs: 3000,
    })
    assert.ok(Date.now() - upAt >= 300, 'not before heartbeatTimeout of available time')
    assert.equal((await c.servers[0]!.fetchSockets()).length, 2)
  })

  test('socketsJoin then a room broadcast during an outage: both arrive after recovery, in that order', async () => {
    const c = await start()
    const got: Array<[number, number]> = []
    c.clientSockets.forEach((client, i) => client.on('x', (n: number) => got.push([i, n])))
    await redis.kill()
    await waitFor(allDown(c))
    c.servers[0]!.socketsJoin('late')
    c.servers[0]!.to('late').emit('x', 1)
    await sleep(100)
    assert.deepEqual(got, [[0, 1]], 'the local client at once')
    assert.ok(c.serverSockets[0]!.rooms.has('late'))
    await redis.restart({ keepData: false })
    await waitFor(allUp(c), { timeoutMs: 10_000 })
    await waitFor(() => got.length === 2, { message: 'the remote client' })
    assert.deepEqual(got[1], [1, 1])
    assert.ok(c.serverSockets[1]!.rooms.has('late'))
  })

  test("a broadcast with acknowledgements during an outage: local acks, then Socket.IO's own timeout error", async () => {
    const c = await start()
    c.clientSockets[0]!.on('ping', (cb: (v: string) => void) => cb('local'))
    c.clientSockets[1]!.on('ping', (cb: (v: string) => void) => cb('remote'))
    await redis.kill()
    await waitFor(allDown(c))
    const { error, responses } = await within(
      new Promise<{ error: unknown; responses: unknown[] }>((resolve) =>
        c.servers[0]!.timeout(300).emit('ping', (error: unknown, responses: unknown[]) =>
          resolve({ error, responses }),
        ),
      ),
      1000,
      'the acknowledgement callback',
    )
    assert.ok(error instanceof Error)
    assert.equal(error.message, 'operation has timed out')
    assert.deepEqual(responses, ['local'])
    await redis.restart({ keepData: false })
  })
})
