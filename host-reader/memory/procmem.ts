import { readSync } from 'node:fs';
import { open as openFile, readFile, type FileHandle } from 'node:fs/promises';
import { QmpError, type QmpClient } from '../qmp/index.js';
import { parseMtreeLowRam, type RamRange } from '../region/discover.js';
import { FileBackedMemory } from './file-backed.js';
import { checkRead, GuestMemoryError, MemoryClosedError, MemoryReadError, type GuestMemory, type ReadOptions } from './guest-memory.js';

/**
 * Guest RAM read straight out of QEMU's address space: `pread` of `/proc/<qemu pid>/mem` at the host
 * virtual address (HVA) where QEMU mapped the guest's RAM (DESIGN fact 13). No QMP round trip and no
 * work in QEMU per read (4.5 us wall, 7 us of our CPU per 813-byte table against ~2 ms through
 * `pmemsave`).
 *
 * Translation is done once per RAM range at open: the RAM ranges of the `memory` address space from
 * HMP `info mtree -f` (parseMtreeLowRam's `ranges`) and HMP `gpa2hva <range start>` for each, whose
 * reply is parsed strictly (`Host virtual address for 0x100000 (pc.ram) is 0x7f...`). A range then maps
 * linearly to HVAs: it is a FileBackedMemory over `/proc/<pid>/mem` with fileOffset = HVA, which does
 * the planning across ranges; a read of at most 64 KiB inside one range (the table, every poll) is one
 * synchronous pread on a second handle instead (4-5 us of CPU against ~25 us through libuv's thread
 * pool). The HVA of a RAM block is stable for the life of the QEMU process, so
 * translation is repeated only when a read fails as if the mapping went away (EIO, ESRCH, ENOENT, a
 * short read) or on `reopen()` (after a RESET, memory hotplug). A new QEMU process (another pid) needs
 * a new ProcMemory: the caller resolves the pid (host-reader/qemu-pid.ts).
 *
 * Permission: opening another process's `mem` needs ptrace rights over it (PTRACE_MODE_ATTACH): root,
 * CAP_SYS_PTRACE, or the same uid with Yama `kernel.yama.ptrace_scope` 0. Without them the open fails
 * with EACCES (or EPERM): ProcMemPermissionError says which rule applies and the ptrace_scope value.
 */

/** Root of procmem's own failures. `reason` is the short why (`EACCES opening /proc/1/mem (ptrace_scope 1)`). */
export class ProcMemError extends GuestMemoryError {
  override name = 'ProcMemError';
  constructor(
    memory: string,
    addr: bigint,
    size: number,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(memory, addr, size, reason, options);
  }
}

/** `info mtree -f` or `gpa2hva` did not give a usable translation (bad reply, misaligned address...). */
export class ProcMemTranslateError extends ProcMemError {
  override name = 'ProcMemTranslateError';
}

/** We may not read QEMU's memory: ptrace rights are needed. */
export class ProcMemPermissionError extends ProcMemError {
  override name = 'ProcMemPermissionError';
  constructor(
    memory: string,
    addr: bigint,
    size: number,
    reason: string,
    /** EPERM or EACCES. */
    readonly code: string,
    /** `/proc/sys/kernel/yama/ptrace_scope`, when it exists. */
    readonly ptraceScope: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(memory, addr, size, reason, options);
  }
}

/** The QEMU process is gone (exited, killed): its memory can no longer be read. */
export class QemuProcessGoneError extends ProcMemError {
  override name = 'QemuProcessGoneError';
}

/** A `gpa2hva` reply that is not `Host virtual address for 0x<gpa> (<block>) is 0x<hva>`. */
export class Gpa2hvaParseError extends Error {
  override name = 'Gpa2hvaParseError';
  constructor(
    readonly reply: string,
    reason: string,
  ) {
    super(`gpa2hva: ${reason}: ${JSON.stringify(reply.length > 200 ? `${reply.slice(0, 200)}...` : reply)}`);
  }
}

export interface Gpa2hva {
  gpa: bigint;
  /** The memory region QEMU named (`pc.ram`, a backend id). */
  block: string;
  hva: bigint;
}

const MAX_REPLY = 512;
// QEMU (monitor/hmp-cmds-target.c): "Host virtual address for 0x%" HWADDR_PRIx " (%s) is %p\n"
const GPA2HVA_RE = /^Host virtual address for 0x([0-9a-f]{1,16}) \(([\x21-\x27\x2a-\x7e][\x20-\x27\x2a-\x7e]{0,127})\) is 0x([0-9a-f]{1,16})\r?\n?$/;
const PAGE = 4096n;
/** User-space addresses end below 2^47 with 4-level paging, 2^56 with 5-level: nothing at or above 2^57. */
export const HVA_LIMIT = 1n << 57n;
/** Positions FileBackedMemory can pass to pread (Number). */
const POSITION_LIMIT = BigInt(Number.MAX_SAFE_INTEGER);
/** Reads up to this size inside one range are one synchronous pread. */
const SYNC_READ_MAX = 64 * 1024;

/**
 * Parse HMP `gpa2hva GPA`'s reply strictly: one line, the address asked for, a block name, and a
 * non-null HVA below 2^57. Anything else (`No memory is mapped at address 0x...`, `... is not RAM`,
 * `(nil)`, a longer text) throws Gpa2hvaParseError.
 */
export function parseGpa2hva(reply: string, gpa: bigint): Gpa2hva {
  if (typeof reply !== 'string') throw new Gpa2hvaParseError(String(reply), 'not a string');
  if (reply.length > MAX_REPLY) throw new Gpa2hvaParseError(reply, `reply longer than ${MAX_REPLY} characters`);
  const m = GPA2HVA_RE.exec(reply);
  if (m === null) throw new Gpa2hvaParseError(reply, `not "Host virtual address for 0x${gpa.toString(16)} (BLOCK) is 0x..."`);
  const [, g, block, h] = m as unknown as [string, string, string, string];
  const got = BigInt(`0x${g}`);
  if (got !== gpa) throw new Gpa2hvaParseError(reply, `answers for 0x${got.toString(16)}, asked 0x${gpa.toString(16)}`);
  const hva = BigInt(`0x${h}`);
  if (hva === 0n) throw new Gpa2hvaParseError(reply, 'null host address');
  if (hva >= HVA_LIMIT) throw new Gpa2hvaParseError(reply, 'host address at or above 2^57: not a user-space address');
  return { gpa, block, hva };
}

/** One guest RAM range and where it lives in QEMU's address space. */
export interface HvaRange {
  start: bigint;
  /** Exclusive. */
  end: bigint;
  hva: bigint;
  /** Block name as gpa2hva gave it. */
  block: string;
  /** Name in `info mtree -f`. */
  mtreeName: string;
}

/**
 * Translate each RAM range (gpa2hva at its start) and check the result: page-aligned, inside user
 * space, and linear per block (two ranges of one block sit at the same HVA minus their `@offset`).
 */
export async function translateRanges(qmp: QmpClient, ranges: readonly RamRange[], memory: string, signal?: AbortSignal): Promise<HvaRange[]> {
  if (ranges.length === 0) throw new ProcMemTranslateError(memory, 0n, 0, 'info mtree -f lists no RAM');
  if (ranges.length > 256) throw new ProcMemTranslateError(memory, 0n, 0, `info mtree -f lists ${ranges.length} RAM ranges (at most 256)`);
  const out: HvaRange[] = [];
  const bases = new Map<string, { base: bigint; start: bigint }>();
  for (const r of ranges) {
    const bad = (reason: string, cause?: unknown) =>
      new ProcMemTranslateError(memory, r.start, 0, `gpa2hva 0x${r.start.toString(16)} (${r.name}): ${reason}`, cause !== undefined ? { cause } : undefined);
    let reply: string;
    try {
      reply = await qmp.hmp(`gpa2hva 0x${r.start.toString(16)}`, signal ? { signal } : {});
    } catch (e) {
      if (signal?.aborted) throw e;
      throw bad(`HMP failed: ${(e as Error).message}`, e);
    }
    let t: Gpa2hva;
    try {
      t = parseGpa2hva(reply, r.start);
    } catch (e) {
      throw bad((e as Error).message, e);
    }
    if (t.hva % PAGE !== r.start % PAGE) throw bad(`host address 0x${t.hva.toString(16)} is not page aligned with the guest address`);
    const size = r.end - r.start;
    if (t.hva + size > HVA_LIMIT) throw bad(`host range 0x${t.hva.toString(16)}+0x${size.toString(16)} ends above 2^57`);
    if (t.hva + size > POSITION_LIMIT) throw bad(`host range 0x${t.hva.toString(16)}+0x${size.toString(16)} ends above 2^53 (not supported)`);
    const base = t.hva - r.offset;
    const seen = bases.get(t.block);
    if (seen !== undefined && seen.base !== base) {
      throw bad(`block ${t.block} is not linear: at 0x${seen.start.toString(16)} it starts at 0x${seen.base.toString(16)}, here at 0x${base.toString(16)}`);
    }
    bases.set(t.block, { base, start: r.start });
    out.push({ start: r.start, end: r.end, hva: t.hva, block: t.block, mtreeName: r.name });
  }
  return out;
}

/** `/proc/sys/kernel/yama/ptrace_scope`, or undefined when Yama is not there (or the value is odd). */
export async function readPtraceScope(path = '/proc/sys/kernel/yama/ptrace_scope'): Promise<number | undefined> {
  try {
    const fh = await openFile(path, 'r');
    try {
      const buf = Buffer.alloc(16);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const m = /^([0-3])\n?$/.exec(buf.subarray(0, bytesRead).toString('latin1'));
      return m === null ? undefined : Number(m[1]);
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

function errnoOf(e: unknown): string | undefined {
  for (let x: unknown = e, i = 0; x !== undefined && x !== null && i < 5; i++) {
    const code = (x as NodeJS.ErrnoException).code;
    if (typeof code === 'string') return code;
    x = (x as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The process is gone or a zombie (its mm released). */
async function processGone(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'latin1');
    // "pid (comm) S ...": the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

async function permissionError(memory: string, pid: number, code: string, what: string, addr: bigint, size: number, cause: unknown): Promise<ProcMemPermissionError> {
  const scope = await readPtraceScope();
  const reason = `${code} ${what} /proc/${pid}/mem${scope !== undefined ? ` (ptrace_scope ${scope})` : ''}`;
  return new ProcMemPermissionError(
    memory,
    addr,
    size,
    `${reason}: reading QEMU's memory needs ptrace rights over pid ${pid}: run as root, with CAP_SYS_PTRACE, ` +
      `or as QEMU's user with Yama ptrace_scope 0${scope !== undefined ? ` (it is ${scope})` : ''}`,
    code,
    scope,
    { cause },
  );
}

export interface ProcMemoryOpenOptions {
  pid: number;
  /** For `name`: `procmem:<label>`; default `pid <pid>`. */
  label?: string;
}

const PID_MAX = 4_194_304; // PID_MAX_LIMIT on 64-bit Linux

export class ProcMemory implements GuestMemory {
  readonly name: string;
  #inner: FileBackedMemory;
  /** A second handle on /proc/<pid>/mem for #readSync. */
  #fh: FileHandle | undefined;
  get #fd(): number | undefined {
    return this.#fh?.fd;
  }
  #ranges: HvaRange[];
  #reopening: Promise<void> | undefined;
  #closed = false;
  #translations = 1;

  private constructor(
    private qmp: QmpClient,
    readonly pid: number,
    name: string,
    inner: FileBackedMemory,
    fh: FileHandle,
    ranges: HvaRange[],
  ) {
    this.name = name;
    this.#inner = inner;
    this.#fh = fh;
    this.#ranges = ranges;
  }

  /**
   * Translate the guest's RAM ranges (HMP `info mtree -f`, `gpa2hva`) and open `/proc/<pid>/mem`.
   * Rejects with ProcMemTranslateError (QMP/HMP failure, a reply we do not accept),
   * ProcMemPermissionError (EPERM/EACCES: no ptrace rights) or QemuProcessGoneError (no such process).
   */
  static async open(qmp: QmpClient, opts: { pid: number; label?: string }): Promise<ProcMemory> {
    const { pid } = opts;
    if (!Number.isSafeInteger(pid) || pid < 1 || pid > PID_MAX) throw new RangeError(`pid: 1..${PID_MAX} (got ${String(pid)})`);
    const name = `procmem:${opts.label ?? `pid ${pid}`}`;
    const ranges = await translate(qmp, name);
    const inner = await openInner(pid, ranges, name);
    const fh = await openFile(`/proc/${pid}/mem`, 'r').catch(async (e: unknown) => {
      await inner.close();
      throw e;
    });
    return new ProcMemory(qmp, pid, name, inner, fh, ranges);
  }

  /**
   * Use `qmp` for later translations: a new QMP connection to the same QEMU (the monitor lets go of
   * an EVE VM's `qmp` between uses). The open file stays this process's memory: a new QEMU is a new
   * ProcMemory.
   */
  rebind(qmp: QmpClient): void {
    this.qmp = qmp;
  }

  /** The process whose memory this reads is still there (not gone, not a zombie). */
  async alive(): Promise<boolean> {
    return !this.#closed && !(await processGone(this.pid));
  }

  /** The current translation (for logs and tests). */
  get ranges(): readonly HvaRange[] {
    return this.#ranges;
  }

  /** How many times the RAM was translated (1 after open). */
  get translations(): number {
    return this.#translations;
  }

  /** Translate again (after a RESET or memory hotplug): `info mtree -f`, `gpa2hva`, reopen the file. */
  reopen(signal?: AbortSignal): Promise<void> {
    this.#reopening ??= (async () => {
      try {
        if (this.#closed) throw new MemoryClosedError(this.name, 0n, 0);
        const ranges = await translate(this.qmp, this.name, signal);
        const inner = await openInner(this.pid, ranges, this.name);
        const fh = await openFile(`/proc/${this.pid}/mem`, 'r').catch(async (e: unknown) => {
          await inner.close();
          throw e;
        });
        const [old, oldFh] = [this.#inner, this.#fh];
        this.#inner = inner;
        this.#fh = fh;
        this.#ranges = ranges;
        this.#translations++;
        await old.close().catch(() => undefined);
        await oldFh?.close().catch(() => undefined);
        if (this.#closed) {
          await inner.close();
          await fh.close();
        }
      } finally {
        this.#reopening = undefined;
      }
    })();
    return this.#reopening;
  }

  async read(addr: bigint, size: number, opts: ReadOptions = {}): Promise<Uint8Array> {
    checkRead(addr, size);
    if (this.#closed) throw new MemoryClosedError(this.name, addr, size);
    if (this.#reopening !== undefined) await this.#reopening;
    try {
      return await this.#readOnce(addr, size, opts);
    } catch (e) {
      if (!(e instanceof RetryableReadError)) throw e;
      // The mapping may have gone (hotplug, a reset that remapped RAM): translate once and retry.
      try {
        await this.reopen(opts.signal);
      } catch (re) {
        if (opts.signal?.aborted) throw re;
        if (await processGone(this.pid)) throw new QemuProcessGoneError(this.name, addr, size, `QEMU pid ${this.pid} is gone`, { cause: e.cause });
        if (re instanceof GuestMemoryError) throw re;
        throw new MemoryReadError(this.name, addr, size, `${e.reason}; translating again failed: ${(re as Error).message}`, { cause: re });
      }
      try {
        return await this.#readOnce(addr, size, opts);
      } catch (e2) {
        if (e2 instanceof RetryableReadError) throw new MemoryReadError(this.name, addr, size, `${e2.reason} (after translating again)`, { cause: e2.cause });
        throw e2;
      }
    }
  }

  readSync(addr: bigint, size: number): Uint8Array | undefined {
    if (this.#closed || this.#reopening !== undefined) return undefined;
    try {
      return this.#readSync(addr, size);
    } catch {
      return undefined; // read() says why (EPERM, the process gone, a mapping gone)
    }
  }

  /**
   * A small read inside one RAM range (the table, a verify): one synchronous pread, 4-5 us of CPU
   * against ~25 us for a FileHandle read through libuv's thread pool (measured). Guest RAM is QEMU's
   * memory: such a read does no I/O unless QEMU's RAM is swapped out.
   */
  #readSync(addr: bigint, size: number): Uint8Array | undefined {
    if (size === 0 || size > SYNC_READ_MAX || this.#fd === undefined) return undefined;
    const end = addr + BigInt(size);
    const r = this.#ranges.find((x) => x.start <= addr && end <= x.end);
    if (r === undefined) return undefined;
    const out = new Uint8Array(size);
    let done = 0;
    try {
      while (done < size) {
        const n = readSync(this.#fd, out, done, size - done, Number(r.hva + (addr - r.start)) + done);
        if (n === 0) throw new MemoryReadError(this.name, addr, size, `/proc/${this.pid}/mem: short read`);
        done += n;
      }
    } catch (cause) {
      if (cause instanceof MemoryReadError) throw cause;
      throw new MemoryReadError(this.name, addr, size, `reading /proc/${this.pid}/mem failed`, { cause });
    }
    return out;
  }

  async #readOnce(addr: bigint, size: number, opts: ReadOptions): Promise<Uint8Array> {
    try {
      opts.signal?.throwIfAborted();
      return this.#readSync(addr, size) ?? (await this.#inner.read(addr, size, opts));
    } catch (e) {
      if (!(e instanceof MemoryReadError) || opts.signal?.aborted) throw e;
      const code = errnoOf(e.cause);
      if (code === 'EPERM' || code === 'EACCES') throw await permissionError(this.name, this.pid, code, 'reading', addr, size, e);
      if (await processGone(this.pid)) throw new QemuProcessGoneError(this.name, addr, size, `QEMU pid ${this.pid} is gone`, { cause: e });
      if (code === 'EBADF' && this.#closed) throw new MemoryClosedError(this.name, addr, size);
      // EIO: nothing mapped at that HVA any more; ESRCH/ENOENT: the process is going; none: a short read.
      if (code === undefined || code === 'EIO' || code === 'ESRCH' || code === 'ENOENT' || code === 'EBADF') {
        throw new RetryableReadError(`${code ?? 'short read'} reading /proc/${this.pid}/mem`, e);
      }
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#reopening?.catch(() => undefined);
    const fh = this.#fh;
    this.#fh = undefined;
    await this.#inner.close();
    await fh?.close();
  }
}

/** Internal: a read that may work after translating again. */
class RetryableReadError extends Error {
  constructor(
    readonly reason: string,
    override readonly cause: unknown,
  ) {
    super(reason);
  }
}

async function translate(qmp: QmpClient, name: string, signal?: AbortSignal): Promise<HvaRange[]> {
  let text: string;
  try {
    text = await qmp.hmp('info mtree -f', signal ? { signal } : {});
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new ProcMemTranslateError(name, 0n, 0, `info mtree -f failed: ${(e as Error).message}`, { cause: e });
  }
  let ram;
  try {
    ram = parseMtreeLowRam(text);
  } catch (e) {
    throw new ProcMemTranslateError(name, 0n, 0, (e as Error).message, { cause: e });
  }
  return translateRanges(qmp, ram.ranges, name, signal);
}

async function openInner(pid: number, ranges: readonly HvaRange[], name: string): Promise<FileBackedMemory> {
  const path = `/proc/${pid}/mem`;
  try {
    return await FileBackedMemory.open(
      path,
      ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.hva })),
      { name },
    );
  } catch (e) {
    if (e instanceof RangeError) throw new ProcMemTranslateError(name, 0n, 0, `the translation does not map: ${e.message}`, { cause: e });
    const code = errnoOf(e);
    if (code === 'EPERM' || code === 'EACCES') throw await permissionError(name, pid, code, 'opening', 0n, 0, e);
    if (code === 'ENOENT' || code === 'ESRCH') throw new QemuProcessGoneError(name, 0n, 0, `${code} opening ${path}: no QEMU with pid ${pid}`, { cause: e });
    throw new ProcMemError(name, 0n, 0, `${code ?? 'error'} opening ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Was this failure one of QMP's (QEMU gone or not answering) rather than of the memory? */
export function isQmpFailure(e: unknown): boolean {
  return e instanceof QmpError || (e instanceof ProcMemTranslateError && e.cause instanceof QmpError);
}
