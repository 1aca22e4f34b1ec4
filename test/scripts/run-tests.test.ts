// scripts/run-tests.mjs: its last line carries the skipped count, and with CI set a skipped test
// fails the run unless its reason starts with "optional:".
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../../', import.meta.url))

function run(env: Record<string, string>): Promise<{ code: number | null; lines: string[] }> {
  return new Promise((resolve, reject) => {
    // NODE_TEST_CONTEXT would make the nested runner report to this one instead of printing TAP.
    const { CI: _ci, NODE_TEST_CONTEXT: _context, ...inherited } = process.env
    const child = spawn(process.execPath, ['scripts/run-tests.mjs'], {
      cwd: root,
      env: { ...inherited, RUN_TESTS_ROOTS: 'scripts/fixtures/runner', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')))
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, lines: out.trimEnd().split('\n') }))
  })
}

test('the last line counts the skipped tests and suites; without CI a skip does not fail the run', async () => {
  const { code, lines } = await run({})
  assert.equal(lines.at(-1), '1 passed, 0 failed, 3 skipped')
  assert.equal(code, 0)
})

test('with CI set, a required skip fails the run and is named; an optional one is not', async () => {
  const { code, lines } = await run({ CI: '1' })
  assert.equal(lines.at(-1), '1 passed, 0 failed, 3 skipped')
  assert.equal(code, 1)
  const named = lines.filter((line) => line.startsWith('  skipped: '))
  assert.deepEqual(named, [
    '  skipped: needs a tool this machine lacks (the tool is absent)',
    '  skipped: a suite that needs the tool too (the tool is absent)',
  ])
})
