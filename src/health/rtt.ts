/**
 * The round trip to Redis, smoothed as TCP does for its retransmission timeout (RFC 6298:
 * SRTT and RTTVAR with gains 1/8 and 1/4), from samples of single commands on an idle
 * connection (the heartbeat and the probe's PING), so that it measures the path and Redis,
 * not a pipeline queued behind other work.
 *
 * The command deadline follows it: a slow but answering Redis (a link at 150 ms) must not be
 * taken for a frozen one, and a frozen one must still be noticed. A deadline is the configured
 * floor, or ROUND_TRIPS × (SRTT + 4 × RTTVAR) when that is more — several round trips because
 * one failsoft operation can legitimately take more than one (a Lua script's first use is
 * EVALSHA, NOSCRIPT, then EVAL) — capped so that a link degrading slowly into a freeze is
 * still declared down within the cap.
 */
export class RttEstimator {
  #srtt: number | null = null
  #rttvar = 0

  /** Smoothed round trip in ms, null before the first sample. */
  get srttMs(): number | null {
    return this.#srtt
  }

  sample(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    if (this.#srtt === null) {
      this.#srtt = ms
      this.#rttvar = ms / 2
      return
    }
    this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - ms)
    this.#srtt = 0.875 * this.#srtt + 0.125 * ms
  }

  /**
   * A sample from the probe, after an outage: a link that became slow in one step (a route
   * change, a congested path) was taken for a freeze once — its first slow reply missed a
   * deadline set by the fast samples before. The probe's round trip, when it is far above what
   * the estimate expects, restarts the estimate from it, so that Redis is not declared down
   * again at the next heartbeat (TCP restarts its estimate after a retransmission timeout).
   */
  sampleAfterOutage(ms: number): void {
    if (this.#srtt !== null && ms <= 2 * (this.#srtt + 4 * this.#rttvar)) {
      this.sample(ms)
      return
    }
    if (!Number.isFinite(ms) || ms < 0) return
    this.#srtt = ms
    this.#rttvar = ms / 2
  }

  /** The deadline for an operation of up to `roundTrips` round trips, within [floor, max]. */
  deadline(floorMs: number, maxMs: number, roundTrips = ROUND_TRIPS): number {
    if (this.#srtt === null) return floorMs
    const adaptive = roundTrips * (this.#srtt + 4 * this.#rttvar)
    return Math.round(Math.min(Math.max(floorMs, adaptive), Math.max(floorMs, maxMs)))
  }
}

/** Round trips one component operation may take on a healthy Redis (see the class comment). */
export const ROUND_TRIPS = 3
