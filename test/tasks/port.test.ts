// docs/tasks.md, "Porting a BullMQ worker file": the failsoft version of the worker file,
// extracted from the doc when the test runs (no copy is kept), run as it stands from a project
// outside the repository that imports `failsoft` by name — with a real redis-server, then with
// nothing listening.
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { freePort, startRedis } from '../support/fault-kit.js'
import { assertBuilt, markedBlock, repoRoot, run, tsxImport } from '../support/published.js'

function project(t: { after(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-port-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'package.json'), '{ "private": true, "type": "module" }\n')
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(repoRoot, join(dir, 'node_modules', 'failsoft'), 'dir')
  writeFileSync(join(dir, 'worker.ts'), markedBlock('docs/tasks.md', 'port:after'))
  // Its spool goes to the project's directory, not the repository's.
  return dir
}

const worker = (dir: string, redisUrl: string) =>
  run(process.execPath, ['--import', tsxImport, 'worker.ts'], {
    cwd: dir,
    env: { REDIS_URL: redisUrl },
    timeoutMs: 30_000,
  })

describe('docs/tasks.md: the ported BullMQ worker file, verbatim', () => {
  before(() => assertBuilt())

  test('with Redis: queued on the worker, results awaited, progress from the worker', async (t) => {
    const server = await startRedis(t)
    const dir = project(t)
    const { code, stdout, stderr } = await worker(dir, server.url)
    assert.equal(code, 0, stderr)
    assert.match(stdout, /progress resize 50\n/)
    assert.match(stdout, /queued \{ width: 1280, url: '\/img\/1280\.jpg' \}\n/)
    assert.match(stdout, /sent to ana@example\.org\n/)
    assert.equal(
      await server.cli('HGET', 'port:tasks:media:repeat:digest', 'pattern'),
      '0 9 * * *',
      'the cron scheduler in Redis',
    )
  })

  test('without Redis: the same file completes, the jobs run inline', async (t) => {
    const dir = project(t)
    const { code, stdout, stderr } = await worker(dir, `redis://127.0.0.1:${await freePort()}`)
    assert.equal(code, 0, stderr)
    assert.match(stdout, /inline \{ width: 1280, url: '\/img\/1280\.jpg' \}\n/)
    assert.match(stdout, /sent to ana@example\.org\n/)
  })
})
