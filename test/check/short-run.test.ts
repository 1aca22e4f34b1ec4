// A short seeded run of the fault checker inside `npm test`: two fixed schedules, each played
// against real redis-server processes and failsoft child processes, then checked. A failure
// prints the seed, the invariant and the minimal failing history; replay it with
// `npm run check -- --seed N --duration 8000`.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { check, formatViolation, parseHistory } from '../../check/checker/index.js'
import { runSchedule } from '../../check/harness/runner.js'
import { makeSchedule } from '../../check/harness/schedule.js'

const root = fileURLToPath(new URL('../..', import.meta.url))
const DURATION_MS = 8000
const MAX_PRINTED = 8

/**
 * 4: FLUSHALL, one worker partitioned, a child killed right after Redis returns, a worker
 *    killed, Redis restarted empty, connection resets; worker lock 1000 ms, handlers longer.
 * 3: one worker partitioned for 3.4 s, forceFallback in the other, a 2 s freeze meanwhile;
 *    clocks 2.2 s ahead and 1.7 s behind; clear() in the mix.
 */
for (const seed of [4, 3]) {
  test(`fault checker, seed ${seed}: no invariant violated`, { timeout: 110_000 }, async () => {
    const schedule = makeSchedule(seed, { durationMs: DURATION_MS })
    const outcome = await runSchedule({ schedule, root })
    const result = check(parseHistory(outcome.texts))
    const violations = result.violations.filter((v) => v.severity === 'violation')
    const printed = violations.slice(0, MAX_PRINTED).map((v) => formatViolation(result.history, v))
    if (violations.length === 0 && outcome.errors.length === 0) outcome.cleanup()
    assert.deepEqual(outcome.errors, [], 'the harness played the whole schedule')
    assert.ok(
      result.stats.operations['cache.get'] !== undefined && result.stats.tasks.runs > 0,
      'the load ran',
    )
    assert.equal(
      violations.length,
      0,
      `${violations.length} violation(s) (replay: npm run check -- --seed ${seed} --duration ${DURATION_MS}; ` +
        `histories kept in ${outcome.runDir}):\n\n${printed.join('\n\n')}` +
        (violations.length > MAX_PRINTED
          ? `\n\n… and ${violations.length - MAX_PRINTED} more`
          : ''),
    )
  })
}
