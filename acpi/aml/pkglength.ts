import type { ByteSink } from './sink.js';

/**
 * PkgLength (ACPI 6.5 section 20.2.4). The lead byte's bits 7-6 give the count of following bytes;
 * with none, bits 5-0 hold the length; otherwise bits 3-0 hold the low nibble and each following
 * byte the next 8 bits. The maximum is 2^28 - 1.
 */
export const PKG_LENGTH_MAX = 0x0fff_ffff;

/** Bytes needed to encode `value` as a raw PkgLength-style number. */
export function pkgLengthSize(value: number): 1 | 2 | 3 | 4 {
  if (!Number.isInteger(value) || value < 0 || value > PKG_LENGTH_MAX) {
    throw new RangeError(`PkgLength value out of range: ${value}`);
  }
  if (value < 0x40) return 1;
  if (value < 0x1000) return 2;
  if (value < 0x10_0000) return 3;
  return 4;
}

/** Write `value` in PkgLength encoding, as is (used for field element bit lengths, which do not count themselves). */
export function writeRawPkgLength(sink: ByteSink, value: number): void {
  const size = pkgLengthSize(value);
  if (size === 1) {
    sink.byte(value);
    return;
  }
  sink.byte(((size - 1) << 6) | (value & 0x0f));
  let rest = value >>> 4;
  for (let i = 1; i < size; i++) {
    sink.byte(rest & 0xff);
    rest >>>= 8;
  }
}

/**
 * Write the PkgLength that frames a body of `bodyLength` bytes. The encoded length includes the
 * PkgLength bytes themselves, so the size is chosen first and the value derived from it.
 */
export function writePkgLength(sink: ByteSink, bodyLength: number): void {
  for (const size of [1, 2, 3, 4] as const) {
    const total = bodyLength + size;
    if (total <= PKG_LENGTH_MAX && pkgLengthSize(total) === size) {
      writeRawPkgLength(sink, total);
      return;
    }
  }
  throw new RangeError(`package body too large for PkgLength: ${bodyLength} bytes`);
}

/** Frame `body` with its PkgLength. */
export function writePackage(sink: ByteSink, body: Uint8Array): void {
  writePkgLength(sink, body.length);
  sink.bytes(body);
}
