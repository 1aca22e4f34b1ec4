/**
 * `failsoft/socket.io`: a Socket.IO adapter on failsoft's channel layer, in place of
 * `@socket.io/redis-adapter`. Built on socket.io-adapter's own cluster adapter
 * (`ClusterAdapterWithHeartbeat`), so rooms, broadcasts (with acknowledgements),
 * `fetchSockets`, `socketsJoin/Leave`, `disconnectSockets` and `serverSideEmit` behave as with
 * the official adapters; while Redis is down this server's clients keep being served,
 * cross-server messages wait in the layer's bounded outbox and arrive after recovery, once and
 * in order, and requests that need the other servers fail fast (ClusterUnavailableError).
 *
 * ```ts
 * import { Server } from 'socket.io'
 * import { createFailsoft } from 'failsoft'
 * import { createAdapter } from 'failsoft/socket.io'
 *
 * const failsoft = createFailsoft({ redis: process.env.REDIS_URL })
 * const io = new Server(httpServer)
 * io.adapter(createAdapter(failsoft))
 * ```
 *
 * Needs `socket.io-adapter` (installed with `socket.io`), an optional peer dependency of
 * failsoft: nothing else in failsoft imports it. See docs/socket.io.md.
 */
import type { Namespace } from 'socket.io'
import type { Failsoft } from './failsoft.js'
import { FailsoftAdapter } from './socket.io/adapter.js'
import { layerFor } from './socket.io/layer-registry.js'
import { resolveAdapterOptions, type FailsoftAdapterOptions } from './socket.io/options.js'

export { FailsoftAdapter, groupFor } from './socket.io/adapter.js'
export type { FailsoftAdapterStatus } from './socket.io/adapter.js'
export { ClusterUnavailableError } from './socket.io/errors.js'
export type { ClusterRequestKind } from './socket.io/errors.js'
export { defaultAdapterOptions } from './socket.io/options.js'
export type { FailsoftAdapterOptions } from './socket.io/options.js'

/**
 * The adapter factory for `io.adapter(...)`: one FailsoftAdapter per namespace, all on the
 * channel layer `options.channels.name` (`'socket.io'`) of `failsoft`. Every server of the
 * cluster needs its own failsoft instance on the same Redis, with the same failsoft `prefix`,
 * layer name and `key`. Invalid options throw here (`FAILSOFT_INVALID_OPTION`).
 */
export function createAdapter(
  failsoft: Failsoft,
  options?: FailsoftAdapterOptions,
): (nsp: Namespace) => FailsoftAdapter {
  const resolved = resolveAdapterOptions(options)
  const layer = layerFor(failsoft, resolved.channels)
  // A function, not an arrow: Socket.IO calls it with `new` (a constructor returning an object).
  return function failsoftAdapter(nsp: Namespace): FailsoftAdapter {
    return new FailsoftAdapter(nsp, { failsoft, layer, options: resolved })
  }
}
