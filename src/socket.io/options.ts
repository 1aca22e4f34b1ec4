import { invalidOption } from '../errors.js'
import type { ChannelLayerInput } from '../channels/options.js'

/** Options of `createAdapter(failsoft, options)`. */
export interface FailsoftAdapterOptions {
  /**
   * Prefix of the channel-layer groups the servers share, one per namespace
   * (`<key>.<namespace digest>`), as `@socket.io/redis-adapter`'s `key`: servers with
   * different keys do not see each other. 1-40 ASCII letters, digits, `-`, `_`, `.`.
   * Default `'socket.io'`.
   */
  key?: string
  /**
   * How long `fetchSockets()` (without `.timeout()`) and `serverSideEmit()` with an
   * acknowledgement wait for the other servers, ms. Default 5000. socket.io-adapter's cluster
   * adapter caps `serverSideEmit` at its own 5000 ms, so a longer value only applies to
   * `fetchSockets`.
   */
  requestsTimeout?: number
  /** ms between two heartbeats of a namespace when it publishes nothing else. Default 5000. */
  heartbeatInterval?: number
  /**
   * A server not heard of for this long (ms) while Redis is available is dropped from the
   * servers requests wait for. Time while Redis is unavailable does not count. Default 10000.
   */
  heartbeatTimeout?: number
  /**
   * Options of the channel layer the adapter uses (`failsoft.channels(...)`): its `name`
   * (default `'socket.io'`), message size and outbox bounds. Every adapter of one failsoft
   * instance with the same layer name shares that layer.
   */
  channels?: ChannelLayerInput
  /**
   * Accepted for a drop-in migration from `@socket.io/redis-adapter` and ignored: responses
   * always go to the requesting server's own channel.
   */
  publishOnSpecificResponseChannel?: boolean
}

export interface ResolvedAdapterOptions {
  readonly key: string
  readonly requestsTimeout: number
  readonly heartbeatInterval: number
  readonly heartbeatTimeout: number
  readonly channels: ChannelLayerInput & { name: string }
}

export const defaultAdapterOptions = Object.freeze({
  key: 'socket.io',
  requestsTimeout: 5000,
  heartbeatInterval: 5000,
  heartbeatTimeout: 10_000,
  layerName: 'socket.io',
})

const KEY = /^[a-zA-Z0-9\-_.]{1,40}$/
const MAX_MS = 3_600_000

function milliseconds(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalidOption(option, 'a finite number of milliseconds', value)
  }
  if (value < 1 || value > MAX_MS) {
    throw invalidOption(option, `between 1 and ${MAX_MS} ms`, value, 'range')
  }
  return value
}

export function resolveAdapterOptions(input: unknown): ResolvedAdapterOptions {
  if (input === undefined) input = {}
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('socket.io adapter options', 'an options object', input)
  }
  const known = new Set([
    'key',
    'requestsTimeout',
    'heartbeatInterval',
    'heartbeatTimeout',
    'channels',
    'publishOnSpecificResponseChannel',
  ])
  for (const [name, value] of Object.entries(input)) {
    if (!known.has(name)) {
      throw invalidOption(name, `one of ${[...known].join(', ')} (unknown option)`, value)
    }
  }
  const options = input as FailsoftAdapterOptions
  const key = options.key ?? defaultAdapterOptions.key
  if (typeof key !== 'string' || !KEY.test(key)) {
    throw invalidOption('key', '1-40 ASCII letters, digits, "-", "_" or "."', key)
  }
  const channels = options.channels ?? {}
  if (typeof channels !== 'object' || channels === null || Array.isArray(channels)) {
    throw invalidOption('channels', 'channel layer options', channels)
  }
  const heartbeatInterval = milliseconds(
    'heartbeatInterval',
    options.heartbeatInterval,
    defaultAdapterOptions.heartbeatInterval,
  )
  const heartbeatTimeout = milliseconds(
    'heartbeatTimeout',
    options.heartbeatTimeout,
    defaultAdapterOptions.heartbeatTimeout,
  )
  if (heartbeatTimeout <= heartbeatInterval) {
    throw invalidOption(
      'heartbeatTimeout',
      `longer than heartbeatInterval (${heartbeatInterval} ms)`,
      heartbeatTimeout,
      'range',
    )
  }
  return {
    key,
    requestsTimeout: milliseconds(
      'requestsTimeout',
      options.requestsTimeout,
      defaultAdapterOptions.requestsTimeout,
    ),
    heartbeatInterval,
    heartbeatTimeout,
    channels: { ...channels, name: channels.name ?? defaultAdapterOptions.layerName },
  }
}
