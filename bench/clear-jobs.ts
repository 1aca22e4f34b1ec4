import type { Redis } from 'ioredis'

/**
 * Delete the jobs a bench window queued — every key matching one of `patterns` — keeping each
 * queue's `:meta` (its settings), so that the next window starts from empty queues.
 */
export async function clearJobs(admin: Redis, patterns: readonly string[]): Promise<void> {
  for (const pattern of patterns) {
    let cursor = '0'
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', pattern, 'COUNT', 2000)
      cursor = next
      const jobs = keys.filter((key) => !key.endsWith(':meta'))
      if (jobs.length > 0) await admin.unlink(...jobs)
    } while (cursor !== '0')
  }
}
