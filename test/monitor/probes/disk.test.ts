import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DiskHeartbeatProbe } from '../../../monitor/probes/disk-heartbeat.js';
import {
  crc32,
  decodeDiskRecord,
  DISK_SECTOR,
  diskSlotOffset,
  encodeDiskRecord,
  nextDiskSeq,
  scanDiskRing,
  type DiskRecord,
} from '../../../monitor/probes/disk-format.js';
import type { ProbeResult } from '../../../monitor/types.js';

const rec = (seq: bigint, over: Partial<DiskRecord> = {}): DiskRecord => ({
  seq,
  uptimeMs: 1000n * seq,
  wallMs: 1_764_000_000_000n + 1000n * seq,
  instance: 0xfeedn,
  periodMs: 1000,
  slots: 8,
  ...over,
});

/** A ring image as the agent would leave it after writing `seqs`. */
function ring(seqs: bigint[], slots = 8, over: Partial<DiskRecord> = {}): Uint8Array {
  const img = new Uint8Array(slots * DISK_SECTOR);
  for (const s of seqs) img.set(encodeDiskRecord(rec(s, { slots, ...over })), diskSlotOffset(s, slots));
  return img;
}

describe('disk-format', () => {
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

describe('disk-heartbeat probe', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eve-diag-disk-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let n = 0;

  async function setup(seqs: bigint[]) {
    const file = join(dir, `hb-${++n}.img`);
    await writeFile(file, ring(seqs));
    let now = 0;
    const probe = new DiskHeartbeatProbe({}, { periodMs: 10_000, now: () => now });
    const run = (): Promise<ProbeResult> => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 1000, signal: new AbortController().signal });
    return { file, run, advance: (ms: number) => (now += ms), write: (s: bigint[]) => writeFile(file, ring(s)) };
  }

  test('baseline, advancing seq is a success, a seq standing still beyond maxAge a failure', async () => {
    const { run, advance, write } = await setup([1n, 2n, 3n]);
    const base = await run();
    expect(base.outcome).toBe('unknown');
    expect(base.evidence).toMatchObject({ seq: '3', validRecords: 3, invalidRecords: 0, instance: '000000000000feed', writerPeriodMs: 1000 });
    advance(5000);
    await write([1n, 2n, 3n, 4n, 5n]);
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(ok.detail).toBe('seq advanced to 5');
    advance(9000);
    expect((await run()).outcome).toBe('success');
    advance(2000);
    const stuck = await run();
    expect(stuck.outcome).toBe('failure');
    expect(stuck.detail).toBe('seq stuck at 5 for 11000 ms');
  });

  test('an image not written for longer than maxAge fails at once; a missing one is unknown', async () => {
    const { file, run } = await setup([1n]);
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    expect((await run()).outcome).toBe('failure');
    const probe = new DiskHeartbeatProbe({}, { periodMs: 1000 });
    const missing = await probe.run({ name: 'x', heartbeatDisk: join(dir, 'nope.img') }, { timeoutMs: 100, signal: new AbortController().signal });
    expect(missing.outcome).toBe('unknown');
    expect((await probe.run({ name: 'x' }, { timeoutMs: 100, signal: new AbortController().signal })).outcome).toBe('unknown');
  });

  test('garbage and no valid record: baseline unknown, then a failure after maxAge', async () => {
    const file = join(dir, 'garbage.img');
    await writeFile(file, Buffer.alloc(4096, 0xa5));
    let now = 0;
    const probe = new DiskHeartbeatProbe({ maxAgeMs: 1000 }, { periodMs: 1000, now: () => now });
    const run = () => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 100, signal: new AbortController().signal });
    const first = await run();
    expect(first.outcome).toBe('unknown');
    expect(first.evidence).toMatchObject({ validRecords: 0, invalidRecords: 8 });
    now += 1500;
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('no valid record in 1500 ms');
  });
});
