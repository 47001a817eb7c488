import { open } from 'node:fs/promises';

/**
 * A kernel's System.map (or a /proc/kallsyms dump: the same `address type name` lines), parsed into a
 * table of text symbols for symbolizing addresses the way the kernel prints them (`%pS`:
 * `name+0xoff/0xsize`). Bounded: a file over 64 MiB is refused, a line over 512 characters and any
 * line that is not `<1-16 hex digits> <one letter> <printable name>` are skipped (counted), module
 * symbols of a kallsyms dump (`... [mod]`) too. Kept: the text symbols (types T, t, W, w) and a few
 * markers by name (`_text`, `_stext`, `_etext`, `_sinittext`, `_einittext`, `_end`, `linux_banner`...)
 * whatever their type.
 *
 * Debian's linux-image packages ship a placeholder /boot/System.map (one line, "The real System.map is
 * in the linux-image-<version>-dbg package"): it has no text symbols, and loading it says so.
 *
 * Addresses are link-time ones; `relocated(offset)` gives the same table for a kernel KASLR moved by
 * `offset` (host-reader/symbols/kaslr.ts finds it).
 */

export const SYSTEM_MAP_MAX_BYTES = 64 * 1024 * 1024;
export const SYSTEM_MAP_MAX_LINE = 512;
/** A symbol with no next symbol to end it covers at most this much (nothing can be said beyond). */
const UNBOUNDED_LAST_SYMBOL = 0x10000n;

/** Symbols kept whatever their type: text bounds and what KASLR detection reads. */
export const MARKER_SYMBOLS: readonly string[] = ['_text', '_stext', '_etext', '_sinittext', '_einittext', '_end', 'linux_banner', '__entry_text_start', '__entry_text_end', 'idt_table', 'entry_SYSCALL_64'];

export class SystemMapError extends Error {
  override name = 'SystemMapError';
}

export interface Symbolized {
  name: string;
  /** The symbol's (relocated) address. */
  start: bigint;
  offset: bigint;
  /** Up to the next symbol; undefined for the last one when nothing ends it. */
  size?: bigint;
}

export interface SystemMapStats {
  lines: number;
  /** Text symbols kept (aliases at one address included). */
  textSymbols: number;
  /** Lines that were not symbol lines (malformed, too long, module symbols). */
  skipped: number;
}

/** `name+0xoff/0xsize` (the kernel's `%pS`); `name+0xoff` when the size is unknown. */
export function formatSymbol(s: Symbolized): string {
  return `${s.name}+0x${s.offset.toString(16)}${s.size === undefined ? '' : `/0x${s.size.toString(16)}`}`;
}

const LINE = /^([0-9a-fA-F]{1,16}) ([A-Za-z]) ([\x21-\x7e]{1,256})$/;
const TEXT_TYPES = new Set(['T', 't', 'W', 'w']);

interface Entry {
  addr: bigint;
  name: string;
  /** Lower is preferred among aliases at one address (the kernel's kallsyms order, roughly). */
  rank: number;
  seq: number;
}

function rank(type: string, name: string): number {
  const weak = type === 'W' || type === 'w' ? 4 : 0;
  const underscores = Math.min(3, /^_*/.exec(name)?.[0].length ?? 0);
  return weak + underscores;
}

export class SymbolTable {
  /** Sorted, one per address (the preferred alias). Link-time addresses. */
  readonly #addrs: bigint[];
  readonly #names: string[];
  /** End of each symbol (next address, or a text-end marker), link-time; undefined: unknown. */
  readonly #ends: (bigint | undefined)[];
  readonly #byName: ReadonlyMap<string, bigint>;
  readonly #textStart: bigint;
  readonly #textEnd: bigint;
  readonly stats: SystemMapStats;
  /** The KASLR offset this view applies (0: link-time addresses). */
  readonly offset: bigint;

  private constructor(shared: { addrs: bigint[]; names: string[]; ends: (bigint | undefined)[]; byName: ReadonlyMap<string, bigint>; textStart: bigint; textEnd: bigint; stats: SystemMapStats }, offset: bigint) {
    this.#addrs = shared.addrs;
    this.#names = shared.names;
    this.#ends = shared.ends;
    this.#byName = shared.byName;
    this.#textStart = shared.textStart;
    this.#textEnd = shared.textEnd;
    this.stats = shared.stats;
    this.offset = offset;
  }

  /** Parses System.map text; throws a SystemMapError when it holds no text symbol at all. */
  static parse(data: string | Buffer): SymbolTable {
    const text = typeof data === 'string' ? data : data.toString('latin1');
    if (text.length > SYSTEM_MAP_MAX_BYTES) throw new SystemMapError(`a System.map of ${text.length} bytes: more than ${SYSTEM_MAP_MAX_BYTES}`);
    const entries: Entry[] = [];
    const byName = new Map<string, bigint>();
    const stats: SystemMapStats = { lines: 0, textSymbols: 0, skipped: 0 };
    const markers = new Set(MARKER_SYMBOLS);
    let seq = 0;
    for (let at = 0; at < text.length; ) {
      let nl = text.indexOf('\n', at);
      if (nl < 0) nl = text.length;
      const raw = text.slice(at, Math.min(nl, at + SYSTEM_MAP_MAX_LINE + 2));
      const long = nl - at > SYSTEM_MAP_MAX_LINE;
      at = nl + 1;
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.length === 0) continue;
      stats.lines++;
      const m = long ? null : LINE.exec(line);
      if (m === null) {
        stats.skipped++;
        continue;
      }
      const addr = BigInt(`0x${m[1] as string}`);
      const type = m[2] as string;
      const name = m[3] as string;
      const isText = TEXT_TYPES.has(type);
      if (isText || markers.has(name)) {
        if (!byName.has(name)) byName.set(name, addr);
      }
      if (isText) {
        entries.push({ addr, name, rank: rank(type, name), seq: seq++ });
        stats.textSymbols++;
      }
    }
    if (entries.length === 0) {
      const placeholder = /real System\.map is in/.test(text.slice(0, 4096));
      throw new SystemMapError(
        placeholder ? "a placeholder System.map (Debian's: the real one is in the linux-image-<version>-dbg package)" : `no text symbols in ${stats.lines} lines`,
      );
    }
    entries.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : a.rank - b.rank || a.seq - b.seq));
    const addrs: bigint[] = [];
    const names: string[] = [];
    for (const e of entries) {
      if (addrs.length > 0 && addrs[addrs.length - 1] === e.addr) continue; // an alias: the first is preferred
      addrs.push(e.addr);
      names.push(e.name);
    }
    const first = addrs[0] as bigint;
    const last = addrs[addrs.length - 1] as bigint;
    const stext = byName.get('_stext') ?? byName.get('_text') ?? first;
    const etext = byName.get('_etext');
    const textStart = stext;
    const textEnd = etext !== undefined && etext > stext ? etext : last + 1n;
    // Ends: the next symbol, or a text bound that comes first (the last symbol of .text ends at _etext).
    const bounds = ['_etext', '_einittext', '_end'].map((n) => byName.get(n)).filter((b): b is bigint => b !== undefined);
    const ends: (bigint | undefined)[] = addrs.map((a, i) => {
      let end = addrs[i + 1];
      for (const b of bounds) if (b > a && (end === undefined || b < end)) end = b;
      return end;
    });
    return new SymbolTable({ addrs, names, ends, byName, textStart, textEnd, stats }, 0n);
  }

  /** The same table for a kernel relocated by `offset` bytes (KASLR). */
  relocated(offset: bigint): SymbolTable {
    return new SymbolTable(
      { addrs: this.#addrs, names: this.#names, ends: this.#ends, byName: this.#byName, textStart: this.#textStart, textEnd: this.#textEnd, stats: this.stats },
      offset,
    );
  }

  /** Number of distinct text addresses. */
  get size(): number {
    return this.#addrs.length;
  }

  /** A symbol's (relocated) address, for text symbols and the markers. */
  address(name: string): bigint | undefined {
    const a = this.#byName.get(name);
    return a === undefined ? undefined : BigInt.asUintN(64, a + this.offset);
  }

  /** Link-time `_stext` .. `_etext` (the end excluded). */
  get linkTextRange(): { start: bigint; end: bigint } {
    return { start: this.#textStart, end: this.#textEnd };
  }

  /** Between `_stext` and `_etext` after relocation (the kernel's core text; not init text, not modules). */
  isKernelText(addr: bigint): boolean {
    const a = addr - this.offset;
    return a >= this.#textStart && a < this.#textEnd;
  }

  /** The text symbol `addr` (a runtime address) falls in, by binary search; undefined outside them. */
  symbolize(addr: bigint): Symbolized | undefined {
    const a = addr - this.offset;
    const addrs = this.#addrs;
    if (addrs.length === 0 || a < (addrs[0] as bigint)) return undefined;
    let lo = 0;
    let hi = addrs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((addrs[mid] as bigint) <= a) lo = mid;
      else hi = mid - 1;
    }
    const start = addrs[lo] as bigint;
    const end = this.#ends[lo];
    const offset = a - start;
    if (end === undefined) {
      if (offset >= UNBOUNDED_LAST_SYMBOL) return undefined;
      return { name: this.#names[lo] as string, start: start + this.offset, offset };
    }
    if (a >= end) return undefined;
    return { name: this.#names[lo] as string, start: start + this.offset, offset, size: end - start };
  }

  /** `name+0xoff/0xsize`, or undefined. */
  format(addr: bigint): string | undefined {
    const s = this.symbolize(addr);
    return s === undefined ? undefined : formatSymbol(s);
  }
}

/** Reads and parses a System.map file; refuses one larger than SYSTEM_MAP_MAX_BYTES. */
export async function loadSystemMap(path: string): Promise<SymbolTable> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new SystemMapError(`${path}: not a regular file`);
    if (st.size > SYSTEM_MAP_MAX_BYTES) throw new SystemMapError(`${path}: ${st.size} bytes, more than ${SYSTEM_MAP_MAX_BYTES}`);
    // Read at most the limit plus one byte, whatever stat said (the file may grow meanwhile).
    const buf = Buffer.alloc(Math.min(SYSTEM_MAP_MAX_BYTES + 1, Math.max(st.size, 0) + 1));
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > SYSTEM_MAP_MAX_BYTES) throw new SystemMapError(`${path}: more than ${SYSTEM_MAP_MAX_BYTES} bytes`);
    try {
      return SymbolTable.parse(buf.subarray(0, n));
    } catch (e) {
      if (e instanceof SystemMapError) throw new SystemMapError(`${path}: ${e.message}`);
      throw e;
    }
  } finally {
    await fh.close();
  }
}
