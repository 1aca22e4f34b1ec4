/**
 * The one reading of Redis' error replies, for every component. An error is one of:
 *
 * - not a reply at all (a closed socket, a timeout, a refused connection): Redis, or the path to
 *   it, is unavailable;
 * - a reply that says the server cannot serve now — loading its data set, a script running too
 *   long, a replica promoted away from us or cut off from its primary, a cluster slot not served,
 *   credentials refused: as good as unavailable (`unavailable`);
 * - a reply that refuses this write for now while the server serves reads (memory full at
 *   `maxmemory` with `noeviction`, not enough replicas for `min-replicas-to-write`): retry the
 *   write later, the server is alive (`refusedForNow`);
 * - anything else (WRONGTYPE, NOPERM, a script error…): about this one command.
 */
const UNAVAILABLE = new Set([
  'LOADING',
  'BUSY',
  'MASTERDOWN',
  'TRYAGAIN',
  'CLUSTERDOWN',
  'READONLY',
  'NOAUTH',
  'WRONGPASS',
])
const REFUSED_FOR_NOW = new Set(['OOM', 'NOREPLICAS'])

/** True for an error reply from Redis (as opposed to a connection failure or a timeout). */
export function isReplyError(error: unknown): error is Error {
  return error instanceof Error && error.name === 'ReplyError'
}

/** The first word of a reply error (`OOM`, `READONLY` …), or null for anything else. */
export function replyCode(error: unknown): string | null {
  if (!isReplyError(error)) return null
  return /^[A-Z]+/.exec(error.message)?.[0] ?? null
}

/**
 * True when an error says Redis (or the path to it) is unavailable, as opposed to a command
 * error such as WRONGTYPE or OOM, which concerns one command and says the server is alive.
 */
export function isConnectivityError(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  if (!isReplyError(error)) return true
  return UNAVAILABLE.has(replyCode(error) ?? '')
}

/** Redis answered that it cannot take this write now (OOM, BUSY, LOADING…): retry it later. */
export function isRefusedForNow(error: unknown): boolean {
  const code = replyCode(error)
  return code !== null && (UNAVAILABLE.has(code) || REFUSED_FOR_NOW.has(code))
}

/** Memory full at `maxmemory` (with `noeviction`): writes refused, reads served. */
export function isOutOfMemory(error: unknown): boolean {
  return replyCode(error) === 'OOM'
}
