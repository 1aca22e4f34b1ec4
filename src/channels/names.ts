import { randomBytes } from 'node:crypto'
import { InvalidNameError } from '../errors.js'

/**
 * Channels' naming rule (django/channels `layers.py`): ASCII letters, digits, `-`, `_`, `.`,
 * fewer than 100 characters. A channel name may carry one `!`: the part before it (the
 * "non-local" part) routes to a process, the part after it names a channel inside that process.
 * Python's `\w` after the `!` is Unicode-aware; failsoft keeps the whole name ASCII so every
 * name is also a safe Redis channel name and log field.
 */
export const MAX_NAME_LENGTH = 100

const CHANNEL_NAME = /^[a-zA-Z0-9\-_.]+(![a-zA-Z0-9\-_.]*)?$/
const GROUP_NAME = /^[a-zA-Z0-9\-_.]+$/
const PREFIX_NAME = /^[a-zA-Z0-9\-_.]+$/

export function assertChannelName(name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new InvalidNameError('channel', name, 'not a string')
  if (name.length >= MAX_NAME_LENGTH) {
    throw new InvalidNameError(
      'channel',
      name,
      `must be shorter than ${MAX_NAME_LENGTH} characters`,
    )
  }
  if (!CHANNEL_NAME.test(name)) {
    throw new InvalidNameError(
      'channel',
      name,
      'only ASCII letters, digits, "-", "_", "." and at most one "!" are allowed',
    )
  }
}

export function assertGroupName(name: unknown): asserts name is string {
  if (typeof name !== 'string') throw new InvalidNameError('group', name, 'not a string')
  if (name.length >= MAX_NAME_LENGTH) {
    throw new InvalidNameError('group', name, `must be shorter than ${MAX_NAME_LENGTH} characters`)
  }
  if (!GROUP_NAME.test(name)) {
    throw new InvalidNameError(
      'group',
      name,
      'only ASCII letters, digits, "-", "_" and "." are allowed',
    )
  }
}

export function assertChannelPrefix(prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string' || !PREFIX_NAME.test(prefix) || prefix.length > 60) {
    throw new InvalidNameError(
      'channel',
      prefix,
      'a newChannel prefix must be 1-60 ASCII letters, digits, "-", "_" or "."',
    )
  }
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'

/** A random identifier of ASCII letters and digits (never `.`, so it is one name segment). */
export function randomId(length: number): string {
  const bytes = randomBytes(length)
  let out = ''
  // 62 symbols: the modulo bias (256 % 62) is irrelevant for routing identifiers.
  for (const byte of bytes) out += ALPHABET[byte % ALPHABET.length]
  return out
}

/**
 * The process that owns a specific channel: the last `.`-separated segment before the `!`
 * (`specific.<processId>!<local>`), or null for a name without `!` (a normal channel).
 */
export function ownerOf(channel: string): string | null {
  const bang = channel.indexOf('!')
  if (bang < 0) return null
  const dot = channel.lastIndexOf('.', bang)
  return channel.slice(dot + 1, bang)
}
