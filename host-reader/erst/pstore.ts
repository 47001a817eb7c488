import { constants, inflateRawSync, inflateSync } from 'node:zlib';
import type { CperRecord } from './cper.js';
import { ErstDecodeError } from './errors.js';

/**
 * Linux's pstore records in ERST (drivers/acpi/apei/erst.c, erst_writer/erst_reader): a CPER record
 * whose creator is CPER_CREATOR_PSTORE, with one section (the descriptor right after the record header,
 * the body at offset 200). The section type says what the body is: the kernel log (dmesg), the same
 * deflate-compressed (dmesg-z), or an MCE record.
 *
 * A dmesg body is one part of one kmsg dump (fs/pstore/platform.c, pstore_dump): it starts with a
 * line `<Reason>#<dump count> Part<n>` (`Panic#1 Part1`), then log lines as the syslog prefix plus
 * printk timestamp write them (`<0>[    5.28] Kernel panic - not syncing: ...`). Part 1 holds the newest
 * lines, part 2 the lines before them, and so on; the parts of a dump are written in part order with
 * consecutive record ids. Compressed bodies are raw deflate (Linux's crypto "deflate" and, since 6.6,
 * pstore's own zlib use negative window bits: no zlib header), seen on Debian's 6.1 in QEMU 7.2; a
 * zlib-wrapped body is accepted too. The record carries no part number or count of its own: both come
 * from that first line.
 */

export const CPER_CREATOR_PSTORE = '75a574e3-5052-4b29-8a8e-be2c6490b89d';
export const CPER_SECTION_TYPE_DMESG = 'c197e04e-d545-4a70-9c17-a5549419eb12';
export const CPER_SECTION_TYPE_DMESG_Z = '4f118707-04dd-4055-b5dd-956d34ddfac6';
export const CPER_SECTION_TYPE_MCE = 'fe08ffbe-95e4-4be7-bc73-4096044a38fc';

/** Most bytes one record's body may inflate to by default (Linux 6.1's parts inflate to under 18 KiB). */
export const PSTORE_MAX_INFLATED_BYTES = 1024 * 1024;

export type PstoreType = 'dmesg' | 'mce' | 'unknown';

export interface PstoreRecord {
  type: PstoreType;
  /** The body is deflate-compressed (section type dmesg-z). */
  compressed: boolean;
  /** How a compressed body was wrapped: raw deflate (what Linux writes) or a zlib stream. */
  compression?: 'deflate-raw' | 'zlib';
  /** Bytes of the body as stored. */
  storedBytes: number;
  /** The dmesg text (inflated when compressed), its `Reason#N PartM` line included; absent for mce/unknown. */
  text?: string;
  /** From the first line: `Panic`, `Oops`, `Emergency`... */
  reason?: string;
  /** From the first line: the dump's number (pstore counts dumps since boot). */
  dumpCount?: number;
  /** From the first line: 1 is the newest part of the dump. */
  part?: number;
}

export interface DecodePstoreOptions {
  /** Most bytes a compressed body may inflate to; more is an ErstDecodeError (a zip bomb). */
  maxInflatedBytes?: number;
}

/** Whether a CPER record was written by Linux's pstore. */
export function isPstoreRecord(record: CperRecord): boolean {
  return record.header.creatorId === CPER_CREATOR_PSTORE;
}

function pstoreType(sectionType: string): { type: PstoreType; compressed: boolean } {
  switch (sectionType) {
    case CPER_SECTION_TYPE_DMESG_Z:
      return { type: 'dmesg', compressed: true };
    case CPER_SECTION_TYPE_DMESG:
      return { type: 'dmesg', compressed: false };
    case CPER_SECTION_TYPE_MCE:
      return { type: 'mce', compressed: false };
    default:
      return { type: 'unknown', compressed: false };
  }
}

const hasZlibHeader = (b: Uint8Array) => b.length >= 2 && ((b[0] as number) & 0x0f) === 8 && (((b[0] as number) << 8) | (b[1] as number)) % 31 === 0;

/** `data` inflated, at most `max` bytes of output: raw deflate, or a zlib stream. */
export function inflateBody(data: Uint8Array, max: number): { data: Buffer; compression: 'deflate-raw' | 'zlib' } {
  const attempt = (fn: typeof inflateRawSync): Buffer | Error => {
    try {
      return fn(data, { maxOutputLength: Math.max(1, max), finishFlush: constants.Z_FINISH });
    } catch (e) {
      if (e instanceof RangeError || (e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new ErstDecodeError('data', `inflates to more than ${max} bytes`, undefined, { cause: e });
      }
      return e instanceof Error ? e : new Error(String(e));
    }
  };
  const raw = attempt(inflateRawSync);
  if (!(raw instanceof Error)) return { data: raw, compression: 'deflate-raw' };
  if (hasZlibHeader(data)) {
    const z = attempt(inflateSync);
    if (!(z instanceof Error)) return { data: z, compression: 'zlib' };
  }
  throw new ErstDecodeError('data', `not a deflate stream: ${raw.message}`, undefined, { cause: raw });
}

const DUMP_LINE = /^([A-Za-z][A-Za-z ]{0,31})#(\d{1,9}) Part(\d{1,9})\r?\n/;

/** The `Reason#N PartM` first line of a dmesg part, when it has one. */
export function parseDumpLine(text: string): { reason: string; dumpCount: number; part: number; length: number } | undefined {
  const m = DUMP_LINE.exec(text.slice(0, 64));
  if (m === null) return undefined;
  return { reason: m[1] as string, dumpCount: Number(m[2]), part: Number(m[3]), length: m[0].length };
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

/**
 * The pstore view of a CPER record written by pstore (isPstoreRecord): its type and, for dmesg, the
 * text. Throws ErstDecodeError (fields `pstore.*`) for a record without a section or a body that does
 * not inflate within the cap.
 */
export function decodePstoreRecord(record: CperRecord, options: DecodePstoreOptions = {}): PstoreRecord {
  const section = record.sections[0];
  if (section === undefined) throw new ErstDecodeError('pstore.section', 'the record has no section');
  const { type, compressed } = pstoreType(section.sectionType);
  const out: PstoreRecord = { type, compressed, storedBytes: section.length };
  if (type !== 'dmesg') return out;
  let body: Uint8Array = section.body;
  if (compressed) {
    try {
      const inflated = inflateBody(section.body, options.maxInflatedBytes ?? PSTORE_MAX_INFLATED_BYTES);
      body = inflated.data;
      out.compression = inflated.compression;
    } catch (e) {
      throw e instanceof ErstDecodeError ? e.within('pstore', section.offset) : e;
    }
  }
  const text = utf8.decode(body);
  out.text = text;
  const line = parseDumpLine(text);
  if (line !== undefined) {
    out.reason = line.reason;
    out.dumpCount = line.dumpCount;
    out.part = line.part;
  }
  return out;
}
