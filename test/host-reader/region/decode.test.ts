import { describe, expect, it } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { Off, RING_MAX } from '../../../acpi/diag/layout.js';
import { byteSum } from '../../../acpi/table.js';
import { decodeRegion, intervalsNewestFirst, type DecodedRegion } from '../../../host-reader/region/decode.js';
import { MS, regionOf, setField, simulateBeat } from './sim.js';

const NONCE = 0x0123456789abcdefn;
const built = buildDiagSsdt({ nonce: NONCE, ringLength: 8, kernelPeriodMs: 2000 });
const { layout } = built;

function freshTable(): Uint8Array {
  return built.aml.slice();
}

function ok(bytes: Uint8Array, expect?: Parameters<typeof decodeRegion>[1]): DecodedRegion {
  const r = decodeRegion(bytes, expect);
  if (!r.ok) throw new Error(`decode failed: ${r.field}: ${r.reason}`);
  return r.region;
}

describe('decodeRegion on the table buildDiagSsdt made', () => {
  it('decodes the pristine bytes at layout.region.offset (the table as the firmware copied it)', () => {
    const r = ok(regionOf(built.aml, layout), { nonce: layout.nonce, ringLength: 8 });
    expect(r).toEqual({
      version: 1,
      headerSize: 64,
      regionSize: 64 + 4 * 8,
      nonce: '0123456789abcdef',
      kernelPeriodDs: 20,
      ringLength: 8,
      loadCount: 0,
      loadTimer: 0,
      kernel: { beats: 0, last: 0 },
      agent: { beats: 0, last: 0 },
      armed: 0,
      pad: 0,
      ring: [0, 0, 0, 0, 0, 0, 0, 0],
    });
    expect(r.nonce).toBe(layout.nonce);
  });

  it('reads what the AML writes: load, kernel beats with intervals, agent beats, pad keeping the sum', () => {
    const t = freshTable();
    simulateBeat(t, layout, 'load', 5 * MS);
    simulateBeat(t, layout, 'kernel', 100 * MS); // first beat after load: arms, no interval
    simulateBeat(t, layout, 'kernel', 2100 * MS);
    simulateBeat(t, layout, 'kernel', 4104 * MS);
    simulateBeat(t, layout, 'agent', 4200 * MS);
    expect(byteSum(t)).toBe(0);
    const r = ok(regionOf(t, layout), { nonce: layout.nonce });
    expect(r.loadCount).toBe(1);
    expect(r.loadTimer).toBe(5 * MS);
    expect(r.kernel).toEqual({ beats: 3, last: 4104 * MS });
    expect(r.agent).toEqual({ beats: 1, last: 4200 * MS });
    expect(r.armed).toBe(1);
    expect(r.pad).toBe(t[layout.fields.pad]);
    expect(r.ring[2]).toBe(2000 * MS);
    expect(r.ring[3]).toBe(2004 * MS);
    expect(intervalsNewestFirst(r)).toEqual([2004 * MS, 2000 * MS]);
  });

  it('accepts a longer buffer and a subarray with a byteOffset (a whole-table read)', () => {
    const t = freshTable();
    setField(t, layout, 'kernelBeats', 7);
    const r = ok(t.subarray(layout.region.offset), { ringLength: 8 });
    expect(r.kernel.beats).toBe(7);
    expect(ok(Buffer.from(regionOf(t, layout))).kernel.beats).toBe(7);
  });

  it('accepts an expected nonce in upper case', () => {
    expect(decodeRegion(regionOf(built.aml, layout), { nonce: layout.nonce.toUpperCase() }).ok).toBe(true);
  });
});

describe('decodeRegion on hostile input', () => {
  const good = regionOf(built.aml, layout).slice();

  it('rejects every truncation, never throwing', () => {
    for (let n = 0; n < good.length; n++) {
      const r = decodeRegion(good.subarray(0, n));
      expect(r.ok, `length ${n}`).toBe(false);
      if (!r.ok) expect(r.field).toBe('bytes');
    }
    expect(decodeRegion(good).ok).toBe(true);
  });

  const cases: { name: string; patch: (dv: DataView, b: Uint8Array) => void; field: string; expect?: Parameters<typeof decodeRegion>[1] }[] = [
    { name: 'bad magic', patch: (_, b) => (b[0] = 0x58), field: 'magic' },
    { name: 'last magic byte', patch: (_, b) => (b[7] = 0), field: 'magic' },
    { name: 'version 0', patch: (dv) => dv.setUint16(Off.version, 0, true), field: 'version' },
    { name: 'version 2', patch: (dv) => dv.setUint16(Off.version, 2, true), field: 'version' },
    { name: 'header size 65', patch: (dv) => dv.setUint16(Off.headerSize, 65, true), field: 'headerSize' },
    { name: 'ring length 0xffff', patch: (dv) => dv.setUint16(Off.ringLength, 0xffff, true), field: 'ringLength' },
    { name: 'ring length 0x8000 (power of two, too big)', patch: (dv) => dv.setUint16(Off.ringLength, 0x8000, true), field: 'ringLength' },
    { name: 'ring length 512', patch: (dv) => dv.setUint16(Off.ringLength, 512, true), field: 'ringLength' },
    { name: 'ring length 0', patch: (dv) => dv.setUint16(Off.ringLength, 0, true), field: 'ringLength' },
    { name: 'ring length 2', patch: (dv) => dv.setUint16(Off.ringLength, 2, true), field: 'ringLength' },
    { name: 'ring length 12', patch: (dv) => dv.setUint16(Off.ringLength, 12, true), field: 'ringLength' },
    { name: 'ring length 4, region size of a ring of 8', patch: (dv) => dv.setUint16(Off.ringLength, 4, true), field: 'regionSize' },
    { name: 'region size 0xffffffff', patch: (dv) => dv.setUint32(Off.regionSize, 0xffff_ffff, true), field: 'regionSize' },
    { name: 'region size one short', patch: (dv) => dv.setUint32(Off.regionSize, 64 + 4 * 8 - 1, true), field: 'regionSize' },
    {
      name: 'ring 16 and region size 128, only 96 bytes given',
      patch: (dv) => {
        dv.setUint16(Off.ringLength, 16, true);
        dv.setUint32(Off.regionSize, 64 + 4 * 16, true);
      },
      field: 'bytes',
    },
    { name: 'kernel period 0', patch: (dv) => dv.setUint16(Off.kernelPeriodDs, 0, true), field: 'kernelPeriodDs' },
    { name: 'kernel period 65535 ds', patch: (dv) => dv.setUint16(Off.kernelPeriodDs, 0xffff, true), field: 'kernelPeriodDs' },
    { name: 'another nonce', patch: (dv) => dv.setBigUint64(Off.nonce, 1n, true), field: 'nonce', expect: { nonce: layout.nonce } },
    { name: 'malformed expected nonce', patch: () => undefined, field: 'nonce', expect: { nonce: 'xyz' } },
    { name: 'expected ring length differs', patch: () => undefined, field: 'ringLength', expect: { ringLength: 16 } },
  ];
  it.each(cases)('$name -> field $field', ({ patch, field, expect: want }) => {
    const bytes = good.slice();
    patch(new DataView(bytes.buffer), bytes);
    const r = decodeRegion(bytes, want);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.field).toBe(field);
      expect(r.reason).toMatch(/\S/);
    }
  });

  it('decodes the largest ring (256)', () => {
    const big = buildDiagSsdt({ nonce: NONCE, ringLength: RING_MAX });
    const r = ok(regionOf(big.aml, big.layout), { ringLength: RING_MAX });
    expect(r.ring).toHaveLength(RING_MAX);
  });

  it('never throws on random bytes, random-length buffers and random headers', () => {
    let seed = 0x9e3779b9;
    const rand = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return seed >>> 0;
    };
    for (let i = 0; i < 3000; i++) {
      const bytes = i % 2 === 0 ? new Uint8Array(rand() % 1200) : good.slice(0, rand() % (good.length + 1));
      for (let j = 0; j < bytes.length; j++) if (i % 2 === 0 || rand() % 16 === 0) bytes[j] = rand() & 0xff;
      if (i % 3 === 0 && bytes.length >= 8) bytes.set(good.subarray(0, 8)); // keep the magic half the time
      const r = decodeRegion(bytes);
      if (r.ok) {
        expect(r.region.ring.length).toBeLessThanOrEqual(RING_MAX);
        expect(r.region.regionSize).toBeLessThanOrEqual(bytes.length);
      }
    }
  });

  it('returns a failure instead of throwing for a non-Uint8Array', () => {
    expect(decodeRegion(null as unknown as Uint8Array)).toMatchObject({ ok: false, field: 'bytes' });
    expect(decodeRegion('EVEDIAGR' as unknown as Uint8Array)).toMatchObject({ ok: false, field: 'bytes' });
  });
});

describe('intervalsNewestFirst', () => {
  const N = 8;
  const region = (beats: number, ring: number[]) => ({ kernel: { beats, last: 0 }, ring });

  it('starts at slot beats mod N and walks back', () => {
    const ring = [10, 11, 12, 13, 14, 15, 16, 17];
    expect(intervalsNewestFirst(region(3, ring))).toEqual([13, 12]); // beats 2 and 3 wrote slots 2, 3
    expect(intervalsNewestFirst(region(9, ring))).toEqual([11, 10, 17, 16, 15, 14, 13, 12]);
    expect(intervalsNewestFirst(region(1000, ring))).toHaveLength(N);
  });

  it('gives nothing before the second beat', () => {
    expect(intervalsNewestFirst(region(0, [1, 2, 3, 4]))).toEqual([]);
    expect(intervalsNewestFirst(region(1, [1, 2, 3, 4]))).toEqual([]);
  });

  it('skips zero slots (never written, e.g. after a reload)', () => {
    expect(intervalsNewestFirst(region(6, [5, 0, 7, 0, 9, 10, 0, 0]))).toEqual([10, 9, 7]); // slots 6..2; slot 0 is older
  });

  it('handles a beat counter past 2^31 and at 2^32-1', () => {
    const ring = [1, 2, 3, 4];
    expect(intervalsNewestFirst(region(0xffff_ffff, ring))).toEqual([4, 3, 2, 1]);
    expect(intervalsNewestFirst(region(0x8000_0001, ring))).toEqual([2, 1, 4, 3]);
  });

  it('ignores a ring that is not a bounded power of two', () => {
    expect(intervalsNewestFirst(region(5, [1, 2, 3]))).toEqual([]);
  });
});
