import type { ChannelLayer } from '../channels/layer.js'
import type { ChannelLayerInput } from '../channels/options.js'
import type { Failsoft } from '../failsoft.js'

interface Registered {
  readonly layer: ChannelLayer
  /** The options it was created with, to tell a repeated call from a conflicting one. */
  readonly options: string
}

const layers = new WeakMap<Failsoft, Map<string, Registered>>()

/**
 * The channel layer the adapters of one failsoft instance use: created by the first
 * `createAdapter` (several Socket.IO servers in one process may each call it with the same
 * options) and shared afterwards. `failsoft.channels()` refuses options on a second call, so
 * the layer is remembered here; different options for the same layer name are refused the
 * same way (RangeError).
 */
export function layerFor(
  failsoft: Failsoft,
  options: ChannelLayerInput & { name: string },
): ChannelLayer {
  let byName = layers.get(failsoft)
  if (byName === undefined) {
    byName = new Map()
    layers.set(failsoft, byName)
  }
  const key = stableJson(options)
  const existing = byName.get(options.name)
  if (existing !== undefined && !existing.layer.closed) {
    if (existing.options !== key) {
      throw new RangeError(
        `failsoft/socket.io: the channel layer "${options.name}" already exists with other options; pass the same channels options to every createAdapter() call`,
      )
    }
    return existing.layer
  }
  const layer = failsoft.channels(options)
  byName.set(options.name, { layer, options: key })
  return layer
}

function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    typeof item === 'object' && item !== null && !Array.isArray(item)
      ? Object.fromEntries(Object.entries(item).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : item,
  )
}
