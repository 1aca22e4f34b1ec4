import { Counter, Gauge, Histogram, register as defaultRegistry, type Registry } from 'prom-client'
import type { Failsoft } from '../failsoft.js'
import type { Disposable } from '../health/events.js'
import { readSnapshot, statusFigures, type Attributes, type Snapshot } from './figures.js'
import { recordEvents, recordedFigures, type RecordedFigure } from './recorded.js'

export interface PrometheusOptions {
  /** The registry to register on. Default: prom-client's global `register`. */
  register?: Registry
  /** Prepended to every metric name (they start with `failsoft_`). Default ''. */
  prefix?: string
  /** Labels added to every series, e.g. `{ instance: 'api' }` for several instances in one process. */
  labels?: Record<string, string>
}

/** What `collectFailsoftMetrics` returns: dispose to remove the metrics from the registry. */
export interface FailsoftCollector extends Disposable {
  /** The names registered. */
  readonly names: readonly string[]
}

type Labels = Record<string, string>

/**
 * Register `failsoft`'s figures on a prom-client registry (docs/observability.md): the same
 * figures as `failsoft/otel`, read from `failsoft.status()` at scrape time (one status() per
 * scrape), plus histograms recorded from failsoft's diagnostics channels.
 */
export function collectFailsoftMetrics(
  failsoft: Failsoft,
  options: PrometheusOptions = {},
): FailsoftCollector {
  const registry = options.register ?? defaultRegistry
  const registers = [registry]
  const prefix = options.prefix ?? ''
  const extra = options.labels ?? {}
  const extraNames = Object.keys(extra)
  const names: string[] = []

  // Every metric's collect() of one scrape runs in the same tick: they share one reading.
  let current: Snapshot | null = null
  const snapshot = (): Snapshot => {
    if (current === null) {
      current = readSnapshot(failsoft)
      setImmediate(() => (current = null))
    }
    return current
  }
  const labelsOf = (mapping: Readonly<Record<string, string>>, attributes: Attributes): Labels => {
    const labels: Labels = { ...extra }
    for (const [attribute, value] of Object.entries(attributes)) {
      const label = mapping[attribute]
      if (label !== undefined) labels[label] = value
    }
    return labels
  }

  for (const figure of statusFigures) {
    const name = prefix + figure.prometheus
    const labelNames = [...Object.values(figure.labels), ...extraNames]
    const read = (): Array<[Labels, number]> =>
      figure.read(snapshot()).map((o) => [labelsOf(figure.labels, o.attributes), o.value])
    if (figure.kind === 'counter') {
      new Counter({
        name,
        help: figure.description,
        labelNames,
        registers,
        collect() {
          // The count is cumulative in failsoft's status: set, not added to.
          this.reset()
          for (const [labels, value] of read()) this.inc(labels, value)
        },
      })
    } else {
      new Gauge({
        name,
        help: figure.description,
        labelNames,
        registers,
        collect() {
          this.reset()
          for (const [labels, value] of read()) this.set(labels, value)
        },
      })
    }
    names.push(name)
  }

  const record = new Map<RecordedFigure, (value: number, labels: Labels) => void>()
  for (const figure of Object.values(recordedFigures) as RecordedFigure[]) {
    const name = prefix + figure.prometheus
    const labelNames = [...Object.values(figure.labels), ...extraNames]
    if (figure.kind === 'counter') {
      const counter = new Counter({ name, help: figure.description, labelNames, registers })
      record.set(figure, (value, labels) => counter.inc(labels, value))
    } else {
      const histogram = new Histogram({
        name,
        help: figure.description,
        labelNames,
        registers,
        ...(figure.buckets ? { buckets: [...figure.buckets] } : {}),
      })
      record.set(figure, (value, labels) => histogram.observe(labels, value))
    }
    names.push(name)
  }
  const recording = recordEvents(failsoft, {
    record: (figure, value, attributes) =>
      record.get(figure)?.(value, labelsOf(figure.labels, attributes)),
  })

  let disposed = false
  return {
    names,
    dispose: () => {
      if (disposed) return
      disposed = true
      recording.dispose()
      for (const name of names) registry.removeSingleMetric(name)
    },
  }
}
