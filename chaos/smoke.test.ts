// The chaos harness's own check (≈ 15 s on 2 cores; part of `npm test`): one short kill under
// load, then the report must show that every measurement actually measured something. Alone:
//   npm run build && npm run test:only -- chaos
// It asserts the harness, not failsoft's targets: those are the chaos run's job.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { renderMarkdown } from './report.js'
import { runChaos } from './run.js'

const root = fileURLToPath(new URL('..', import.meta.url))

test('a one-fault chaos run measures every column and renders its report', async () => {
  const { report, apps } = await runChaos({ profile: 'smoke', root, command: 'smoke test' })
  assert.deepEqual(
    report.phases.map((p) => p.phase),
    ['warm-up', 'healthy', 'kill', 'after kill'],
  )
  for (const phase of report.phases) {
    assert.ok(phase.http.count > 0, `${phase.phase}: HTTP requests were sent`)
    assert.ok(phase.ws.sent > 0, `${phase.phase}: chat messages were sent`)
    assert.ok(phase.ws.expectedCross > 0, `${phase.phase}: both processes had chat clients`)
    assert.ok(phase.tasks.dispatched > 0, `${phase.phase}: tasks were dispatched`)
    for (const app of apps) assert.ok((phase.rssMiB[app] ?? 0) > 10, `${app}: RSS was read`)
  }
  const kill = report.phases.find((p) => p.phase === 'kill')
  assert.ok(kill !== undefined)
  for (const app of apps) {
    // A killed Redis is noticed (the process went off Redis) and the way back is timed.
    assert.equal(typeof kill.detectionMs[app], 'number', `${app}: detection measured`)
    assert.equal(typeof kill.recoveryMs[app], 'number', `${app}: recovery measured`)
  }
  assert.ok((kill.http.served.memory ?? 0) > 0, 'reads were served by the memory fallback')
  assert.ok(kill.http.outage !== null && kill.http.outage.count > 0, 'outage window found')
  const healthy = report.phases.find((p) => p.phase === 'healthy')
  assert.ok((healthy?.http.served.redis ?? 0) > 0, 'reads were served from Redis when healthy')
  assert.equal(report.targets.length, 8)
  const markdown = renderMarkdown(report, apps)
  assert.match(markdown, /## Targets/)
  assert.match(markdown, /\| \*\*kill\*\* \|/)
})
