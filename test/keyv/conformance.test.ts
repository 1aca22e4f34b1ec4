// Keyv's official store compliance suite (@keyv/test-suite: its API, value and namespace
// tests) against failsoft/keyv, on a live redis-server started for this file and on a
// memory-only instance. The suite is written for vitest; vitest-shim.ts runs it on node:test.
//
// Not run, because they do not apply to this store:
// - keyvIteratorTests: for stores Keyv can iterate (it only builds `keyv.iterator()` for SQL,
//   Mongo, Redis … adapters). failsoft's cache has no key listing, so neither has the store.
// - keyvCompresstionTests: they test a compression adapter, not a store.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import keyvTestSuite from '@keyv/test-suite'
import Keyv from 'keyv'
import { createFailsoft, type Failsoft } from '../../src/index.js'
import { failsoftStore } from '../../src/keyv.js'
import { startRedis } from '../support/fault-kit.js'
import { uniquePrefix } from '../support/failsoft.js'
import { vitestOnNodeTest } from './vitest-shim.js'

describe('@keyv/test-suite: failsoft/keyv on a live redis-server', () => {
  let failsoft: Failsoft
  // Hooks registered while a hook runs would run when it ends: collect, run them in after().
  const cleanups: Array<() => unknown> = []
  before(async () => {
    const server = await startRedis({ after: (fn) => cleanups.push(fn) })
    failsoft = createFailsoft({ redis: server.url, prefix: uniquePrefix(), logger: false })
    cleanups.push(() => failsoft.close())
    assert.equal(await failsoft.ready(), 'up')
  })
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })

  keyvTestSuite(vitestOnNodeTest() as never, Keyv, () => failsoftStore(failsoft))

  test('the suite ran on Redis, not on the memory fallback', () => {
    const components = failsoft.status().components
    for (const name of ['cache:keyv.keyv', 'cache:keyv.keyv1', 'cache:keyv.keyv2']) {
      assert.equal(components[name]?.backend, 'redis', name)
      assert.equal(components[name]?.fallbackOps, 0, `${name}: no operation served from memory`)
    }
  })
})

describe('@keyv/test-suite: failsoft/keyv memory-only (redis: null)', () => {
  const failsoft = createFailsoft({ redis: null, logger: false })
  after(() => failsoft.close())

  keyvTestSuite(vitestOnNodeTest() as never, Keyv, () => failsoftStore(failsoft))
})
