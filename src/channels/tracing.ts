import type { ChannelOperationMessage, Traced } from '../diagnostics/channels.js'
import { traceOperation } from '../diagnostics/publish.js'
import type { Health } from '../health/types.js'

/**
 * A channel-layer operation traced on its diagnostics channel (`failsoft:channels.<operation>`).
 * Called only when something subscribes (`t.active`).
 */
export function traceLayerOperation<R>(
  t: Traced<ChannelOperationMessage>,
  health: Health,
  layer: { readonly name: string },
  target: string,
  run: () => Promise<R>,
): Promise<R> {
  const operation = t.name.slice(
    'failsoft:channels.'.length,
  ) as ChannelOperationMessage['operation']
  return traceOperation(t, { health, operation, layer: layer.name, target }, run)
}
