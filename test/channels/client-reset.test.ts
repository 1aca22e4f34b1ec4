// A client that goes away abruptly (a browser tab closed, a phone losing its network) resets its
// TCP connection: the server's socket sees ECONNRESET (or EPIPE on a write). That is an ordinary
// event for a WebSocket endpoint, not a failure of the service: it is counted, logged at debug,
// and never reaches ERROR (ERROR is for Redis failing).
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { test } from 'node:test'
import { WebSocket } from 'ws'
import { waitFor } from '../support/fault-kit.js'
import { captureLogs, LEVEL } from '../support/log-capture.js'
import { makeLayer } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

test('a client resetting its connection is counted and logged at debug, never at ERROR', async (t) => {
  const logs = captureLogs()
  const { layer } = await makeLayer(t, null, { logger: logs.logger })
  const http = createServer((_req, res) => res.end('ok'))
  let connected = 0
  const ws = layer.websocket({
    server: http,
    path: '/ws',
    consumer: () => ({
      connect: () => {
        connected++
      },
    }),
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    await ws.close()
    http.closeAllConnections()
    await new Promise((resolve) => http.close(resolve))
  })
  const { port } = http.address() as AddressInfo

  // Three tabs closed one after the other: each client resets its TCP connection (RST).
  for (let i = 1; i <= 3; i++) {
    const client = new WebSocket(`ws://127.0.0.1:${port}/ws`)
    client.on('error', () => undefined)
    await new Promise<void>((resolve, reject) => {
      client.once('open', () => resolve())
      client.once('error', reject)
    })
    await waitFor(() => connected === i, { message: `connection ${i} accepted` })
    const raw = (client as unknown as { _socket: Socket })._socket
    raw.resetAndDestroy()
    await waitFor(() => ws.clientCount === 0, { message: `connection ${i} gone on the server` })
  }

  await waitFor(() => logs.records.some((r) => /ECONNRESET/.test(JSON.stringify(r))), {
    message: 'the resets were seen by the server',
  })
  const errors = logs.records.filter((r) => r.level >= LEVEL.error)
  assert.deepEqual(
    errors.map((r) => r.msg),
    [],
    'a client going away is not an ERROR',
  )
  const status = ws.status() as { clientResets?: number }
  assert.equal(status.clientResets, 3, 'every reset is counted')
  const debug = logs.records.filter((r) => r.level === LEVEL.debug && /reset/.test(r.msg))
  assert.ok(debug.length >= 1, 'logged at debug')
})
