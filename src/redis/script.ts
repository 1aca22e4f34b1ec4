import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

/** A Lua script and its SHA-1, to run with EVALSHA (EVAL when the server does not know it). */
export interface Script {
  readonly lua: string
  readonly sha: string
}

export function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

/** EVALSHA, falling back to EVAL on NOSCRIPT (first use on this server, or it restarted empty). */
export async function evalScript(
  redis: Redis,
  s: Script,
  keys: readonly string[],
  args: ReadonlyArray<string | number>,
): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, keys.length, ...keys, ...args)
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
      return redis.eval(s.lua, keys.length, ...keys, ...args)
    }
    throw error
  }
}
