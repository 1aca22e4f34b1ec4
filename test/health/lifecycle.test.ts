import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { describe, test } from 'node:test'
import { createFailsoft, type FailsoftOptions } from '../../src/index.js'
import { startRedis } from '../support/fault-kit.js'
import { captureLogs, LEVEL } from '../support/log-capture.js'

const fixture = fileURLToPath(new URL('./fixtures/open-and-close.ts', import.meta.url))

function runFixture(
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; ms: number }> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    child.on('error', reject)
    child.on('exit', (code) => {
      clearTimeout(killer)
      resolve({ code, stdout: stdout.trim(), ms: Date.now() - started })
    })
  })
}

describe('close() leaves nothing behind: the process exits by itself', () => {
  test('after using a live Redis', async (t) => {
    const server = await startRedis(t)
    const result = await runFixture({ REDIS_URL: server.url, MODE: 'up' })
    assert.deepEqual([result.code, result.stdout], [0, 'up'])
  })

  test('while Redis is down', async (t) => {
    const server = await startRedis(t)
    await server.kill()
    const result = await runFixture({ REDIS_URL: server.url, MODE: 'down' })
    assert.deepEqual([result.code, result.stdout], [0, 'down'])
  })

  test('in memory-only mode', async () => {
    const result = await runFixture({ MODE: 'memory' })
    assert.deepEqual([result.code, result.stdout], [0, 'down'])
  })
})

describe('memory-only mode (redis: null)', () => {
  test('never opens a socket, decides at once, logs no ERROR', async () => {
    const original = net.Socket.prototype.connect
    let connects = 0
    net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
      connects++
      return (original as (...a: unknown[]) => net.Socket).apply(this, args)
    } as typeof original
    try {
      const logs = captureLogs()
      const failsoft = createFailsoft({ redis: null, logger: logs.logger })
      assert.equal(failsoft.health.state, 'down')
      assert.equal(await failsoft.ready(), 'down')
      const status = failsoft.status()
      assert.equal(status.redis.mode, 'memory-only')
      assert.equal(status.redis.target, null)
      assert.equal(status.redis.available, false)
      failsoft.health.forceFallback(true) // harmless no-op
      await failsoft.close()
      assert.equal(connects, 0)
      assert.equal(logs.records.filter((r) => r.level === LEVEL.error).length, 0)
    } finally {
      net.Socket.prototype.connect = original
    }
  })
})

describe('options are validated at construction', () => {
  const cases: Array<[string, FailsoftOptions, RegExp, typeof TypeError | typeof RangeError]> = [
    [
      'redis of the wrong type',
      { redis: 42 as unknown as string },
      /`redis`.*received 42 \(number\)/,
      TypeError,
    ],
    [
      'a non-redis URL',
      { redis: 'http://localhost:6379' },
      /`redis`.*redis: or rediss:/,
      TypeError,
    ],
    ['a malformed URL', { redis: 'redis://:hunter2@[::1' }, /`redis`/, TypeError],
    [
      'a bad database',
      { redis: 'redis://localhost:6379/abc' },
      /`redis`.*database number/,
      RangeError,
    ],
    ['a prefix with spaces', { prefix: 'my app' }, /`prefix`.*"my app"/, RangeError],
    [
      'a prefix of the wrong type',
      { prefix: 7 as unknown as string },
      /`prefix`.*7 \(number\)/,
      TypeError,
    ],
    [
      'an unknown option',
      { redisUrl: 'x' } as unknown as FailsoftOptions,
      /`redisUrl`.*unknown option/,
      TypeError,
    ],
    [
      'a negative timeout',
      { health: { commandTimeoutMs: -1 } },
      /`health.commandTimeoutMs`.*-1/,
      RangeError,
    ],
    [
      'a timeout of the wrong type',
      { health: { probeIntervalMs: '200' as unknown as number } },
      /`health.probeIntervalMs`/,
      TypeError,
    ],
    [
      'an unknown timing',
      { health: { pingMs: 5 } as unknown as FailsoftOptions['health'] },
      /`health.pingMs`/,
      TypeError,
    ],
    ['a logger without methods', { logger: {} as unknown as false }, /`logger`/, TypeError],
  ]
  for (const [name, options, message, type] of cases) {
    test(`rejects ${name}`, () => {
      assert.throws(
        () => createFailsoft({ logger: false, ...options }),
        (error: Error & { code?: string }) => {
          assert.ok(error instanceof type, `${error.name} is a ${type.name}`)
          assert.match(error.message, message)
          assert.equal(error.code, 'FAILSOFT_INVALID_OPTION')
          return true
        },
      )
    })
  }

  test('a malformed URL is never echoed with its password', () => {
    assert.throws(
      () => createFailsoft({ redis: 'redis://user:hunter2@[::1', logger: false }),
      (error: Error) => !error.message.includes('hunter2'),
    )
  })
})
