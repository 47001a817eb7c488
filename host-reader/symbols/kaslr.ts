import type { SymbolTable } from './system-map.js';

/**
 * The KASLR offset of a running x86-64 Linux guest, found from the host with nothing but the
 * System.map and reads of guest virtual memory (the gdbstub's `m`, through a vCPU's page tables).
 *
 * Method: `linux_banner`. x86-64 KASLR (arch/x86/boot/compressed/kaslr.c) moves the kernel's virtual
 * image by a multiple of CONFIG_PHYSICAL_ALIGN (2 MiB on Debian) within KERNEL_IMAGE_SIZE (1 GiB), so
 * there are at most 512 candidate offsets, all >= 0. For a candidate, the 14 bytes at
 * `linux_banner` (System.map) + offset must read `Linux version `. After boot the kernel unmaps the
 * high mapping outside its image (cleanup_highmap), so a wrong candidate mostly answers "unmapped"
 * (E14) at once, and a right one is the kernel's own constant: the banner is then read whole
 * (printable, up to 256 bytes) and reported, so a human sees which kernel it is.
 *
 * Candidates are tried in this order, each once, and the first match wins:
 * 1. `known` (a previous result for the same VM: one read confirms it);
 * 2. the offsets that put a kernel-mode vCPU's RIP inside `_stext`..`_etext` (a handful: text is
 *    ~16 MiB), so an attached VM is usually resolved in a few reads;
 * 3. every other multiple of 2 MiB from 0 to 1 GiB (bounded by `maxProbes`).
 * The banner string at a wrong candidate would need a copy of it exactly a multiple of 2 MiB away
 * from the real one within the mapped image (the printk buffer holds a copy, at an arbitrary
 * address): the order above makes the RIP-consistent candidate win anyway.
 *
 * Other methods considered: MSR_LSTAR (= entry_SYSCALL_64) and IDTR (= idt_table) would each give the
 * offset in one step, but QEMU's gdbstub exposes neither in its x86-64 register block.
 *
 * With KPTI a vCPU in user mode runs on page tables that map almost no kernel memory: read through a
 * vCPU in kernel mode (CPL 0) when there is one.
 */

export const KASLR_ALIGN = 0x200000n;
export const KASLR_RANGE = 0x40000000n;
const BANNER_PREFIX = 'Linux version ';

/** What is read: `readMemory` may throw for an unmapped address (then the candidate is wrong). */
export interface VirtualMemoryReader {
  readMemory(addr: bigint, len: number): Promise<Buffer>;
}

export interface KaslrOptions {
  /** Kernel-mode RIPs (runtime addresses): candidates that put them in kernel text go first. */
  hints?: readonly bigint[];
  /** An offset known from before: tried first. */
  known?: bigint;
  /** At most this many reads. Default 520 (every candidate once, plus the banner). */
  maxProbes?: number;
  /** Whether a read error means "not mapped here" (go on) rather than "stop" (rethrown). Default: every error is "not mapped". */
  isUnmapped?: (error: unknown) => boolean;
  signal?: AbortSignal;
}

export interface KaslrResult {
  offset: bigint;
  method: 'linux_banner';
  /** Runtime address of linux_banner. */
  bannerAddress: bigint;
  /** The banner (printable, one line). */
  banner: string;
  /** Reads made. */
  probes: number;
  /** Which candidate list found it. */
  via: 'known' | 'rip' | 'scan';
}

export class KaslrError extends Error {
  override name = 'KaslrError';
}

/** Candidate offsets in try order (deduplicated, each a multiple of 2 MiB in [0, 1 GiB)). */
export function kaslrCandidates(table: SymbolTable, o: Pick<KaslrOptions, 'hints' | 'known'> = {}): { offset: bigint; via: KaslrResult['via'] }[] {
  const out: { offset: bigint; via: KaslrResult['via'] }[] = [];
  const seen = new Set<bigint>();
  const add = (offset: bigint, via: KaslrResult['via']) => {
    if (offset < 0n || offset >= KASLR_RANGE || offset % KASLR_ALIGN !== 0n || seen.has(offset)) return;
    seen.add(offset);
    out.push({ offset, via });
  };
  if (o.known !== undefined) add(o.known, 'known');
  const { start, end } = table.linkTextRange;
  for (const rip of (o.hints ?? []).slice(0, 64)) {
    // rip - offset in [start, end): offset in (rip - end, rip - start].
    const hi = rip - start;
    if (hi < 0n) continue;
    let lo = rip - end + 1n;
    if (lo < 0n) lo = 0n;
    const first = ((lo + KASLR_ALIGN - 1n) / KASLR_ALIGN) * KASLR_ALIGN;
    for (let off = first, n = 0; off <= hi && n < 64; off += KASLR_ALIGN, n++) add(off, 'rip');
  }
  for (let off = 0n; off < KASLR_RANGE; off += KASLR_ALIGN) add(off, 'scan');
  return out;
}

function printable(b: Buffer): string {
  let s = '';
  for (const c of b) {
    if (c === 0 || c === 0x0a) break;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '?';
  }
  return s;
}

/**
 * Finds the offset (see the module comment); undefined when no candidate matched within `maxProbes`
 * reads. Throws a KaslrError when the System.map has no `linux_banner`, and rethrows a read error
 * `isUnmapped` says is not an unmapped address (a dead connection).
 */
export async function findKaslrOffset(mem: VirtualMemoryReader, table: SymbolTable, o: KaslrOptions = {}): Promise<KaslrResult | undefined> {
  const link = table.relocated(0n).address('linux_banner');
  if (link === undefined) throw new KaslrError('the System.map has no linux_banner');
  const maxProbes = o.maxProbes ?? 520;
  const isUnmapped = o.isUnmapped ?? (() => true);
  let probes = 0;
  const read = async (addr: bigint, len: number): Promise<Buffer | undefined> => {
    probes++;
    try {
      const b = await mem.readMemory(addr, len);
      return b.length >= len ? b.subarray(0, len) : undefined;
    } catch (e) {
      if (isUnmapped(e)) return undefined;
      throw e;
    }
  };
  for (const c of kaslrCandidates(table, o)) {
    if (probes >= maxProbes) return undefined;
    if (o.signal?.aborted === true) throw new KaslrError('aborted');
    const at = BigInt.asUintN(64, link + c.offset);
    const head = await read(at, BANNER_PREFIX.length);
    if (head === undefined || head.toString('latin1') !== BANNER_PREFIX) continue;
    // The rest of the banner, for the report, up to the end of its page (the next may be unmapped).
    const rest = Math.min(256, 4096 - Number(at & 0xfffn));
    const whole = (rest > head.length ? await read(at, rest).catch(() => undefined) : undefined) ?? head;
    return { offset: c.offset, method: 'linux_banner', bannerAddress: at, banner: printable(whole).slice(0, 240), probes, via: c.via };
  }
  return undefined;
}
