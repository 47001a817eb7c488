import type { QmpClient } from '../qmp/index.js';
import { checkRead, GuestMemoryError, MemoryClosedError, MemoryReadError, type GuestMemory, type ReadOptions } from './guest-memory.js';

/** Bytes per HMP `xp` command: its output is ~6 characters per byte, keep each reply small. */
export const XP_CHUNK = 4096;

const enum Ch {
  Tab = 0x09,
  Newline = 0x0a,
  Space = 0x20,
  Colon = 0x3a,
  Zero = 0x30,
  LowerX = 0x78,
}

function isSpace(c: number): boolean {
  return c === Ch.Space || (c >= Ch.Tab && c <= 0x0d); // space, \t \n \v \f \r
}

/** The value of a hex digit, or -1. */
function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/**
 * Parse the output of HMP `xp /Nxb ADDR`: lines `ADDR: 0xHH 0xHH ...`. Returns exactly `size`
 * bytes or throws: the text comes from QEMU, but is bounded and checked anyway (addresses must
 * follow on, no more bytes than asked). A scanner over char codes: a regex and a split per line and a
 * parseInt per byte made this most of the CPU an xp read cost.
 */
export function parseXp(text: string, addr: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  // Addresses below 2^53 are compared as numbers, larger ones as bigints.
  const base = addr + BigInt(size) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(addr) : undefined;
  let n = 0;
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos);
    if (end === -1) end = text.length;
    let a = pos;
    let b = end;
    pos = end + 1;
    while (a < b && isSpace(text.charCodeAt(a))) a++;
    while (b > a && isSpace(text.charCodeAt(b - 1))) b--;
    if (a === b) continue;
    const bad = () => new Error(`unexpected xp output line: ${JSON.stringify(text.slice(a, b).slice(0, 80))}`);
    let i = a;
    while (i < b && hexDigit(text.charCodeAt(i)) >= 0) i++;
    if (i === a || i === b || text.charCodeAt(i) !== Ch.Colon) throw bad();
    const colon = i;
    i++;
    // The whole line's shape first, then its address, then the count (the order of the checks before).
    let bytes = 0;
    while (i < b) {
      const gap = i;
      while (i < b && isSpace(text.charCodeAt(i))) i++;
      if (i === gap || i + 4 > b || text.charCodeAt(i) !== Ch.Zero || text.charCodeAt(i + 1) !== Ch.LowerX) throw bad();
      const hi = hexDigit(text.charCodeAt(i + 2));
      const lo = hexDigit(text.charCodeAt(i + 3));
      i += 4;
      if (hi < 0 || lo < 0 || (i < b && !isSpace(text.charCodeAt(i)))) throw bad();
      if (n + bytes < size) out[n + bytes] = (hi << 4) | lo;
      bytes++;
    }
    if (bytes === 0) throw bad();
    if (base !== undefined && colon - a <= 13) {
      const at = parseInt(text.slice(a, colon), 16);
      if (at !== base + n) throw new Error(`xp output address 0x${at.toString(16)} out of sequence`);
    } else {
      const at = BigInt('0x' + text.slice(a, colon));
      if (at !== addr + BigInt(n)) throw new Error(`xp output address 0x${at.toString(16)} out of sequence`);
    }
    if (n + bytes > size) throw new Error(`xp output has more than ${size} bytes`);
    n += bytes;
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
