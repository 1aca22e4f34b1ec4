// History writer: one JSON line per event, appended with fs.writeSync so that an event is in
// the file (the kernel's page cache) before the operation it describes goes on — a SIGKILLed
// child loses nothing it reported. `t` is process.hrtime.bigint() (CLOCK_MONOTONIC, shared by
// every process of the machine, untouched by the clock-offset preload).
import { closeSync, openSync, writeSync } from 'node:fs'

export type Kind = 'invoke' | 'ok' | 'fail' | 'info'

export class Recorder {
  readonly #fd: number
  readonly process: string
  #opId = 0

  constructor(path: string, process: string) {
    this.#fd = openSync(path, 'a')
    this.process = process
  }

  write(kind: Kind, op: string, fields: Record<string, unknown> = {}): void {
    const t = process.hrtime.bigint().toString()
    const line = JSON.stringify({ kind, process: this.process, op, t, ...fields })
    writeSync(this.#fd, `${line}\n`)
  }

  info(op: string, fields: Record<string, unknown> = {}): void {
    this.write('info', op, fields)
  }

  /** Records the invoke and returns the opId its ok/fail must carry. */
  invoke(op: string, fields: Record<string, unknown> = {}): number {
    const opId = ++this.#opId
    this.write('invoke', op, { opId, ...fields })
    return opId
  }

  ok(op: string, opId: number, fields: Record<string, unknown> = {}): void {
    this.write('ok', op, { opId, ...fields })
  }

  fail(op: string, opId: number, error: unknown, fields: Record<string, unknown> = {}): void {
    this.write('fail', op, { opId, error: errorText(error), ...fields })
  }

  close(): void {
    closeSync(this.#fd)
  }
}

export function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return `${error.name}${typeof code === 'string' ? ` ${code}` : ''}: ${error.message}`
  }
  return String(error)
}
