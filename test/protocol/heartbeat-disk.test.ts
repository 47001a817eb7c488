import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import {
  crc32,
  decodeDiskRecord,
  encodeDiskRecord,
  nextDiskSeq,
  scanDiskRing,
} from '../../protocol/heartbeat-disk.js';
import { rec, ring } from '../helpers/heartbeat-disk.js';

describe('heartbeat-disk records', () => {
  test('encode/decode round trip; the bytes are where the format says', () => {
    const r = rec(0x0102030405060708n, { uptimeMs: 734_210n, wallMs: 1_764_000_000_000n });
    const b = encodeDiskRecord(r);
    expect(b.length).toBe(512);
    expect(Buffer.from(b.subarray(0, 8)).toString('latin1')).toBe('EVEDHB01');
    expect(Buffer.from(b).readBigUInt64LE(8)).toBe(r.seq);
    expect(Buffer.from(b).readUInt32LE(44)).toBe(8);
    expect(b.subarray(48, 508).every((x) => x === 0)).toBe(true);
    expect(Buffer.from(b).readUInt32LE(508)).toBe(crc32(b.subarray(0, 508)));
    expect(decodeDiskRecord(b)).toEqual({ ok: true, record: r });
  });

  test('crc32 is zlib\'s', () => {
    const data = Buffer.from('The quick brown fox jumps over the lazy dog');
    expect(crc32(data)).toBe(0x414fa339);
    expect(crc32(data)).toBe(zlibCrc32(data));
  });

  test.each<[string, (b: Uint8Array) => void, string]>([
    ['zeroed', (b) => b.fill(0), 'empty'],
    ['a flipped bit', (b) => (b[20] = (b[20] as number) ^ 1), 'crc'],
    ['a torn write (second half old)', (b) => b.fill(0, 256), 'crc'],
    ['foreign data', (b) => b.set(Buffer.from('GARBAGE!')), 'magic'],
  ])('hostile sector: %s', (_n, damage, reason) => {
    const b = encodeDiskRecord(rec(5n));
    damage(b);
    expect(decodeDiskRecord(b)).toEqual({ ok: false, reason });
  });

  test('a short buffer and a CRC-valid record with bad fields are invalid, never thrown', () => {
    expect(decodeDiskRecord(new Uint8Array(100))).toEqual({ ok: false, reason: 'short' });
    const b = encodeDiskRecord(rec(5n));
    const v = new DataView(b.buffer);
    v.setUint32(44, 0, true);
    v.setUint32(508, crc32(b.subarray(0, 508)), true);
    expect(decodeDiskRecord(b)).toEqual({ ok: false, reason: 'slots' });
    v.setUint32(44, 8, true);
    v.setBigUint64(8, 0n, true);
    v.setUint32(508, crc32(b.subarray(0, 508)), true);
    expect(decodeDiskRecord(b)).toEqual({ ok: false, reason: 'seq' });
  });

  test('the newest valid record wins; damaged sectors are counted', () => {
    const img = ring([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n]);
    let s = scanDiskRing(img);
    expect(s.newest?.seq).toBe(10n);
    expect(s.newestSlot).toBe(2);
    expect(s).toMatchObject({ valid: 8, empty: 0, invalid: 0 });
    img[2 * 512 + 30] = (img[2 * 512 + 30] as number) ^ 0xff; // the newest is torn
    s = scanDiskRing(img);
    expect(s.newest?.seq).toBe(9n);
    expect(s.invalid).toBe(1);
    expect(nextDiskSeq(img)).toBe(10n);
    expect(nextDiskSeq(new Uint8Array(4096))).toBe(1n);
  });

  test('reads are bounded by slots and by the image', () => {
    const img = ring([1n, 2n, 3n], 4);
    // seq 1..3 sit in sectors 1..3; sector 0 is still empty.
    expect(scanDiskRing(img, 2)).toMatchObject({ valid: 1, empty: 1 });
    expect(scanDiskRing(img.subarray(0, 1100), 4)).toMatchObject({ valid: 1, empty: 1 });
    expect(scanDiskRing(img.subarray(0, 1100), 4).newest?.seq).toBe(1n);
    expect(() => scanDiskRing(img, 0)).toThrow(RangeError);
    expect(() => scanDiskRing(img, 5000)).toThrow(RangeError);
  });

  test('the encoder refuses bad values', () => {
    expect(() => encodeDiskRecord(rec(0n))).toThrow(/seq/);
    expect(() => encodeDiskRecord(rec(1n << 64n))).toThrow(/seq/);
    expect(() => encodeDiskRecord(rec(1n, { periodMs: -1 }))).toThrow(/periodMs/);
    expect(() => encodeDiskRecord(rec(1n, { slots: 0 }))).toThrow(/slots/);
  });
});
