// executeTaskSync (failsoft/compat): the seed's function — queue when Redis is up, run in
// process when it is down — never throws, whatever happens.
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { closeDefault, configureDefault, executeTaskSync, getDefault } from '../../src/compat.js'
import { startRedis, waitFor } from '../support/fault-kit.js'
import { FAST_HEALTH, tempDir, timed, uniquePrefix } from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

test('executeTaskSync queues while Redis is up, runs inline while it is down, never throws', async (t) => {
  const server = await startRedis(t)
  t.after(() => closeDefault())
  const failsoft = await configureDefault({
    redis: server.url,
    prefix: uniquePrefix(),
    logger: false,
    health: FAST_HEALTH,
  })
  await failsoft.ready()
  const tasks = getDefault().tasks({ spool: { path: join(tempDir(t), 'spool.jsonl') } })
  const sent: string[] = []
  const sendEmail = tasks.define('send_email', (args: { to: string }, ctx) => {
    sent.push(`${ctx.mode}:${args.to}`)
    return 'ok'
  })
  tasks.work()

  const queued = await executeTaskSync(sendEmail, { to: 'a@example.com' })
  assert.equal(queued.mode, 'queued')
  await waitFor(() => sent.includes('worker:a@example.com'), { message: 'the worker sends it' })

  // By name, as the seed's call sites do.
  assert.equal((await executeTaskSync('send_email', { to: 'b@example.com' })).mode, 'queued')

  await server.kill()
  await waitFor(() => failsoft.health.state === 'down')
  const inline = await timed(() => executeTaskSync(sendEmail, { to: 'c@example.com' }))
  assert.deepEqual(inline.value, { mode: 'inline', id: inline.value.id, ok: true, value: 'ok' })
  assert.ok(inline.ms < 50, `inline took ${inline.ms.toFixed(1)} ms`)
  assert.ok(sent.includes('inline:c@example.com'))

  // Bad input and unknown names resolve to a rejected result instead of throwing.
  const unknown = await executeTaskSync('nope', {})
  assert.equal(unknown.mode, 'rejected')
  assert.equal(
    unknown.mode === 'rejected' && (unknown.error as { code?: string }).code,
    'FAILSOFT_UNKNOWN_TASK',
  )
  const bad = await executeTaskSync(sendEmail, { to: 10n } as never)
  assert.equal(
    bad.mode === 'rejected' && (bad.error as { code?: string }).code,
    'FAILSOFT_INVALID_TASK_ARGS',
  )

  // A failing handler inline: in the result, not thrown.
  const broken = tasks.define('broken', () => {
    throw new Error('boom')
  })
  const failed = await executeTaskSync(broken, null)
  assert.equal(failed.mode === 'inline' && !failed.ok && failed.error.message, 'boom')

  // A closed instance: still no throw.
  await closeDefault()
  const closed = await executeTaskSync(sendEmail, { to: 'd@example.com' })
  assert.equal(
    closed.mode === 'rejected' && (closed.error as { code?: string }).code,
    'FAILSOFT_CLOSED',
  )
})
