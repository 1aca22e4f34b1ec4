// The fixture of socketio/socket.io-redis-adapter's test/util.ts (`setup`), with the servers on
// failsoft/socket.io instead of the Redis adapter: several in-process Socket.IO servers, each
// with its own failsoft instance (so its own processId, as separate processes would have), one
// client connected to each.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Server, type Socket as ServerSocket } from 'socket.io'
import { io as ioc, type Socket as ClientSocket } from 'socket.io-client'
import { createFailsoft, type Failsoft, type FailsoftOptions } from '../../src/index.js'
import {
  createAdapter,
  type FailsoftAdapter,
  type FailsoftAdapterOptions,
} from '../../src/socket.io.js'
import { FAST_HEALTH, uniquePrefix } from '../support/failsoft.js'

import { sleep } from '../support/fault-kit.js'

export { sleep }

export interface Cluster {
  servers: Server[]
  serverSockets: ServerSocket[]
  clientSockets: ClientSocket[]
  failsofts: Failsoft[]
  /** The adapter of namespace '/' on servers[i]. */
  adapter(i: number): FailsoftAdapter
  cleanup(): Promise<void>
}

export interface ClusterOptions {
  count?: number
  adapter?: FailsoftAdapterOptions
  failsoft?: Partial<FailsoftOptions>
  /** socket.io-client transports; the upstream fixture uses the defaults (polling, then upgrade). */
  transports?: Array<'polling' | 'websocket'>
}

/** `count` (3, as upstream's NODES_COUNT) servers on one Redis, each with one client. */
export async function setup(redisUrl: string, options: ClusterOptions = {}): Promise<Cluster> {
  const count = options.count ?? 3
  const prefix = uniquePrefix()
  const servers: Server[] = []
  const serverSockets: ServerSocket[] = []
  const clientSockets: ClientSocket[] = []
  const failsofts: Failsoft[] = []
  for (let i = 0; i < count; i++) {
    const failsoft = createFailsoft({
      redis: redisUrl,
      prefix,
      logger: false,
      health: FAST_HEALTH,
      ...options.failsoft,
    })
    failsofts.push(failsoft)
    await failsoft.ready()
    const httpServer = createServer()
    const io = new Server(httpServer, {
      adapter: createAdapter(failsoft, { requestsTimeout: 1000, ...options.adapter }),
    })
    await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve))
    const port = (httpServer.address() as AddressInfo).port
    const connected = new Promise<ServerSocket>((resolve) => io.once('connection', resolve))
    const client = ioc(`http://127.0.0.1:${port}`, {
      forceNew: true,
      ...(options.transports ? { transports: options.transports } : {}),
    })
    serverSockets.push(await connected)
    clientSockets.push(client)
    servers.push(io)
  }
  await sleep(200) // as upstream: the servers' heartbeats have met
  return {
    servers,
    serverSockets,
    clientSockets,
    failsofts,
    adapter: (i) => servers[i]!.of('/').adapter as unknown as FailsoftAdapter,
    cleanup: async () => {
      for (const client of clientSockets) client.disconnect()
      await Promise.all(servers.map((server) => server.close()))
      await Promise.all(failsofts.map((failsoft) => failsoft.close()))
    },
  }
}

/** upstream's `times(count, fn)`: resolves the returned promise on the count-th call, fails past it. */
export function counter(count: number): {
  hit: () => void
  done: Promise<void>
  fail: (e: Error) => void
} {
  let hits = 0
  let resolve!: () => void
  let reject!: (error: Error) => void
  const done = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return {
    hit: () => {
      hits++
      if (hits === count) resolve()
      else if (hits > count) reject(new Error(`too many calls: ${hits} instead of ${count}`))
    },
    done,
    fail: reject,
  }
}

/** Rejects after `ms`: a test that waits for events fails with a message instead of hanging. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
