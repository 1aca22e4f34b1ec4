import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const script = fileURLToPath(new URL('../scripts/readme-quickstart.ts', import.meta.url))

test("the README's quickstart runs as written (memory-only), importing failsoft by name", async () => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], {
    timeout: 30_000,
  })
  assert.match(stdout, /README quickstart ok: dispatch mode inline/)
})
