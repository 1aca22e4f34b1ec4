/**
 * `npm run check [-- options]` — the randomized fault checker.
 *
 *   --seed N          play the schedule of seed N only (a replay: same schedule as the run that printed it)
 *   --from N          first seed of a series (default: drawn from the clock); seeds N, N+1, …
 *   --schedules N     how many schedules (default 3)
 *   --duration MS     load phase of each schedule, ms (default 10000)
 *   --faults LIST     fault kinds: `freeze,blackhole-one` (only these), `-flushall` (all but),
 *                     `+rollback` (add one off by default), `all`
 *   --report          write CHECK.md (and check/results/latest.json)
 *   --keep            keep every run directory (histories, child logs, Redis' data); failing runs are kept anyway
 *   --no-keep         keep none, not even failing ones (long series)
 *   --strict          documented limitations fail the run too
 *   --recheck DIR…    re-check the histories kept run directories hold (no run); with
 *                     --report, CHECK.md is written from them
 *   --list            print the fault kinds and exit
 *   --max-print N     violations printed per invariant and schedule (default 3)
 *
 * Exit code 1 on any violation, 2 when the harness itself failed.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { check, formatViolation, parseHistory, type CheckResult } from './checker/index.js'
import { FAULT_KINDS, selectKinds } from './harness/faults.js'
import { historyFiles, runSchedule } from './harness/runner.js'
import {
  DEFAULT_DURATION_MS,
  describeSchedule,
  makeSchedule,
  type Schedule,
} from './harness/schedule.js'
import { renderReport, type ScheduleResult } from './report.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const argv = process.argv.slice(2)
const VALUED = new Set([
  '--seed',
  '--from',
  '--schedules',
  '--duration',
  '--faults',
  '--recheck',
  '--max-print',
])
const FLAGS = new Set(['--report', '--keep', '--no-keep', '--strict', '--list'])
const opts = new Map<string, string>()
const recheckDirs: string[] = []
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i]!
  if (arg === '--recheck') {
    while (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) recheckDirs.push(argv[++i]!)
    if (recheckDirs.length === 0) fail('--recheck needs one or more run directories')
    opts.set(arg, 'true')
  } else if (VALUED.has(arg)) {
    const value = argv[++i]
    if (value === undefined) fail(`${arg} needs a value`)
    opts.set(arg, value)
  } else if (FLAGS.has(arg)) {
    opts.set(arg, 'true')
  } else {
    fail(`unknown argument "${arg}"; options: ${[...VALUED, ...FLAGS].join(', ')}`)
  }
}

function fail(message: string): never {
  console.error(message)
  process.exit(2)
}

function intOpt(name: string, fallback: number): number {
  const raw = opts.get(name)
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) fail(`${name} must be a non-negative integer, got ${raw}`)
  return n
}

const started = Date.now()
const log = (message: string): void =>
  console.error(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${message}`)

function printResult(result: CheckResult, maxPrint: number, strict: boolean): number {
  const counted = result.violations.filter((v) => v.severity === 'violation' || strict)
  const byInvariant = new Map<string, typeof result.violations>()
  for (const v of result.violations) {
    const list = byInvariant.get(v.invariant) ?? []
    list.push(v)
    byInvariant.set(v.invariant, list)
  }
  for (const [invariant, list] of byInvariant) {
    for (const v of list.slice(0, maxPrint)) console.log(`\n${formatViolation(result.history, v)}`)
    if (list.length > maxPrint) console.log(`\n… ${list.length - maxPrint} more ${invariant}`)
  }
  return counted.length
}

async function main(): Promise<number> {
  if (opts.has('--list')) {
    for (const k of FAULT_KINDS) {
      console.log(
        `${k.defaultOn ? ' ' : '+'} ${k.name.padEnd(24)} ${k.lane.padEnd(8)} ${k.description}`,
      )
    }
    return 0
  }
  const strict = opts.has('--strict')
  const maxPrint = intOpt('--max-print', 3)
  if (recheckDirs.length > 0) {
    const results: ScheduleResult[] = []
    let counted = 0
    for (const dir of recheckDirs) {
      const texts = historyFiles(dir).map((f) => readFileSync(f, 'utf8'))
      const result = check(parseHistory(texts))
      const n = printResult(result, maxPrint, strict)
      counted += n
      console.log(`\n${result.violations.length} violation(s) (${n} counted) in ${dir}`)
      const run = result.history.events.find((e) => e.process === 'harness' && e.op === 'run')
      const schedule = run?.['schedule'] as Schedule | undefined
      if (schedule === undefined) continue
      const spec = sameKinds(schedule.kinds) ? undefined : schedule.kinds.join(',')
      results.push(
        resultOf(schedule, result, replayCommand(schedule.seed, schedule.durationMs, spec), {
          wallMs: Number(result.history.end - result.history.t0) / 1e6,
          errors: [],
          runDir: dir,
        }),
      )
    }
    if (opts.has('--report')) {
      const seeds = results.map((r) => r.seed)
      await writeReport(
        results,
        strict,
        results[0]?.schedule.kinds ?? selectKinds(undefined),
        results[0]?.schedule.durationMs ?? DEFAULT_DURATION_MS,
        `npm run check -- --recheck <the kept run directories of seeds ${seeds.join(', ')}> --report`,
      )
    }
    return counted > 0 ? 1 : 0
  }

  const durationMs = intOpt('--duration', DEFAULT_DURATION_MS)
  const faults = opts.get('--faults')
  const kinds = selectKinds(faults)
  const seeds: number[] = []
  if (opts.has('--seed')) seeds.push(intOpt('--seed', 0))
  else {
    const from = intOpt('--from', Date.now() % 1_000_000)
    const count = intOpt('--schedules', 3)
    for (let i = 0; i < count; i++) seeds.push(from + i)
  }
  const replay = (seed: number): string => replayCommand(seed, durationMs, faults)

  const results: ScheduleResult[] = []
  let counted = 0
  let harnessFailed = false
  for (const seed of seeds) {
    const schedule = makeSchedule(seed, { durationMs, kinds })
    log(`schedule ${seed}`)
    for (const line of describeSchedule(schedule)) console.error(`    ${line}`)
    const outcome = await runSchedule({ schedule, root, log: (m) => log(`  ${m}`) })
    const result = check(parseHistory(outcome.texts))
    const n = printResult(result, maxPrint, strict)
    counted += n
    if (outcome.errors.length > 0) {
      harnessFailed = true
      for (const e of outcome.errors) console.error(`  harness: ${e}`)
    }
    const keep =
      opts.has('--keep') ||
      (!opts.has('--no-keep') && (result.violations.length > 0 || outcome.errors.length > 0))
    if (keep) {
      writeFileSync(
        `${outcome.runDir}/history.txt`,
        result.history.events.map((e) => JSON.stringify({ ...e, t: e.t.toString() })).join('\n') +
          '\n',
      )
    } else outcome.cleanup()
    const summary = summarize(result)
    log(
      `seed ${seed}: ${summary}; ${(outcome.wallMs / 1000).toFixed(1)} s` +
        (keep ? `; kept ${outcome.runDir}` : '') +
        (n > 0 ? `\n    replay: ${replay(seed)}` : ''),
    )
    results.push(
      resultOf(schedule, result, replay(seed), {
        wallMs: outcome.wallMs,
        errors: outcome.errors,
        runDir: keep ? outcome.runDir : undefined,
      }),
    )
  }

  if (opts.has('--report')) await writeReport(results, strict, kinds, durationMs)
  const failedSeeds = results.filter((r) =>
    r.violations.some((v) => v.severity === 'violation' || strict),
  )
  console.error(
    `\n${results.length} schedule(s), ${counted} violation(s)` +
      (failedSeeds.length > 0
        ? `; failing seeds: ${failedSeeds.map((r) => r.seed).join(', ')}`
        : ''),
  )
  if (counted > 0) return 1
  return harnessFailed ? 2 : 0
}

function replayCommand(seed: number, durationMs: number, faults: string | undefined): string {
  return [
    'npm run check -- --seed',
    String(seed),
    ...(durationMs !== DEFAULT_DURATION_MS ? ['--duration', String(durationMs)] : []),
    ...(faults !== undefined ? ['--faults', faults] : []),
  ].join(' ')
}

function sameKinds(kinds: readonly string[]): boolean {
  const defaults = selectKinds(undefined)
  return kinds.length === defaults.length && kinds.every((k) => defaults.includes(k))
}

function resultOf(
  schedule: Schedule,
  result: CheckResult,
  replay: string,
  run: { wallMs: number; errors: string[]; runDir: string | undefined },
): ScheduleResult {
  return {
    seed: schedule.seed,
    replay,
    wallMs: run.wallMs,
    schedule,
    stats: result.stats,
    violations: result.violations.map((v) => ({
      invariant: v.invariant,
      severity: v.severity,
      message: v.message,
    })),
    harnessErrors: run.errors,
    runDir: run.runDir,
  }
}

async function writeReport(
  results: ScheduleResult[],
  strict: boolean,
  kinds: string[],
  durationMs: number,
  command = ['npm run check', ...(argv.length > 0 ? ['--', ...argv] : [])].join(' '),
): Promise<void> {
  const { markdown, json } = await renderReport(results, {
    command,
    strict,
    kinds,
    durationMs,
  })
  mkdirSync(`${root}check/results`, { recursive: true })
  writeFileSync(`${root}CHECK.md`, markdown)
  writeFileSync(`${root}check/results/latest.json`, json)
  log('wrote CHECK.md and check/results/latest.json')
}

function summarize(result: CheckResult): string {
  const ops = Object.values(result.stats.operations).reduce((s, n) => s + n, 0)
  const byInv = new Map<string, number>()
  for (const v of result.violations) {
    const k = `${v.invariant}${v.severity === 'documented' ? ' (doc)' : ''}`
    byInv.set(k, (byInv.get(k) ?? 0) + 1)
  }
  const vio = [...byInv].map(([k, n]) => `${k} ×${n}`).join(', ')
  return `${ops} ops, ${result.history.faults.length} faults, ${vio === '' ? 'no violation' : vio}`
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error)
    process.exit(2)
  },
)
