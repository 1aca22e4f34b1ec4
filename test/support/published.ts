// Helpers for the tests that use failsoft the way an application does: through its package
// name, from a project outside this repository (test/readme.test.ts, test/package/pack.test.ts).
import { execFile } from 'node:child_process'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

/** The README's quickstart: the first ```ts block after its "## Quickstart" heading. */
export function readmeQuickstart(
  readme = readFileSync(join(repoRoot, 'README.md'), 'utf8'),
): string {
  const section = readme.indexOf('\n## Quickstart')
  if (section < 0) throw new Error('README.md has no "## Quickstart" section')
  const block = /\n```ts\n([\s\S]*?)\n```\n/.exec(readme.slice(section))
  if (block?.[1] === undefined) throw new Error('the Quickstart section has no ```ts block')
  return `${block[1]}\n`
}

/** The ```ts block that follows `<!-- <marker> -->` in a document (docs/tasks.md: port:after). */
export function markedBlock(path: string, marker: string): string {
  const text = readFileSync(join(repoRoot, path), 'utf8')
  const at = text.indexOf(`<!-- ${marker} -->`)
  if (at < 0) throw new Error(`${path} has no <!-- ${marker} --> marker`)
  const block = /\n```ts\n([\s\S]*?)\n```\n/.exec(text.slice(at))
  if (block?.[1] === undefined) throw new Error(`no \`\`\`ts block after <!-- ${marker} -->`)
  return `${block[1]}\n`
}

function newest(dir: string): number {
  let latest = 0
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const stat = statSync(path)
    latest = Math.max(latest, stat.isDirectory() ? newest(path) : stat.mtimeMs)
  }
  return latest
}

/** Throws unless dist/ was built after the last change under src/ (`npm test` builds first). */
export function assertBuilt(): void {
  let built = 0
  try {
    built = statSync(join(repoRoot, 'dist', 'index.js')).mtimeMs
  } catch {
    throw new Error('dist/ is missing: run `npm run build` first (npm test does)')
  }
  if (built < newest(join(repoRoot, 'src'))) {
    throw new Error('dist/ is older than src/: run `npm run build` first (npm test does)')
  }
}

/** `node --import tsx` for a file outside this repository (tsx resolved from here). */
export const tsxImport = import.meta.resolve('tsx')

export interface Ran {
  code: number | null
  stdout: string
  stderr: string
}

/** Run a command; resolves with its exit code and output (never rejects on a non-zero exit). */
/** This process's environment without NODE_TEST_CONTEXT, which would make a nested node process report to this test runner. */
export function withoutTestContext(): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _context, ...env } = process.env
  return env
}

export function run(
  file: string,
  args: string[],
  options: { cwd: string; env?: Record<string, string | undefined>; timeoutMs?: number },
): Promise<Ran> {
  const inherited = withoutTestContext()
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd,
        env: { ...inherited, ...options.env },
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== 'number') {
          reject(new Error(`${file} ${args.join(' ')}: ${error.message}\n${stderr}`))
          return
        }
        resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr })
      },
    )
  })
}
