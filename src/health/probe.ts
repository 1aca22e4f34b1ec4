import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { RedisUnavailableError } from '../errors.js'
import { connectWithin } from '../redis/connection.js'
import { isConnectivityError, isRefusedForNow } from '../redis/replies.js'
import { withDeadline } from '../util/async.js'
import type { RedisClock } from './clock.js'
import type { EarlierSockets } from './fence.js'
import type { RttEstimator } from './rtt.js'

/** What a successful probe learned. */
export interface ProbeResult {
  /** `run_id` of the Redis process that answered (null if INFO did not say). */
  readonly runId: string | null
  /**
   * The epoch value now in Redis; null when it is missing and Redis refuses to store one now
   * (OOM at maxmemory): Redis answers, the components can use it, the epoch is created later.
   */
  readonly epoch: string | null
  /** No command this process sent before can still execute (see EarlierSockets). */
  readonly fenced: boolean
  /** The write counter now (see Watermark); null when missing or not a number. */
  readonly watermark: number | null
}

export interface ProbeDeps {
  readonly health: Redis
  readonly command: Redis
  readonly epochKey: string
  readonly watermarkKey: string
  /** Deadline of each connection attempt, in ms. */
  readonly connectDeadlineMs: number
  /** Deadline of each round trip once connected, in ms (the monitor's adaptive deadline). */
  readonly commandDeadlineMs: () => number
  readonly rtt: RttEstimator
  readonly clock: RedisClock
  readonly sockets: EarlierSockets
  /** A failure to close earlier sockets (an ACL without CLIENT ID / KILL): reported, never fatal. */
  readonly onFenceError: (error: unknown) => void
}

/**
 * One probe of a Redis that was unavailable, in as few round trips as it can: both connections
 * open at once; then one pipeline on the health connection (PING, INFO server, TIME, the epoch
 * key, the write counter); a second round trip only when the epoch key is missing (`SET NX GET`); then one pipeline
 * on the new command socket (CLIENT ID and CLIENT KILL of this process' earlier sockets, which
 * needs the run_id). Every round trip has a deadline: a partition that starts while the probe
 * waits for a reply fails this probe instead of holding every later one until TCP gives up.
 */
export async function probe(deps: ProbeDeps): Promise<ProbeResult> {
  const { health, command } = deps
  const connecting = [
    connectWithin(health, deps.connectDeadlineMs),
    connectWithin(command, deps.connectDeadlineMs),
  ]
  const settled = await Promise.allSettled(connecting)
  for (const outcome of settled) if (outcome.status === 'rejected') throw outcome.reason

  const sentAt = Date.now()
  const started = performance.now()
  const replies = await withDeadline(
    health.pipeline().ping().info('server').time().get(deps.epochKey).get(deps.watermarkKey).exec(),
    deps.commandDeadlineMs(),
    'probe',
  )
  const receivedAt = Date.now()
  deps.rtt.sampleAfterOutage(performance.now() - started)
  if (replies === null || replies.length < 5) throw new RedisUnavailableError('probe aborted')
  for (const [error] of replies) if (error) throw error
  const mark = replies[4]?.[1]
  const counted = typeof mark === 'string' ? Number(mark) : NaN
  const watermark = Number.isSafeInteger(counted) ? counted : null
  const runId = parseRunId(replies[1]?.[1])
  deps.clock.sample(replies[2]?.[1], sentAt, receivedAt)
  const found = replies[3]?.[1]
  const epoch =
    typeof found === 'string'
      ? found
      : await createEpoch(health, deps.epochKey, deps.commandDeadlineMs).catch((error: unknown) => {
          if (isRefusedForNow(error) && !isConnectivityError(error)) return null
          throw error
        })

  const fenced = await closeEarlierSockets(command, runId, deps)
  return { runId, epoch, fenced, watermark }
}

/**
 * The epoch key holds a random value written by the first process that finds it missing; a
 * process that later sees another value (or none) knows Redis lost what it had stored. One
 * round trip: `SET NX GET` (Redis ≥ 7.0) returns the value in place, or nil when it set ours.
 */
async function createEpoch(
  health: Redis,
  epochKey: string,
  deadlineMs: () => number,
): Promise<string> {
  const candidate = randomUUID()
  try {
    const previous = await withDeadline(
      health.call('SET', epochKey, candidate, 'NX', 'GET') as Promise<unknown>,
      deadlineMs(),
      'epoch',
    )
    return typeof previous === 'string' ? previous : candidate
  } catch (error) {
    // Redis before 7.0 refuses NX together with GET: two commands in one pipeline instead.
    if (!(error instanceof Error && /syntax error/i.test(error.message))) throw error
  }
  const replies = await withDeadline(
    health.pipeline().set(epochKey, candidate, 'NX').get(epochKey).exec(),
    deadlineMs(),
    'epoch',
  )
  const [failure, value] = replies?.[1] ?? [new RedisUnavailableError('epoch read aborted'), null]
  if (failure) throw failure
  if (typeof value !== 'string') throw new RedisUnavailableError('the epoch key was not kept')
  return value
}

/** The epoch value in Redis now, created if missing (one or two round trips, each with a deadline). */
export async function readEpoch(
  health: Redis,
  epochKey: string,
  deadlineMs: () => number,
): Promise<string> {
  const epoch = await withDeadline(health.get(epochKey), deadlineMs(), 'epoch')
  return epoch ?? createEpoch(health, epochKey, deadlineMs)
}

/**
 * CLIENT ID of the new command socket and CLIENT KILL of the earlier ones, in one pipeline.
 * A refusal (an ACL without these commands) or a missed deadline is reported and makes the
 * outcome "not fenced"; it never fails the probe.
 */
async function closeEarlierSockets(
  command: Redis,
  runId: string | null,
  deps: ProbeDeps,
): Promise<boolean> {
  const victims = deps.sockets.toKill(runId)
  const pipeline = command.pipeline().client('ID')
  for (const id of victims) pipeline.client('KILL', 'ID', String(id))
  let replies: Array<[Error | null, unknown]> | null = null
  try {
    replies = await withDeadline(pipeline.exec(), deps.commandDeadlineMs(), 'client kill')
  } catch (error) {
    deps.onFenceError(error)
  }
  const [idError, idReply] = replies?.[0] ?? [null, null]
  if (idError) deps.onFenceError(idError)
  const parsed = idError || idReply === null || idReply === undefined ? NaN : Number(idReply)
  const newId = Number.isInteger(parsed) && parsed > 0 ? parsed : null
  const killed = victims.map((id, i) => {
    const reply = replies?.[i + 1]
    // A socket already gone answers "No such client" (an error reply, or 0 killed): closed.
    const error = reply?.[0] ?? null
    const ok = reply !== undefined && (error === null || /no such client/i.test(error.message))
    if (reply !== undefined && !ok && error !== null) deps.onFenceError(error)
    return { id, ok }
  })
  return deps.sockets.settle(runId, newId, killed)
}

function parseRunId(info: unknown): string | null {
  if (typeof info !== 'string') return null
  return /^run_id:(\w+)/m.exec(info)?.[1] ?? null
}
