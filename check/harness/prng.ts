// A small deterministic PRNG (mulberry32) with the helpers the schedules and the load use.
// Same seed, same sequence, on every machine: schedules are replayed from their seed alone.

export class Rng {
  #state: number

  constructor(seed: number) {
    this.#state = seed >>> 0
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0
    let t = this.#state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** An integer in [min, max] (both included). */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  chance(p: number): boolean {
    return this.next() < p
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list')
    return items[Math.floor(this.next() * items.length)]!
  }

  /** Pick by weight; items with weight 0 are never picked. */
  weighted<T>(items: ReadonlyArray<{ item: T; weight: number }>): T {
    const total = items.reduce((s, i) => s + i.weight, 0)
    if (total <= 0) throw new Error('weighted pick with no positive weight')
    let x = this.next() * total
    for (const i of items) {
      x -= i.weight
      if (x < 0) return i.item
    }
    return items.at(-1)!.item
  }

  /** An independent generator for a named part (so adding a part does not shift the others). */
  fork(label: string): Rng {
    return new Rng(hash32(`${this.#state}:${label}`))
  }
}

/** FNV-1a, 32 bits. */
export function hash32(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
