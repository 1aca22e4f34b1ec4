import {
  createFailsoft,
  type ChannelLayer,
  type ChannelLayerInput,
  type Failsoft,
  type Logger,
} from '../../src/index.js'
import {
  startProxy,
  startRedis,
  waitFor,
  type AfterHook,
  type RedisServer,
  type TcpProxy,
} from '../support/fault-kit.js'

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

/**
 * A sender and a receiver on one Redis, one of them (`cut`) through a proxy the test can
 * blackhole; the receiver's channel is in group 'room' and has received one live message
 * ({ type: 'before', n: -1 }), so both are known to work before the fault.
 */
export async function proxiedPair(
  t: AfterHook,
  cut: 'receiver' | 'sender' = 'receiver',
  layerOptions: ChannelLayerInput = {},
): Promise<{
  server: RedisServer
  proxy: TcpProxy
  prefix: string
  sender: LayerSetup
  receiver: LayerSetup
  /** The receiver's channel, member of 'room'. */
  channel: string
  got: ReturnType<typeof collect>
}> {
  const server = await startRedis(t)
  const prefix = uniquePrefix()
  const proxy = await startProxy(t, server)
  const url = (side: 'receiver' | 'sender'): string =>
    side === cut ? proxy.urlFor(server) : server.url
  const sender = await makeLayer(t, url('sender'), { ...layerOptions, prefix })
  const receiver = await makeLayer(t, url('receiver'), { ...layerOptions, prefix })
  const channel = await receiver.layer.newChannel()
  await receiver.layer.groupAdd('room', channel)
  const got = collect(receiver.layer, channel)
  await sender.layer.groupSend('room', { type: 'before', n: -1 })
  await waitFor(() => got.messages.length === 1, { message: 'live delivery first' })
  return { server, proxy, prefix, sender, receiver, channel, got }
}
