import assert from 'node:assert/strict'
import { test } from 'node:test'
import { closeDefault, configureDefault, getDefault, safeGroupSend } from '../../src/compat.js'
import { captureLogs, LEVEL, type LogRecord } from '../support/log-capture.js'
import { receiveWithin } from './helpers.js'

test('safeGroupSend from failsoft/compat reaches the default layer and never throws', async (t) => {
  const { logger, raw } = captureLogs()
  await configureDefault({ redis: null, logger })
  t.after(() => closeDefault())
  const layer = getDefault().channels()
  assert.equal(getDefault().channels(), layer, 'one default layer per instance')
  const channel = await layer.newChannel()
  await layer.groupAdd('poll.42', channel)

  assert.equal(await safeGroupSend('poll.42', { type: 'poll.results', counts: [3, 1] }), true)
  assert.deepEqual(await receiveWithin(layer, channel), {
    type: 'poll.results',
    counts: [3, 1],
  })

  assert.equal(await safeGroupSend('poll 42', { type: 'poll.results' }), false)
  const records = raw()
    .split('\n')
    .map((line) => JSON.parse(line) as LogRecord)
  const errors = records.filter((r) => r.level === LEVEL.error)
  assert.equal(errors.length, 1)
  assert.equal(errors[0]?.component, 'channels:default')
  assert.equal(errors[0]?.err?.type, 'InvalidNameError')
  assert.equal(await safeGroupSend('poll.42', undefined as never), false)
})

test('channels() refuses new options for an existing layer', async (t) => {
  await configureDefault({ redis: null, logger: false })
  t.after(() => closeDefault())
  getDefault().channels({ capacity: 10 })
  assert.throws(() => getDefault().channels({ capacity: 20 }), RangeError)
  assert.ok(getDefault().channels({ name: 'other', capacity: 20 }))
})

test('skipping full members logs one WARNING per 10 s, with the count', async (t) => {
  const { logger, raw } = captureLogs()
  await configureDefault({ redis: null, logger })
  t.after(() => closeDefault())
  const layer = getDefault().channels({ capacity: 1 })
  const channel = await layer.newChannel()
  await layer.groupAdd('g', channel)
  for (let n = 0; n < 20; n++) await layer.groupSend('g', { type: 'flood', n })
  const warnings = raw()
    .split('\n')
    .map((line) => JSON.parse(line) as LogRecord)
    .filter((r) => r.level === LEVEL.warn && r.component === 'channels:default')
  assert.equal(warnings.length, 1)
  assert.equal(warnings[0]?.skipped, 1)
  assert.equal(layer.status().skippedFull, 19)
})
