// The spool contract, run against both journals (durable file, in-memory), plus what only the
// file journal does: cursor, torn lines, locks, adoption of a dead process's journal.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { FileSpool } from '../../src/tasks/spool-file.js'
import {
  MemorySpool,
  encodeEntry,
  type JobJournal,
  type SpooledJob,
} from '../../src/tasks/spool.js'
import { tempDir } from './helpers.js'

const entry = (n: number) => ({
  id: `id-${n}`,
  name: 'job',
  payload: JSON.stringify({ n }),
  at: n,
  due: 0,
})
const forever = { deadline: Number.MAX_SAFE_INTEGER }
const noop = (): void => undefined

type Factory = (
  t: Parameters<typeof tempDir>[0],
  limits?: { maxRecords?: number; maxBytes?: number },
) => JobJournal

const journals: Record<string, Factory> = {
  file: (t, limits = {}) => {
    const spool = new FileSpool({
      path: join(tempDir(t), 'spool.jsonl'),
      maxRecords: limits.maxRecords ?? 1000,
      maxBytes: limits.maxBytes ?? 1_000_000,
      onError: noop,
    })
    t.after(() => spool.close())
    return spool
  },
  memory: (_t, limits = {}) =>
    new MemorySpool({
      maxRecords: limits.maxRecords ?? 1000,
      maxBytes: limits.maxBytes ?? 1_000_000,
    }),
}

for (const [kind, make] of Object.entries(journals)) {
  describe(`journal contract: ${kind}`, () => {
    test('replays in append order, in batches, and forgets what was handed over', async (t) => {
      const journal = make(t)
      await Promise.all(Array.from({ length: 250 }, (_, n) => journal.append(entry(n))))
      assert.equal(journal.pending, 250)
      const batches: SpooledJob[][] = []
      const outcome = await journal.replay(async (batch) => {
        batches.push([...batch])
      }, forever)
      assert.deepEqual(outcome, { replayed: 250, corrupt: 0, done: true })
      assert.deepEqual(
        batches.flat().map((j) => j.args),
        Array.from({ length: 250 }, (_, n) => ({ n })),
      )
      assert.ok(batches.length >= 3, 'handed over in batches')
      assert.equal(journal.pending, 0)
      assert.deepEqual(await journal.replay(async () => assert.fail('nothing left'), forever), {
        replayed: 0,
        corrupt: 0,
        done: true,
      })
    })

    test('a failed hand-over keeps the batch; the next replay resumes there', async (t) => {
      const journal = make(t)
      for (let n = 0; n < 250; n++) await journal.append(entry(n))
      let calls = 0
      const sent: number[] = []
      await assert.rejects(
        journal.replay(async (batch) => {
          if (++calls === 2) throw new Error('Redis failed')
          sent.push(...batch.map((j) => (j.args as { n: number }).n))
        }, forever),
        /Redis failed/,
      )
      assert.equal(journal.pending, 150)
      await journal.replay(async (batch) => {
        sent.push(...batch.map((j) => (j.args as { n: number }).n))
      }, forever)
      assert.deepEqual(
        sent,
        Array.from({ length: 250 }, (_, n) => n),
        'nothing lost, nothing twice',
      )
    })

    test('maxRecords and maxBytes refuse with FAILSOFT_SPOOL_FULL', async (t) => {
      const byCount = make(t, { maxRecords: 2 })
      await byCount.append(entry(1))
      await byCount.append(entry(2))
      await assert.rejects(byCount.append(entry(3)), { code: 'FAILSOFT_SPOOL_FULL' })
      const bySize = make(t, { maxBytes: 1024 })
      const big = { ...entry(1), payload: JSON.stringify('x'.repeat(900)) }
      await bySize.append(big)
      await assert.rejects(bySize.append(big), { code: 'FAILSOFT_SPOOL_FULL' })
    })

    test('a replay stops at its deadline and says it is not done', async (t) => {
      const journal = make(t)
      for (let n = 0; n < 300; n++) await journal.append(entry(n))
      const outcome = await journal.replay(
        async () => {
          await new Promise((resolve) => setTimeout(resolve, 30))
        },
        { deadline: Date.now() + 10 },
      )
      assert.equal(outcome.done, false)
      assert.ok(outcome.replayed >= 100 && outcome.replayed < 300)
    })
  })
}

describe('file journal specifics', () => {
  test('records are on disk when append resolves; the file is emptied after a full replay', async (t) => {
    const path = join(tempDir(t), 'spool.jsonl')
    const spool = new FileSpool({ path, maxRecords: 100, maxBytes: 100_000, onError: noop })
    t.after(() => spool.close())
    await spool.append(entry(1))
    assert.equal(readFileSync(path, 'utf8'), encodeEntry(entry(1)))
    assert.ok(existsSync(`${path}.lock`))
    await spool.replay(async () => undefined, forever)
    assert.equal(readFileSync(path, 'utf8'), '')
    await spool.close()
    assert.equal(existsSync(path), false, 'an empty journal is removed at close')
    assert.equal(existsSync(`${path}.lock`), false)
  })

  test('a live lock sends a second journal to the next slot', async (t) => {
    const path = join(tempDir(t), 'spool.jsonl')
    const a = new FileSpool({ path, maxRecords: 100, maxBytes: 100_000, onError: noop })
    const b = new FileSpool({ path, maxRecords: 100, maxBytes: 100_000, onError: noop })
    t.after(() => Promise.all([a.close(), b.close()]))
    await a.append(entry(1))
    await b.append(entry(2))
    assert.equal(a.path, path)
    assert.equal(b.path, path.replace(/\.jsonl$/, '.1.jsonl'))
    // b may not adopt a's journal: a is alive.
    const seen: string[] = []
    await b.replay(async (batch) => {
      seen.push(...batch.map((j) => j.id))
    }, forever)
    assert.deepEqual(seen, ['id-2'])
    assert.equal(a.pending, 1)
  })

  test("a dead process's journal is adopted from its cursor; a torn last line is dropped", async (t) => {
    const path = join(tempDir(t), 'spool.jsonl')
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
    const deadPid = Number(dead.stdout.toString())
    const lines = Array.from({ length: 5 }, (_, n) => encodeEntry(entry(n))).join('')
    // Two records already handed over (cursor), a corrupt line, and a torn append at the end.
    const cursor = Buffer.byteLength(encodeEntry(entry(0)) + encodeEntry(entry(1)))
    writeFileSync(path, `${lines}not json\n{"id":"torn","na`)
    writeFileSync(`${path}.cursor`, String(cursor).padStart(20, ' '))
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    writeFileSync(`${path}.lock`, JSON.stringify({ pid: deadPid, boot, token: 'old' }))

    const spool = new FileSpool({ path, maxRecords: 100, maxBytes: 100_000, onError: noop })
    t.after(() => spool.close())
    assert.equal(spool.hasWork(), true)
    const seen: string[] = []
    const outcome = await spool.replay(async (batch) => {
      seen.push(...batch.map((j) => j.id))
    }, forever)
    assert.deepEqual(seen, ['id-2', 'id-3', 'id-4'])
    assert.equal(outcome.corrupt, 1)
    assert.equal(outcome.done, true)
    assert.equal(existsSync(path), false, 'the adopted journal is removed once replayed')
  })

  test('reopening its own journal after a crash: cut torn tail, append on a clean line', async (t) => {
    const path = join(tempDir(t), 'spool.jsonl')
    writeFileSync(path, `${encodeEntry(entry(1))}{"id":"torn`)
    const spool = new FileSpool({ path, maxRecords: 100, maxBytes: 100_000, onError: noop })
    t.after(() => spool.close())
    // No lock file: the previous owner is gone; appending claims slot 0 and keeps its record.
    await spool.append(entry(2))
    assert.equal(spool.path, path)
    assert.equal(readFileSync(path, 'utf8'), encodeEntry(entry(1)) + encodeEntry(entry(2)))
    assert.equal(spool.pending, 2)
  })
})
