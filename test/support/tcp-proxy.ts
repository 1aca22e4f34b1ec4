// An in-process TCP proxy placed between a client and a redis-server to inject network faults:
// silent partitions (blackhole), latency, connection resets and refused connects.
//
// A partition never loses bytes from the middle of a connection: TCP cannot (it retransmits,
// or the connection fails). Bytes sent during a blackhole are held, and delivered in order when
// it heals, as retransmission delivers them; a connection that held more than HOLD_LIMIT_BYTES
// one way, or whose far end died meanwhile, is reset at the heal instead. (Dropping the bytes
// and going on forwarding — what this proxy did before — desynchronises the RESP stream: a
// later command's reply answers an earlier, swallowed command, which no network can do.)
// Its listener and sockets are unref'd: a proxy a failed test forgot does not keep Node alive
// (the clients using it do, while they are connected).
import net from 'node:net'

export type ProxyMode = 'pass' | 'blackhole' | 'latency'

const HOST = '127.0.0.1'

/**
 * TCP RST when possible. libuv refuses a reset while a shutdown (FIN) is pending and Node then
 * leaks the handle (and can spin at exit), so a socket already ending is destroyed normally.
 */
function resetSocket(socket: net.Socket): void {
  if (socket.destroyed) return
  if (socket.connecting || socket.writableEnded) socket.destroy()
  else socket.resetAndDestroy()
}

type Item = { due: number; chunk: Buffer | 'end' }

/** What one direction of a connection holds during a partition before it is reset at the heal. */
export const HOLD_LIMIT_BYTES = 4 * 1024 * 1024

/**
 * One direction of a connection: forwards chunks in order, optionally after a fixed delay;
 * while held (a partition), queues everything and delivers nothing.
 */
class Pipe {
  readonly #queue: Item[] = []
  #timer: NodeJS.Timeout | undefined
  #lastDue = 0
  #held = false
  #heldBytes = 0
  /** More than HOLD_LIMIT_BYTES arrived while held: the connection cannot be kept. */
  overflowed = false

  constructor(
    private readonly dest: () => net.Socket | undefined,
    private readonly source: () => net.Socket | undefined,
  ) {}

  push(chunk: Buffer, delayMs: number): void {
    if (this.#held) {
      this.#heldBytes += chunk.length
      if (this.#heldBytes > HOLD_LIMIT_BYTES) this.overflowed = true
      if (this.overflowed) return
    }
    this.#enqueue(chunk, delayMs)
  }

  /** A partition: nothing is delivered (what is queued stays queued) until release(). */
  hold(): void {
    this.#held = true
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  /** The partition healed: what was held goes now, in order (each chunk no earlier than due). */
  release(): void {
    if (!this.#held) return
    this.#held = false
    this.#heldBytes = 0
    this.#schedule()
  }

  /** Half-close the destination once everything queued before has been delivered. */
  end(): void {
    this.#enqueue('end', 0)
  }

  /** Drop everything not yet delivered. */
  clear(): void {
    this.#queue.length = 0
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#heldBytes = 0
  }

  #enqueue(chunk: Buffer | 'end', delayMs: number): void {
    if (delayMs <= 0 && this.#queue.length === 0 && !this.#held) {
      this.#deliver(chunk)
      return
    }
    // Never before an earlier chunk, even if the delay was lowered meanwhile.
    const due = Math.max(Date.now() + delayMs, this.#lastDue)
    this.#lastDue = due
    this.#queue.push({ due, chunk })
    this.#schedule()
  }

  #schedule(): void {
    const head = this.#queue[0]
    if (this.#timer || head === undefined || this.#held) return
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined
        const now = Date.now()
        while ((this.#queue[0]?.due ?? Infinity) <= now) {
          const item = this.#queue.shift()
          if (item) this.#deliver(item.chunk)
        }
        this.#schedule()
      },
      Math.max(0, head.due - Date.now()),
    )
  }

  #deliver(chunk: Buffer | 'end'): void {
    const dest = this.dest()
    if (dest === undefined || dest.destroyed) return
    if (chunk === 'end') {
      dest.end()
      return
    }
    if (!dest.write(chunk)) {
      // Backpressure: pause the sender until the receiver drains.
      const source = this.source()
      if (source && !source.isPaused()) {
        source.pause()
        dest.once('drain', () => source.resume())
      }
    }
  }
}

class Link {
  upstream: net.Socket | undefined
  /** Upstream failed/closed while blackholed: the client is reset once the partition heals. */
  upstreamLost = false
  readonly toUpstream: Pipe
  readonly toClient: Pipe

  constructor(readonly client: net.Socket) {
    this.toUpstream = new Pipe(
      () => this.upstream,
      () => this.client,
    )
    this.toClient = new Pipe(
      () => this.client,
      () => this.upstream,
    )
  }
}

export class TcpProxy {
  readonly host = HOST
  readonly port: number
  readonly url: string
  readonly target: { host: string; port: number }

  readonly #server: net.Server
  readonly #links = new Set<Link>()
  #mode: ProxyMode = 'pass'
  #latencyMs = 0
  #deliverAfterClose = false
  #listening = false
  #closed = false

  private constructor(server: net.Server, port: number, target: { host: string; port: number }) {
    this.#server = server
    this.port = port
    this.url = `redis://${HOST}:${port}`
    this.target = { host: target.host, port: target.port }
  }

  /** Listens on 127.0.0.1:<free port> and forwards to target. */
  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = net.createServer()
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, HOST, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const address = server.address()
    if (address === null || typeof address !== 'object') throw new Error('proxy has no address')
    // Attached before the event loop can deliver a connection.
    const proxy = new TcpProxy(server, address.port, target)
    server.on('connection', (socket: net.Socket) => proxy.#onConnection(socket))
    proxy.#listening = true
    server.unref()
    server.on('error', () => undefined) // errors surface through listen()/close() calls
    return proxy
  }

  /** The server's url (scheme, credentials) with host:port replaced by the proxy's. */
  urlFor(server: { url: string }): string {
    const url = new URL(server.url)
    url.hostname = HOST
    url.port = String(this.port)
    return url.toString().replace(/\/$/, '')
  }

  get mode(): ProxyMode {
    return this.#mode
  }

  /** Open client connections. */
  get connections(): number {
    return this.#links.size
  }

  /**
   * Silent partition: connections stay open, nothing is forwarded either way; what is sent
   * meanwhile is held and delivered when the partition heals (`pass()`), as TCP retransmits.
   */
  blackhole(): void {
    this.#mode = 'blackhole'
    for (const link of this.#links) {
      link.toUpstream.hold()
      link.toClient.hold()
    }
  }

  /** Fixed one-way delay on every chunk in both directions (order preserved). 0 = pass. */
  latency(ms: number): void {
    const healing = this.#mode === 'blackhole'
    this.#latencyMs = Math.max(0, ms)
    this.#mode = this.#latencyMs > 0 ? 'latency' : 'pass'
    if (healing) this.#heal()
  }

  /**
   * When on, bytes a client sent are still delivered upstream (after their delay) once that
   * client went away — what a middlebox holding a connection, or a TCP stack retransmitting
   * after a partition heals, does: a command sent before an outage reaches Redis late.
   */
  deliverAfterClientClose(on: boolean): void {
    this.#deliverAfterClose = on
  }

  /**
   * Plain forwarding again. Bytes held during a blackhole are delivered now, in order; a
   * connection whose far end went away meanwhile, or that held too much, is reset.
   */
  pass(): void {
    this.#mode = 'pass'
    this.#latencyMs = 0
    this.#heal()
  }

  #heal(): void {
    for (const link of [...this.#links]) {
      if (link.upstreamLost || link.toUpstream.overflowed || link.toClient.overflowed) {
        // The far end went away during the partition (or TCP gave up): the client learns it now.
        this.#reset(link)
        continue
      }
      if (link.upstream === undefined) this.#connectUpstream(link)
      link.toUpstream.release()
      link.toClient.release()
    }
  }

  /** TCP RST on every open connection (both sides); the proxy keeps listening. */
  resetAll(): void {
    for (const link of [...this.#links]) this.#reset(link)
  }

  /** Stop accepting (connects get ECONNREFUSED) and destroy open connections. */
  async refuse(): Promise<void> {
    if (!this.#listening) return
    this.#listening = false
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()))
    for (const link of [...this.#links]) this.#reset(link)
    await closed
  }

  /** Listen again on the same port. */
  async accept(): Promise<void> {
    if (this.#closed) throw new Error('proxy is closed')
    if (this.#listening) return
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(error)
      this.#server.once('error', onError)
      this.#server.listen(this.port, HOST, () => {
        this.#server.off('error', onError)
        this.#server.unref()
        resolve()
      })
    })
    this.#listening = true
  }

  /** Close the listener and every connection. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true
    await this.refuse()
  }

  // -------------------------------------------------------------------------------------------

  #onConnection(client: net.Socket): void {
    if (!this.#listening) {
      resetSocket(client)
      return
    }
    client.setNoDelay(true)
    client.unref()
    const link = new Link(client)
    this.#links.add(link)
    if (this.#mode === 'blackhole') {
      link.toUpstream.hold()
      link.toClient.hold()
    }
    client.on('data', (chunk: Buffer) => link.toUpstream.push(chunk, this.#latencyMs))
    client.on('end', () => link.toUpstream.end())
    client.on('error', () => undefined) // reported through 'close'
    client.on('close', () => {
      this.#links.delete(link)
      link.toClient.clear()
      if (this.#deliverAfterClose && link.upstream !== undefined) {
        link.toUpstream.end() // what is queued still goes, then a FIN
        return
      }
      link.toUpstream.clear()
      link.upstream?.destroy()
    })
    // During a partition the connect to the far side would not happen either: defer it.
    if (this.#mode !== 'blackhole') this.#connectUpstream(link)
  }

  #connectUpstream(link: Link): void {
    const upstream = net.connect({ host: this.target.host, port: this.target.port })
    upstream.setNoDelay(true)
    upstream.unref()
    link.upstream = upstream
    upstream.on('data', (chunk: Buffer) => link.toClient.push(chunk, this.#latencyMs))
    const lost = (reset: boolean): void => {
      if (link.upstream !== upstream) return
      if (this.#mode === 'blackhole') {
        link.upstreamLost = true // the client cannot know yet
        return
      }
      if (link.client.destroyed) return
      if (reset) resetSocket(link.client)
      else link.toClient.end()
    }
    upstream.on('end', () => lost(false))
    upstream.on('error', () => lost(true))
    upstream.on('close', (hadError) => {
      if (!hadError) lost(false)
    })
  }

  #reset(link: Link): void {
    this.#links.delete(link)
    link.toUpstream.clear()
    link.toClient.clear()
    resetSocket(link.client)
    if (link.upstream) resetSocket(link.upstream)
  }
}
