// The slice of vitest's API that @keyv/test-suite uses (`it`, `beforeEach`, `afterEach`, and
// `t.expect(...)` with the matchers below), on node:test and node:assert. The suite receives
// it where it expects `import * as test from 'vitest'`.
import assert from 'node:assert/strict'
import { afterEach, beforeEach, it } from 'node:test'

interface Matchers {
  toBe(expected: unknown): void
  toEqual(expected: unknown): void
  toBeTruthy(): void
  toBeFalsy(): void
  toBeUndefined(): void
  toBeDefined(): void
  toBeNull(): void
  toContain(item: unknown): void
}

interface Expect {
  (actual: unknown): Matchers & { not: Matchers }
  /** vitest: exactly n expect() calls in this test. Checked when the test body returns. */
  assertions(n: number): void
}

/** vitest's toEqual ignores properties whose value is undefined; assert's does not. */
function withoutUndefined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutUndefined)
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value
  if (Object.getPrototypeOf(value) !== Object.prototype) return value
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, withoutUndefined(v)]),
  )
}

function matchers(actual: unknown, negate: boolean): Matchers {
  const check = (pass: boolean, message: string): void => {
    assert.ok(negate ? !pass : pass, `${negate ? 'not ' : ''}${message}`)
  }
  const equal = (a: unknown, b: unknown): boolean => {
    try {
      assert.deepStrictEqual(withoutUndefined(a), withoutUndefined(b))
      return true
    } catch {
      return false
    }
  }
  const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v))
  return {
    toBe: (expected) =>
      check(Object.is(actual, expected), `expected ${show(actual)} to be ${show(expected)}`),
    toEqual: (expected) => {
      if (!negate) assert.deepStrictEqual(withoutUndefined(actual), withoutUndefined(expected))
      else check(equal(actual, expected), 'expected values to be equal')
    },
    toBeTruthy: () => check(Boolean(actual), `expected ${show(actual)} to be truthy`),
    toBeFalsy: () => check(!actual, `expected ${show(actual)} to be falsy`),
    toBeUndefined: () => check(actual === undefined, `expected ${show(actual)} to be undefined`),
    toBeDefined: () => check(actual !== undefined, 'expected a defined value'),
    toBeNull: () => check(actual === null, `expected ${show(actual)} to be null`),
    toContain: (item) =>
      check(
        (Array.isArray(actual) || typeof actual === 'string') &&
          (actual as unknown[]).includes(item as never),
        `expected ${show(actual)} to contain ${show(item)}`,
      ),
  }
}

function makeExpect(): { expect: Expect; verify(): void } {
  let calls = 0
  let planned: number | null = null
  const expect = ((actual: unknown) => {
    calls++
    return Object.assign(matchers(actual, false), { not: matchers(actual, true) })
  }) as Expect
  expect.assertions = (n) => {
    planned = n
  }
  return {
    expect,
    verify: () => {
      if (planned !== null) assert.equal(calls, planned, `expected ${planned} assertions`)
    },
  }
}

type Body = (context: { expect: Expect }) => unknown

/** What the suite calls `test`: register its cases and hooks with node:test. */
export function vitestOnNodeTest(): {
  it(name: string, body: Body): void
  test(name: string, body: Body): void
  beforeEach(fn: () => unknown): void
  afterEach(fn: () => unknown): void
} {
  const register = (name: string, body: Body): void => {
    it(name, async () => {
      const { expect, verify } = makeExpect()
      await body({ expect })
      verify()
    })
  }
  return {
    it: register,
    test: register,
    beforeEach: (fn) => beforeEach(async () => void (await fn())),
    afterEach: (fn) => afterEach(async () => void (await fn())),
  }
}
