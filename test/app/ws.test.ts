// The WebSocket endpoint: origin check, rate limit, malformed frames, chat validation and live
// polls, against a real redis-server.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { joinRoom, redis, startTestApp, WsClient } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

describe('WebSocket safety', () => {
  test('only the page’s own host, or an allowed origin, may open the socket', async (t) => {
    const app = await startTestApp(t, {
      redisUrl: null,
      allowedOrigins: ['https://commons.example.org'],
    })
    const host = new URL(app.url).host
    await WsClient.open(t, app.url, { origin: `http://${host}` })
    await WsClient.open(t, app.url, { origin: 'https://commons.example.org' })
    await WsClient.open(t, app.url) // no Origin: not a browser page
    for (const origin of ['https://evil.example', `http://${host}.evil.example`, 'null']) {
      const client = new WsClient(app.url, { origin })
      await assert.rejects(client.opened(), /HTTP 403/, origin)
    }
  })

  test('a socket sending faster than the rate limit is closed with 1008', async (t) => {
    const app = await startTestApp(t, { redisUrl: null, wsMessagesPerSecond: 5 })
    const client = await WsClient.open(t, app.url)
    await joinRoom(client, 'flood', 'flooder')
    for (let i = 0; i < 30; i++) client.send({ type: 'chat.message', text: `spam ${i}` })
    await waitFor(() => client.closed !== null, { message: 'closed for flooding' })
    assert.equal(client.closed?.code, 1008)
    assert.ok(client.chatTexts().length < 30)
  })

  test('malformed frames close the socket with a clear code; bad fields get an error message', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const notJson = await WsClient.open(t, app.url)
    notJson.socket.send('{oops')
    await waitFor(() => notJson.closed !== null)
    assert.equal(notJson.closed?.code, 1007)

    const unknown = await WsClient.open(t, app.url)
    unknown.send({ type: 'admin.shutdown' })
    await waitFor(() => unknown.closed !== null)
    assert.equal(unknown.closed?.code, 1003)

    const client = await WsClient.open(t, app.url)
    client.send({ type: 'chat.message', text: 'before joining' })
    await client.next((m) => m.type === 'error' && m.code === 'not_in_room')
    client.send({ type: 'chat.join', room: '../etc', name: 'x' })
    await client.next((m) => m.type === 'error' && m.code === 'invalid_room')
    client.send({ type: 'chat.join', room: 'ok', name: 'a\nb' })
    await client.next((m) => m.type === 'error' && m.code === 'invalid_characters')
    const from = client.messages.length
    client.socket.send('{"type":"chat.join","room":"ok","name":"lone \\ud800"}')
    await client.next((m) => m.type === 'error' && m.code === 'invalid_characters', { from })
    await joinRoom(client, 'ok', 'mallory')
    client.send({ type: 'chat.message', text: 'x'.repeat(501) })
    await client.next((m) => m.type === 'error' && m.code === 'invalid_length')
    client.send({ type: 'poll.vote', poll: 1, option: 99, voter: 'voter-123456' })
    await client.next((m) => m.type === 'error' && m.code === 'invalid_option')
    client.send({ type: 'poll.vote', poll: 1, option: 0, voter: '<script>' })
    await client.next((m) => m.type === 'error' && m.code === 'invalid_voter')
    client.send({ type: 'poll.subscribe', poll: 404 })
    await client.next((m) => m.type === 'error' && m.code === 'not_found')
    assert.equal(client.closed, null, 'field errors do not close the socket')

    // Markup is data: stored and relayed as text, escaped by the page (textContent).
    const markup = '<img src=x onerror=alert(1)>'
    client.send({ type: 'chat.message', text: markup })
    await client.next((m) => m.type === 'chat.message' && m.text === markup)
  })
})

describe('chat and polls', () => {
  test('chat history on join, messages to every member of the room only', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const [a, b, other] = [
      await WsClient.open(t, app.url),
      await WsClient.open(t, app.url),
      await WsClient.open(t, app.url),
    ]
    await joinRoom(a, 'garden', 'ana')
    await joinRoom(b, 'garden', 'ben')
    await joinRoom(other, 'kitchen', 'olga')
    a.send({ type: 'chat.message', text: 'tomatoes are ripe' })
    const got = await b.next((m) => m.type === 'chat.message')
    assert.equal(got.author, 'ana')
    assert.equal(got.room, 'garden')
    await a.next((m) => m.type === 'chat.message')
    assert.deepEqual(other.chatTexts(), [])

    const late = await WsClient.open(t, app.url)
    const from = late.messages.length
    late.send({ type: 'chat.join', room: 'garden', name: 'lea' })
    const history = await late.next((m) => m.type === 'chat.history', { from })
    assert.deepEqual(
      (history.messages as Array<{ text: string }>).map((m) => m.text),
      ['tomatoes are ripe'],
    )
  })

  test('a vote reaches every subscriber of the poll with the new counts', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const [a, b] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    for (const client of [a, b]) {
      client.send({ type: 'poll.subscribe', poll: 1 })
      await client.next((m) => m.type === 'poll.results' && m.poll === 1)
    }
    const from = b.messages.length
    a.send({ type: 'poll.vote', poll: 1, option: 2, voter: 'voter-aaaaaaaa' })
    const results = await b.next((m) => m.type === 'poll.results', { from })
    assert.deepEqual(results.counts, [0, 0, 1, 0])
    // Voting again moves the vote; it is not counted twice.
    const next = b.messages.length
    a.send({ type: 'poll.vote', poll: 1, option: 0, voter: 'voter-aaaaaaaa' })
    const moved = await b.next((m) => m.type === 'poll.results', { from: next })
    assert.deepEqual(moved.counts, [1, 0, 0, 0])
    assert.equal(moved.total, 1)
  })
})
