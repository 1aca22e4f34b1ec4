import { createHash } from 'node:crypto'
import { invalidOption } from '../errors.js'

/**
 * Which failsoft cache namespace holds a Keyv namespace. Deterministic, so every process maps
 * a Keyv namespace to the same cache (and so to the same Redis keys):
 *
 * - `<prefix>.<keyv namespace>` when that is a valid failsoft namespace (letters, digits,
 *   `-_.`, at most 64 characters): Keyv's default namespace `keyv` is the cache `keyv.keyv`,
 *   `sessions` is `keyv.sessions`. With the prefix `''`, the Keyv namespace itself.
 * - otherwise (another character, such as `:` or a space, or too long) an escaped form:
 *   `<prefix>.<the name with every other character as "_", cut short>--<16 hex digits of the
 *   name's SHA-256>`, e.g. `app:sessions` → `keyv.app_sessions--3f7c…`. Two Keyv namespaces
 *   could only share a cache if one were spelled exactly as the other's escaped form.
 * - no namespace (a Keyv created with `namespace: undefined`, or `''`): the prefix alone, or
 *   `keyv` with the prefix `''`.
 *
 * The prefix keeps the caches of Keyv apart from the application's own failsoft caches: the
 * same namespace with other options or another serializer would be refused by `failsoft.cache`.
 */

export const DEFAULT_NAMESPACE_PREFIX = 'keyv'

const VALID = /^[A-Za-z0-9_.-]{1,64}$/
const PREFIX = /^[A-Za-z0-9_.-]{1,40}$/
const HASH_HEX = 16

/** Throws a TypeError/RangeError naming `option` unless `prefix` can prefix a namespace. */
export function checkNamespacePrefix(prefix: unknown, option: string): string {
  if (typeof prefix !== 'string') throw invalidOption(option, 'a string', prefix)
  if (prefix !== '' && !PREFIX.test(prefix)) {
    throw invalidOption(option, '\'\' or 1 to 40 letters, digits, "-", "_" or "."', prefix, 'range')
  }
  return prefix
}

/** The failsoft cache namespace of a Keyv namespace (see above). */
export function failsoftNamespace(
  keyvNamespace: string | undefined,
  prefix: string = DEFAULT_NAMESPACE_PREFIX,
): string {
  checkNamespacePrefix(prefix, 'namespacePrefix')
  if (keyvNamespace === undefined || keyvNamespace === '') return prefix === '' ? 'keyv' : prefix
  const lead = prefix === '' ? '' : `${prefix}.`
  const plain = lead + keyvNamespace
  if (VALID.test(plain)) return plain
  const hash = createHash('sha256').update(keyvNamespace).digest('hex').slice(0, HASH_HEX)
  const room = 64 - lead.length - 2 - HASH_HEX
  const readable = keyvNamespace.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, room)
  return `${lead}${readable}--${hash}`
}
