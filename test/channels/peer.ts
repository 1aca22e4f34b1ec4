import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { AfterHook } from '../support/fault-kit.js'

const fixture = fileURLToPath(new URL('./fixtures/peer.ts', import.meta.url))

export interface PeerMessage {
  channel: string
  message: { type: string; n?: number; [key: string]: unknown }
  at: number
}

/** A channel layer in a child OS process (test/channels/fixtures/peer.ts), driven over IPC. */
export class Peer {
  readonly received: PeerMessage[] = []
  readonly #child: ChildProcess
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>()
  #nextId = 0
  processId = ''

  private constructor(child: ChildProcess) {
    this.#child = child
    child.on('message', (raw: unknown) => {
      const message = raw as {
        id?: number
        ok?: boolean
        result?: unknown
        error?: string
        event?: string
      } & Partial<PeerMessage>
      if (message.event === 'received') {
        this.received.push(message as PeerMessage)
        return
      }
      if (message.id === undefined) return
      const pending = this.#pending.get(message.id)
      this.#pending.delete(message.id)
      if (message.ok) pending?.resolve(message.result)
      else pending?.reject(new Error(message.error))
    })
    child.on('exit', () => {
      for (const p of this.#pending.values()) p.reject(new Error('peer exited'))
      this.#pending.clear()
    })
  }

  static async start(
    t: AfterHook,
    env: {
      REDIS_URL: string
      PREFIX: string
      CLOCK_OFFSET_MS?: string
      RECOVERY_DELAY_MS?: string
    },
  ): Promise<Peer> {
    const child = fork(fixture, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    const peer = new Peer(child)
    t.after(() => peer.close())
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('peer did not start')), 20_000)
      child.on('message', (raw: unknown) => {
        const message = raw as { event?: string; processId?: string }
        if (message.event === 'ready') {
          clearTimeout(timer)
          peer.processId = message.processId ?? ''
          resolve()
        }
      })
    })
    return peer
  }

  call<T>(command: Record<string, unknown>): Promise<T> {
    const id = ++this.#nextId
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.#child.send({ id, ...command })
    })
  }

  async join(group: string): Promise<string> {
    const { channel } = await this.call<{ channel: string }>({ cmd: 'join', group })
    return channel
  }

  groupSend(group: string, count: number, type = 'peer.message'): Promise<void> {
    return this.call({ cmd: 'groupSend', group, count, type })
  }

  send(channel: string, message: { type: string; [key: string]: unknown }): Promise<void> {
    return this.call({ cmd: 'send', channel, message })
  }

  status(): Promise<{ health: string; layer: Record<string, unknown> }> {
    return this.call({ cmd: 'status' })
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    const killer = setTimeout(() => this.#child.kill('SIGKILL'), 5000)
    try {
      await this.call({ cmd: 'close' })
    } catch {
      // already gone: the exit below settles it
    }
    await exited
    clearTimeout(killer)
  }
}
