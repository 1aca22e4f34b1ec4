// Fault kit: real redis-server processes and a fault-injecting TCP proxy for tests and benchmarks.
//
//   const server = await startRedis(t)                 // stopped by t.after
//   const proxy = await startProxy(t, server)          // client -> proxy -> server
//   const redis = new Redis(proxy.urlFor(server))
//   proxy.blackhole(); server.freeze(); await server.restart({ keepData: false }) ...
import { RedisServer, type RedisServerOptions } from './redis-server.js'
import { TcpProxy } from './tcp-proxy.js'

export {
  RedisServer,
  RespError,
  freePort,
  killAllRedisServers,
  respCommand,
  respCommands,
  sleep,
  type RedisServerOptions,
  type RespTarget,
  type RespValue,
} from './redis-server.js'
export { TcpProxy, type ProxyMode } from './tcp-proxy.js'

/** Anything with an `after` hook: node:test's `t` (TestContext) or `{ after }` from node:test. */
export interface AfterHook {
  after(fn: () => unknown): void
}

/** Start a redis-server and register `server.stop()` with the test's `after` hook. */
export async function startRedis(t: AfterHook, options?: RedisServerOptions): Promise<RedisServer> {
  const server = await RedisServer.start(options)
  t.after(() => server.stop())
  return server
}

/** Start a TcpProxy to target and register `proxy.close()` with the test's `after` hook. */
export async function startProxy(
  t: AfterHook,
  target: { host: string; port: number },
): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(target)
  t.after(() => proxy.close())
  return proxy
}

export interface WaitForOptions {
  timeoutMs?: number
  intervalMs?: number
  /** What was awaited, for the error; a function is called at the timeout (to show state). */
  message?: string | (() => string)
}

/** Poll predicate until it returns true; throws `waitFor timed out after N ms: <message>` otherwise. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  { timeoutMs = 5000, intervalMs = 10, message }: WaitForOptions = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      if (await predicate()) return
      lastError = undefined
    } catch (error) {
      lastError = error // a throwing predicate counts as "not yet"
    }
    if (Date.now() >= deadline) break
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
  const what = (typeof message === 'function' ? message() : message) ?? 'condition not met'
  const cause = lastError === undefined ? '' : ` (last error: ${String(lastError)})`
  throw new Error(`waitFor timed out after ${timeoutMs} ms: ${what}${cause}`, {
    cause: lastError,
  })
}

/** Resolve with the error a promise rejects with; fail if it resolves. Handy for `.code` checks. */
export async function rejection(promise: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  try {
    await promise
  } catch (error) {
    return error as NodeJS.ErrnoException
  }
  throw new Error('expected the promise to reject, but it resolved')
}
