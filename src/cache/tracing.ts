import type { CacheOperationMessage, Traced } from '../diagnostics/channels.js'
import { traceOperation } from '../diagnostics/publish.js'
import type { Health } from '../health/types.js'

/**
 * A cache operation traced on its diagnostics channel (`failsoft:cache.<operation>`). Called
 * only when something subscribes (`t.active`), so the message costs nothing otherwise.
 */
export function traceCacheOperation<R>(
  t: Traced<CacheOperationMessage>,
  health: Health,
  cache: { readonly namespace: string },
  key: string | null,
  run: () => Promise<R>,
): Promise<R> {
  const operation = t.name.slice('failsoft:cache.'.length) as CacheOperationMessage['operation']
  return traceOperation(t, { health, operation, namespace: cache.namespace, key }, run)
}
