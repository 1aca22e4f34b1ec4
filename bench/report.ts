/**
 * The contract every benchmark suite fulfils. `bench/index.ts` runs the suites named on the
 * command line (all by default), then writes BENCHMARKS.md, bench/results/latest.json and one
 * SVG per chart.
 */
export interface Table {
  title: string
  columns: string[]
  rows: Array<Array<string | number>>
  /** One line under the table: what was measured, how, and what the ratio means. */
  note?: string
}

export interface Chart {
  /** File name stem, e.g. 'cache-latency-kill' → bench/results/cache-latency-kill.svg */
  id: string
  title: string
  xLabel: string
  yLabel: string
  /** Logarithmic y axis (latency spanning 0.05 ms … 5 s). */
  logY?: boolean
  series: Array<{ name: string; points: Array<[x: number, y: number]> }>
  /** Shaded x ranges, e.g. the fault window. */
  bands?: Array<{ from: number; to: number; label: string }>
}

export interface SuiteReport {
  suite: string
  title: string
  tables: Table[]
  charts?: Chart[]
  notes?: string[]
  /** Raw numbers for bench/results/latest.json. */
  data: unknown
  /** When the suite finished (ISO time): suites run alone keep their own date. */
  at?: string
  /** The CPUs it was measured on (suites run alone may come from different machines). */
  cpus?: string
}

export interface BenchContext {
  /** Number of repetitions for throughput measurements (the median is reported). */
  runs: number
  /** Quick mode (`npm run bench -- --quick`): shorter windows, for smoke-testing the suites. */
  quick: boolean
  log(message: string): void
}

export type Suite = (context: BenchContext) => Promise<SuiteReport>

export function median(values: number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[index]!
}

/** Format a ratio to a peer as "1.23x". */
export function ratio(ours: number, theirs: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(theirs) || theirs === 0) return 'n/a'
  return `${(ours / theirs).toFixed(2)}x`
}

export interface Throughput {
  opsPerSec: number
  p50: number
  p99: number
}

/**
 * Run `op` from `concurrency` sequential loops for `windowMs`; `op` gets a running sequence
 * number. Operations per second over the window, with p50/p99 latency in ms.
 */
export async function measureThroughput(
  op: (seq: number) => Promise<unknown>,
  concurrency: number,
  windowMs: number,
): Promise<Throughput> {
  const latencies: number[] = []
  const end = performance.now() + windowMs
  let seq = 0
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const start = performance.now()
      await op(seq++)
      latencies.push(performance.now() - start)
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, loop))
  const elapsed = performance.now() - started
  return {
    opsPerSec: (latencies.length / elapsed) * 1000,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  }
}

/**
 * Latency over time for a chart: the slowest sample started in each `bucketMs` window, as
 * [seconds since the fault, ms] points (latencies floored at 0.01 ms for a log axis).
 */
export function slowestPerBucket(
  samples: ReadonlyArray<{ at: number; latency: number }>,
  bucketMs = 100,
): Array<[x: number, y: number]> {
  const buckets = new Map<number, number>()
  for (const s of samples) {
    const b = Math.floor(s.at / bucketMs)
    buckets.set(b, Math.max(buckets.get(b) ?? 0, Math.max(s.latency, 0.01)))
  }
  return [...buckets.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([b, latency]) => [(b * bucketMs) / 1000, latency])
}
