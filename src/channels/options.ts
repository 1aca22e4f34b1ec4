import { invalidOption } from '../errors.js'

/** Options of `failsoft.channels(options)`. Every field is optional. */
export interface ChannelLayerOptions {
  /**
   * Layer name: the component is registered as `channels:<name>` and its Redis pub/sub
   * channels are `<prefix>:ch:<name>:…`, so two layers never see each other's messages.
   * Default 'default'.
   */
  name: string
  /**
   * Messages a channel's receive buffer holds before `send` throws ChannelFullError and
   * `groupSend` skips that member (counted), per channel. Default 100 (Channels' default).
   */
  capacity: number
  /** Messages older than this are dropped when received, in seconds. Default 60. */
  expirySeconds: number
  /**
   * A group membership not refreshed by `groupAdd` for this long is dropped, in seconds.
   * Memberships held by a live WebSocket consumer do not expire. Default 86400 (one day).
   */
  groupExpirySeconds: number
  /** Largest message accepted, as UTF-8 JSON bytes. Default 1048576 (1 MiB). */
  maxMessageBytes: number
  /**
   * Cross-process messages kept while Redis is unavailable, flushed once Redis is back and
   * every topic is re-subscribed — and, within the same bounds, every message sent, kept for
   * receivers that missed it (gap repair). Oldest dropped first at each bound (counted).
   */
  outbox: {
    /** Messages. Default 10000. */
    maxMessages: number
    /** Sum of message sizes (UTF-16 code units of the wire payload ~ bytes). Default 8388608 (8 MiB). */
    maxBytes: number
    /** A buffered message older than this is dropped instead of sent late, in ms. Default 30000. */
    maxAgeMs: number
  }
  /**
   * After an outage, cross-process publishes wait this long before the outbox is flushed, in
   * ms. Not needed for delivery: a process that re-subscribes after the flush asks for what it
   * missed from this process' retention (the outbox's bounds). A short wait only saves that
   * repair round trip when every process comes back at about the same time. Default 0.
   */
  settleMs: number
  /**
   * Publishes awaiting Redis' reply above which `send`/`groupSend` wait for replies before
   * returning (backpressure for tight loops; bounds memory). Default 2048.
   */
  maxInFlight: number
}

export const defaultChannelLayerOptions: Readonly<ChannelLayerOptions> = Object.freeze({
  name: 'default',
  capacity: 100,
  expirySeconds: 60,
  groupExpirySeconds: 86_400,
  maxMessageBytes: 1024 * 1024,
  outbox: Object.freeze({ maxMessages: 10_000, maxBytes: 8 * 1024 * 1024, maxAgeMs: 30_000 }),
  settleMs: 0,
  maxInFlight: 2048,
})

/** What `failsoft.channels()` accepts: every field optional, `outbox` partial too. */
export type ChannelLayerInput = Partial<Omit<ChannelLayerOptions, 'outbox'>> & {
  outbox?: Partial<ChannelLayerOptions['outbox']>
}

type NumericKey = Exclude<keyof ChannelLayerOptions, 'name' | 'outbox'>

const ranges: Record<NumericKey, [min: number, max: number, integer: boolean]> = {
  capacity: [1, 1_000_000, true],
  expirySeconds: [0.001, 86_400 * 365, false],
  groupExpirySeconds: [0.001, 86_400 * 3650, false],
  maxMessageBytes: [64, 512 * 1024 * 1024, true],
  settleMs: [0, 60_000, false],
  maxInFlight: [1, 1_000_000, true],
}

const outboxRanges: Record<keyof ChannelLayerOptions['outbox'], [number, number, boolean]> = {
  maxMessages: [0, 10_000_000, true],
  maxBytes: [0, 4 * 1024 * 1024 * 1024, true],
  maxAgeMs: [0, 86_400_000, false],
}

function checkNumber(
  option: string,
  value: unknown,
  [min, max, integer]: [number, number, boolean],
) {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalidOption(option, integer ? 'a finite integer' : 'a finite number', value)
  }
  if (integer && !Number.isInteger(value)) throw invalidOption(option, 'an integer', value, 'range')
  if (value < min || value > max) {
    throw invalidOption(option, `between ${min} and ${max}`, value, 'range')
  }
}

export function resolveChannelLayerOptions(input: unknown): ChannelLayerOptions {
  const out: ChannelLayerOptions = {
    ...defaultChannelLayerOptions,
    outbox: { ...defaultChannelLayerOptions.outbox },
  }
  if (input === undefined) return out
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalidOption('channels', 'an options object', input)
  }
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue
    if (key === 'name') {
      if (typeof value !== 'string' || !/^[a-zA-Z0-9\-_.]{1,40}$/.test(value)) {
        throw invalidOption('channels.name', '1-40 ASCII letters, digits, "-", "_" or "."', value)
      }
      out.name = value
    } else if (key === 'outbox') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw invalidOption('channels.outbox', 'an object', value)
      }
      for (const [sub, subValue] of Object.entries(value)) {
        if (subValue === undefined) continue
        if (!Object.hasOwn(outboxRanges, sub)) {
          throw invalidOption(
            `channels.outbox.${sub}`,
            `one of ${Object.keys(outboxRanges).join(', ')} (unknown option)`,
            subValue,
          )
        }
        const name = sub as keyof ChannelLayerOptions['outbox']
        checkNumber(`channels.outbox.${sub}`, subValue, outboxRanges[name])
        out.outbox[name] = subValue as number
      }
    } else if (Object.hasOwn(ranges, key)) {
      checkNumber(`channels.${key}`, value, ranges[key as NumericKey])
      out[key as NumericKey] = value as number
    } else {
      throw invalidOption(
        `channels.${key}`,
        `one of name, outbox, ${Object.keys(ranges).join(', ')} (unknown option)`,
        value,
      )
    }
  }
  return out
}
