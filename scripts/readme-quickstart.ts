// Type-checks (npm test) and runs the README's quickstart against a memory-only instance, so the
// first code a user reads keeps compiling and working. `node --import tsx scripts/readme-quickstart.ts`
import { createFailsoft } from 'failsoft'
import {
  safeCacheDelete,
  safeCacheGet,
  safeCacheSet,
  safeGroupSend,
  executeTaskSync,
} from 'failsoft/compat'

interface Email {
  to: string
  subject: string
}
const db = { listProjects: async () => [{ id: 1, title: 'Community garden' }] }
const mailer = { send: async (email: Email) => ({ sent: email.to }) }
const counts = { yes: 3, no: 1 }
const alerting = { notify: (error: Error) => void error }

const failsoft = createFailsoft({ redis: null, prefix: 'myapp', logger: false })
await failsoft.ready()

const cache = failsoft.cache({ namespace: 'api', defaultTtlSeconds: 300 })
const projects = await cache.getOrSet('projects', () => db.listProjects())

const layer = failsoft.channels()
await layer.groupSend('poll.42', { type: 'poll.results', counts })

const tasks = failsoft.tasks({ queue: 'default' })
const sendEmail = tasks.define('send_email', async (email: Email) => mailer.send(email))
const result = await sendEmail.dispatch({ to: 'ana@example.org', subject: 'Welcome' })

failsoft.health.on('down', ({ error }) => alerting.notify(error))
const status = failsoft.status()
await failsoft.close()

// The compat functions exist with the seed's names (not called here: they use the default instance).
void [safeCacheGet, safeCacheSet, safeCacheDelete, safeGroupSend, executeTaskSync]
if (projects.length !== 1 || result.mode !== 'inline' || status.redis.state !== 'down') {
  throw new Error(`README quickstart misbehaved: ${JSON.stringify({ projects, result, status })}`)
}
process.stdout.write(`README quickstart ok: dispatch mode ${result.mode}\n`)
