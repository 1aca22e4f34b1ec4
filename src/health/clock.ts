/**
 * Redis' clock as seen from this process: every process of an application measures its
 * offset to the same server clock (`TIME`), so that times they exchange (when a message was
 * sent, when a membership started) compare without trusting their own clocks to agree — a
 * host a few seconds off would otherwise expire every message another host sends it, or keep
 * them too long. While Redis is unreachable the last offset stands (clocks drift by
 * milliseconds per hour, not seconds); before the first measurement the offset is 0.
 */
export class RedisClock {
  #offsetMs: number | null = null
  #bestRttMs = Infinity
  #measuredAt = -Infinity

  /** Redis' clock minus this process' clock, in ms; null before the first measurement. */
  get offsetMs(): number | null {
    return this.#offsetMs
  }

  /** Now on Redis' clock (ms since the epoch), as estimated here. */
  now(): number {
    return Date.now() + (this.#offsetMs ?? 0)
  }

  /** A process-local time (`Date.now()` here) expressed on Redis' clock. */
  toRedis(localMs: number): number {
    return localMs + (this.#offsetMs ?? 0)
  }

  /**
   * A `TIME` reply and the local times just before sending it and just after its reply. The
   * server's time is taken as the midpoint; samples with a long round trip are less exact and
   * only replace a better one after a while (the offset still tracks slow drift).
   */
  sample(reply: unknown, sentAt: number, receivedAt: number): void {
    if (!Array.isArray(reply) || reply.length < 2) return
    const seconds = Number(reply[0])
    const micros = Number(reply[1])
    if (!Number.isFinite(seconds) || !Number.isFinite(micros)) return
    const server = seconds * 1000 + micros / 1000
    const rtt = Math.max(0, receivedAt - sentAt)
    const stale = receivedAt - this.#measuredAt > RESAMPLE_AFTER_MS
    if (this.#offsetMs !== null && rtt > this.#bestRttMs * 2 && !stale) return
    this.#offsetMs = Math.round(server - (sentAt + receivedAt) / 2)
    this.#bestRttMs = stale ? rtt : Math.min(this.#bestRttMs, rtt)
    this.#measuredAt = receivedAt
  }
}

/** A measurement older than this is replaced by the next one, however long its round trip. */
const RESAMPLE_AFTER_MS = 60_000
