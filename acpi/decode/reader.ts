import { AmlDecodeError } from '../errors.js';

const hex = (v: number): string => '0x' + v.toString(16);

/**
 * A bounded cursor over AML bytes. The window is [offset, end) of `bytes`; every read checks it and
 * throws AmlDecodeError with the offset it failed at, so the bytes (hostile: they may come from a
 * guest) can never make a decoder read outside its package or allocate more than they hold.
 */
export class AmlReader {
  private pos: number;

  /** Bounds are the caller's: a bad window is a programmer error (RangeError), not bad AML. */
  constructor(
    readonly bytes: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || start > end || end > bytes.length) {
      throw new RangeError(`AmlReader window [${start}, ${end}) is not inside ${bytes.length} bytes`);
    }
    this.pos = start;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  get atEnd(): boolean {
    return this.pos >= this.end;
  }

  /** Throw an AmlDecodeError at `at` (default: the current offset). */
  fail(reason: string, at: number = this.pos): never {
    throw new AmlDecodeError(at, reason);
  }

  /** Check that `n` more bytes exist before the window's end; the error names `at` (default: here). */
  need(n: number, what: string, at: number = this.pos): void {
    if (n > this.end - this.pos) {
      this.fail(`${what} needs ${n} byte(s), ${this.end - this.pos} left before the end at ${hex(this.end)}`, at);
    }
  }

  /** The byte `ahead` bytes past the cursor, without consuming it. */
  peek(ahead = 0, what = 'opcode'): number {
    this.need(ahead + 1, what);
    return this.bytes[this.pos + ahead] as number;
  }

  byte(what = 'byte'): number {
    this.need(1, what);
    return this.bytes[this.pos++] as number;
  }

  /** Little-endian unsigned integers (AML is little-endian throughout, 20.2.3). */
  u16(what = 'WordData'): number {
    this.need(2, what);
    const b = this.bytes;
    const p = this.pos;
    this.pos += 2;
    return (b[p] as number) | ((b[p + 1] as number) << 8);
  }

  u32(what = 'DWordData'): number {
    this.need(4, what);
    const lo = this.u16(what);
    return lo + this.u16(what) * 0x1_0000;
  }

  u64(what = 'QWordData'): bigint {
    this.need(8, what);
    const lo = BigInt(this.u32(what));
    return lo | (BigInt(this.u32(what)) << 32n);
  }

  /** A copy of the next `n` bytes (never a view: decoded terms must not alias the input). */
  take(n: number, what = 'bytes'): Uint8Array {
    this.need(n, what);
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Offset of the next `value` byte before the end, or -1. Does not move the cursor. */
  indexOf(value: number): number {
    const i = this.bytes.subarray(this.pos, this.end).indexOf(value);
    return i < 0 ? -1 : this.pos + i;
  }

  /**
   * A number in PkgLength encoding (ACPI 6.5 section 20.2.4): lead byte bits 7-6 give the count of
   * following bytes; with none, bits 5-0 are the value; otherwise bits 5-4 are reserved (zero),
   * bits 3-0 are the low nibble and each following byte the next 8 bits. At most 2^28 - 1.
   */
  private lengthValue(what: string): number {
    const at = this.pos;
    const lead = this.byte(what);
    const follow = lead >> 6;
    if (follow === 0) return lead & 0x3f;
    if ((lead & 0x30) !== 0) this.fail(`${what} lead byte ${hex(lead)} has reserved bits 5-4 set`, at);
    this.need(follow, what, at);
    let value = lead & 0x0f;
    for (let i = 0; i < follow; i++) value += this.byte(what) * 2 ** (4 + 8 * i);
    return value;
  }

  /**
   * Read a PkgLength and return the absolute end offset of the package it frames. The length
   * counts the PkgLength bytes themselves; a package that ends before its own PkgLength or beyond
   * this window (its parent's end) is rejected.
   */
  pkgLength(): number {
    const at = this.pos;
    const length = this.lengthValue('PkgLength');
    const end = at + length;
    if (end < this.pos) this.fail(`PkgLength ${length} is shorter than its own ${this.pos - at} byte(s)`, at);
    if (end > this.end) {
      this.fail(`PkgLength ${length} ends the package at ${hex(end)}, beyond the enclosing end at ${hex(this.end)}`, at);
    }
    return end;
  }

  /** A field element's length in bits: PkgLength encoding, but the value does not count itself (20.2.5.2). */
  fieldLength(): number {
    return this.lengthValue('FieldLength');
  }

  /**
   * Read a PkgLength and return a reader over the package body (from here to the package end);
   * this reader moves past the package.
   */
  package(): AmlReader {
    const end = this.pkgLength();
    const body = new AmlReader(this.bytes, this.pos, end);
    this.pos = end;
    return body;
  }
}
