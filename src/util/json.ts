/**
 * JSON parsing for text that came from Redis or from a client: a `__proto__` key is dropped
 * instead of becoming an own property that a later merge (`Object.assign`, spread into a
 * prototype-bearing object) could turn into prototype pollution. `constructor`/`prototype`
 * keys are harmless as own data properties and are kept.
 */
export function safeJsonParse(text: string): unknown {
  // Fast path: the reviver costs 2-3x; only text that could spell `__proto__` (directly or
  // through a \u escape in a key) needs it.
  if (!text.includes('proto') && !text.includes('\\u')) return JSON.parse(text)
  return JSON.parse(text, dropProtoKey)
}

function dropProtoKey(key: string, value: unknown): unknown {
  return key === '__proto__' ? undefined : value
}
