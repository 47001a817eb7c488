import { byteSum, HEADER_SIZE as TABLE_HEADER_SIZE } from '../../acpi/table.js';
import { Off, REGION_MAGIC, regionSize, RING_MAX, type DiagLayout } from '../../acpi/diag/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';

/**
 * Finding our SSDT in guest RAM (DESIGN fact 7). The firmware copies `-acpitable` tables near the
 * top of low RAM (SeaBIOS about 120 KiB below it, OVMF about 8.5 MiB below it on a 512 MiB guest),
 * so the scan walks downward from the top in bounded chunks, looking for the region magic and
 * checking each hit against the table header and the nonce. The address is cached by the caller
 * and re-checked with verifyAt on every read; a failed check means rescan (reboot, kexec).
 */

/** What identifies our table in memory; derive it from the layout with identityFromLayout. */
export interface TableIdentity {
  /** Table signature; default 'SSDT'. */
  signature?: string;
  oemId: string;
  oemTableId: string;
  /** 16 hex digits, DiagLayout.nonce. */
  nonce: string;
  /** Offset of the region inside the table. */
  regionOffset: number;
  /** Table length; when given, a candidate's header must carry exactly this length. */
  length?: number;
  /** Region size; when given, verifyAt returns the whole region. */
  regionSize?: number;
}

export function identityFromLayout(layout: DiagLayout): TableIdentity {
  return {
    signature: layout.table.signature,
    oemId: layout.table.oemId,
    oemTableId: layout.table.oemTableId,
    nonce: layout.nonce,
    regionOffset: layout.region.offset,
    length: layout.table.length,
    regionSize: layout.region.size,
  };
}

const MAGIC = Uint8Array.from(REGION_MAGIC, (c) => c.charCodeAt(0));
const MAX_REGION_SIZE = regionSize(RING_MAX);
/** Longest table we accept when the identity does not give the length. */
const MAX_TABLE_LENGTH = 1024 * 1024;
const MiB = 1024 * 1024;
const GiB = 1024n * 1024n * 1024n;

interface Resolved {
  signature: Uint8Array;
  oemId: Uint8Array; // 6 bytes, zero padded
  oemTableId: Uint8Array; // 8 bytes, zero padded
  nonce: bigint;
  nonceHex: string;
  regionOffset: number;
  length: number | undefined;
  regionSize: number | undefined;
  /** Bytes from the table start needed to check a candidate: header and region magic + nonce. */
  span: number;
}

function padded(field: string, s: string, width: number, exact = false): Uint8Array {
  if ((exact ? s.length !== width : s.length > width) || !/^[\x20-\x7e]*$/.test(s)) {
    throw new RangeError(`${field}: ${exact ? 'exactly' : 'at most'} ${width} printable ASCII characters (got ${JSON.stringify(s)})`);
  }
  const out = new Uint8Array(width);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function resolveIdentity(id: TableIdentity): Resolved {
  if (!/^[0-9a-fA-F]{16}$/.test(id.nonce)) throw new RangeError(`nonce: 16 hex digits (got ${JSON.stringify(id.nonce)})`);
  if (!Number.isSafeInteger(id.regionOffset) || id.regionOffset < TABLE_HEADER_SIZE || id.regionOffset > MAX_TABLE_LENGTH) {
    throw new RangeError(`regionOffset: ${TABLE_HEADER_SIZE}..${MAX_TABLE_LENGTH} (got ${String(id.regionOffset)})`);
  }
  const span = id.regionOffset + Off.nonce + 8;
  if (id.length !== undefined && (!Number.isSafeInteger(id.length) || id.length < span || id.length > MAX_TABLE_LENGTH)) {
    throw new RangeError(`length: ${span}..${MAX_TABLE_LENGTH} for a region at ${id.regionOffset} (got ${String(id.length)})`);
  }
  if (id.regionSize !== undefined) {
    const tableEnd = id.length ?? MAX_TABLE_LENGTH;
    if (!Number.isSafeInteger(id.regionSize) || id.regionSize < Off.ring || id.regionSize > MAX_REGION_SIZE || id.regionOffset + id.regionSize > tableEnd) {
      throw new RangeError(`regionSize: ${Off.ring}..${MAX_REGION_SIZE} and inside the table (got ${String(id.regionSize)})`);
    }
  }
  return {
    signature: padded('signature', id.signature ?? 'SSDT', 4, true),
    oemId: padded('oemId', id.oemId, 6),
    oemTableId: padded('oemTableId', id.oemTableId, 8),
    nonce: BigInt(`0x${id.nonce}`),
    nonceHex: id.nonce.toLowerCase(),
    regionOffset: id.regionOffset,
    length: id.length,
    regionSize: id.regionSize,
    span,
  };
}

function equalAt(hay: Uint8Array, at: number, needle: Uint8Array): boolean {
  for (let i = 0; i < needle.length; i++) if (hay[at + i] !== needle[i]) return false;
  return true;
}

export type MatchResult = { ok: true; length: number } | { ok: false; reason: string };

/**
 * Does a table that starts at `at` in `bytes` look like ours? Checks signature, length, OEM ID,
 * OEM table ID, region magic and nonce. Pure; never reads outside `bytes`.
 */
export function matchTableAt(bytes: Uint8Array, at: number, id: TableIdentity): MatchResult {
  return match(bytes, at, resolveIdentity(id));
}

function match(bytes: Uint8Array, at: number, r: Resolved): MatchResult {
  if (!Number.isSafeInteger(at) || at < 0 || at + r.span > bytes.length) return { ok: false, reason: 'not enough bytes to check' };
  if (!equalAt(bytes, at, r.signature)) return { ok: false, reason: 'signature differs' };
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = dv.getUint32(at + 4, true);
  if (r.length !== undefined ? length !== r.length : length < r.span || length > MAX_TABLE_LENGTH) {
    return { ok: false, reason: `table length ${length}${r.length !== undefined ? `, expected ${r.length}` : ' out of range'}` };
  }
  if (!equalAt(bytes, at + 10, r.oemId)) return { ok: false, reason: 'OEM ID differs' };
  if (!equalAt(bytes, at + 16, r.oemTableId)) return { ok: false, reason: 'OEM table ID differs' };
  if (!equalAt(bytes, at + r.regionOffset + Off.magic, MAGIC)) return { ok: false, reason: 'region magic differs' };
  const nonce = dv.getBigUint64(at + r.regionOffset + Off.nonce, true);
  if (nonce !== r.nonce) return { ok: false, reason: `nonce ${nonce.toString(16).padStart(16, '0')}, expected ${r.nonceHex}` };
  return { ok: true, length };
}

/** A guest-physical range [start, end). */
export interface PhysRange {
  start: bigint;
  end: bigint;
}

export interface DiscoverOptions {
  /** Top of low RAM (exclusive): where the downward scan starts. */
  lowRamTop: bigint | number;
  /**
   * RAM ranges to scan (e.g. parseMtreeLowRam(...).lowRanges); default one range [0, lowRamTop).
   * Parts at or above lowRamTop are ignored.
   */
  ranges?: readonly PhysRange[];
  /** Bytes per read; default 1 MiB. Each read also takes the few bytes a candidate needs past it. */
  chunkSize?: number;
  /** Most bytes to scan below the top; default all of low RAM, but at most 4 GiB. */
  maxScanBytes?: bigint | number;
  signal?: AbortSignal;
  /** Clock for `ms`; default performance.now. */
  now?: () => number;
}

/** A hit of the region magic that was not our table (kept for diagnostics, bounded). */
export interface RejectedCandidate {
  address: bigint;
  reason: string;
}

export interface Discovery {
  address: bigint;
  /** Bytes scanned below the top before the table was found (chunk bodies, overlaps not counted). */
  scannedBytes: number;
  reads: number;
  ms: number;
  rejected: RejectedCandidate[];
}

const MAX_REJECTED = 16;

/** The scan covered everything it was allowed to and found no table. */
export class TableNotFoundError extends Error {
  override name = 'TableNotFoundError';
  constructor(
    readonly memory: string,
    /** Lowest and highest (exclusive) address scanned. */
    readonly from: bigint,
    readonly to: bigint,
    readonly scannedBytes: number,
    readonly reads: number,
    readonly ms: number,
    readonly rejected: readonly RejectedCandidate[],
  ) {
    super(
      `${memory}: no table with our header and region nonce in 0x${from.toString(16)}..0x${to.toString(16)} ` +
        `(${scannedBytes} bytes in ${reads} reads, ${rejected.length} magic hits rejected)`,
    );
  }
}

function toBig(field: string, v: bigint | number): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n) throw new RangeError(`${field}: non-negative (got ${v})`);
    return v;
  }
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${field}: a non-negative integer (got ${String(v)})`);
  return BigInt(v);
}

/** Ranges clipped to [0, top), highest first, trimmed to `budget` bytes counted from the top down. */
function scanPlan(ranges: readonly PhysRange[], top: bigint, budget: bigint): PhysRange[] {
  const clipped = ranges
    .map((r) => ({ start: r.start, end: r.end < top ? r.end : top }))
    .filter((r) => r.end > r.start)
    .sort((a, b) => (a.start > b.start ? -1 : a.start < b.start ? 1 : 0));
  const out: PhysRange[] = [];
  let left = budget;
  for (const r of clipped) {
    if (left <= 0n) break;
    const last = out[out.length - 1];
    if (last !== undefined && r.end > last.start) throw new RangeError(`ranges: overlap at 0x${r.end.toString(16)}`);
    const size = r.end - r.start;
    const take = size < left ? size : left;
    out.push({ start: r.end - take, end: r.end });
    left -= take;
  }
  return out;
}

/**
 * Scan `memory` downward from `lowRamTop` for our table; resolves with the highest address where
 * one is found. A table across a chunk boundary is found (each read extends past its chunk by the
 * bytes a candidate needs). Rejects with TableNotFoundError, with `signal.reason` when aborted,
 * or with the memory's error when a read fails.
 */
export async function discoverTable(memory: GuestMemory, target: DiagLayout | TableIdentity, opts: DiscoverOptions): Promise<Discovery> {
  const id = resolvedTarget(target);
  const clock = opts.now ?? (() => performance.now());
  const t0 = clock();
  const top = toBig('lowRamTop', opts.lowRamTop);
  const chunkSize = opts.chunkSize ?? MiB;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 4096 || chunkSize > 64 * MiB) {
    throw new RangeError(`chunkSize: 4096..${64 * MiB} (got ${String(chunkSize)})`);
  }
  const ranges = opts.ranges ?? [{ start: 0n, end: top }];
  const total = ranges.reduce((s, r) => s + (r.end > r.start ? r.end - r.start : 0n), 0n);
  const maxScan = opts.maxScanBytes === undefined ? (total < 4n * GiB ? total : 4n * GiB) : toBig('maxScanBytes', opts.maxScanBytes);
  const plan = scanPlan(ranges, top, maxScan);
  const needle = Buffer.from(MAGIC);
  const rejected: RejectedCandidate[] = [];
  const readCap = id.length ?? id.span; // a found table must fit in its RAM range
  let scanned = 0;
  let reads = 0;

  for (const range of plan) {
    for (let hi = range.end; hi > range.start; ) {
      opts.signal?.throwIfAborted();
      const lo = hi - range.start > BigInt(chunkSize) ? hi - BigInt(chunkSize) : range.start;
      // Tables starting in [lo, hi) are checked here; read far enough to check the last of them.
      const extra = BigInt(readCap - 1);
      const readEnd = hi + extra < range.end ? hi + extra : range.end;
      const buf = await memory.read(lo, Number(readEnd - lo), opts.signal ? { signal: opts.signal } : {});
      reads++;
      scanned += Number(hi - lo);
      const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
      const starts = Number(hi - lo); // table starts allowed at buffer offsets < starts
      let from = starts - 1 + id.regionOffset;
      while (from >= 0) {
        const pos = view.lastIndexOf(needle, from);
        if (pos < 0) break;
        from = pos - 1;
        const at = pos - id.regionOffset;
        if (at < 0) break; // the table would start below this range
        const address = lo + BigInt(at);
        // The read is only cut short at the end of a range: a table that does not fit is not in RAM.
        const m: MatchResult = at + readCap <= buf.length ? match(buf, at, id) : { ok: false, reason: 'crosses the end of the RAM range' };
        if (m.ok) return { address, scannedBytes: scanned, reads, ms: clock() - t0, rejected };
        if (rejected.length < MAX_REJECTED) rejected.push({ address, reason: m.reason });
      }
      hi = lo;
    }
  }
  const low = plan.length > 0 ? (plan[plan.length - 1] as PhysRange).start : top;
  throw new TableNotFoundError(memory.name, low, top, scanned, reads, clock() - t0, rejected);
}

export type VerifyResult =
  | {
      ok: true;
      /** The bytes read from the table start: the whole table when its length is known. */
      table: Uint8Array;
      /** The region's bytes (its header only when the identity has no regionSize): feed decodeRegion. */
      region: Uint8Array;
      /** Byte sum of the table is 0 (undefined when the length is unknown). A torn read can fail it. */
      checksumOk?: boolean;
    }
  | { ok: false; reason: string };

/**
 * Cheap re-check of a cached address: one read of the table (or of its start through the region
 * when the length is unknown), then header, magic and nonce. The region bytes of that same read
 * are returned, so one read per poll both verifies and samples.
 */
export async function verifyAt(
  memory: GuestMemory,
  address: bigint,
  target: DiagLayout | TableIdentity,
  opts: { signal?: AbortSignal } = {},
): Promise<VerifyResult> {
  const id = resolvedTarget(target);
  return verified(await memory.read(address, verifySize(id), opts), id);
}

/**
 * verifyAt answered at once, when `memory` can read synchronously (GuestMemory.readSync); undefined
 * when it cannot (the caller awaits verifyAt, which also reports a failed read). No checksumOk: the
 * table's byte sum is left to the caller (RegionReader computes it when asked).
 */
export function verifyAtSync(memory: GuestMemory, address: bigint, target: DiagLayout | TableIdentity): VerifyResult | undefined {
  if (memory.readSync === undefined) return undefined;
  const id = resolvedTarget(target);
  const bytes = memory.readSync(address, verifySize(id));
  return bytes === undefined ? undefined : verified(bytes, id, false);
}

/** A layout's identity is resolved once (a poll re-checks the same table every time). */
const resolvedLayouts = new WeakMap<DiagLayout, Resolved>();

function resolvedTarget(target: DiagLayout | TableIdentity): Resolved {
  if (!('format' in target)) return resolveIdentity(target);
  let r = resolvedLayouts.get(target);
  if (r === undefined) {
    r = resolveIdentity(identityFromLayout(target));
    resolvedLayouts.set(target, r);
  }
  return r;
}

function verifySize(id: Resolved): number {
  return id.length ?? id.regionOffset + (id.regionSize ?? Off.ring);
}

/** `checksum` false: leave checksumOk out (the caller sums `table` if it wants to: a poll does not). */
function verified(bytes: Uint8Array, id: Resolved, checksum = true): VerifyResult {
  const m = match(bytes, 0, id);
  if (!m.ok) return { ok: false, reason: m.reason };
  const region = bytes.subarray(id.regionOffset, id.regionOffset + (id.regionSize ?? Off.ring));
  return id.length !== undefined && checksum ? { ok: true, table: bytes, region, checksumOk: byteSum(bytes) === 0 } : { ok: true, table: bytes, region };
}

// --- `info mtree` ---------------------------------------------------------------------------------

/** One RAM range of the guest's `memory` address space. */
export interface RamRange {
  start: bigint;
  /** Exclusive. */
  end: bigint;
  /** Memory region name: `pc.ram`, a memory backend id, `ram-below-4g`... */
  name: string;
  /** Offset inside the RAM block (`@...`): the file offset for a memory-backend-file. */
  offset: bigint;
  /** Mapped read-only (`rom` view of RAM, e.g. the BIOS shadow after SeaBIOS set the PAM registers). */
  readonly: boolean;
}

export interface MtreeRam {
  /** All RAM ranges of the main RAM, ascending. */
  ranges: RamRange[];
  /** The RAM ranges below 4 GiB: scan these. */
  lowRanges: RamRange[];
  /** End of the contiguous RAM that holds 1 MiB: where the firmware puts ACPI tables below. */
  lowRamTop: bigint;
  view: 'flat' | 'tree';
}

/** `info mtree` text had no RAM we could recognise. */
export class MtreeParseError extends Error {
  override name = 'MtreeParseError';
}

const FOUR_GIB = 4n * GiB;
const ONE_MIB = BigInt(MiB);
// `  0000000000100000-000000001fffffff (prio 0, ram): pc.ram @0000000000100000 KVM`
const FLAT_LINE = /^\s+([0-9a-f]{1,16})-([0-9a-f]{1,16}) \(prio -?\d+, ([a-z/-]+)\): (\S+)(?: @([0-9a-f]{1,16}))?(?:\s.*)?$/;
// `    0000000000000000-000000001fffffff (prio 0, ram): alias ram-below-4g @pc.ram 0000000000000000-000000001fffffff`
const ALIAS_LINE = /^\s+([0-9a-f]{1,16})-([0-9a-f]{1,16}) \(prio -?\d+, ([a-z/-]+)\): alias (ram-(?:below|above)-4g) @(\S+) ([0-9a-f]{1,16})-[0-9a-f]{1,16}(?: \[disabled\])?$/;

interface FlatEntry {
  start: bigint;
  end: bigint;
  type: string;
  name: string;
  offset: bigint;
}

function flatMemoryEntries(lines: string[]): FlatEntry[] | undefined {
  // A FlatView block: "FlatView #n", AS lines, "Root memory region: ...", then ranges.
  let inMemory = false;
  let found: FlatEntry[] | undefined;
  for (const line of lines) {
    if (/^FlatView #\d+/.test(line)) {
      if (found !== undefined) return found;
      inMemory = false;
      continue;
    }
    if (/^ AS "memory",/.test(line)) {
      inMemory = true;
      found = [];
      continue;
    }
    if (!inMemory || found === undefined) continue;
    const m = FLAT_LINE.exec(line);
    if (m === null) continue;
    const [, a, b, type, name, off] = m as unknown as [string, string, string, string, string, string | undefined];
    found.push({ start: BigInt(`0x${a}`), end: BigInt(`0x${b}`) + 1n, type, name, offset: off !== undefined ? BigInt(`0x${off}`) : 0n });
  }
  return found;
}

function fromFlat(entries: FlatEntry[]): MtreeRam | undefined {
  entries.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  // The RAM run holding 1 MiB: from its entry, follow adjacent `ram` entries upward (any name: NUMA
  // nodes are separate backends). An i/o entry (TSEG blackhole, PCI hole) ends it.
  const i0 = entries.findIndex((e) => e.start <= ONE_MIB && ONE_MIB < e.end && e.type === 'ram');
  if (i0 < 0) return undefined;
  let top = (entries[i0] as FlatEntry).end;
  const names = new Set([(entries[i0] as FlatEntry).name]);
  for (let i = i0 + 1; i < entries.length; i++) {
    const e = entries[i] as FlatEntry;
    if (e.start !== top || e.type !== 'ram' || e.start >= FOUR_GIB) break;
    top = e.end;
    names.add(e.name);
  }
  // Entries below 1 MiB with a RAM type belong to the main RAM too (pc.ram under the legacy holes).
  for (const e of entries) if (e.end <= ONE_MIB && e.type === 'ram') names.add(e.name);
  const ranges = entries
    .filter((e) => names.has(e.name) && (e.type === 'ram' || e.type === 'rom'))
    .map((e): RamRange => ({ start: e.start, end: e.end, name: e.name, offset: e.offset, readonly: e.type === 'rom' }));
  return { ranges, lowRanges: ranges.filter((r) => r.start < FOUR_GIB && r.end <= top), lowRamTop: top, view: 'flat' };
}

function fromTree(lines: string[]): MtreeRam | undefined {
  let inMemory = false;
  const ranges: RamRange[] = [];
  for (const line of lines) {
    if (/^(address-space|memory-region): /.test(line)) {
      if (ranges.length > 0) break;
      inMemory = line === 'address-space: memory';
      continue;
    }
    if (!inMemory) continue;
    const m = ALIAS_LINE.exec(line);
    if (m === null) continue;
    const [, a, b, , alias, , off] = m as unknown as [string, string, string, string, string, string, string];
    ranges.push({ start: BigInt(`0x${a}`), end: BigInt(`0x${b}`) + 1n, name: alias, offset: BigInt(`0x${off}`), readonly: false });
  }
  const below = ranges.find((r) => r.name === 'ram-below-4g');
  if (below === undefined) return undefined;
  ranges.sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  return { ranges, lowRanges: [below], lowRamTop: below.end, view: 'tree' };
}

/**
 * Parse HMP `info mtree -f` (or plain `info mtree`) and return the guest's RAM: the flat view of the
 * `memory` address space (RAM entries such as `pc.ram`, `pc.ram @offset`, a memory backend's id; a
 * trailing ` KVM` is ignored), else the tree view's `ram-below-4g` / `ram-above-4g` aliases.
 * Throws MtreeParseError when neither is there.
 */
export function parseMtreeLowRam(text: string): MtreeRam {
  const lines = text.split(/\r?\n/);
  const flat = flatMemoryEntries(lines);
  const result = (flat !== undefined ? fromFlat(flat) : undefined) ?? fromTree(lines);
  if (result === undefined) {
    throw new MtreeParseError(
      flat !== undefined
        ? 'info mtree: the "memory" flat view has no RAM at 1 MiB'
        : 'info mtree: no flat view of address space "memory" and no ram-below-4g alias (was it `info mtree -f`?)',
    );
  }
  return result;
}
