/**
 * A walk of an x86-64 Linux kernel stack from the host, with the registers and memory reads of a
 * stopped vCPU (QEMU's gdbstub), in two steps so the VM is paused only for the reads:
 *
 * 1. `readStackWindow`: the bytes from RSP up to the end of its THREAD_SIZE-aligned stack (16 KiB on
 *    x86-64 without KASAN), at most `maxBytes`, read page by page; the first read error stops the read
 *    and what was read before is kept (a vmap'd stack has a guard page below, not above, but a
 *    hostile RSP can point anywhere).
 * 2. `walkStackWindow` (pure): frame 0 is RIP; then, when RBP points into the window, the frame
 *    pointer chain (`[rbp]` = the caller's RBP, `[rbp+8]` = a return address in kernel text, each RBP
 *    above the one before; at least two such frames, else it is taken for chance), whose frames are
 *    reliable; then every other 8-byte word of the window that
 *    is a kernel text address, marked `scanned`: a guess, like the kernel's own `? ` lines. Debian
 *    kernels use the ORC unwinder and no frame pointers (CONFIG_UNWINDER_ORC=y), so there the chain
 *    is usually absent and the trace is all `scanned` frames: stale return addresses are among them.
 *
 * Everything the stub says is hostile: every size is bounded, the chain must go up inside the window,
 * and the number of frames is capped.
 */

export interface StackReader {
  readMemory(addr: bigint, len: number): Promise<Buffer>;
}

export const X86_64_THREAD_SIZE = 16 * 1024;
const PAGE = 4096n;
/** The lowest kernel (upper half) address of x86-64's 48-bit and 57-bit layouts. */
export const KERNEL_SPACE_START = 0xff00000000000000n;

export interface StackWindow {
  /** Address of data[0] (RSP rounded up to 8 bytes). */
  base: bigint;
  data: Buffer;
  /** The end of the THREAD_SIZE-aligned stack RSP is in. */
  stackEnd: bigint;
  /** Why the read stopped before stackEnd, if it did: `limit` (maxBytes) or the read error. */
  stoppedBy?: string;
}

export interface StackReadOptions {
  /** Default 16 KiB. */
  threadSize?: number;
  /** Bytes read at most. Default 16 KiB. */
  maxBytes?: number;
}

/** Reads the stack window of RSP (see the module comment); undefined when RSP is not a kernel address. */
export async function readStackWindow(mem: StackReader, rsp: bigint, o: StackReadOptions = {}): Promise<StackWindow | undefined> {
  const threadSize = BigInt(o.threadSize ?? X86_64_THREAD_SIZE);
  const maxBytes = BigInt(Math.max(0, Math.min(o.maxBytes ?? 16 * 1024, 1024 * 1024)));
  if (threadSize <= 0n || (threadSize & (threadSize - 1n)) !== 0n) throw new RangeError(`thread size ${threadSize}: not a power of two`);
  if (rsp < KERNEL_SPACE_START || rsp >= 2n ** 64n) return undefined;
  const base = (rsp + 7n) & ~7n;
  const stackEnd = (rsp & ~(threadSize - 1n)) + threadSize;
  if (stackEnd > 2n ** 64n - 1n || base >= stackEnd) return { base, data: Buffer.alloc(0), stackEnd };
  const end = base + maxBytes < stackEnd ? base + maxBytes : stackEnd;
  const parts: Buffer[] = [];
  let at = base;
  let stoppedBy: string | undefined = end < stackEnd ? 'limit' : undefined;
  while (at < end) {
    const pageEnd = (at & ~(PAGE - 1n)) + PAGE;
    const n = Number((pageEnd < end ? pageEnd : end) - at);
    let b: Buffer;
    try {
      b = await mem.readMemory(at, n);
    } catch (e) {
      stoppedBy = `read at 0x${at.toString(16)}: ${e instanceof Error ? e.message : String(e)}`.slice(0, 200);
      break;
    }
    if (b.length !== n) {
      stoppedBy = `read at 0x${at.toString(16)}: ${b.length} bytes instead of ${n}`;
      if (b.length > 0 && b.length < n) parts.push(b.subarray(0, b.length & ~7));
      break;
    }
    parts.push(b);
    at += BigInt(n);
  }
  return { base, data: Buffer.concat(parts), stackEnd, ...(stoppedBy !== undefined ? { stoppedBy } : {}) };
}

export type FrameKind = 'pc' | 'frame-pointer' | 'scanned';

export interface StackFrame {
  /** The code address (RIP, or a return address). */
  pc: bigint;
  /** Where on the stack it was found (none for RIP). */
  sp?: bigint;
  kind: FrameKind;
}

export interface StackWalk {
  frames: StackFrame[];
  /** Frames from the frame pointer chain (0: none, the trace is a scan). */
  framePointerFrames: number;
  /** More frames were found than `maxFrames`. */
  truncated: boolean;
}

export interface StackWalkOptions {
  /** Whether an address is kernel text (SymbolTable.isKernelText after relocation). */
  isText: (addr: bigint) => boolean;
  /** Default 64 (RIP included). */
  maxFrames?: number;
}

/** Interprets a window read by readStackWindow (pure; see the module comment). */
export function walkStackWindow(window: StackWindow | undefined, regs: { rip: bigint; rbp: bigint }, o: StackWalkOptions): StackWalk {
  const maxFrames = Math.max(1, Math.min(o.maxFrames ?? 64, 4096));
  const frames: StackFrame[] = [{ pc: regs.rip, kind: 'pc' }];
  if (window === undefined || window.data.length < 8) return { frames, framePointerFrames: 0, truncated: false };
  const { base, data } = window;
  const limit = base + BigInt(data.length);
  const word = (addr: bigint): bigint | undefined => (addr >= base && addr + 8n <= limit && (addr - base) % 8n === 0n ? data.readBigUInt64LE(Number(addr - base)) : undefined);

  // The frame pointer chain: taken only when at least two frames link up (without frame pointers
  // RBP is an ordinary register, and one word pair that happens to look like a frame proves nothing).
  let reliable = new Map<bigint, bigint>(); // slot -> return address
  let rbp = regs.rbp;
  for (let n = 0; n < maxFrames; n++) {
    const saved = word(rbp);
    const ret = word(rbp + 8n);
    if (saved === undefined || ret === undefined || !o.isText(ret)) break;
    reliable.set(rbp + 8n, ret);
    if (saved <= rbp) break;
    rbp = saved;
  }
  if (reliable.size < 2) reliable = new Map();

  let truncated = false;
  for (let off = 0; off + 8 <= data.length; off += 8) {
    const sp = base + BigInt(off);
    const v = data.readBigUInt64LE(off);
    const fp = reliable.get(sp);
    if (fp === undefined && !o.isText(v)) continue;
    if (frames.length >= maxFrames) {
      truncated = true;
      break;
    }
    frames.push({ pc: v, sp, kind: fp !== undefined ? 'frame-pointer' : 'scanned' });
  }
  return { frames, framePointerFrames: frames.filter((f) => f.kind === 'frame-pointer').length, truncated };
}
