import { AmlValueError } from './errors.js';
import { encodeList } from './aml/control.js';
import type { TermObj } from './aml/types.js';

/**
 * The 36-byte ACPI System Description Table header (ACPI 6.5 section 5.2.6), and DefinitionBlock:
 * a header followed by a TermList. Length and checksum are derived, never given.
 */
export const HEADER_SIZE = 36;

export interface TableHeaderFields {
  signature: string; // 4 chars
  revision: number; // byte
  oemId: string; // <= 6 chars, zero-padded
  oemTableId: string; // <= 8 chars, zero-padded
  oemRevision: number; // u32
  creatorId: string; // 4 chars
  creatorRevision: number; // u32
}

export interface TableHeader extends TableHeaderFields {
  length: number;
  checksum: number;
}

function checkAscii(field: string, value: string, max: number, exact = false): void {
  if (exact ? value.length !== max : value.length > max) {
    throw new AmlValueError(field, value, exact ? `must be exactly ${max} characters` : `at most ${max} characters`);
  }
  if (!/^[\x20-\x7e]*$/.test(value)) throw new AmlValueError(field, value, 'printable ASCII only');
}
function checkUint(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new AmlValueError(field, value, `0..${max}`);
}

export function validateHeaderFields(h: TableHeaderFields): void {
  checkAscii('signature', h.signature, 4, true);
  checkAscii('oemId', h.oemId, 6);
  checkAscii('oemTableId', h.oemTableId, 8);
  checkAscii('creatorId', h.creatorId, 4, true);
  checkUint('revision', h.revision, 0xff);
  checkUint('oemRevision', h.oemRevision, 0xffff_ffff);
  checkUint('creatorRevision', h.creatorRevision, 0xffff_ffff);
}

function putAscii(out: Uint8Array, at: number, s: string, width: number): void {
  for (let i = 0; i < width; i++) out[at + i] = i < s.length ? s.charCodeAt(i) : 0;
}

/** Sum of all bytes mod 256; a valid table sums to 0. */
export function byteSum(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

/** Build a complete table: header + body, with length and checksum filled in. */
export function buildTable(h: TableHeaderFields, body: Uint8Array): Uint8Array {
  validateHeaderFields(h);
  const out = new Uint8Array(HEADER_SIZE + body.length);
  const dv = new DataView(out.buffer);
  putAscii(out, 0, h.signature, 4);
  dv.setUint32(4, out.length, true);
  out[8] = h.revision;
  putAscii(out, 10, h.oemId, 6);
  putAscii(out, 16, h.oemTableId, 8);
  dv.setUint32(24, h.oemRevision, true);
  putAscii(out, 28, h.creatorId, 4);
  dv.setUint32(32, h.creatorRevision, true);
  out.set(body, HEADER_SIZE);
  out[9] = (0x100 - byteSum(out)) & 0xff;
  return out;
}

function ascii(bytes: Uint8Array, at: number, width: number): string {
  let s = '';
  for (let i = 0; i < width; i++) {
    const c = bytes[at + i] ?? 0;
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Parse a header; throws AmlValueError if the bytes cannot be a table header. Does not check the checksum. */
export function parseHeader(bytes: Uint8Array): TableHeader {
  if (bytes.length < HEADER_SIZE) throw new AmlValueError('table', bytes.length, `shorter than the ${HEADER_SIZE}-byte header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    signature: ascii(bytes, 0, 4),
    length: dv.getUint32(4, true),
    revision: bytes[8] ?? 0,
    checksum: bytes[9] ?? 0,
    oemId: ascii(bytes, 10, 6),
    oemTableId: ascii(bytes, 16, 8),
    oemRevision: dv.getUint32(24, true),
    creatorId: ascii(bytes, 28, 4),
    creatorRevision: dv.getUint32(32, true),
  };
}

/** DefinitionBlock: a table whose body is a TermList. */
export class DefinitionBlock {
  readonly kind = 'DefinitionBlock';
  constructor(
    readonly header: TableHeaderFields,
    readonly body: readonly TermObj[],
  ) {
    validateHeaderFields(header);
  }
  encode(): Uint8Array {
    return buildTable(this.header, encodeList(this.body));
  }
}

/** Largest table eve-diag reads or passes to QEMU: ACPI lengths are 32-bit, but a table QEMU loads is a few KiB. */
export const MAX_TABLE_BYTES = 16 * 1024 * 1024;

export type TableCheck =
  | { ok: true; header: TableHeader; table: Uint8Array; checksum: { valid: boolean; sum: number } }
  | { ok: false; reason: string };

/**
 * Whether `bytes` hold one ACPI table: a 36-byte header with a printable signature and a length that
 * fits in `bytes` (`exact`: equal to it, as a file for `-acpitable` must be: QEMU only warns about a
 * mismatch and loads the whole file). The table is `bytes` up to the header's length. The checksum is
 * reported, not required: a dump of our table from guest memory is a table whatever its checksum.
 * Pure; every length is checked against `bytes` and MAX_TABLE_BYTES.
 */
export function checkTable(bytes: Uint8Array, opts: { exact?: boolean } = {}): TableCheck {
  if (bytes.length > MAX_TABLE_BYTES) return { ok: false, reason: `${bytes.length} bytes, more than ${MAX_TABLE_BYTES}` };
  if (bytes.length < HEADER_SIZE) return { ok: false, reason: `${bytes.length} bytes, shorter than the ${HEADER_SIZE}-byte header` };
  const header = parseHeader(bytes);
  if (!/^[\x21-\x7e]{4}$/.test(header.signature)) return { ok: false, reason: `signature ${JSON.stringify(header.signature)} is not 4 printable characters` };
  if (header.length < HEADER_SIZE || header.length > bytes.length || (opts.exact === true && header.length !== bytes.length)) {
    return { ok: false, reason: `header length ${header.length}, file ${bytes.length} bytes${opts.exact === true ? ' (they must be equal)' : ''}` };
  }
  const table = bytes.subarray(0, header.length);
  const sum = byteSum(table);
  return { ok: true, header, table, checksum: { valid: sum === 0, sum } };
}
