// Runs every *.test.ts file under test/ (and app/) with node's own test runner through tsx.
// Node 20's --test does not expand globs nor pick up .ts files, so the list is built here.
// Extra arguments are treated as path filters: `npm run test:only -- health` runs test/health/*.
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const roots = ['test', 'app']
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
const counts = { pass: null, fail: null }
let pending = ''
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  const lines = (pending + chunk.toString('utf8')).split('\n')
  pending = lines.pop() ?? ''
  for (const line of lines) {
    const match = /^# (pass|fail) (\d+)$/.exec(line)
    if (match) counts[match[1]] = Number(match[2])
  }
})
child.on('exit', (code, signal) => {
  const failed = signal !== null || code !== 0
  if (counts.pass === null) console.log(`no test counts reported; runner exit ${signal ?? code}`)
  else console.log(`${counts.pass} passed, ${counts.fail ?? 0} failed`)
  process.exit(failed ? 1 : 0)
})
