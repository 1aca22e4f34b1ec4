import { invalidOption } from '../errors.js'

/** How fast failsoft notices an outage and how often it looks for the way back. */
export interface HealthTimings {
  /**
   * Deadline for opening a connection (TCP, TLS, AUTH and the ready check), in ms. Also how
   * long `ready()` can take when Redis does not answer at start-up. Default 1000.
   */
  connectTimeoutMs: number
  /**
   * A command still unanswered after this long means Redis is frozen or partitioned: the state
   * goes 'down' and every waiting command is rejected, in ms. Default 250 (a loopback round
   * trip is ~0.1 ms; a slow command on a healthy Redis rarely takes 10). This is a floor: on a
   * slow link the deadline in force is 3 × (smoothed round trip + 4 × its variation), as TCP
   * sets its retransmission timeout, so that a Redis answering in 150 ms is not an outage —
   * at most `maxCommandTimeoutMs`. The heartbeat's deadline adapts the same way (2 round
   * trips, floor `heartbeatTimeoutMs`).
   */
  commandTimeoutMs: number
  /**
   * Ceiling of the adaptive command and heartbeat deadlines, in ms: a link that slows down
   * until it stops is declared down within this. Default 2000.
   */
  maxCommandTimeoutMs: number
  /** Heartbeat period while up, on its own connection, in ms. Default 100. */
  heartbeatIntervalMs: number
  /** A heartbeat unanswered after this long means 'down', in ms. Default 250. */
  heartbeatTimeoutMs: number
  /** Probe period while down, in ms (±25 % jitter). Default 200. */
  probeIntervalMs: number
  /**
   * Deadline of one probe's connection attempt once the first decision is made, in ms.
   * Shorter than connectTimeoutMs so that a probe started during a silent partition does not
   * delay recovery by a whole connect timeout after the path heals. Default 500.
   */
  probeTimeoutMs: number
  /** Deadline for each component's recovery step, in ms. Default 5000. */
  recoveryTimeoutMs: number
  /** While down, one summary log line per this period, in ms. Default 60000. */
  summaryIntervalMs: number
}

/**
 * Worst-case detection with these defaults, on a fast link: a frozen Redis with no traffic is
 * noticed after at most heartbeatIntervalMs + heartbeatTimeoutMs (350 ms); under traffic after
 * commandTimeoutMs plus a watchdog tick (300 ms). On a slow link both deadlines grow with the
 * measured round trip, up to maxCommandTimeoutMs. Recovery: within probeTimeoutMs +
 * probeIntervalMs × 1.25 (750 ms) of Redis answering, plus the components' recovery steps.
 */
export const defaultTimings: Readonly<HealthTimings> = Object.freeze({
  connectTimeoutMs: 1000,
  commandTimeoutMs: 250,
  maxCommandTimeoutMs: 2000,
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 250,
  probeIntervalMs: 200,
  probeTimeoutMs: 500,
  recoveryTimeoutMs: 5000,
  summaryIntervalMs: 60_000,
})

const limits: Record<keyof HealthTimings, [min: number, max: number]> = {
  connectTimeoutMs: [10, 60_000],
  commandTimeoutMs: [10, 60_000],
  maxCommandTimeoutMs: [10, 600_000],
  heartbeatIntervalMs: [10, 60_000],
  heartbeatTimeoutMs: [10, 60_000],
  probeIntervalMs: [10, 60_000],
  probeTimeoutMs: [10, 60_000],
  recoveryTimeoutMs: [100, 600_000],
  summaryIntervalMs: [1000, 86_400_000],
}

export function resolveTimings(input: unknown): HealthTimings {
  if (input === undefined) return { ...defaultTimings }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('health', 'an object of timings', input)
  }
  const out: HealthTimings = { ...defaultTimings }
  for (const [key, value] of Object.entries(input)) {
    if (!Object.hasOwn(limits, key)) {
      throw invalidOption(
        `health.${key}`,
        `one of ${Object.keys(limits).join(', ')} (unknown option)`,
        value,
      )
    }
    if (value === undefined) continue
    const [min, max] = limits[key as keyof HealthTimings]
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw invalidOption(`health.${key}`, `a finite number of milliseconds`, value)
    }
    if (value < min || value > max) {
      throw invalidOption(`health.${key}`, `between ${min} and ${max} ms`, value, 'range')
    }
    out[key as keyof HealthTimings] = value
  }
  return out
}
