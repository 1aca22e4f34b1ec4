// Schedules are a pure function of the seed (and the options): a seed replays its schedule.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { FAULT_KINDS, selectKinds } from '../../check/harness/faults.js'
import { makeSchedule } from '../../check/harness/schedule.js'

test('the same seed gives the same schedule; another seed another one', () => {
  for (const seed of [1, 2, 17, 123_456]) {
    assert.deepEqual(makeSchedule(seed), makeSchedule(seed))
  }
  assert.notDeepEqual(makeSchedule(1).faults, makeSchedule(2).faults)
})

test('faults fit in the load phase, never overlap within a lane, and draw only from the kinds asked', () => {
  for (let seed = 1; seed <= 200; seed++) {
    const s = makeSchedule(seed, { durationMs: 12_000 })
    assert.ok(s.processes.length >= 3)
    for (const lane of ['server', 'network', 'client'] as const) {
      const steps = s.faults.filter((f) => f.lane === lane)
      for (let i = 1; i < steps.length; i++) {
        assert.ok(
          steps[i]!.atMs >= steps[i - 1]!.atMs + steps[i - 1]!.durationMs,
          `seed ${seed} lane ${lane}`,
        )
      }
    }
    for (const f of s.faults) {
      assert.ok(
        f.atMs + f.durationMs <= s.durationMs,
        `seed ${seed}: ${f.kind} ends in the load phase`,
      )
      assert.ok(s.kinds.includes(f.kind))
      if (f.target !== undefined) assert.ok(s.processes.some((p) => p.base === f.target))
    }
  }
  const only = makeSchedule(5, { kinds: ['freeze'] })
  assert.ok(only.faults.every((f) => f.kind === 'freeze'))
})

test('--faults: defaults, only, +added, -removed, none', () => {
  const defaults = FAULT_KINDS.filter((k) => k.defaultOn).map((k) => k.name)
  assert.deepEqual(selectKinds(undefined), defaults)
  assert.ok(!defaults.includes('rollback'), 'rollback is off by default')
  assert.ok(selectKinds('+rollback').includes('rollback'))
  assert.ok(!selectKinds('-freeze').includes('freeze'))
  assert.deepEqual(selectKinds('freeze,reset'), ['freeze', 'reset'])
  assert.deepEqual(selectKinds('none'), [])
  assert.throws(() => selectKinds('+nonsense'), /unknown fault kind/)
})
