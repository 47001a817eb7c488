import type { QmpClient } from '../qmp/index.js';
import { checkRead, GuestMemoryError, MemoryClosedError, MemoryReadError, type GuestMemory, type ReadOptions } from './guest-memory.js';

/** Bytes per HMP `xp` command: its output is ~6 characters per byte, keep each reply small. */
export const XP_CHUNK = 4096;

/**
 * Parse the output of HMP `xp /Nxb ADDR`: lines `ADDR: 0xHH 0xHH ...`. Returns exactly `size`
 * bytes or throws: the text comes from QEMU, but is bounded and checked anyway (addresses must
 * follow on, no more bytes than asked).
 */
export function parseXp(text: string, addr: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let n = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const m = /^([0-9a-fA-F]+):((?:\s+0x[0-9a-fA-F]{2})+)$/.exec(line);
    if (!m) throw new Error(`unexpected xp output line: ${JSON.stringify(line.slice(0, 80))}`);
    const at = BigInt('0x' + (m[1] as string));
    if (at !== addr + BigInt(n)) throw new Error(`xp output address 0x${at.toString(16)} out of sequence`);
    for (const b of (m[2] as string).trim().split(/\s+/)) {
      if (n >= size) throw new Error(`xp output has more than ${size} bytes`);
      out[n++] = parseInt(b.slice(2), 16);
    }
  }
  if (n !== size) throw new Error(`xp output has ${n} bytes, expected ${size}`);
  return out;
}

/**
 * Guest memory through HMP `xp` (via QMP `human-monitor-command`): the fallback when QEMU cannot
 * write files where we can read them. Slow (text), so reads are split into XP_CHUNK pieces.
 */
export class XpMemory implements GuestMemory {
  readonly name: string;
  #closed = false;
  constructor(
    private readonly qmp: QmpClient,
    label = 'qmp',
  ) {
    this.name = `xp:${label}`;
  }

  async read(addr: bigint, size: number, opts: ReadOptions = {}): Promise<Uint8Array> {
    checkRead(addr, size);
    if (this.#closed) throw new MemoryClosedError(this.name, addr, size);
    const out = new Uint8Array(size);
    for (let off = 0; off < size; off += XP_CHUNK) {
      const n = Math.min(XP_CHUNK, size - off);
      const at = addr + BigInt(off);
      let text: string;
      try {
        text = await this.qmp.hmp(`xp /${n}xb 0x${at.toString(16)}`, { signal: opts.signal });
      } catch (e) {
        if (opts.signal?.aborted) throw e;
        throw new MemoryReadError(this.name, addr, size, `xp failed: ${(e as Error).message}`, { cause: e });
      }
      try {
        out.set(parseXp(text, at, n), off);
      } catch (e) {
        if (e instanceof GuestMemoryError) throw e;
        throw new MemoryReadError(this.name, addr, size, (e as Error).message, { cause: e });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
