/**
 * A local, deterministic text embedding: a hashed bag of words (and of word pairs), signed,
 * log-scaled and L2-normalised. No model, no network — the same text always gives the same
 * vector in every process, which is all "similar projects" needs to show the embeddings task.
 */

export const DIMENSIONS = 256

const STOP_WORDS = new Set(
  (
    'a an and are as at be by for from has have in into is it its of on or so that the their ' +
    'them they this to was we were will with who what when where which while your our you ' +
    'every each more less than then there these those can own instead fewer'
  ).split(' '),
)

/** Lower-case words of 2+ letters or digits, accents folded, stop words removed. */
export function tokenize(text: string): string[] {
  return text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((word) => word.length >= 2 && !STOP_WORDS.has(word))
    .map(stem)
}

/** A crude plural stem, so "bikes" and "bike" share a bucket. */
function stem(word: string): string {
  if (word.length > 4 && word.endsWith('ies')) return `${word.slice(0, -3)}y`
  if (word.length > 3 && word.endsWith('s') && !word.endsWith('ss')) return word.slice(0, -1)
  return word
}

/** 32-bit FNV-1a. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

export function embed(text: string): Float32Array {
  const vector = new Float32Array(DIMENSIONS)
  const words = tokenize(text)
  const features: Array<[string, number]> = words.map((word) => [word, 1])
  for (let i = 0; i + 1 < words.length; i++) features.push([`${words[i]} ${words[i + 1]}`, 0.5])
  const counts = new Map<string, number>()
  for (const [feature, weight] of features) {
    counts.set(feature, (counts.get(feature) ?? 0) + weight)
  }
  for (const [feature, weight] of counts) {
    const hash = fnv1a(feature)
    const index = hash % DIMENSIONS
    const sign = hash & 0x80000000 ? -1 : 1
    vector[index] = (vector[index] as number) + sign * Math.log1p(weight)
  }
  let norm = 0
  for (const value of vector) norm += value * value
  norm = Math.sqrt(norm)
  if (norm > 0) for (let i = 0; i < vector.length; i++) vector[i] = (vector[i] as number) / norm
  return vector
}

/** Cosine similarity of two normalised vectors (their dot product). */
export function similarity(a: Float32Array, b: Float32Array): number {
  const n = Math.min(a.length, b.length)
  let dot = 0
  for (let i = 0; i < n; i++) dot += (a[i] as number) * (b[i] as number)
  return dot
}

/** The `limit` nearest neighbours of `target`, best first, above `minScore`. */
export function nearest<T extends { vector: Float32Array }>(
  target: Float32Array,
  candidates: readonly T[],
  limit: number,
  minScore = 0.05,
): Array<{ item: T; score: number }> {
  return candidates
    .map((item) => ({ item, score: similarity(target, item.vector) }))
    .filter((entry) => entry.score > minScore)
    .sort((a, b) => b.score - a.score)
    .slice(0, limit)
}
