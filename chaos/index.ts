/**
 * `npm run chaos [-- --sentinel] [-- --quick] [-- --keep] [-- --no-write]`
 *
 * The reference app (two processes, one Redis) under steady load while a schedule of real
 * faults plays; writes CHAOS.md and chaos/results/latest.json, prints one FAILED line per
 * missed target and exits 1 when any target is missed (2 when the harness itself failed).
 *   --sentinel  the Sentinel profile: the two processes reach Redis through a Sentinel set (a
 *               primary, two replicas, three Sentinels) and the faults hit its primary
 *               (kill-primary, sentinel-failover, freeze-primary, lagging-replica); writes
 *               chaos/results/sentinel.json and the "Sentinel profile" section of CHAOS.md
 *               (the single-Redis section is re-rendered, unchanged, from latest.json).
 *               Combines with every other flag.
 *   --quick     short schedule (≈ 90 s; ≈ 2 min with --sentinel)
 *   --smoke     the harness's own check: one kill, ≈ 30 s; writes nothing
 *   --keep      keep the run directory (SQLite file, app logs) even when every target passed
 *   --no-write  print the report only
 *   --only f,g  play only the named faults (kill, freeze, blackhole, latency, restart-empty,
 *               restart-data, maxmemory; with --sentinel: kill-primary, sentinel-failover,
 *               freeze-primary, lagging-replica); implies --no-write
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { format, resolveConfig } from 'prettier'
import { renderChaosFile, renderMarkdown, type ChaosReport } from './report.js'
import { runChaos } from './run.js'
import type { ProfileName } from './schedule.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const args = process.argv.slice(2)
const known = new Set(['--sentinel', '--quick', '--smoke', '--keep', '--no-write', '--only'])
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
const sentinel = args.includes('--sentinel')
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
    sentinel,
    ...(only !== undefined && { only }),
    log,
  })
  const markdown = renderMarkdown(report, apps)
  if (write) {
    mkdirSync(`${root}chaos/results`, { recursive: true })
    // Written as the repository's formatter would (so `npm run lint` stays green).
    const singlePath = `${root}chaos/results/latest.json`
    const sentinelPath = `${root}chaos/results/sentinel.json`
    const jsonPath = sentinel ? sentinelPath : singlePath
    const mdPath = `${root}CHAOS.md`
    const json = JSON.stringify(report, null, 2)
    writeFileSync(
      jsonPath,
      await format(json, { ...(await resolveConfig(jsonPath)), filepath: jsonPath }),
    )
    // CHAOS.md holds both profiles, each rendered from its results file: this run's, and the
    // other profile's last one as it was.
    const read = (path: string): ChaosReport | null =>
      existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as ChaosReport) : null
    const file = renderChaosFile(read(singlePath), read(sentinelPath), apps)
    writeFileSync(
      mdPath,
      await format(file, { ...(await resolveConfig(mdPath)), filepath: mdPath }),
    )
    log(`wrote CHAOS.md and ${jsonPath.slice(root.length)}`)
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
