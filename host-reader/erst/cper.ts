import { LeReader } from './bytes.js';
import { ErstDecodeError } from './errors.js';

/**
 * A UEFI Common Platform Error Record (UEFI spec, appendix N; Linux include/linux/cper.h), as one
 * ERST slot holds it: a 128-byte record header, `section_count` 72-byte section descriptors, then the
 * section bodies. Little-endian; GUIDs in UEFI's mixed-endian layout.
 *
 * Record header:                            Section descriptor:
 *   0  4 signature "CPER"                      0  4 section_offset (from the record's start)
 *   4  2 revision                              4  4 section_length
 *   6  4 signature_end 0xFFFFFFFF              8  2 revision
 *  10  2 section_count                        10  1 validation_bits
 *  12  4 error_severity                       11  1 reserved
 *  16  4 validation_bits (bit 1: timestamp)   12  4 flags
 *  20  4 record_length                        16 16 section_type (GUID)
 *  24  8 timestamp                            32 16 fru_id (GUID)
 *  32 16 platform_id                          48  4 section_severity
 *  48 16 partition_id                         52 20 fru_text
 *  64 16 creator_id
 *  80 16 notification_type
 *  96  8 record_id
 * 104  4 flags
 * 108  8 persistence_information
 * 116 12 reserved
 *
 * The timestamp is BCD in the UEFI spec, but Linux's ERST writers (pstore, MCE) store Unix seconds
 * there (erst_writer: `hdr.timestamp = ktime_get_real_seconds()`): it is decoded as seconds.
 */

export const CPER_SIGNATURE = 'CPER';
export const CPER_SIGNATURE_END = 0xffff_ffff;
export const CPER_HEADER_BYTES = 128;
export const CPER_SECTION_DESCRIPTOR_BYTES = 72;
export const CPER_VALID_PLATFORM_ID = 0x1;
export const CPER_VALID_TIMESTAMP = 0x2;
export const CPER_VALID_PARTITION_ID = 0x4;
/** error_severity / section_severity values. */
export const CPER_SEVERITIES = ['recoverable', 'fatal', 'corrected', 'informational'] as const;

export interface CperRecordHeader {
  revision: number;
  sectionCount: number;
  errorSeverity: number;
  validationBits: number;
  recordLength: number;
  /** Seconds since the epoch (Linux's writers), when validation bit 1 says the timestamp is valid. */
  timestamp?: number;
  platformId: string;
  partitionId: string;
  creatorId: string;
  notificationType: string;
  recordId: bigint;
  flags: number;
  persistenceInfo: bigint;
}

export interface CperSection {
  offset: number;
  length: number;
  revision: number;
  validationBits: number;
  flags: number;
  sectionType: string;
  fruId: string;
  severity: number;
  /** fru_text up to its first NUL, printable ASCII only. */
  fruText: string;
  /** The section body (a view into the input). */
  body: Uint8Array;
}

export interface CperRecord {
  header: CperRecordHeader;
  sections: CperSection[];
}

function ascii(b: Uint8Array): string {
  let s = '';
  for (const c of b) {
    if (c === 0) break;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : '?';
  }
  return s;
}

/**
 * Decodes the CPER record at the start of `bytes` (an ERST slot: the record may be shorter than the
 * slot, never longer). Throws ErstDecodeError, with fields named `cper.*`.
 */
export function decodeCperRecord(bytes: Uint8Array): CperRecord {
  const r = new LeReader(bytes);
  if (bytes.length < CPER_HEADER_BYTES) throw new ErstDecodeError('cper', `truncated: ${bytes.length} bytes, a CPER header has ${CPER_HEADER_BYTES}`, 0);
  const sig = ascii(r.bytes('cper.signature', 0, 4));
  if (sig !== CPER_SIGNATURE) throw new ErstDecodeError('cper.signature', `not CPER (${JSON.stringify(sig)})`, 0);
  const signatureEnd = r.u32('cper.signatureEnd', 6);
  if (signatureEnd !== CPER_SIGNATURE_END) throw new ErstDecodeError('cper.signatureEnd', `0x${signatureEnd.toString(16)}, expected 0xffffffff`, 6);
  const recordLength = r.u32('cper.recordLength', 20);
  if (recordLength < CPER_HEADER_BYTES || recordLength > bytes.length) {
    throw new ErstDecodeError('cper.recordLength', `${recordLength} is not between ${CPER_HEADER_BYTES} and the ${bytes.length} bytes there are`, 20);
  }
  const sectionCount = r.u16('cper.sectionCount', 10);
  const descriptorsEnd = CPER_HEADER_BYTES + sectionCount * CPER_SECTION_DESCRIPTOR_BYTES;
  if (descriptorsEnd > recordLength) {
    throw new ErstDecodeError('cper.sectionCount', `${sectionCount} section descriptors do not fit in a ${recordLength}-byte record`, 10);
  }
  const validationBits = r.u32('cper.validationBits', 16);
  const rawTime = r.u64('cper.timestamp', 24);
  const header: CperRecordHeader = {
    revision: r.u16('cper.revision', 4),
    sectionCount,
    errorSeverity: r.u32('cper.errorSeverity', 12),
    validationBits,
    recordLength,
    platformId: r.guid('cper.platformId', 32),
    partitionId: r.guid('cper.partitionId', 48),
    creatorId: r.guid('cper.creatorId', 64),
    notificationType: r.guid('cper.notificationType', 80),
    recordId: r.u64('cper.recordId', 96),
    flags: r.u32('cper.flags', 104),
    persistenceInfo: r.u64('cper.persistenceInfo', 108),
  };
  if ((validationBits & CPER_VALID_TIMESTAMP) !== 0 && rawTime <= BigInt(Number.MAX_SAFE_INTEGER)) header.timestamp = Number(rawTime);

  const record = new LeReader(bytes.subarray(0, recordLength));
  const sections: CperSection[] = [];
  for (let i = 0; i < sectionCount; i++) {
    const d = CPER_HEADER_BYTES + i * CPER_SECTION_DESCRIPTOR_BYTES;
    const f = `cper.section[${i}]`;
    const offset = record.u32(`${f}.offset`, d);
    const length = record.u32(`${f}.length`, d + 4);
    if (offset < descriptorsEnd || offset > recordLength || length > recordLength - offset) {
      throw new ErstDecodeError(`${f}.length`, `body at ${offset}, ${length} bytes, is not inside the record (${descriptorsEnd}..${recordLength})`, d);
    }
    sections.push({
      offset,
      length,
      revision: record.u16(`${f}.revision`, d + 8),
      validationBits: record.u8(`${f}.validationBits`, d + 10),
      flags: record.u32(`${f}.flags`, d + 12),
      sectionType: record.guid(`${f}.sectionType`, d + 16),
      fruId: record.guid(`${f}.fruId`, d + 32),
      severity: record.u32(`${f}.severity`, d + 48),
      fruText: ascii(record.bytes(`${f}.fruText`, d + 52, 20)),
      body: record.bytes(`${f}.body`, offset, length),
    });
  }
  return { header, sections };
}
