// The package as it would be published: `npm pack`, the tarball installed into an empty project
// outside the repository, imported by name (ESM) — `failsoft`, `failsoft/compat`, `failsoft/otel`
// (without its optional peer) and `failsoft/prometheus` — type-checked
// by tsc against the packed .d.ts files only, and the README's quickstart (extracted from
// README.md now, not a copy) compiled and run against a real redis-server on a free port.
//
// Offline and fast (no registry): the tarball is installed with
//   npm install --offline --no-audit --no-fund --ignore-scripts <tarball>
// into a project whose node_modules already links each of failsoft's `dependencies` to this
// repository's node_modules (npm keeps a dependency it finds installed and satisfying the range,
// and fetches nothing), with an empty npm cache of its own — so a dependency missing from
// package.json, or a file missing from the tarball, fails here. --ignore-scripts: npm would
// otherwise run the linked packages' lifecycle scripts inside this repository's node_modules.
import assert from 'node:assert/strict'
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { startRedis } from '../support/fault-kit.js'
import { assertBuilt, readmeQuickstart, repoRoot, run, type Ran } from '../support/published.js'

const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  name: string
  version: string
  dependencies: Record<string, string>
}
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')

const ok = (result: Ran, what: string): Ran => {
  assert.equal(result.code, 0, `${what} failed:\n${result.stdout}\n${result.stderr}`)
  return result
}

function link(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true })
  symlinkSync(from, to, 'dir')
}

// A consumer with strict settings; every import is by package name. skipLibCheck is off: the
// packed declarations (and those of the dependencies they import) are type-checked too.
const consumer = `import assert from 'node:assert/strict'
import { CloseCode, createFailsoft, type DispatchResult, type Failsoft, type FailsoftOptions } from 'failsoft'
import { executeTaskSync, safeCacheDelete, safeCacheGet, safeCacheSet, safeGroupSend } from 'failsoft/compat'
import { instrumentOpenTelemetry } from 'failsoft/otel'
import { collectFailsoftMetrics } from 'failsoft/prometheus'
import { Registry } from 'prom-client'

const options: FailsoftOptions = { redis: null, prefix: 'consumer', logger: false }
const failsoft: Failsoft = createFailsoft(options)
const tasks = failsoft.tasks({ queue: 'q' })
const double = tasks.define('double', (n: number) => n * 2)
// @opentelemetry/api is not installed here: failsoft/otel says so and throws nothing.
const otel = await instrumentOpenTelemetry(failsoft)
assert.equal(otel.enabled, false)
assert.ok(otel.reason?.includes('@opentelemetry/api'))
const register = new Registry()
const collector = collectFailsoftMetrics(failsoft, { register })
const result: DispatchResult<number> = await double.dispatch(21)
if (result.mode === 'inline' && result.ok) {
  const value: number = result.value
  assert.equal(value, 42)
} else assert.fail(\`memory-only dispatch ran \${result.mode}\`)
assert.ok((await register.metrics()).includes('\\nfailsoft_task_inline_runs_total{queue="q",outcome="ok"} 1\\n'))
collector.dispose()
// @ts-expect-error the packed types refuse a number prefix (fails if the types were missing or any)
void (() => createFailsoft({ prefix: 42 }))
await failsoft.close()

const compat: Array<(...args: never[]) => unknown> = [safeCacheGet, safeCacheSet, safeCacheDelete, safeGroupSend, executeTaskSync]
assert.ok(compat.every((fn) => typeof fn === 'function'))
assert.equal(typeof CloseCode, 'object')
await assert.rejects(import('failsoft/dist/index.js' as string), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
console.log('consumer ok')
`

const tsconfig = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    lib: ['ES2023'],
    types: ['node'],
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    outDir: 'out',
  },
  files: ['consumer.ts', 'quickstart.ts'],
}

describe('the packed package', () => {
  let root = ''
  let dir = ''
  let files: string[] = []

  before(async () => {
    assertBuilt()
    root = mkdtempSync(join(tmpdir(), 'failsoft-pack-'))
    const packed = ok(
      await run(npm, ['pack', '--json', '--pack-destination', root], { cwd: repoRoot }),
      'npm pack',
    )
    const [info] = JSON.parse(packed.stdout) as Array<{
      filename: string
      files: Array<{ path: string }>
    }>
    assert.ok(info !== undefined)
    files = info.files.map((f) => f.path)
    const tarball = join(root, info.filename)

    const app = join(root, 'app')
    mkdirSync(app)
    writeFileSync(
      join(app, 'package.json'),
      '{ "name": "consumer", "private": true, "type": "module" }\n',
    )
    for (const dependency of Object.keys(manifest.dependencies)) {
      link(join(repoRoot, 'node_modules', dependency), join(app, 'node_modules', dependency))
    }
    ok(
      await run(
        npm,
        [
          'install',
          '--offline',
          '--no-audit',
          '--no-fund',
          '--ignore-scripts',
          '--cache',
          join(root, 'npm-cache'),
          tarball,
        ],
        { cwd: app },
      ),
      'npm install of the tarball',
    )
    // The consumer's own dev tooling (after the install, which would prune an extraneous link),
    // and prom-client, the optional peer of failsoft/prometheus. @opentelemetry/api, that of
    // failsoft/otel, stays absent: the consumer checks that it is not needed.
    link(
      join(repoRoot, 'node_modules', '@types', 'node'),
      join(app, 'node_modules', '@types', 'node'),
    )
    link(join(repoRoot, 'node_modules', 'prom-client'), join(app, 'node_modules', 'prom-client'))
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2))
    writeFileSync(join(app, 'consumer.ts'), consumer)
    writeFileSync(join(app, 'quickstart.ts'), readmeQuickstart())
    dir = app
  })
  after(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true })
  })

  test('holds dist/ (code and declarations), README.md and package.json — nothing else', () => {
    for (const file of [
      'dist/index.js',
      'dist/index.d.ts',
      'dist/compat.js',
      'dist/compat.d.ts',
      'dist/otel.js',
      'dist/otel.d.ts',
      'dist/prometheus.js',
      'dist/prometheus.d.ts',
      'README.md',
      'package.json',
    ]) {
      assert.ok(files.includes(file), `${file} is packed`)
    }
    assert.deepEqual(
      files.filter((f) => !f.startsWith('dist/') && f !== 'README.md' && f !== 'package.json'),
      [],
    )
    assert.deepEqual(
      files.filter((f) => /\.test\.|^dist\/.*\.ts$/.test(f) && !f.endsWith('.d.ts')),
      [],
    )
  })

  test('installs offline as a real copy, with its dependencies resolved', () => {
    const installed = join(dir, 'node_modules', manifest.name)
    assert.ok(!lstatSync(installed).isSymbolicLink(), 'a copy of the tarball, not a link')
    const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as {
      version: string
    }
    assert.equal(pkg.version, manifest.version)
    assert.ok(!existsSync(join(installed, 'src')), 'no sources shipped')
  })

  test('type-checks with tsc against the packed .d.ts, and its ESM entry points import', async () => {
    ok(await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: dir }), 'tsc')
    const { stdout } = ok(
      await run(process.execPath, ['out/consumer.js'], { cwd: dir }),
      'consumer',
    )
    assert.match(stdout, /consumer ok/)
  })

  test("runs the README's quickstart as written, against a real redis-server", async (t) => {
    assert.ok(existsSync(join(dir, 'out', 'quickstart.js')), 'compiled by the previous test')
    const server = await startRedis(t)
    const { stdout } = ok(
      await run(process.execPath, ['out/quickstart.js'], {
        cwd: dir,
        env: { REDIS_URL: server.url },
        timeoutMs: 30_000,
      }),
      'the quickstart',
    )
    assert.match(stdout, /poll\.results queued ana@example\.org worker\n/)
    const keys = (await server.cli('KEYS', '*')) as string[]
    assert.ok(keys.length > 0)
    assert.deepEqual(
      keys.filter((key) => !key.startsWith('myapp:')),
      [],
    )
  })
})
