import type { IncomingMessage } from 'node:http'
import type { ChannelLayer, ClientMessage, Consumer, ConsumerContext } from 'failsoft'
import type { Logger } from 'pino'
import type { AppDatabase, Poll } from './db.js'
import { HttpError, id, notFound, text, type Router } from './http.js'
import type { StatusHub } from './status.js'

/**
 * The seed's WebSocket consumers: chat rooms and live polls, on failsoft's channel layer.
 * Messages fan out to a group with `safeGroupSend`: through Redis to every app process while
 * it is available, to the members in this process while it is not. A socket also receives
 * this process's live status (see status.ts).
 *
 * Client frames (JSON, `type` first):
 *   { type: 'chat.join', room, name }      → chat.history, then every chat.message of the room
 *   { type: 'chat.message', text }
 *   { type: 'poll.subscribe', poll }       → poll.results now and on every vote
 *   { type: 'poll.vote', poll, option, voter }
 * A bad frame gets { type: 'error', code, message }; an unknown type or malformed JSON closes
 * the socket (failsoft's consumer API), so does passing the per-socket rate limit.
 */

const ROOM = /^[a-z0-9][a-z0-9-]{0,31}$/
const VOTER = /^[A-Za-z0-9_-]{8,64}$/
const MAX_POLL_SUBSCRIPTIONS = 10
const HISTORY = 50

export const chatGroup = (room: string): string => `chat.${room}`
export const pollGroup = (poll: number): string => `poll.${poll}`

export interface ConsumerDeps {
  db: AppDatabase
  layer: ChannelLayer
  hub: StatusHub
  logger: Logger
  processName: string
}

function room(value: unknown): string {
  if (typeof value !== 'string' || !ROOM.test(value)) {
    throw new HttpError(
      400,
      'invalid_room',
      'room: 1 to 32 lower-case letters, digits or "-"',
      'room',
    )
  }
  return value
}

function option(value: unknown, poll: Poll): number {
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < 0 ||
    value >= poll.options.length
  ) {
    throw new HttpError(
      400,
      'invalid_option',
      `option must be 0 to ${poll.options.length - 1}`,
      'option',
    )
  }
  return value
}

/** The consumer of one WebSocket connection. */
export function chatAndPollConsumer(deps: ConsumerDeps): (context: ConsumerContext) => Consumer {
  const { db, layer, hub, logger, processName } = deps

  const pollResults = (pollId: number) => {
    const poll = db.getPoll(pollId)
    if (poll === undefined) throw notFound('poll')
    return { poll, results: db.pollResults(poll) }
  }

  return (context) => {
    let currentRoom: string | null = null
    let author = 'guest'
    const polls = new Set<number>()
    let unsubscribe: (() => void) | null = null

    // Validation errors answer the client; anything else closes the socket (failsoft logs it).
    const guarded =
      (handler: (message: ClientMessage) => Promise<void> | void) =>
      async (message: ClientMessage): Promise<void> => {
        try {
          await handler(message)
        } catch (error) {
          if (!(error instanceof HttpError)) throw error
          context.send({ type: 'error', code: error.code, message: error.message })
        }
      }

    const deliver = async (group: string, message: Record<string, unknown> & { type: string }) => {
      // false only when even this process's members could not be reached (logged by failsoft).
      if (!(await layer.safeGroupSend(group, message))) {
        context.send({ type: 'error', code: 'not_delivered', message: 'message not delivered' })
      }
    }

    return {
      connect() {
        context.send({ type: 'hello', process: processName })
        unsubscribe = hub.subscribe((payload) => context.send(payload))
      },

      receive: {
        'chat.join': guarded(async (message) => {
          const next = room(message.room)
          author = text(message.name, 'name', { min: 1, max: 32, singleLine: true })
          if (currentRoom !== null && currentRoom !== next) {
            await context.groupDiscard(chatGroup(currentRoom))
          }
          currentRoom = next
          await context.groupAdd(chatGroup(next))
          context.send({ type: 'chat.history', room: next, messages: db.recentChat(next, HISTORY) })
        }),

        'chat.leave': guarded(async () => {
          if (currentRoom === null) return
          await context.groupDiscard(chatGroup(currentRoom))
          currentRoom = null
        }),

        'chat.message': guarded(async (message) => {
          if (currentRoom === null) {
            throw new HttpError(409, 'not_in_room', 'join a room first')
          }
          const body = text(message.text, 'text', { min: 1, max: 500 })
          const stored = db.addChatMessage({
            room: currentRoom,
            author,
            text: body,
            process: processName,
          })
          await deliver(chatGroup(currentRoom), { type: 'chat.message', ...stored })
        }),

        'poll.subscribe': guarded(async (message) => {
          const pollId = id(message.poll, 'poll')
          const { results } = pollResults(pollId)
          if (!polls.has(pollId)) {
            if (polls.size >= MAX_POLL_SUBSCRIPTIONS) {
              throw new HttpError(429, 'too_many_polls', `at most ${MAX_POLL_SUBSCRIPTIONS} polls`)
            }
            polls.add(pollId)
            await context.groupAdd(pollGroup(pollId))
          }
          context.send({ type: 'poll.results', ...results })
        }),

        'poll.vote': guarded(async (message) => {
          const pollId = id(message.poll, 'poll')
          const { poll } = pollResults(pollId)
          const choice = option(message.option, poll)
          if (typeof message.voter !== 'string' || !VOTER.test(message.voter)) {
            throw new HttpError(
              400,
              'invalid_voter',
              'voter: 8 to 64 letters, digits, "-" or "_"',
              'voter',
            )
          }
          db.vote(pollId, message.voter, choice)
          const results = db.pollResults(poll)
          await deliver(pollGroup(pollId), { type: 'poll.results', ...results })
          // The voter sees the result even when not subscribed to the poll's group.
          if (!polls.has(pollId)) context.send({ type: 'poll.results', ...results })
        }),
      },

      disconnect({ code }) {
        unsubscribe?.()
        logger.debug({ connection: context.id, code }, 'websocket closed')
      },
    }
  }
}

/** Same host as the page, or an origin from ALLOWED_ORIGINS. */
export function originVerifier(
  allowedOrigins: readonly string[],
): (origin: string | undefined, request: IncomingMessage) => boolean {
  return (origin, request) => {
    // Browsers always send Origin on a WebSocket handshake; a client without one is not a
    // browser page, and could forge any Origin anyway — so this check targets cross-site
    // pages (cross-site WebSocket hijacking), not scripts.
    if (origin === undefined) return true
    if (allowedOrigins.includes(origin)) return true
    try {
      return new URL(origin).host === request.headers.host
    } catch {
      return false
    }
  }
}

/** GET /api/polls: every poll with its current results (the page then subscribes). */
export function pollRoutes(router: Router, deps: { db: AppDatabase }): void {
  router.get('/api/polls', () => ({
    body: {
      polls: deps.db.listPolls().map((poll) => ({ ...poll, results: deps.db.pollResults(poll) })),
    },
  }))
}
