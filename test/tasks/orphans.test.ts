// Spools left by dead processes are adopted by a process that is already running — not only
// by one that starts later — and a lock whose PID now belongs to another program is stale.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { makeTasks, spawnNode, tempDir, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('orphaned spools', () => {
  test('a process already running adopts the spool of a process that died after it started', async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const dir = tempDir(t)
    const { failsoft, tasks } = await makeTasks(t, server.url, { prefix, spoolDir: dir })
    const ran = new Set<number>()
    tasks.define('job', (args: { n: number }) => void ran.add(args.n))
    tasks.work()
    await waitFor(() => failsoft.health.available, { message: 'up' })
    // Another process on the same spool directory, cut off from Redis: it spools, then dies.
    const spooler = spawnNode(t, {
      ROLE: 'spooler',
      REDIS_URL: 'redis://127.0.0.1:1',
      PREFIX: prefix,
      SPOOL: join(dir, 'spool.jsonl'),
      COUNT: '20',
    })
    const { ids } = await spooler.next<{ ids: string[] }>('spooled')
    assert.equal(ids.length, 20)
    await spooler.kill()
    await waitFor(() => ran.size === 20, {
      timeoutMs: 30_000,
      message: `the dead process' spooled tasks run here (ran ${ran.size})`,
    })
  })

  test("a lock whose PID is now another program's is stale", async (t) => {
    const server = await startRedis(t)
    const prefix = uniquePrefix()
    const dir = tempDir(t)
    // A live process that is not the one that wrote the lock (its PID was reused).
    const other = spawn('sleep', ['120'], { stdio: 'ignore' })
    t.after(() => other.kill('SIGKILL'))
    const orphan = join(dir, 'spool.7.jsonl')
    const records = Array.from(
      { length: 5 },
      (_, n) => `{"id":"orphan-${n}","name":"job","at":${Date.now()},"due":0,"args":{"n":${n}}}\n`,
    )
    writeFileSync(orphan, records.join(''))
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    // The writer's start time (clock ticks since boot) is not the live process' own.
    writeFileSync(
      `${orphan}.lock`,
      JSON.stringify({ pid: other.pid, boot, token: 'gone', start: '1', host: hostname() }),
    )
    const { failsoft, tasks } = await makeTasks(t, server.url, { prefix, spoolDir: dir })
    const ran = new Set<number>()
    tasks.define('job', (args: { n: number }) => void ran.add(args.n))
    tasks.work()
    await waitFor(() => failsoft.health.available)
    await waitFor(() => ran.size === 5, {
      timeoutMs: 30_000,
      message: `the orphan is adopted although its PID is alive (ran ${ran.size})`,
    })
  })
})
