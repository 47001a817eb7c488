import { LeReader } from './bytes.js';
import { ErstDecodeError } from './errors.js';

/**
 * QEMU's ERST backing store (hw/acpi/erst.c, docs/specs/acpi_erst.rst): the file of
 * `-object memory-backend-file,...` behind `-device acpi-erst`. It is cut into slots of `record_size`
 * bytes (8 KiB by default). Slot 0 (and more, for a store with many slots) holds the header:
 *
 *   off size field
 *     0    8 magic           "ERSTSTOR" (0x524F545354535245 little-endian)
 *     8    4 record_size     slot size: a power of two, >= 4096
 *    12    4 storage_offset  where slot storage starts: the header and map rounded up to record_size
 *    16    2 version         0x0100
 *    18    2 reserved        0
 *    20    4 record_count    slots in use
 *    24  8*N map[N]          N = file size / record_size; map[i] is the record id in slot i, 0 if free
 *
 * A slot in use holds one UEFI CPER record (cper.ts) of its own length, the rest of the slot 0xFF.
 * Clearing a record only zeroes its map entry: a free slot's bytes are stale and never read here.
 * All little-endian. A file QEMU has not yet started on is all zeroes (QEMU writes the header then).
 */

/** `ERSTSTOR` read as a little-endian u64. */
export const ERST_STORE_MAGIC = 0x524f545354535245n;
export const ERST_STORE_VERSION = 0x0100;
/** The fixed part of the header, before the map. */
export const ERST_STORE_HEADER_BYTES = 24;
/** QEMU refuses a record_size below a page. */
export const ERST_MIN_RECORD_SIZE = 4096;
/** Record ids 0 ("unspecified": a free slot) and all ones ("empty/end") are never a record's. */
export const ERST_RECORD_ID_UNSPECIFIED = 0n;
export const ERST_RECORD_ID_END = 0xffff_ffff_ffff_ffffn;
/** What decodeStore accepts by default: QEMU's storage size is a u32, eve-diag's stores are 64 KiB. */
export const ERST_STORE_MAX_BYTES = 16 * 1024 * 1024;

export interface ErstStoreHeader {
  recordSize: number;
  storageOffset: number;
  version: number;
  /** The header's count of slots in use (checked against the map). */
  recordCount: number;
  /** Slots in the file, the header's included (file size / record size). */
  slotCount: number;
  /** The first slot that can hold a record (storage offset / record size). */
  firstSlot: number;
}

export interface ErstSlot {
  /** Slot index in the file (its byte offset is index * recordSize). */
  index: number;
  /** The record id the map gives for it (never 0 or all ones). */
  recordId: bigint;
  /** Byte offset of the slot in the file. */
  offset: number;
  /** The slot's bytes (recordSize of them, a view into the input). */
  data: Uint8Array;
}

export interface ErstStore {
  /** false: the file is all zeroes at the header (QEMU never ran on it): no header, no slots. */
  initialized: boolean;
  header?: ErstStoreHeader;
  /** The slots in use, in slot order. */
  slots: ErstSlot[];
}

export interface DecodeStoreOptions {
  /** Refuse a store larger than this. Default ERST_STORE_MAX_BYTES. */
  maxStoreBytes?: number;
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** The store's header and its slots in use. Throws ErstDecodeError for anything inconsistent. */
export function decodeStore(bytes: Uint8Array, options: DecodeStoreOptions = {}): ErstStore {
  const max = options.maxStoreBytes ?? ERST_STORE_MAX_BYTES;
  if (bytes.length > max) throw new ErstDecodeError('store', `${bytes.length} bytes, more than the ${max} accepted`);
  const r = new LeReader(bytes);
  if (bytes.length < ERST_STORE_HEADER_BYTES) throw new ErstDecodeError('header', `truncated: ${bytes.length} bytes, the header has ${ERST_STORE_HEADER_BYTES}`, 0);
  const magic = r.u64('header.magic', 0);
  if (magic === 0n) return { initialized: false, slots: [] };
  if (magic !== ERST_STORE_MAGIC) throw new ErstDecodeError('header.magic', `not ERSTSTOR (0x${magic.toString(16)})`, 0);

  const recordSize = r.u32('header.recordSize', 8);
  if (!isPowerOfTwo(recordSize) || recordSize < ERST_MIN_RECORD_SIZE) {
    throw new ErstDecodeError('header.recordSize', `${recordSize} is not a power of two >= ${ERST_MIN_RECORD_SIZE}`, 8);
  }
  if (recordSize > bytes.length || bytes.length % recordSize !== 0) {
    throw new ErstDecodeError('store', `${bytes.length} bytes is not a whole number of ${recordSize}-byte slots (truncated?)`);
  }
  const slotCount = bytes.length / recordSize;
  const storageOffset = r.u32('header.storageOffset', 12);
  const version = r.u16('header.version', 16);
  if (version !== ERST_STORE_VERSION) throw new ErstDecodeError('header.version', `0x${version.toString(16)}, expected 0x0100`, 16);
  const reserved = r.u16('header.reserved', 18);
  if (reserved !== 0) throw new ErstDecodeError('header.reserved', `0x${reserved.toString(16)}, expected 0`, 18);
  const mapEnd = ERST_STORE_HEADER_BYTES + 8 * slotCount;
  if (storageOffset % recordSize !== 0 || storageOffset < mapEnd || storageOffset > bytes.length) {
    throw new ErstDecodeError('header.storageOffset', `${storageOffset} is not a multiple of ${recordSize} between the map's end (${mapEnd}) and the store's (${bytes.length})`, 12);
  }
  const recordCount = r.u32('header.recordCount', 20);
  const firstSlot = storageOffset / recordSize;
  const header: ErstStoreHeader = { recordSize, storageOffset, version, recordCount, slotCount, firstSlot };

  const slots: ErstSlot[] = [];
  const seen = new Map<bigint, number>();
  for (let index = firstSlot; index < slotCount; index++) {
    const at = ERST_STORE_HEADER_BYTES + 8 * index;
    const recordId = r.u64(`map[${index}]`, at);
    if (recordId === ERST_RECORD_ID_UNSPECIFIED) continue;
    if (recordId === ERST_RECORD_ID_END) throw new ErstDecodeError(`map[${index}]`, 'record id all ones (QEMU never stores it)', at);
    const twin = seen.get(recordId);
    if (twin !== undefined) throw new ErstDecodeError(`map[${index}]`, `record id 0x${recordId.toString(16)} is also in slot ${twin}`, at);
    seen.set(recordId, index);
    const offset = index * recordSize;
    slots.push({ index, recordId, offset, data: r.bytes(`slot[${index}]`, offset, recordSize) });
  }
  if (slots.length !== recordCount) {
    throw new ErstDecodeError('header.recordCount', `${recordCount}, but the map has ${slots.length} record(s)`, 20);
  }
  return { initialized: true, header, slots };
}
