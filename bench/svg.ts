import type { Chart } from './report.js'

const W = 900
const H = 360
const M = { left: 70, right: 280, top: 40, bottom: 50 }
const COLORS = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
]

const esc = (text: string): string =>
  text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)

function niceTicks(min: number, max: number, count: number): number[] {
  if (!(max > min)) return [min]
  const step0 = (max - min) / count
  const magnitude = 10 ** Math.floor(Math.log10(step0))
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= step0) ?? step0
  const ticks: number[] = []
  for (let v = Math.ceil(min / step) * step; v <= max + step / 1e6; v += step)
    ticks.push(+v.toPrecision(12))
  return ticks
}

function fmt(value: number): string {
  if (value === 0) return '0'
  if (Math.abs(value) >= 1000) return `${+(value / 1000).toPrecision(3)}k`
  if (Math.abs(value) < 0.01) return value.toExponential(0)
  return `${+value.toPrecision(3)}`
}

/** A dependency-free SVG scatter/line chart: enough for latency-over-time during a fault. */
export function renderChart(input: Chart): string {
  // A sample taken before its reference time is known (NaN) must not poison the axes.
  const chart: Chart = {
    ...input,
    series: input.series.map((s) => ({
      ...s,
      points: s.points.filter(([px, py]) => Number.isFinite(px) && Number.isFinite(py)),
    })),
  }
  const points = chart.series.flatMap((s) => s.points)
  const xs = points.map((p) => p[0])
  const ys = points.map((p) => p[1]).filter((y) => !chart.logY || y > 0)
  const bandEdges = (chart.bands ?? []).flatMap((b) => [b.from, b.to])
  const xMin = [...xs, ...bandEdges].reduce((a, b) => Math.min(a, b), Infinity)
  const xMax = [...xs, ...bandEdges].reduce((a, b) => Math.max(a, b), -Infinity)
  const plotW = W - M.left - M.right
  const plotH = H - M.top - M.bottom
  const x = (v: number): number => M.left + ((v - xMin) / (xMax - xMin || 1)) * plotW

  let y: (v: number) => number
  let yTicks: number[]
  if (chart.logY) {
    const lo = Math.floor(
      Math.log10(
        Math.max(
          ys.reduce((a, b) => Math.min(a, b), Infinity),
          1e-3,
        ),
      ),
    )
    const hi = Math.ceil(Math.log10(ys.reduce((a, b) => Math.max(a, b), 1e-3)))
    y = (v) => M.top + plotH - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo || 1)) * plotH
    yTicks = Array.from({ length: hi - lo + 1 }, (_, i) => 10 ** (lo + i))
  } else {
    const yMax = ys.reduce((a, b) => Math.max(a, b), 0)
    y = (v) => M.top + plotH - (v / (yMax || 1)) * plotH
    yTicks = niceTicks(0, yMax, 5)
  }

  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left}" y="22" font-size="15" font-weight="bold">${esc(chart.title)}</text>`,
  )
  for (const band of chart.bands ?? []) {
    out.push(
      `<rect x="${x(band.from)}" y="${M.top}" width="${Math.max(1, x(band.to) - x(band.from))}" height="${plotH}" fill="#f4cccc" opacity="0.6"/>`,
      `<text x="${x(band.from) + 4}" y="${M.top + 14}" fill="#990000">${esc(band.label)}</text>`,
    )
  }
  for (const t of yTicks) {
    out.push(
      `<line x1="${M.left}" x2="${M.left + plotW}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`,
      `<text x="${M.left - 6}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`,
    )
  }
  for (const t of niceTicks(xMin, xMax, 8)) {
    out.push(`<text x="${x(t)}" y="${M.top + plotH + 18}" text-anchor="middle">${fmt(t)}</text>`)
  }
  out.push(
    `<rect x="${M.left}" y="${M.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${M.left + plotW / 2}" y="${H - 12}" text-anchor="middle">${esc(chart.xLabel)}</text>`,
    `<text transform="translate(16 ${M.top + plotH / 2}) rotate(-90)" text-anchor="middle">${esc(chart.yLabel)}</text>`,
  )
  chart.series.forEach((series, i) => {
    const color = COLORS[i % COLORS.length]!
    const dots = series.points
      .filter((p) => !chart.logY || p[1] > 0)
      .map((p) => `<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="1.6"/>`)
      .join('')
    out.push(`<g fill="${color}" opacity="0.75">${dots}</g>`)
    const ly = M.top + 10 + i * 18
    out.push(
      `<rect x="${M.left + plotW + 12}" y="${ly - 8}" width="10" height="10" fill="${color}"/>`,
      `<text x="${M.left + plotW + 28}" y="${ly + 1}">${esc(series.name)}</text>`,
    )
  })
  out.push('</svg>')
  return out.join('\n')
}
