import type { Socket } from 'socket.io'
import { RedisUnavailableError } from '../errors.js'

/** The Socket.IO requests that need an answer from the other servers. */
export type ClusterRequestKind = 'fetchSockets' | 'serverSideEmit'

/**
 * A request that needs the other Socket.IO servers (`fetchSockets()`, `serverSideEmit()` with
 * an acknowledgement) was made while Redis is unavailable, or Redis became unavailable before
 * every server answered. It is reported at once instead of at the request timeout.
 *
 * `code` is `FAILSOFT_REDIS_UNAVAILABLE` (it is a `RedisUnavailableError`). `localSockets`
 * holds this server's matching sockets (for `fetchSockets`), so a caller that can live with a
 * partial view can use them: `catch (e) { if (e instanceof ClusterUnavailableError) use(e.localSockets) }`.
 * For `serverSideEmit`, the acknowledgement receives this error and the responses received so
 * far, as it receives Socket.IO's own timeout error.
 */
export class ClusterUnavailableError extends RedisUnavailableError {
  readonly operation: ClusterRequestKind
  /** This server's sockets matching the request (`fetchSockets` only; empty otherwise). */
  readonly localSockets: Socket[]

  constructor(operation: ClusterRequestKind, localSockets: Socket[] = []) {
    super(
      `Socket.IO ${operation}(): the other servers cannot be reached while Redis is unavailable; ` +
        (operation === 'fetchSockets'
          ? `${localSockets.length} local socket(s) in error.localSockets`
          : 'the event reaches them once Redis is back, their answers are not awaited'),
      { details: { operation, localSockets: localSockets.length } },
    )
    this.operation = operation
    this.localSockets = localSockets
  }
}
