/**
 * `npm run chaos [-- --quick] [-- --keep] [-- --no-write]`
 *
 * The reference app (two processes, one Redis) under steady load while a schedule of real
 * faults plays; writes CHAOS.md and chaos/results/latest.json, prints one FAILED line per
 * missed target and exits 1 when any target is missed (2 when the harness itself failed).
 *   --quick     short schedule (≈ 90 s)
 *   --smoke     the harness's own check: one kill, ≈ 30 s; writes nothing
 *   --keep      keep the run directory (SQLite file, app logs) even when every target passed
 *   --no-write  print the report only
 *   --only f,g  play only the named faults (kill, freeze, blackhole, latency, restart-empty,
 *               restart-data, maxmemory); implies --no-write
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { format, resolveConfig } from 'prettier'
import { renderMarkdown } from './report.js'
import { runChaos } from './run.js'
import type { ProfileName } from './schedule.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const args = process.argv.slice(2)
const known = new Set(['--quick', '--smoke', '--keep', '--no-write', '--only'])
const onlyAt = args.indexOf('--only')
const only = onlyAt >= 0 ? (args[onlyAt + 1] ?? '').split(',').filter(Boolean) : undefined
for (const [i, arg] of args.entries()) {
  if (i === onlyAt + 1 && onlyAt >= 0) continue
  if (!known.has(arg)) {
    console.error(`unknown argument "${arg}"; use ${[...known].join(', ')}`)
    process.exit(2)
  }
}
const profile: ProfileName = args.includes('--smoke')
  ? 'smoke'
  : args.includes('--quick')
    ? 'quick'
    : 'full'
const write = !args.includes('--no-write') && profile !== 'smoke' && only === undefined
const command = ['npm run chaos', ...(args.length > 0 ? ['--', ...args] : [])].join(' ')

async function main(): Promise<number> {
  const started = Date.now()
  const log = (message: string): void =>
    console.error(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}`)
  const { report, apps, runDir, runDirKept } = await runChaos({
    profile,
    root,
    command,
    keep: args.includes('--keep'),
    ...(only !== undefined && { only }),
    log,
  })
  const markdown = renderMarkdown(report, apps)
  if (write) {
    mkdirSync(`${root}chaos/results`, { recursive: true })
    // Written as the repository's formatter would (so `npm run lint` stays green).
    const jsonPath = `${root}chaos/results/latest.json`
    const mdPath = `${root}CHAOS.md`
    const json = JSON.stringify(report, null, 2)
    writeFileSync(
      jsonPath,
      await format(json, { ...(await resolveConfig(jsonPath)), filepath: jsonPath }),
    )
    writeFileSync(
      mdPath,
      await format(markdown, { ...(await resolveConfig(mdPath)), filepath: mdPath }),
    )
    log('wrote CHAOS.md and chaos/results/latest.json')
  } else {
    console.log(markdown)
  }
  if (runDirKept) {
    writeFileSync(`${runDir}/report.json`, `${JSON.stringify(report, null, 2)}\n`)
    log(`app logs, database and report.json kept in ${runDir}`)
  }
  for (const t of report.targets)
    console.error(`${t.pass ? 'PASS  ' : 'FAILED'} ${t.target}: ${t.measured}`)
  if (!report.passed) {
    console.error('')
    for (const line of report.failures) console.error(line)
    console.error(`\nchaos: ${report.failures.length} target(s) FAILED`)
    return 1
  }
  console.error('\nchaos: every target passed')
  return 0
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('chaos: the harness failed:', error)
    process.exit(2)
  },
)
