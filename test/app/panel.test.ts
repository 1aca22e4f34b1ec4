// The live status panel in headless Chromium: memory-only shown as a mode (no fallback badges or
// counts, nothing buffered), a clean start shown as a start, an outage and a recovery on the
// timeline, "Recompute now" running without Redis, a spooled task marked once handed over.
// Screenshots go to test-artifacts/app-panel/.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import { waitFor } from '../support/fault-kit.js'
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  CHROMIUM_MISSING,
  joinRoom,
  redis,
  repoRoot,
  startTestApp,
  WsClient,
} from './helpers.js'

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

const artifacts = join(repoRoot, 'test-artifacts', 'app-panel')
const skip = CHROMIUM === null ? CHROMIUM_MISSING : false

async function open(browser: Browser, url: string, problems: string[]): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1100 } })
  const page = await context.newPage()
  page.on('pageerror', (error) => problems.push(error.message))
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(message.text())
  })
  await page.goto(`${url}/#/tasks`)
  await page.waitForSelector('#ws-state[data-state="open"]')
  return page
}

const text = (page: Page, selector: string) => page.locator(selector).innerText()

/** The timeline's state runs, oldest first, once it holds at least `samples` samples. */
async function timelineStates(page: Page, samples: number): Promise<string[]> {
  await waitFor(
    async () => Number(await page.locator('#timeline-svg').getAttribute('data-samples')) >= samples,
    { timeoutMs: samples * 1000 + 5000, intervalMs: 100, message: `${samples} timeline samples` },
  )
  return page
    .locator('#timeline-svg g[data-series="state"] rect')
    .evaluateAll((rects) => rects.map((r) => r.getAttribute('data-state') ?? ''))
}

describe('the status panel in a browser', { skip }, () => {
  let browser: Browser
  before(async () => {
    mkdirSync(artifacts, { recursive: true })
    browser = await chromium.launch({ executablePath: CHROMIUM as string, args: CHROMIUM_ARGS })
  })
  after(() => browser?.close())

  test('memory-only is a mode: neutral, no fallback counts, nothing buffered, a timeline', async (t) => {
    const app = await startTestApp(t, { redisUrl: null })
    const problems: string[] = []
    const page = await open(browser, app.url, problems)
    await page.waitForSelector('#status-redis[data-state="memory"]')
    assert.equal(await text(page, '#status-title'), 'Memory-only')
    assert.equal(
      await text(page, '#status-detail'),
      'No Redis configured: every component runs in this process.',
      'said once, not repeated with the "not configured" error',
    )
    assert.match(await text(page, '#status-start'), /^memory-only at /)
    assert.equal(await page.locator('.backend-memory').count(), 0, 'no orange "memory" badge')
    assert.equal(await page.locator('.backend-local').count(), 3)
    assert.match(await text(page, '#status-fallback-ops'), /memory-only/)
    const more = await text(page, '#status-more')
    assert.doesNotMatch(more, /Buffered for Redis|Spool/)

    // Chat in memory-only mode: nothing is buffered for Redis (there is no other process).
    const [alice, bob] = [await WsClient.open(t, app.url), await WsClient.open(t, app.url)]
    await joinRoom(alice, 'solo', 'alice')
    await joinRoom(bob, 'solo', 'bob')
    for (let i = 0; i < 5; i++) alice.send({ type: 'chat.message', text: `hello ${i}` })
    await bob.next((m) => m.type === 'chat.message' && m.text === 'hello 4')

    // "Recompute now" runs here.
    await page.click('button:has-text("Recompute now")')
    await page.waitForSelector('.dispatch-line .badge[data-mode="local"]')
    assert.equal(await page.locator('#status-dispatches .mode-inline:not(.neutral)').count(), 0)

    const states = await timelineStates(page, 3)
    assert.deepEqual([...new Set(states)], ['memory'])
    for (const series of ['rate', 'outbox', 'spool']) {
      assert.equal(
        await page.locator(`#timeline-svg g[data-series="${series}"] polyline`).count(),
        1,
        `${series} is drawn`,
      )
    }
    assert.equal(
      await page.locator('#timeline-svg g[data-series="outbox"]').getAttribute('data-peak'),
      '0',
      'the outbox stayed empty',
    )
    await page.screenshot({ path: join(artifacts, 'memory-only.png') })
    assert.deepEqual(problems, [], 'no page error, no CSP violation')
  })

  test('a start is not a recovery; an outage and its recovery show on the timeline', async (t) => {
    const server = await redis(t)
    const app = await startTestApp(t, { redisUrl: server.url })
    const problems: string[] = []
    const page = await open(browser, app.url, problems)
    await page.waitForSelector('#status-redis[data-state="up"]')
    assert.match(await text(page, '#status-start'), /^on Redis at /)
    assert.equal(await text(page, '#status-last'), 'none since the start')
    assert.equal(await text(page, '#status-transitions'), 'down 0 · up 0 · reset 0')
    await timelineStates(page, 2)
    await page.screenshot({ path: join(artifacts, '1-clean-start.png') })

    await server.kill()
    await page.waitForSelector('#status-redis[data-state="down"]', { timeout: 2000 })
    assert.equal(await page.locator('.backend-memory').count(), 3, 'fallbacks, on a real outage')
    // A dispatched batch waits in the spool; "Recompute now" runs one here instead.
    const spooled = await app.services.tasks.compost({ reason: 'panel test' })
    assert.equal(spooled.mode, 'spooled')
    await page.click('button:has-text("Recompute now")')
    await page.waitForSelector('.dispatch-line .badge[data-mode="local"]')
    await page.waitForSelector('#status-dispatches .badge[data-mode="spooled"]:not(.settled)')
    await timelineStates(page, 5)
    await page.screenshot({ path: join(artifacts, '2-redis-down.png') })

    await server.start()
    await page.waitForSelector('#status-redis[data-state="up"]', { timeout: 5000 })
    assert.match(await text(page, '#status-last'), /^back on Redis at /)
    // The fault kit's redis-server keeps no data: it came back empty (a reset).
    assert.equal(await text(page, '#status-transitions'), 'down 1 · up 1 · reset 1')
    await page.waitForSelector('#status-dispatches .badge.settled[data-mode="spooled"]', {
      timeout: 5000,
    })
    assert.match(
      await page.locator('#status-dispatches .badge.settled[data-mode="spooled"]').innerText(),
      /^spooled → (ran \(worker\)|handed over)$/,
    )
    const states = await timelineStates(page, 8)
    const runs = states.filter((s, i) => s !== states[i - 1])
    assert.deepEqual(runs.slice(-3), ['up', 'down', 'up'], `state runs: ${runs.join(' ')}`)
    const peak = async (series: string) =>
      Number(
        await page.locator(`#timeline-svg g[data-series="${series}"]`).getAttribute('data-peak'),
      )
    assert.ok((await peak('spool')) >= 1, 'the spooled job showed in the spool depth')
    assert.ok((await peak('rate')) > 0, 'fallback operations per second during the outage')
    await page.screenshot({ path: join(artifacts, '3-redis-back.png') })
    assert.deepEqual(problems, [], 'no page error, no CSP violation')
  })
})
