// A `redis` URL that cannot be used stops createFailsoft with an error that names the option and
// says what is wrong — without echoing the URL: it may hold a password, and its host (an internal
// name, an address) is not for logs either.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createFailsoft } from '../../src/index.js'

const USER = 'appuser'
const PASSWORD = 's3cr3t-Pw'
const HOST = 'redis-7.internal.example'

const cases: Array<[string, string, RegExp, typeof TypeError | typeof RangeError]> = [
  [
    'a port that is not a number',
    `redis://${USER}:${PASSWORD}@${HOST}:63x79/0`,
    /port is not a number between 1 and 65535/,
    TypeError,
  ],
  ['a port out of range', `redis://${USER}:${PASSWORD}@${HOST}:99999`, /port/, TypeError],
  [
    'a password with an unencoded "#"',
    `redis://${USER}:${PASSWORD}#x@${HOST}:6379`,
    /must be percent-encoded/,
    TypeError,
  ],
  [
    'a password with an unencoded "/"',
    `redis://${USER}:${PASSWORD}/x@${HOST}:6379`,
    /must be percent-encoded/,
    TypeError,
  ],
  [
    'a host:port without a scheme',
    `${HOST}:6379`,
    /does not start with redis:\/\/ or rediss:\/\//,
    TypeError,
  ],
  [
    'another scheme',
    `https://${USER}:${PASSWORD}@${HOST}:6379`,
    /scheme is "https:", not redis: or rediss:/,
    TypeError,
  ],
  [
    'a path that is not a database number',
    `redis://${USER}:${PASSWORD}@${HOST}:6379/cache`,
    /database number/,
    RangeError,
  ],
  ['an unclosed IPv6 host', `redis://${USER}:${PASSWORD}@[::1:6379`, /IPv6/, TypeError],
]

describe('a bad redis URL', () => {
  for (const [name, url, reason, type] of cases) {
    test(`${name}: names the option and the problem, echoes neither credentials nor host`, () => {
      assert.throws(
        () => createFailsoft({ redis: url, logger: false }),
        (error: Error & { code?: string; option?: string }) => {
          assert.ok(error instanceof type, `${error.name} is a ${type.name}`)
          assert.equal(error.code, 'FAILSOFT_INVALID_OPTION')
          assert.equal(error.option, 'redis')
          assert.match(error.message, /option `redis` must be a redis:\/\/ or rediss:\/\/ URL/)
          assert.match(error.message, reason)
          assert.match(error.message, new RegExp(`a string of ${url.length} characters`))
          for (const secret of [USER, PASSWORD, HOST, 'internal', '6379', '::1']) {
            assert.ok(!error.message.includes(secret), `"${secret}" is not in: ${error.message}`)
          }
          return true
        },
      )
    })
  }
})
