import { execFileSync } from 'node:child_process'
import net from 'node:net'
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import {
  RedisServer,
  RespError,
  rejection,
  respCommand,
  sleep,
  startProxy,
  startRedis,
  waitFor,
  type AfterHook,
} from './fault-kit.js'
import { HOLD_LIMIT_BYTES } from './tcp-proxy.js'

const ports: number[] = []

function client(url: string, extra: Record<string, unknown> = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null, ...extra })
}

/** Open a raw TCP socket and wait for the connect. */
function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.off('error', reject)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

/** Resolve with the next data chunk on socket, or undefined if none arrives within ms. */
function nextData(socket: net.Socket, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onData = (chunk: Buffer): void => {
      clearTimeout(timer)
      resolve(chunk.toString())
    }
    const timer = setTimeout(() => {
      socket.off('data', onData)
      resolve(undefined)
    }, ms)
    socket.once('data', onData)
  })
}

function nextError(socket: net.Socket): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve) => socket.once('error', resolve))
}

async function runId(server: RedisServer): Promise<string> {
  const info = String(await server.cli('INFO', 'server'))
  const match = /run_id:(\w+)/.exec(info)
  assert.ok(match?.[1], 'run_id in INFO server')
  return match[1]
}

describe('RedisServer', () => {
  test('starts and answers PING through cli()', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    assert.equal(await server.cli('PING'), 'PONG')
    assert.equal(server.url, `redis://127.0.0.1:${server.port}`)
    assert.notEqual(server.port, 6379)
    assert.equal(server.running, true)
    assert.equal(typeof server.pid, 'number')
    assert.match(redisProcessOn(server.port), new RegExp(`^${server.pid} `))
    assert.equal(await server.cli('SET', 'k', 1), 'OK')
    assert.equal(await server.cli('GET', 'k'), '1')
    assert.equal(await server.cli('INCR', 'k'), 2)
    const error = await rejection(server.cli('LPUSH', 'k', 'x'))
    assert.ok(error instanceof RespError)
    assert.equal(error.code, 'WRONGTYPE')
  })

  test('kill() makes connects fail with ECONNREFUSED', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    await server.kill()
    assert.equal(server.running, false)
    assert.equal(server.pid, undefined)
    assert.equal((await rejection(connectRaw(server.port))).code, 'ECONNREFUSED')
    assert.equal((await rejection(server.cli('PING'))).code, 'ECONNREFUSED')
  })

  test('freeze() stops answers, thaw() restores them', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    server.freeze()
    assert.equal(server.frozen, true)
    const started = Date.now()
    const error = await rejection(respCommand(server.respTarget, ['PING'], { timeoutMs: 300 }))
    assert.equal(error.code, 'ETIMEDOUT')
    assert.ok(Date.now() - started >= 290)
    server.thaw()
    assert.equal(server.frozen, false)
    assert.equal(await server.cli('PING'), 'PONG')
  })

  test('restart({ keepData: false }) comes back empty with a new run_id', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    await server.cli('SET', 'k', 'v')
    const before = await runId(server)
    const pid = server.pid
    await server.restart({ keepData: false, delayMs: 20 })
    assert.notEqual(server.pid, pid)
    assert.equal(await server.cli('GET', 'k'), null)
    assert.notEqual(await runId(server), before)
  })

  test('restart({ keepData: true }) keeps the data set, even when frozen', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    await server.cli('SET', 'k', 'v')
    const before = await runId(server)
    server.freeze()
    await server.restart({ keepData: true })
    assert.equal(await server.cli('GET', 'k'), 'v')
    assert.notEqual(await runId(server), before)
    // Not persistent: a later crash still loses everything.
    await server.kill()
    await server.start()
    assert.equal(await server.cli('GET', 'k'), null)
  })

  test('persistence: true keeps data across kill() + start()', async (t) => {
    const server = await startRedis(t, { persistence: true })
    ports.push(server.port)
    await server.cli('SET', 'k', 'durable')
    await server.kill()
    await server.start()
    assert.equal(await server.cli('GET', 'k'), 'durable')
  })

  test('password and ACL user', async (t) => {
    const server = await startRedis(t, {
      password: 'p@ss:w/rd',
      aclUser: { username: 'alice', password: 'alice-secret' },
    })
    ports.push(server.port)
    assert.equal(server.url, `redis://:p%40ss%3Aw%2Frd@127.0.0.1:${server.port}`)
    assert.equal(await server.cli('PING'), 'PONG')
    const target = { host: server.host, port: server.port }
    assert.equal((await rejection(respCommand(target, ['GET', 'k']))).code, 'NOAUTH')
    const wrong = await rejection(respCommand({ ...target, password: 'nope' }, ['PING']))
    assert.equal(wrong.code, 'WRONGPASS')
    const alice = { ...target, username: 'alice', password: 'alice-secret' }
    assert.equal(await respCommand(alice, ['ACL', 'WHOAMI']), 'alice')

    assert.ok(server.aclUrl)
    const viaUrl = client(server.url)
    const viaAcl = client(server.aclUrl)
    try {
      assert.equal(await viaUrl.call('ACL', 'WHOAMI'), 'default')
      assert.equal(await viaAcl.call('ACL', 'WHOAMI'), 'alice')
    } finally {
      viaUrl.disconnect()
      viaAcl.disconnect()
    }
    // The ACL user exists again right after a restart.
    await server.restart({ keepData: false })
    assert.equal(await respCommand(alice, ['ACL', 'WHOAMI']), 'alice')
  })

  test('extra args are passed to redis-server', async (t) => {
    const server = await startRedis(t, { args: ['--maxmemory', '2mb'] })
    ports.push(server.port)
    assert.deepEqual(await server.cli('CONFIG', 'GET', 'maxmemory'), ['maxmemory', '2097152'])
  })

  test('TLS server answers over rediss:// with the generated CA', async (t) => {
    if (!(await RedisServer.tlsSupported())) {
      t.skip('redis-server has no TLS support')
      return
    }
    const server = await startRedis(t, { tls: true, password: 'secret' })
    ports.push(server.port)
    assert.ok(server.url.startsWith('rediss://'))
    assert.ok(server.tlsCa)
    assert.notEqual(redisProcessOn(server.port), '', 'process title shows the TLS port')
    assert.equal(await server.cli('PING'), 'PONG')
    const redis = client(server.url, { tls: { ca: server.tlsCa } })
    try {
      assert.equal(await redis.ping(), 'PONG')
    } finally {
      redis.disconnect()
    }
    // Plain TCP on the TLS port gets no RESP answer.
    const plain = await rejection(
      respCommand({ host: server.host, port: server.port }, ['PING'], { timeoutMs: 500 }),
    )
    assert.ok(plain.code === 'ECONNRESET' || plain.code === 'ETIMEDOUT', String(plain.code))
  })
})

describe('TcpProxy', () => {
  test('pass forwards both ways, urlFor keeps credentials', async (t) => {
    const server = await startRedis(t, { password: 'pw' })
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    assert.equal(proxy.mode, 'pass')
    assert.equal(proxy.url, `redis://127.0.0.1:${proxy.port}`)
    assert.equal(proxy.urlFor(server), `redis://:pw@127.0.0.1:${proxy.port}`)
    const redis = client(proxy.urlFor(server))
    try {
      await redis.set('k', 'via-proxy')
      assert.equal(await server.cli('GET', 'k'), 'via-proxy')
      assert.equal(proxy.connections, 1)
    } finally {
      redis.disconnect()
    }
    await waitFor(() => proxy.connections === 0, { message: 'proxy connection closed' })
  })

  test('blackhole holds commands and keeps the socket open; pass delivers them in order, as TCP retransmission does', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const socket = await connectRaw(proxy.port)
    t.after(() => socket.destroy())
    socket.write('PING\r\n')
    assert.equal(await nextData(socket, 1000), '+PONG\r\n')

    proxy.blackhole()
    assert.equal(proxy.mode, 'blackhole')
    socket.write('PING\r\n')
    assert.equal(await nextData(socket, 300), undefined)
    assert.equal(socket.destroyed, false)
    assert.equal(proxy.connections, 1)
    // New connections are accepted too, and get nothing either.
    const late = await connectRaw(proxy.port)
    t.after(() => late.destroy())
    late.write('PING\r\n')
    assert.equal(await nextData(late, 100), undefined)

    proxy.pass()
    // The PING held during the partition is answered at the heal: a reply is never lost nor
    // given to a later command.
    // (Both listened for at once: a socket that already flowed drops data nobody listens to.)
    assert.deepEqual(await Promise.all([nextData(socket, 1000), nextData(late, 1000)]), [
      '+PONG\r\n',
      '+PONG\r\n',
    ])
    socket.write('ECHO after\r\n')
    assert.equal(await nextData(socket, 1000), '$5\r\nafter\r\n')
    assert.equal(await respCommand({ host: proxy.host, port: proxy.port }, ['PING']), 'PONG')
  })

  test('a connection that held more than the limit during a blackhole is reset at the heal', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const socket = await connectRaw(proxy.port)
    t.after(() => socket.destroy())
    await waitFor(() => proxy.connections === 1)
    proxy.blackhole()
    const chunk = Buffer.alloc(64 * 1024, 'x')
    for (let i = 0; i * chunk.length <= HOLD_LIMIT_BYTES; i++) socket.write(chunk)
    await waitFor(() => socket.writableLength === 0, { message: 'written to the proxy' })
    const error = nextError(socket)
    proxy.pass()
    assert.equal((await error).code, 'ECONNRESET')
  })

  test('a server lost during blackhole resets the client when the partition heals', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const socket = await connectRaw(proxy.port)
    t.after(() => socket.destroy())
    proxy.blackhole()
    await server.kill()
    await sleep(50)
    assert.equal(socket.destroyed, false)
    const error = nextError(socket)
    proxy.pass()
    assert.equal((await error).code, 'ECONNRESET')
  })

  test('latency(100) delays each direction', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const via = { host: proxy.host, port: proxy.port }
    proxy.latency(100)
    assert.equal(proxy.mode, 'latency')
    let started = Date.now()
    assert.equal(await respCommand(via, ['PING']), 'PONG')
    const slow = Date.now() - started
    assert.ok(slow >= 195, `round trip ${slow} ms`)
    proxy.pass()
    started = Date.now()
    assert.equal(await respCommand(via, ['PING']), 'PONG')
    assert.ok(Date.now() - started < 150)
  })

  test('resetAll gives the client ECONNRESET', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const socket = await connectRaw(proxy.port)
    t.after(() => socket.destroy())
    await waitFor(() => proxy.connections === 1)
    const error = nextError(socket)
    proxy.resetAll()
    assert.equal((await error).code, 'ECONNRESET')
    assert.equal(await respCommand({ host: proxy.host, port: proxy.port }, ['PING']), 'PONG')
  })

  test('refuse gives ECONNREFUSED, accept restores', async (t) => {
    const server = await startRedis(t)
    ports.push(server.port)
    const proxy = await startProxy(t, server)
    const open = await connectRaw(proxy.port)
    t.after(() => open.destroy())
    const closed = new Promise((resolve) => open.once('close', resolve))
    open.on('error', () => undefined)
    await proxy.refuse()
    await closed
    assert.equal(proxy.connections, 0)
    assert.equal((await rejection(connectRaw(proxy.port))).code, 'ECONNREFUSED')
    await proxy.accept()
    assert.equal(await respCommand({ host: proxy.host, port: proxy.port }, ['PING']), 'PONG')
  })
})

describe('helpers', () => {
  test('waitFor polls and times out with the message', async () => {
    let n = 0
    await waitFor(() => ++n >= 3, { intervalMs: 1 })
    assert.equal(n, 3)
    await assert.rejects(
      waitFor(() => false, { timeoutMs: 50, message: 'never true' }),
      /waitFor timed out after 50 ms: never true/,
    )
  })
})

// `{ after }` from node:test fits startRedis/startProxy as well as a test context `t`.
const _afterHookShape: AfterHook = { after }

function pgrep(args: string[]): string {
  try {
    return execFileSync('pgrep', args, { encoding: 'utf8' })
  } catch {
    return '' // pgrep exits 1 when nothing matches
  }
}

/** `pid title` of a redis-server listening on port (title: `redis-server 127.0.0.1:<port>`). */
function redisProcessOn(port: number): string {
  return pgrep(['-a', '-f', `^redis-server 127\\.0\\.0\\.1:${port}$`])
}

after(() => {
  // Every redis-server started by this file is gone once the tests' after hooks ran.
  const children = pgrep(['-a', '-P', String(process.pid)])
  assert.equal(children.includes('redis-server'), false, children)
  for (const port of ports) assert.equal(redisProcessOn(port), '', `port ${port}`)
})
