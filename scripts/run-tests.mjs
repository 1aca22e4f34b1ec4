// Runs every *.test.ts file under test/, app/ and chaos/ with node's own test runner through tsx.
// Node 20's --test does not expand globs nor pick up .ts files, so the list is built here.
// Extra arguments are treated as path filters: `npm run test:only -- health` runs test/health/*.
//
// The very last line is `N passed, N failed, N skipped`, for CI to read. With CI set (`.ci/run`
// sets CI=1) a skipped test fails the run: a test skips when the machine lacks something it needs
// (Chromium for the browser test), and CI must have it. A test that may legitimately skip on CI
// says so with a skip reason starting with "optional:".
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

// RUN_TESTS_ROOTS (comma-separated) replaces the roots: the runner's own test uses it.
const roots = process.env.RUN_TESTS_ROOTS
  ? process.env.RUN_TESTS_ROOTS.split(',')
  : ['test', 'app', 'chaos']
const filters = process.argv.slice(2)

function walk(dir, out) {
  let entries
  try {
    entries = readdirSync(dir)
  } catch {
    return out // a root that does not exist yet simply has no tests
  }
  for (const name of entries) {
    if (name === 'node_modules') continue
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path, out)
    else if (name.endsWith('.test.ts')) out.push(relative(process.cwd(), path))
  }
  return out
}

const files = roots
  .flatMap((root) => walk(root, []))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort()

if (files.length === 0) {
  console.error(`no test files matched ${filters.join(' ') || '(all)'}`)
  process.exit(1)
}

// --test-force-exit: a test file's process exits once its tests are done. Now and then (about
// one tasks-suite run in eight under two concurrent files) a file's process stayed alive after
// its last test with no active handle or request left (process.getActiveResourcesInfo() showed
// only stdio), until the 120 s timeout failed the file. That failsoft itself lets a process exit
// after close() is checked directly, in a child process (test/health/lifecycle.test.ts).
const child = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-force-exit',
    '--test-concurrency=2',
    '--test-timeout=120000',
    ...files,
  ],
  { stdio: ['inherit', 'pipe', 'inherit'] },
)
// The output passes through as it comes; its counts are repeated as the very last line (with
// --test-force-exit the runner's own summary may not end the output), for CI to read.
const counts = { pass: null, fail: null, cancelled: null, skipped: null }
/** Skipped tests whose reason does not start with "optional:" (TAP: `ok N - name # SKIP why`). */
const requiredSkips = []
// Node 20's `# skipped` counts skipped tests but not a skipped describe(): its TAP line is counted
// here, so that a whole suite skipped (the panel tests without Chromium) shows in the last line.
let skipLines = 0
let pending = ''
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  const lines = (pending + chunk.toString('utf8')).split('\n')
  pending = lines.pop() ?? ''
  for (const line of lines) {
    const match = /^# (pass|fail|cancelled|skipped) (\d+)$/.exec(line)
    if (match) counts[match[1]] = Number(match[2])
    const skip = /^\s*ok \d+ - (.*?) # SKIP\s*(.*)$/.exec(line)
    if (skip) skipLines++
    if (skip && !/^optional:/i.test(skip[2]))
      requiredSkips.push(`${skip[1]} (${skip[2] || 'no reason'})`)
  }
})
const ci = Boolean(process.env.CI) && process.env.CI !== 'false' && process.env.CI !== '0'
child.on('exit', (code, signal) => {
  let failed = signal !== null || code !== 0
  if (ci && requiredSkips.length > 0) {
    failed = true
    console.log(`CI is set: ${requiredSkips.length} required test(s) skipped, failing the run:`)
    for (const name of requiredSkips) console.log(`  skipped: ${name}`)
  }
  if (counts.pass === null) console.log(`no test counts reported; runner exit ${signal ?? code}`)
  else {
    // A cancelled test (its file timed out, a hook failed) did not pass: it counts as failed.
    const failedCount = (counts.fail ?? 0) + (counts.cancelled ?? 0)
    const skipped = Math.max(counts.skipped ?? 0, skipLines)
    console.log(`${counts.pass} passed, ${failedCount} failed, ${skipped} skipped`)
  }
  process.exit(failed ? 1 : 0)
})
