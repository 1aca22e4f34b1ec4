// What a new user sees when starting the app: the first log line says which Redis it uses
// (host:port/db, never a credential) and under which prefix it writes; every key and pub/sub
// channel it creates in that Redis is under the prefix; logs are JSON on a pipe and readable
// lines with LOG_FORMAT=pretty (a terminal's default); a bad REDIS_URL stops the start with a
// configuration error that does not echo it.
import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { promisify } from 'node:util'
import { waitFor } from '../support/fault-kit.js'
import {
  http,
  joinRoom,
  redis,
  repoRoot,
  spawnApp,
  tempDir,
  uniquePrefix,
  WsClient,
} from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const PASSWORD = 'startup-pass-Xq7'

async function redisCli(port: number, ...args: string[]): Promise<string[]> {
  const { stdout } = await promisify(execFile)('redis-cli', [
    '-p',
    String(port),
    '-a',
    PASSWORD,
    '--no-auth-warning',
    ...args,
  ])
  return stdout.split('\n').filter((line) => line.length > 0)
}

describe('starting the app', () => {
  test('the first log line names the Redis target, and every key it writes is under its prefix', async (t) => {
    const server = await redis(t, { password: PASSWORD })
    const dir = tempDir(t)
    const prefix = uniquePrefix()
    const app = await spawnApp(t, {
      REDIS_URL: server.url,
      FAILSOFT_PREFIX: prefix,
      DATABASE_PATH: join(dir, 'app.db'),
    })
    const [first] = app.output().split('\n')
    const record = JSON.parse(first ?? '') as { msg: string; redis: string; prefix: string }
    assert.equal(record.redis, `127.0.0.1:${server.port}/0`)
    assert.equal(record.prefix, `${prefix}:`)
    assert.match(record.msg, new RegExp(`Redis at 127\\.0\\.0\\.1:${server.port}/0`))

    // Use every Redis-backed feature: the cache, tasks run by the worker, the compost scheduler,
    // channels across the layer, polls.
    await http(`${app.url}/api/projects`)
    await http(`${app.url}/api/projects/1`)
    const created = await http<{ project: { id: number } }>(`${app.url}/api/projects`, {
      method: 'POST',
      body: { title: 'Prefix check', email: 'prefix@example.org' },
    })
    assert.equal(created.status, 201)
    await http(`${app.url}/api/impact/recompute`, { method: 'POST' })
    const client = await WsClient.open(t, app.url)
    await joinRoom(client, 'prefix', 'pat')
    client.send({ type: 'chat.message', text: 'hello' })
    await client.next((m) => m.type === 'chat.message')
    client.send({ type: 'poll.subscribe', poll: 1 })
    await client.next((m) => m.type === 'poll.results')
    await waitFor(
      async () => {
        const outbox = await http<{ emails: Array<{ to: string; mode: string }> }>(
          `${app.url}/api/outbox`,
        )
        return outbox.body.emails.some((e) => e.to === 'prefix@example.org' && e.mode === 'worker')
      },
      { timeoutMs: 10_000, message: 'the welcome email ran on the worker' },
    )

    const keys = await redisCli(server.port, '--scan')
    for (const kind of [':cache:', ':tasks:app:', ':failsoft:epoch']) {
      assert.ok(
        keys.some((key) => key.includes(kind)),
        `a ${kind} key was written (${keys.length} keys)`,
      )
    }
    assert.deepEqual(
      keys.filter((key) => !key.startsWith(`${prefix}:`)),
      [],
      'every key is under the prefix',
    )
    const channels = await redisCli(server.port, 'PUBSUB', 'CHANNELS', '*')
    assert.ok(channels.length > 0, 'the channel layer subscribed')
    assert.deepEqual(
      channels.filter((channel) => !channel.startsWith(`${prefix}:`)),
      [],
      'every pub/sub channel is under the prefix',
    )
    assert.ok(!app.output().includes(PASSWORD), 'the password is never logged')
  })

  test('LOG_FORMAT=pretty prints one readable line per record, the target first', async (t) => {
    const server = await redis(t)
    const dir = tempDir(t)
    const app = await spawnApp(t, {
      REDIS_URL: server.url,
      FAILSOFT_PREFIX: uniquePrefix(),
      DATABASE_PATH: join(dir, 'app.db'),
      LOG_FORMAT: 'pretty',
    })
    const lines = app.output().trimEnd().split('\n')
    assert.match(
      lines[0] ?? '',
      new RegExp(
        `^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} INFO  reference app starting: Redis at 127\\.0\\.0\\.1:${server.port}/0`,
      ),
    )
    assert.ok(
      lines.some((line) => /^\S+ INFO {2}reference app listening {2}url=http:\/\//.test(line)),
    )
    assert.deepEqual(
      lines.filter((line) => line.startsWith('{')),
      [],
      'no JSON line',
    )
    // No terminal here: no color codes either.
    assert.ok(!app.output().includes('\x1b['))
  })

  test('a bad REDIS_URL stops the start with a configuration error that does not echo it', async (t) => {
    const url = 'redis://admin:hunter2-pw@redis.internal.example:99999'
    const child = spawn(process.execPath, ['--import', 'tsx', join('app', 'main.ts')], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '',
        REDIS_URL: url,
        PORT: '0',
        DATABASE_PATH: join(tempDir(t), 'app.db'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')))
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')))
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    clearTimeout(timer)
    assert.equal(code, 1)
    assert.match(
      output,
      /configuration error: REDIS_URL must be a redis:\/\/, rediss:\/\/ or redis-sentinel:\/\/ URL, but its port is not a number between 1 and 65535/,
    )
    for (const part of ['admin', 'hunter2', 'redis.internal', 'example', '99999']) {
      assert.ok(!output.includes(part), `"${part}" is not echoed: ${output}`)
    }
  })
})
