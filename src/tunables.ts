/**
 * The timing constants whose values depend on each other or on the options' defaults, in one
 * place, each with the reason for its value. They are not options: changing one means checking
 * the others named beside it. (Sizes of batches and buffers stay with the code that uses them.)
 */

// ── health ───────────────────────────────────────────────────────────────────────────────────

/**
 * After a probe that timed out, the next one starts this soon (ms), not a whole probe interval
 * later: it has already waited its deadline, so this is no tight loop, and a partition that has
 * just healed is seen at once. (Was 1 s of a 1 s recovery budget in one blackhole run.)
 */
export const PROBE_RETRY_AFTER_TIMEOUT_MS = 20

// ── tasks ────────────────────────────────────────────────────────────────────────────────────

/**
 * A rollback (Redis forgot writes it acknowledged: see health/watermark.ts) re-adds the jobs
 * this process handed to Redis in this window (ms), at most 10 000 of them, and re-writes the
 * done markers of the tasks its workers completed in it. A rollback that reaches further back
 * — an RDB snapshot minutes old — is detected and logged, but older jobs are not known here.
 */
export const ROLLBACK_WINDOW_MS = 60_000

/**
 * Jobs re-added after a rollback wait this long (ms) before a worker takes them, so that the
 * workers that completed them — in any process — have written their done markers again first
 * (each does in its own recovery step, within about a probe interval of Redis answering).
 */
export const ROLLBACK_REPLAY_DELAY_MS = 2000

/**
 * A worker whose process has just reconciled a rollback or a reset claims nothing for this
 * long (ms): the jobs Redis still holds could be handed out before the other processes, back
 * within about a probe interval of this one, have written their lost markers and leases again.
 * Shorter than ROLLBACK_REPLAY_DELAY_MS: every restart with AOF `everysec` loses a heartbeat
 * or two (a rollback), and each one pauses the workers this long.
 */
export const ROLLBACK_CLAIM_HOLD_MS = 1000

/**
 * Spool replay per recovery round (ms). Well under `recoveryTimeoutMs` (5000 by default), so one
 * queue's backlog never fails its recovery step; the monitor runs another round while work
 * remains (needsRecovery), and the other components' steps run beside it.
 */
export const REPLAY_BUDGET_MS = 1500

/**
 * A worker whose lease renewals have not reached Redis for this many lease periods asks its
 * handler to stop (LeaseLostError). Another run can take the lease two periods after the last
 * renewal (the takeover needs one period of silence, then one more after it was first seen), so
 * 1.5 leaves the handler half a period to stop first.
 */
export const LEASE_ABORT_PERIODS = 1.5

/**
 * An inline try that timed out is waited for this long (ms) before the next try: a handler that
 * honours its signal ends within it; one still running after it is not tried again beside it.
 */
export const SETTLE_GRACE_MS = 1000

/**
 * While Redis is up, spool journals left by processes that died are looked for this often (ms):
 * a process that dies while the others run must not wait for one to restart.
 */
export const ORPHAN_RESCAN_MS = 10_000

/**
 * A spool lock's owner touches it this often (ms); a lock written on another host is stale once
 * untouched for LOCK_STALE_MS — six touches missed, far more than a GC pause or a busy disk.
 */
export const LOCK_TOUCH_MS = 10_000
export const LOCK_STALE_MS = 60_000

// ── cache ────────────────────────────────────────────────────────────────────────────────────

/**
 * Peer wait: instances whose last clean mark is older than this instance's own last one (before
 * its outage) by more than this (ms) were not alive then and are not waited for — nor, by an
 * instance that starts, those older than the namespace's calm time by more than this (the calm
 * time is the start of an outage of every instance, however long it lasts: cache/redis-store.ts,
 * calmKey). Far longer than a clean mark's period (`generationCheckMs`, 200).
 */
export const PEER_ALIVE_MS = 10_000

/** Peer wait: the other instances' marks are counted this often (ms) while waiting. */
export const PEER_POLL_MS = 25

// ── channels ─────────────────────────────────────────────────────────────────────────────────

/**
 * Gap repair: a range asked of a publisher and not answered within this (ms) is asked again;
 * after RANGE_TRIES asks that the publisher should have answered (it showed it receives asks
 * since: repair.ts), it is given up (counted lost). A publisher answers in one round trip when
 * it is up; one that is down flushes its own outbox and announces its heads when it is back.
 */
export const RANGE_TIMEOUT_MS = 1000
export const RANGE_TRIES = 2

/**
 * A pending range is asked again at once when the publisher shows up (its heads) or this
 * process is back on Redis — unless it was asked less than this (ms) ago: that ask is still on
 * its way, and a second one makes the publisher send the whole range twice (a test saw 20
 * duplicates when the publisher's answer to `hello` and its own heads after its flush came
 * together). A lost ask is asked again by the periodic tick (RANGE_TIMEOUT_MS).
 */
export const REASK_MIN_AGE_MS = 250

/**
 * A message from another process that finds its channel full waits this long (ms) for the
 * receiver to make room before it is skipped (memory-layer.ts, the backlog). A receiver that
 * takes nothing for this long is not keeping up; one that awaits `receive` in a loop drains a
 * burst (an outbox flushed at recovery, a repair) in one event-loop turn.
 */
export const BACKLOG_WAIT_MS = 5000

/**
 * After Sentinel announces a new primary, a probe that reaches the one it replaced (asked of a
 * Sentinel that has not heard of the switch yet) is refused for this long (monitor.ts).
 */
export const DEMOTED_REFUSE_MS = 10_000

/**
 * A cache created while Redis is up waits for the peers silent for longer than this (ms, or 3 ×
 * its generationCheckMs if longer) and marked within PEER_ALIVE_MS before the namespace's calm
 * time: they may be in an outage of their own, or dead, with changes Redis has not seen
 * (cache.ts, #syncWhileUp). A mark is scored with the time it was issued, not its arrival, so a
 * mark delivered late does not make a peer look alive.
 */
export const PEER_SILENT_MS = 1000

/**
 * A cross-process group message that arrives this long (ms, Redis' clock) after it was sent
 * (an outbox flush, a repair) is not delivered to the members that joined after it was sent;
 * one that arrives sooner is live, and reaches every member (memory-layer.ts).
 */
export const LATE_ARRIVAL_MS = 250

/**
 * How far two processes' estimates of Redis' clock may differ (ms): a member that joined less
 * than this after a late message was sent still gets it (memory-layer.ts).
 */
export const JOIN_MARGIN_MS = 100
