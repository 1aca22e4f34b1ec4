// socket.io-adapter and socket.io are optional peer dependencies: failsoft's main entry must
// load and work without them (only failsoft/socket.io imports them).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

test('failsoft loads and works with socket.io-adapter not installed', async () => {
  const fixture = fileURLToPath(new URL('./fixtures/without-socket-io.ts', import.meta.url))
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fixture], {
    timeout: 30_000,
  })
  assert.match(
    stdout,
    /socket\.io-adapter blocked: yes; layer ok: 1; failsoft\/socket\.io: ERR_MODULE_NOT_FOUND/,
  )
})

test('package.json: ./socket.io is exported (types first) and its peers are optional', () => {
  const manifest = JSON.parse(
    readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'),
  ) as {
    exports: Record<string, Record<string, string>>
    peerDependencies: Record<string, string>
    peerDependenciesMeta: Record<string, { optional?: boolean }>
    devDependencies: Record<string, string>
    dependencies: Record<string, string>
  }
  assert.deepEqual(Object.keys(manifest.exports['./socket.io']!), ['types', 'default'])
  assert.equal(manifest.exports['./socket.io']!.types, './dist/socket.io.d.ts')
  for (const peer of ['socket.io-adapter', 'socket.io']) {
    assert.ok(manifest.peerDependencies[peer], `${peer} is a peer dependency`)
    assert.equal(manifest.peerDependenciesMeta[peer]?.optional, true, `${peer} is optional`)
    assert.ok(manifest.devDependencies[peer], `${peer} is a dev dependency`)
    assert.equal(manifest.dependencies[peer], undefined)
  }
})
