// The README's quickstart, extracted from README.md when the test runs (no copy is kept), run as
// it stands from a project outside the repository that imports `failsoft` by name: against a
// real redis-server on a free port, then with nothing listening. test/package/pack.test.ts runs
// it again from the packed tarball and type-checks it.
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { before, describe, test } from 'node:test'
import { freePort, startRedis } from './support/fault-kit.js'
import { assertBuilt, readmeQuickstart, repoRoot, run, tsxImport } from './support/published.js'

/** A project in the temp dir whose node_modules/failsoft is this checkout (as `npm link` does). */
function project(t: { after(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'failsoft-readme-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'package.json'), '{ "private": true, "type": "module" }\n')
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(repoRoot, join(dir, 'node_modules', 'failsoft'), 'dir')
  writeFileSync(join(dir, 'quickstart.ts'), readmeQuickstart())
  return dir
}

const quickstart = (dir: string, redisUrl: string) =>
  run(process.execPath, ['--import', tsxImport, 'quickstart.ts'], {
    cwd: dir,
    env: { REDIS_URL: redisUrl },
    timeoutMs: 30_000,
  })

describe("the README's quickstart, verbatim", () => {
  before(() => assertBuilt())

  test('with Redis: queued, run by the worker, every key under its prefix', async (t) => {
    const server = await startRedis(t)
    const dir = project(t)
    const { code, stdout, stderr } = await quickstart(dir, server.url)
    assert.equal(code, 0, stderr)
    assert.match(
      stdout,
      /\[ \{ id: 1, title: 'Community garden' \} \] poll\.results queued ana@example\.org worker\n/,
    )
    assert.match(stdout, /available: true/)
    const keys = (await server.cli('KEYS', '*')) as string[]
    assert.ok(keys.length > 0, 'it wrote to Redis')
    assert.deepEqual(
      keys.filter((key) => !key.startsWith('myapp:')),
      [],
      'every key under the prefix',
    )
  })

  test('without Redis: the same script completes, the task runs inline', async (t) => {
    const dir = project(t)
    const { code, stdout, stderr } = await quickstart(dir, `redis://127.0.0.1:${await freePort()}`)
    assert.equal(code, 0, stderr)
    assert.match(stderr, /Redis is down: connect ECONNREFUSED/)
    assert.match(
      stdout,
      /\[ \{ id: 1, title: 'Community garden' \} \] poll\.results inline ana@example\.org inline\n/,
    )
  })
})
