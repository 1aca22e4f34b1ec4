import type { InFlightCommands } from './in-flight.js'

export interface WatchdogDeps {
  readonly inFlight: InFlightCommands
  /** The current command deadline (adapts to the measured round trip), ms. */
  readonly deadlineMs: () => number
  /** How often the oldest command is looked at, ms. */
  readonly everyMs: number
  /** A command waited longer than the deadline: Redis is taken for down. */
  readonly onOverdue: (limitMs: number) => void
}

/**
 * The command watchdog: a frozen Redis sends nothing — no error, no close — so under traffic
 * the age of the oldest command still waiting (InFlightCommands) is what tells. Looked at
 * every `everyMs`; a timer that fires late because the event loop was busy may find a reply
 * already waiting in the socket, so an overdue command is confirmed after the poll phase
 * (setImmediate) before it counts.
 */
export class CommandWatchdog {
  readonly #deps: WatchdogDeps
  readonly #timer: NodeJS.Timeout

  constructor(deps: WatchdogDeps) {
    this.#deps = deps
    this.#timer = setInterval(() => this.#look(), deps.everyMs)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  #look(): void {
    const { inFlight, onOverdue } = this.#deps
    const limit = this.#deps.deadlineMs()
    if (inFlight.oldestMs() <= limit) return
    setImmediate(() => {
      if (inFlight.oldestMs() > limit) onOverdue(limit)
    })
  }
}
