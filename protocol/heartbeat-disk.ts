/**
 * The heartbeat disk (transport 2, "disk drive"): a small raw disk image attached to the VM, which the
 * guest agent writes one record to every period and the host reads as a plain file. Shared by the
 * host probe (disk-heartbeat.ts) and the agent's writer: encoder and decoder live here, pure.
 *
 * Layout: a ring of `slots` records, one per 512-byte sector from offset 0 of the image; record `seq`
 * goes to sector `seq % slots`. A record, little-endian:
 *
 *   off  size  field
 *     0     8  magic "EVEDHB01"
 *     8     8  seq          u64, > 0, strictly increasing across agent restarts and reboots: the
 *                           writer starts at nextSeq(ring) (highest valid seq + 1), so the newest
 *                           valid record is always the one with the highest seq
 *    16     8  uptimeMs     u64, guest CLOCK_BOOTTIME (or /proc/uptime) in ms
 *    24     8  wallMs       u64, guest CLOCK_REALTIME in ms since the Unix epoch
 *    32     8  instance     u64, random per agent start (tells restarts apart)
 *    40     4  periodMs     u32, the writer's period
 *    44     4  slots        u32, the ring size the writer uses
 *    48   460  reserved, zero
 *   508     4  crc32        IEEE CRC-32 (zlib's) of bytes 0..507
 *
 * The writer must bypass the guest page cache (O_DIRECT or O_SYNC on the raw device, one 512-byte
 * aligned write per record) or the host sees nothing until the guest flushes. Everything read from
 * the image is hostile: the decoder checks magic and CRC and bounds every number; a torn or zeroed
 * sector is just not valid.
 */

export const DISK_RECORD_MAGIC = 'EVEDHB01';
export const DISK_SECTOR = 512;
export const DISK_SLOTS_DEFAULT = 8;
export const DISK_SLOTS_MAX = 4096;

export interface DiskRecord {
  seq: bigint;
  uptimeMs: bigint;
  wallMs: bigint;
  instance: bigint;
  periodMs: number;
  slots: number;
}

const U64_MAX = (1n << 64n) - 1n;
const CRC_OFFSET = 508;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** IEEE 802.3 CRC-32 (the one zlib, gzip and PNG use). */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (CRC_TABLE[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function checkU64(name: string, v: bigint): void {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) throw new RangeError(`${name}: a u64 (got ${String(v)})`);
}

function checkSlots(slots: number): void {
  if (!Number.isSafeInteger(slots) || slots < 1 || slots > DISK_SLOTS_MAX) throw new RangeError(`slots: an integer 1..${DISK_SLOTS_MAX} (got ${slots})`);
}

/** One 512-byte sector holding `r`. */
export function encodeDiskRecord(r: DiskRecord): Uint8Array {
  checkU64('seq', r.seq);
  if (r.seq === 0n) throw new RangeError('seq: must be > 0 (0 is an empty slot)');
  checkU64('uptimeMs', r.uptimeMs);
  checkU64('wallMs', r.wallMs);
  checkU64('instance', r.instance);
  if (!Number.isSafeInteger(r.periodMs) || r.periodMs < 0 || r.periodMs > 0xffffffff) throw new RangeError(`periodMs: a u32 (got ${r.periodMs})`);
  checkSlots(r.slots);
  const b = new Uint8Array(DISK_SECTOR);
  const v = new DataView(b.buffer);
  for (let i = 0; i < 8; i++) b[i] = DISK_RECORD_MAGIC.charCodeAt(i);
  v.setBigUint64(8, r.seq, true);
  v.setBigUint64(16, r.uptimeMs, true);
  v.setBigUint64(24, r.wallMs, true);
  v.setBigUint64(32, r.instance, true);
  v.setUint32(40, r.periodMs, true);
  v.setUint32(44, r.slots, true);
  v.setUint32(CRC_OFFSET, crc32(b.subarray(0, CRC_OFFSET)), true);
  return b;
}

export type DecodedSector = { ok: true; record: DiskRecord } | { ok: false; reason: 'empty' | 'short' | 'magic' | 'crc' | 'seq' | 'slots' };

/** Decodes one sector; never throws for bad bytes. */
export function decodeDiskRecord(sector: Uint8Array): DecodedSector {
  if (sector.length < DISK_SECTOR) return { ok: false, reason: 'short' };
  if (sector.subarray(0, DISK_SECTOR).every((x) => x === 0)) return { ok: false, reason: 'empty' };
  for (let i = 0; i < 8; i++) if (sector[i] !== DISK_RECORD_MAGIC.charCodeAt(i)) return { ok: false, reason: 'magic' };
  const v = new DataView(sector.buffer, sector.byteOffset, DISK_SECTOR);
  if (v.getUint32(CRC_OFFSET, true) !== crc32(sector.subarray(0, CRC_OFFSET))) return { ok: false, reason: 'crc' };
  const seq = v.getBigUint64(8, true);
  if (seq === 0n) return { ok: false, reason: 'seq' };
  const slots = v.getUint32(44, true);
  if (slots < 1 || slots > DISK_SLOTS_MAX) return { ok: false, reason: 'slots' };
  return {
    ok: true,
    record: {
      seq,
      uptimeMs: v.getBigUint64(16, true),
      wallMs: v.getBigUint64(24, true),
      instance: v.getBigUint64(32, true),
      periodMs: v.getUint32(40, true),
      slots,
    },
  };
}

export interface RingScan {
  /** The valid record with the highest seq. */
  newest?: DiskRecord;
  /** Index of its sector. */
  newestSlot?: number;
  valid: number;
  empty: number;
  /** Sectors with a bad magic, CRC or field (torn writes, foreign data). */
  invalid: number;
}

/** Scans the first `slots` whole sectors of `image` (fewer if it is shorter). */
export function scanDiskRing(image: Uint8Array, slots: number = DISK_SLOTS_DEFAULT): RingScan {
  checkSlots(slots);
  const n = Math.min(slots, Math.floor(image.length / DISK_SECTOR));
  const scan: RingScan = { valid: 0, empty: 0, invalid: 0 };
  for (let i = 0; i < n; i++) {
    const d = decodeDiskRecord(image.subarray(i * DISK_SECTOR, (i + 1) * DISK_SECTOR));
    if (!d.ok) {
      if (d.reason === 'empty') scan.empty++;
      else scan.invalid++;
      continue;
    }
    scan.valid++;
    if (scan.newest === undefined || d.record.seq > scan.newest.seq) {
      scan.newest = d.record;
      scan.newestSlot = i;
    }
  }
  return scan;
}

/**
 * The ring size the writer declared: the `slots` of the newest valid record among the first `sectors`
 * sectors of `image` (the writer's first records land there: seq 1 goes to sector 1). Undefined when
 * none is valid. Bounded like every decoded field (1..DISK_SLOTS_MAX).
 */
export function ringSlotsOf(image: Uint8Array, sectors: number = DISK_SLOTS_DEFAULT): number | undefined {
  return scanDiskRing(image, Math.min(DISK_SLOTS_MAX, Math.max(1, sectors))).newest?.slots;
}

/** Byte offset of the sector record `seq` goes to. */
export function diskSlotOffset(seq: bigint, slots: number): number {
  checkSlots(slots);
  checkU64('seq', seq);
  return Number(seq % BigInt(slots)) * DISK_SECTOR;
}

/** The seq a (re)starting writer uses next: one past the newest valid record, 1 on an empty ring. */
export function nextDiskSeq(image: Uint8Array, slots: number = DISK_SLOTS_DEFAULT): bigint {
  const s = scanDiskRing(image, slots);
  return s.newest === undefined ? 1n : s.newest.seq + 1n;
}
