/**
 * Keep an insertion-ordered Map or Set within `max` entries by removing its oldest one.
 * Call after each insert. True when an entry was removed.
 */
export function trimOldest<K>(collection: Map<K, unknown> | Set<K>, max: number): boolean {
  if (collection.size <= max) return false
  const oldest = collection.keys().next()
  if (oldest.done === true) return false
  collection.delete(oldest.value)
  return true
}
