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

const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=120000', ...files],
  { stdio: 'inherit' },
)
child.on('exit', (code, signal) => process.exit(signal ? 1 : (code ?? 1)))
