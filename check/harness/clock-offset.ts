// Preload (`node --import tsx --import ./check/harness/clock-offset.ts …`): shifts the wall
// clock of this process by CHECK_CLOCK_OFFSET_MS — Date.now(), new Date() and Date() — as a
// machine whose clock is a few seconds off would. process.hrtime (the history's clock) and
// performance.now() are monotonic clocks and stay as they are.
const offset = Number(process.env['CHECK_CLOCK_OFFSET_MS'] ?? '0')

if (Number.isFinite(offset) && offset !== 0) {
  const RealDate = Date
  const realNow = RealDate.now.bind(RealDate)
  const shiftedNow = (): number => realNow() + offset
  const ShiftedDate = new Proxy(RealDate, {
    construct(target, args: unknown[], newTarget) {
      return Reflect.construct(target, args.length === 0 ? [shiftedNow()] : args, newTarget)
    },
    apply() {
      return new RealDate(shiftedNow()).toString()
    },
    get(target, property, receiver) {
      if (property === 'now') return shiftedNow
      return Reflect.get(target, property, receiver)
    },
  })
  globalThis.Date = ShiftedDate
}

export {}
