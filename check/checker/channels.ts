// Channel-layer invariants (see docs/checker.md, "Channels").
//
// Every member channel is in one group from its join (groupAdd answered) until the end. Every
// publisher numbers its group sends (seq, per incarnation) and puts (publisher, seq) in the
// message. For a member channel c of process Q and a publisher P:
//
//   channels.duplicate   c received (P, seq) more than once.
//   channels.reorder     c received (P, seq) after (P, seq') with seq' > seq.
//   channels.phantom     c received (P, seq) that P never sent (or before P sent it).
//   channels.local-loss  P = Q: a send of P completed after c joined, c never received it
//                        (Q alive 200 ms after the send).
//   channels.cross-loss  P ≠ Q, Q joined before the send and was never killed, and either
//                        - the send was made while P was degraded (outbox): P recovered
//                          for good (its 'up' u after which it did not fail again within
//                          1.5 s) within 29 s of the send, P lived ≥ 3 s past u, and Q was
//                          not cut off alone (a fault aimed at Q's path only, or Q's
//                          forceFallback) during [x, x + 3 s] for u nor for any earlier 'up'
//                          x of P since the send (the outbox may have been flushed then); or
//                        - the send was made while P was up, with no fault of any kind and no
//                          forceFallback anywhere in [send − 0.5 s, send + 1 s], P and Q up all
//                          that time;
//                        and c never received it.
import { History, INF, ms, type OpRecord } from './history.js'
import type { HistoryEvent } from './events.js'
import { degraded } from './cache.js'
import { opEvents, withContext, type Violation } from './violation.js'

const FLUSH_WINDOW = ms(3000)
const REFAIL_WINDOW = ms(1500)
const MAX_AGE = ms(29_000)

interface Member {
  channel: string
  process: string
  joinT: bigint
}

export interface ChannelStats {
  sends: number
  receipts: number
  members: number
  requiredDeliveries: number
}

function ranges(seqs: number[]): string {
  const sorted = [...seqs].sort((a, b) => a - b)
  const out: string[] = []
  for (let i = 0; i < sorted.length;) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++
    out.push(i === j ? `${sorted[i]}` : `${sorted[i]}–${sorted[j]}`)
    i = j + 1
  }
  return out.length > 12 ? `${out.slice(0, 12).join(', ')}, …` : out.join(', ')
}

/**
 * When the outbox holding a degraded send may have been flushed: P's first 'up' after it, and
 * every later one while P failed again within 1.5 s of the previous (the flush waits settleMs
 * after an 'up', so a quick re-failure may or may not have caught it). The last one is the
 * 'up' after which P stayed up.
 */
function flushCandidates(h: History, p: string, send: OpRecord): bigint[] {
  let u: bigint | undefined
  if (h.stateAt(p, send.completeT) === 'up') {
    const pr = h.proc(p)
    const inside = pr?.transitions.filter(
      (tr) => tr.state === 'up' && tr.t >= send.invokeT && tr.t <= send.completeT,
    )
    u = inside?.at(-1)?.t ?? send.completeT
  } else {
    u = h.nextUp(p, send.completeT)
  }
  const out: bigint[] = []
  for (let guard = 0; u !== undefined && guard < 100; guard++) {
    out.push(u)
    const from = u
    const refail = h
      .proc(p)
      ?.transitions.find((tr) => tr.state === 'down' && tr.t > from && tr.t <= from + REFAIL_WINDOW)
    if (refail === undefined) break
    u = h.nextUp(p, refail.t)
  }
  if (u === undefined) return [] // never up for good: P died or the run ended first
  return out
}

function cutOffAlone(h: History, q: string, a: bigint, b: bigint): boolean {
  const pr = h.proc(q)
  if (pr === undefined) return true
  if (h.forcedDuring(q, a, b)) return true
  return h.faults.some(
    (f) =>
      f.start <= b &&
      f.end >= a &&
      !f.targets.includes('*') &&
      f.targets.includes(pr.base) &&
      (f.outage || f.slow),
  )
}

export function checkChannels(h: History): { violations: Violation[]; stats: ChannelStats } {
  const violations: Violation[] = []
  const members = new Map<string, Member>()
  for (const j of h.opsOf('chan.join')) {
    if (!j.ok) continue
    const channel = String(j.invoke['channel'])
    members.set(channel, { channel, process: j.process, joinT: j.completeT })
  }
  const sendsByPub = new Map<string, Map<number, OpRecord>>()
  let sendCount = 0
  for (const s of h.opsOf('chan.send')) {
    let m = sendsByPub.get(s.process)
    if (m === undefined) sendsByPub.set(s.process, (m = new Map()))
    m.set(Number(s.invoke['seq']), s)
    sendCount++
  }
  // receipts[channel][pub] = events in time order
  const receipts = new Map<string, Map<string, HistoryEvent[]>>()
  let receiptCount = 0
  for (const e of h.events) {
    if (e.op !== 'chan.recv') continue
    receiptCount++
    const channel = String(e['channel'])
    let byPub = receipts.get(channel)
    if (byPub === undefined) receipts.set(channel, (byPub = new Map()))
    const pub = String(e['pub'])
    let list = byPub.get(pub)
    if (list === undefined) byPub.set(pub, (list = []))
    list.push(e)
  }
  const stats: ChannelStats = {
    sends: sendCount,
    receipts: receiptCount,
    members: members.size,
    requiredDeliveries: 0,
  }
  const degradedCache = new Map<OpRecord, boolean>()
  const isDegraded = (s: OpRecord): boolean => {
    let d = degradedCache.get(s)
    if (d === undefined) degradedCache.set(s, (d = degraded(h, s)))
    return d
  }

  // Losses, grouped per (publisher, member process, kind).
  const losses = new Map<
    string,
    {
      kind: string
      pub: string
      q: string
      channels: Set<string>
      sends: OpRecord[]
      seqs: number[]
    }
  >()

  for (const member of members.values()) {
    const q = member.process
    const qRec = h.proc(q)
    const byPub = receipts.get(member.channel) ?? new Map<string, HistoryEvent[]>()
    // Duplicates, reorders, phantoms.
    for (const [pub, list] of byPub) {
      const sends = sendsByPub.get(pub)
      const seen = new Map<number, HistoryEvent>()
      let max = -Infinity
      let maxEvent: HistoryEvent | undefined
      const dups: HistoryEvent[][] = []
      let reorder: HistoryEvent[] | undefined
      let reorders = 0
      for (const e of list) {
        const seq = Number(e['seq'])
        const send = sends?.get(seq)
        if (send === undefined || e.t < send.invokeT) {
          violations.push({
            invariant: 'channels.phantom',
            severity: 'violation',
            message: `${member.channel} (${q}) received ${pub}#${seq}, which ${pub} ${send === undefined ? 'never sent' : 'had not sent yet'}`,
            events: withContext(h, [...opEvents(send), e]),
          })
          continue
        }
        const first = seen.get(seq)
        if (first !== undefined) dups.push([...opEvents(send), first, e])
        else seen.set(seq, e)
        if (seq < max) {
          reorders++
          reorder ??= [...opEvents(sends?.get(Number(maxEvent?.['seq'])), send), maxEvent!, e]
        }
        if (seq > max) {
          max = seq
          maxEvent = e
        }
      }
      if (dups.length > 0) {
        violations.push({
          invariant: 'channels.duplicate',
          severity: 'violation',
          message: `${member.channel} (${q}) received ${dups.length} message(s) of ${pub} twice (first: #${String(dups[0]![dups[0]!.length - 1]!['seq'])})`,
          events: withContext(h, dups[0]!, { processes: [q, pub] }),
        })
      }
      if (reorder !== undefined) {
        violations.push({
          invariant: 'channels.reorder',
          severity: 'violation',
          message: `${member.channel} (${q}) received ${reorders} message(s) of ${pub} after a later one (first: #${String(reorder.at(-1)!['seq'])} after #${String(reorder.at(-2)!['seq'])})`,
          events: withContext(h, reorder, { processes: [q, pub] }),
        })
      }
    }
    // Losses.
    for (const [pub, sends] of sendsByPub) {
      const got = new Set((byPub.get(pub) ?? []).map((e) => Number(e['seq'])))
      const pRec = h.proc(pub)
      for (const [seq, s] of sends) {
        if (!s.ok || s.invokeT <= member.joinT) continue
        let kind: string | undefined
        if (pub === q) {
          if ((qRec?.death ?? INF) < s.completeT + ms(200)) continue
          kind = 'channels.local-loss'
        } else {
          if (qRec === undefined || qRec.killed) continue // not a member that "stayed one"
          if (isDegraded(s)) {
            const ups = flushCandidates(h, pub, s)
            const u = ups.at(-1)
            if (u === undefined) continue // P never recovered (died, or the run ended first)
            if ((pRec?.death ?? INF) < u + FLUSH_WINDOW) continue
            if (u - s.invokeT > MAX_AGE) continue // past the outbox' age bound
            if (ups.some((x) => cutOffAlone(h, q, x, x + FLUSH_WINDOW))) continue
            kind = 'channels.cross-loss'
          } else {
            const a = s.invokeT - ms(500)
            const b = s.completeT + ms(1000)
            if (h.anyFaultDuring(a, b).length > 0) continue
            if (h.forcedDuring(pub, a, b) || h.forcedDuring(q, a, b)) continue
            if (!h.upThroughout(pub, a, b) || !h.upThroughout(q, a, b)) continue
            kind = 'channels.cross-loss'
          }
        }
        stats.requiredDeliveries++
        if (got.has(seq)) continue
        const k = `${kind}\u0000${pub}\u0000${q}`
        let loss = losses.get(k)
        if (loss === undefined) {
          losses.set(k, (loss = { kind, pub, q, channels: new Set(), sends: [], seqs: [] }))
        }
        loss.channels.add(member.channel)
        if (!loss.seqs.includes(seq)) {
          loss.seqs.push(seq)
          loss.sends.push(s)
        }
      }
    }
  }
  for (const loss of losses.values()) {
    loss.sends.sort((a, b) => (a.invokeT < b.invokeT ? -1 : 1))
    const first = loss.sends[0]!
    const last = loss.sends.at(-1)!
    const deg = isDegraded(first) ? 'while degraded (outbox)' : 'while up'
    violations.push({
      invariant: loss.kind,
      severity: 'violation',
      message:
        `${loss.q} (${[...loss.channels].join(', ')}) never received ${loss.seqs.length} message(s) ` +
        `of ${loss.pub}: #${ranges(loss.seqs)} (first sent ${deg})`,
      events: withContext(h, opEvents(first, last === first ? undefined : last), {
        processes: [loss.pub, loss.q],
        after: ms(3000),
      }),
    })
  }
  return { violations, stats }
}
