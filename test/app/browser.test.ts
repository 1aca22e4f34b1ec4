// End to end in headless Chromium: two app processes on one Redis, a page on each in the same
// chat room. A message crosses; Redis is killed and both status panels turn degraded within
// 2 s while same-process chat keeps working; Redis restarts, the panels show Redis again and
// cross-process chat resumes. A screenshot of each phase goes to test-artifacts/app-e2e/.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { chromium, type Browser, type Page } from 'playwright-core'
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  CHROMIUM_MISSING,
  defer,
  redis,
  repoRoot,
  spawnApp,
  tempDir,
  uniquePrefix,
} from './helpers.js'
const artifacts = join(repoRoot, 'test-artifacts', 'app-e2e')

process.on('unhandledRejection', (reason) => {
  throw new Error(`unhandled rejection: ${String(reason)}`)
})

async function openChat(
  browser: Browser,
  url: string,
  name: string,
  problems: string[],
): Promise<Page> {
  // One context per page: separate storage, like separate people.
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } })
  const page = await context.newPage()
  page.on('pageerror', (error) => problems.push(`${name}: ${error.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`${name}: ${message.text()}`)
  })
  await page.goto(`${url}/#/chat/street`)
  await page.fill('#chat-name', name)
  await page.press('#chat-name', 'Enter') // 'change' → re-join under this name
  await page.waitForSelector('#ws-state[data-state="open"]')
  return page
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#chat-input', text)
  await page.press('#chat-input', 'Enter')
}

const sees = (page: Page, text: string, timeout = 3000) =>
  page
    .locator('#chat-log .chat-text', { hasText: text })
    .first()
    .waitFor({ state: 'visible', timeout })

const panel = (page: Page, state: 'up' | 'down', timeout: number) =>
  page.waitForSelector(`#status-redis[data-state="${state}"]`, { timeout })

describe('the reference app in a browser', () => {
  test(
    'two processes, one room: crossing, degraded within 2 s, in-process chat, recovery',
    { skip: CHROMIUM === null ? CHROMIUM_MISSING : false },
    async (t) => {
      mkdirSync(artifacts, { recursive: true })
      const server = await redis(t)
      const dir = tempDir(t)
      const common = {
        REDIS_URL: server.url,
        DATABASE_PATH: join(dir, 'app.db'),
        FAILSOFT_PREFIX: uniquePrefix(),
      }
      const one = await spawnApp(t, { ...common, SPOOL_PATH: join(dir, 'spool-1.jsonl') })
      const two = await spawnApp(t, { ...common, SPOOL_PATH: join(dir, 'spool-2.jsonl') })

      const browser = await chromium.launch({
        executablePath: CHROMIUM as string,
        args: CHROMIUM_ARGS,
      })
      defer(t, () => browser.close())
      const problems: string[] = []
      const ana = await openChat(browser, one.url, 'Ana', problems)
      const ben = await openChat(browser, two.url, 'Ben', problems)
      const shot = (phase: string) =>
        Promise.all([
          ana.screenshot({ path: join(artifacts, `${phase}-process-1.png`) }),
          ben.screenshot({ path: join(artifacts, `${phase}-process-2.png`) }),
        ])

      // Phase 1: Redis up, the message crosses processes.
      await panel(ana, 'up', 5000)
      await panel(ben, 'up', 5000)
      await say(ana, 'Hello from process one <b>not bold</b>')
      await sees(ben, 'Hello from process one <b>not bold</b>')
      assert.equal(await ben.locator('#chat-log b').count(), 0, 'markup is shown as text')
      await shot('1-redis-up')

      // Phase 2: Redis killed. Both panels turn degraded within 2 s; same-process chat works.
      const killedAt = Date.now()
      await server.kill()
      await Promise.all([panel(ana, 'down', 2000), panel(ben, 'down', 2000)])
      const detectedMs = Date.now() - killedAt
      assert.ok(detectedMs < 2000, `panels degraded after ${detectedMs} ms`)
      const alex = await openChat(browser, one.url, 'Alex', problems)
      await panel(alex, 'down', 2000)
      await say(ana, 'Redis is down, process one still chats')
      await sees(alex, 'Redis is down, process one still chats')
      await say(ben, 'Process two is on its own')
      await sees(ben, 'Process two is on its own')
      await shot('2-redis-down')

      // Phase 3: Redis back. Panels show Redis again; cross-process chat resumes.
      await server.start()
      await Promise.all([panel(ana, 'up', 5000), panel(ben, 'up', 5000)])
      await say(ben, 'Back on Redis, hello process one')
      await sees(ana, 'Back on Redis, hello process one')
      await say(ana, 'And hello process two')
      await sees(ben, 'And hello process two')
      await shot('3-redis-back')

      assert.deepEqual(problems, [], 'no page error, no CSP violation')
    },
  )
})
