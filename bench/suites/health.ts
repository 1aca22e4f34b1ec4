/**
 * Health suite: how fast the one monitor notices each kind of outage, and how fast it comes
 * back. Times are measured from the fault (or from Redis answering again) to the monitor's
 * 'down' / 'up' event, on real redis-server processes.
 */
import { Redis } from 'ioredis'
import { createFailsoft, type Failsoft } from 'failsoft'
import { RedisServer, TcpProxy, sleep } from '../../test/support/fault-kit.js'
import { median, type BenchContext, type SuiteReport } from '../report.js'

type Scenario = {
  name: string
  target: string
  measure: () => Promise<number>
}

function nextEvent(failsoft: Failsoft, event: 'down' | 'up', timeoutMs = 15_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no '${event}' within ${timeoutMs} ms`)),
      timeoutMs,
    )
    const sub = failsoft.health.once(event, ({ at }) => {
      clearTimeout(timer)
      sub.dispose()
      resolve(at)
    })
  })
}

/** Sequential GETs through the monitor until stopped: the "under traffic" condition. */
function traffic(failsoft: Failsoft): () => Promise<void> {
  let running = true
  const loop = (async () => {
    while (running) {
      if (failsoft.health.available) {
        await failsoft.context.monitor.run((redis) => redis.get('bench:k')).catch(() => undefined)
      } else {
        await sleep(1)
      }
    }
  })()
  return async () => {
    running = false
    await loop
  }
}

async function withServer<T>(fn: (server: RedisServer) => Promise<T>): Promise<T> {
  const server = await RedisServer.start()
  try {
    return await fn(server)
  } finally {
    await server.stop()
  }
}

function open(url: string): Failsoft {
  return createFailsoft({ redis: url, prefix: 'benchhealth', logger: false })
}

async function detection(
  fault: 'kill' | 'freeze' | 'blackhole',
  withTraffic: boolean,
): Promise<number> {
  return withServer(async (server) => {
    const proxy = fault === 'blackhole' ? await TcpProxy.start(server) : null
    const failsoft = open(proxy ? proxy.urlFor(server) : server.url)
    try {
      await failsoft.ready()
      const stop = withTraffic ? traffic(failsoft) : async () => undefined
      await sleep(300)
      const down = nextEvent(failsoft, 'down')
      const at = Date.now()
      if (fault === 'kill') await server.kill()
      else if (fault === 'freeze') server.freeze()
      else proxy!.blackhole()
      const detected = await down
      await stop()
      if (fault === 'freeze') server.thaw()
      return detected - at
    } finally {
      await failsoft.close()
      await proxy?.close()
    }
  })
}

async function coldStart(mode: 'refused' | 'blackhole'): Promise<number> {
  return withServer(async (server) => {
    let proxy: TcpProxy | null = null
    if (mode === 'refused') await server.kill()
    else {
      proxy = await TcpProxy.start(server)
      proxy.blackhole()
    }
    const started = Date.now()
    const failsoft = open(proxy ? proxy.urlFor(server) : server.url)
    try {
      const state = await failsoft.ready()
      if (state !== 'down') throw new Error(`expected down at cold start, got ${state}`)
      return Date.now() - started
    } finally {
      await failsoft.close()
      await proxy?.close()
    }
  })
}

async function recovery(
  fault: 'restart' | 'restart-empty' | 'thaw',
  outageMs: number,
): Promise<number> {
  return withServer(async (server) => {
    const failsoft = open(server.url)
    try {
      await failsoft.ready()
      if (fault === 'thaw') server.freeze()
      else await server.kill()
      await nextEvent(failsoft, 'down').catch(() => undefined)
      await sleep(outageMs)
      const up = nextEvent(failsoft, 'up')
      let answeringAt: number
      if (fault === 'thaw') {
        server.thaw()
        answeringAt = Date.now()
      } else {
        if (fault === 'restart-empty') await server.restart({ keepData: false })
        else await server.start()
        answeringAt = Date.now() // start() resolves once the server answers PING
      }
      return (await up) - answeringAt
    } finally {
      await failsoft.close()
    }
  })
}

/** Peer: how long a raw ioredis client with default options takes to fail a GET on a frozen server. */
async function ioredisFrozenGet(capMs: number): Promise<number> {
  return withServer(async (server) => {
    const client = new Redis(server.url)
    client.on('error', () => undefined)
    try {
      await client.ping()
      server.freeze()
      const started = Date.now()
      await Promise.race([client.get('k').catch(() => undefined), sleep(capMs)])
      const elapsed = Date.now() - started
      server.thaw()
      return elapsed
    } finally {
      client.disconnect()
    }
  })
}

export default async function healthSuite(ctx: BenchContext): Promise<SuiteReport> {
  const repeat = ctx.quick ? 2 : 3
  const outageMs = ctx.quick ? 1000 : 2000
  const scenarios: Scenario[] = [
    { name: 'SIGKILL, idle', target: '≤ 100 ms', measure: () => detection('kill', false) },
    { name: 'SIGKILL, under traffic', target: '≤ 100 ms', measure: () => detection('kill', true) },
    {
      name: 'SIGSTOP (frozen), idle',
      target: '≤ 500 ms',
      measure: () => detection('freeze', false),
    },
    {
      name: 'SIGSTOP (frozen), under traffic',
      target: '≤ 500 ms',
      measure: () => detection('freeze', true),
    },
    {
      name: 'blackhole proxy, idle',
      target: '≤ 500 ms',
      measure: () => detection('blackhole', false),
    },
    {
      name: 'cold start, connection refused → ready()',
      target: '≤ 1000 ms',
      measure: () => coldStart('refused'),
    },
    {
      name: 'cold start, blackholed → ready()',
      target: '≤ 1000 ms (+ margin)',
      measure: () => coldStart('blackhole'),
    },
    {
      name: `recovery after restart with data (${outageMs / 1000} s outage)`,
      target: '≤ 1000 ms',
      measure: () => recovery('restart', outageMs),
    },
    {
      name: `recovery after restart empty (${outageMs / 1000} s outage)`,
      target: '≤ 1000 ms',
      measure: () => recovery('restart-empty', outageMs),
    },
    {
      name: `recovery after thaw (${outageMs / 1000} s freeze)`,
      target: '≤ 1000 ms',
      measure: () => recovery('thaw', outageMs),
    },
  ]
  const rows: Array<Array<string | number>> = []
  const data: Record<string, number[]> = {}
  for (const scenario of scenarios) {
    const samples: number[] = []
    for (let i = 0; i < repeat; i++) samples.push(await scenario.measure())
    data[scenario.name] = samples
    ctx.log(`${scenario.name}: ${samples.join(', ')} ms`)
    rows.push([
      scenario.name,
      median(samples),
      Math.max(...samples),
      Math.min(...samples),
      scenario.target,
    ])
  }
  const capMs = ctx.quick ? 2000 : 5000
  const peer = await ioredisFrozenGet(capMs)
  data['ioredis defaults: GET on a frozen Redis'] = [peer]
  return {
    suite: 'health',
    title: 'Health: detection and recovery',
    tables: [
      {
        title: 'Time to state change',
        columns: ['scenario', 'median ms', 'max ms', 'min ms', 'target'],
        rows,
        note: `${repeat} repetitions each. Detection: fault → 'down' event. Cold start: createFailsoft() → ready() resolving 'down'. Recovery: Redis answering PING again → 'up' event (recovery steps included).`,
      },
      {
        title: 'The peer: a raw ioredis client with default options',
        columns: ['scenario', 'result'],
        rows: [
          [
            'GET on a frozen Redis',
            peer >= capMs ? `still waiting after ${capMs} ms (no detection at all)` : `${peer} ms`,
          ],
        ],
        note: 'ioredis has no freeze detection: a command waits for as long as the freeze lasts (ANCHORS.md).',
      },
    ],
    data,
  }
}
