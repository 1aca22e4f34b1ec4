import {
  createFailsoft,
  type ChannelLayer,
  type ChannelLayerInput,
  type Failsoft,
  type Logger,
} from '../../src/index.js'
import type { AfterHook } from '../support/fault-kit.js'

export { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'

export interface LayerSetup {
  failsoft: Failsoft
  layer: ChannelLayer
}

/**
 * A failsoft instance with a channel layer, closed after the test. `redisUrl: null` is
 * memory-only mode; with a URL the helper waits for the first health decision.
 */
export async function makeLayer(
  t: AfterHook,
  redisUrl: string | null,
  options: ChannelLayerInput & { prefix?: string; logger?: Logger | false } = {},
): Promise<LayerSetup> {
  const { prefix, logger, ...layerOptions } = options
  const failsoft = createFailsoft({
    redis: redisUrl,
    prefix: prefix ?? uniquePrefix(),
    logger: logger ?? false,
    health: FAST_HEALTH,
  })
  t.after(() => failsoft.close())
  const layer = failsoft.channels(layerOptions)
  await failsoft.ready()
  return { failsoft, layer }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Receive with a deadline: rejects (AbortError) if nothing arrives within `ms`. */
export function receiveWithin(
  layer: ChannelLayer,
  channel: string,
  ms = 2000,
): Promise<{ type: string; [key: string]: unknown }> {
  // A ref'd timer (AbortSignal.timeout's is not): the wait alone keeps the test process alive.
  const controller = new AbortController()
  const timer = setTimeout(
    () => controller.abort(new DOMException(`nothing received within ${ms} ms`, 'TimeoutError')),
    ms,
  )
  return layer.receive(channel, { signal: controller.signal }).finally(() => clearTimeout(timer))
}

/** Collect every message arriving on a channel until `stop()`. */
export function collect(
  layer: ChannelLayer,
  channel: string,
): { messages: Array<{ type: string; [key: string]: unknown }>; stop: () => void } {
  const controller = new AbortController()
  const messages: Array<{ type: string; [key: string]: unknown }> = []
  void (async () => {
    for (;;) {
      try {
        messages.push(await layer.receive(channel, { signal: controller.signal }))
      } catch {
        return // aborted or layer closed: collection over
      }
    }
  })()
  return { messages, stop: () => controller.abort() }
}
