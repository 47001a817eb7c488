import { ErstDecodeError } from './errors.js';

/**
 * Bounded little-endian reads for the ERST decoders: a read past the end of `buf` is an ErstDecodeError
 * naming the field, never a RangeError.
 */
export class LeReader {
  readonly #view: DataView;

  constructor(readonly buf: Uint8Array) {
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get length(): number {
    return this.buf.length;
  }

  #check(field: string, offset: number, size: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > this.buf.length) {
      throw new ErstDecodeError(field, `${size} byte(s) needed, only ${Math.max(0, this.buf.length - Math.max(0, offset))} left`, offset);
    }
  }

  u8(field: string, offset: number): number {
    this.#check(field, offset, 1);
    return this.#view.getUint8(offset);
  }

  u16(field: string, offset: number): number {
    this.#check(field, offset, 2);
    return this.#view.getUint16(offset, true);
  }

  u32(field: string, offset: number): number {
    this.#check(field, offset, 4);
    return this.#view.getUint32(offset, true);
  }

  u64(field: string, offset: number): bigint {
    this.#check(field, offset, 8);
    return this.#view.getBigUint64(offset, true);
  }

  bytes(field: string, offset: number, length: number): Uint8Array {
    this.#check(field, offset, length);
    return this.buf.subarray(offset, offset + length);
  }

  /** A GUID in its usual spelling (the first three groups are little-endian in memory, as UEFI stores them). */
  guid(field: string, offset: number): string {
    const b = this.bytes(field, offset, 16);
    const hex = (from: number, to: number, reverse: boolean) => {
      const part = [...b.subarray(from, to)];
      return (reverse ? part.reverse() : part).map((x) => x.toString(16).padStart(2, '0')).join('');
    };
    return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
  }
}

/** A u64 record id as 16 lower-case hex digits (JSON has no u64). */
export function hex64(v: bigint): string {
  return v.toString(16).padStart(16, '0');
}
