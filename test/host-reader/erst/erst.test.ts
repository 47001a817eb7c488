import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync, deflateSync, gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { analyzeKernelText } from '../../../controller/analyzers/index.js';
import {
  CPER_CREATOR_PSTORE,
  CPER_SECTION_TYPE_DMESG,
  CPER_SECTION_TYPE_DMESG_Z,
  CPER_SECTION_TYPE_MCE,
  decodeCperRecord,
  decodeErst,
  decodeStore,
  ERST_STORE_MAGIC,
  ErstDecodeError,
  readErst,
  summarizeRecord,
} from '../../../host-reader/erst/index.js';

/**
 * The ERST decoders (host-reader/erst/) on a real store (Debian 6.1 panicked in QEMU 7.2 by SysRq c, kept
 * gzipped in fixtures/) and on stores built by the small encoder below: the layouts QEMU's hw/acpi/erst.c
 * and Linux's erst_writer write. The guest is hostile: every corruption is an ErstDecodeError naming the
 * field, quickly, never another exception.
 */


/**
 * A small encoder of QEMU ERST stores holding Linux pstore records, for the decoder's tests: the layouts
 * of host-reader/erst/store.ts and cper.ts, written the way QEMU (hw/acpi/erst.c) and Linux's
 * erst_writer lay them out.
 */

function guidBytes(guid: string): Buffer {
  const h = guid.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

interface RecordSpec {
  id: bigint;
  body: Uint8Array;
  sectionType?: string;
  creator?: string;
  timestamp?: number;
  /** Override fields after encoding (corruption). */
  patch?: (rec: Buffer) => void;
}

/** A CPER record as erst_writer makes it: header, one section descriptor, the body at 200. */
function cperRecord(spec: RecordSpec): Buffer {
  const rec = Buffer.alloc(200 + spec.body.length);
  rec.write('CPER', 0, 'latin1');
  rec.writeUInt16LE(0x0100, 4);
  rec.writeUInt32LE(0xffffffff, 6);
  rec.writeUInt16LE(1, 10);
  rec.writeUInt32LE(1, 12); // fatal
  rec.writeUInt32LE(spec.timestamp === undefined ? 0 : 2, 16);
  rec.writeUInt32LE(rec.length, 20);
  rec.writeBigUInt64LE(BigInt(spec.timestamp ?? 0), 24);
  guidBytes(spec.creator ?? CPER_CREATOR_PSTORE).copy(rec, 64);
  guidBytes('e8f56ffe-919c-4cc5-ba88-65abe14913bb').copy(rec, 80);
  rec.writeBigUInt64LE(spec.id, 96);
  rec.writeUInt32LE(2, 104);
  rec.writeUInt32LE(200, 128);
  rec.writeUInt32LE(spec.body.length, 132);
  rec.writeUInt16LE(0x0100, 136);
  rec.writeUInt32LE(1, 140);
  guidBytes(spec.sectionType ?? CPER_SECTION_TYPE_DMESG_Z).copy(rec, 144);
  rec.writeUInt32LE(1, 176);
  Buffer.from(spec.body).copy(rec, 200);
  spec.patch?.(rec);
  return rec;
}

/** A pstore dmesg body: `Reason#N PartM` and the text, raw-deflated (or zlib-wrapped, or not at all). */
function dmesgBody(reason: string, count: number, part: number, text: string, how: 'raw' | 'zlib' | 'none' = 'raw'): Buffer {
  const t = Buffer.from(`${reason}#${count} Part${part}\n${text}`, 'utf8');
  return how === 'raw' ? deflateRawSync(t) : how === 'zlib' ? deflateSync(t) : t;
}

function dmesgRecord(id: bigint, reason: string, count: number, part: number, text: string, how: 'raw' | 'zlib' | 'none' = 'raw', timestamp = 1_796_277_175): Buffer {
  return cperRecord({ id, timestamp, body: dmesgBody(reason, count, part, text, how), sectionType: how === 'none' ? CPER_SECTION_TYPE_DMESG : CPER_SECTION_TYPE_DMESG_Z });
}

interface StoreSpec {
  size?: number;
  recordSize?: number;
  /** Records by slot index (slot 0 is the header's). */
  slots?: Record<number, Uint8Array>;
}

/** A store as QEMU's make_erst_storage_header and write_erst_record leave it. */
function erstStore(spec: StoreSpec = {}): Buffer {
  const size = spec.size ?? 0x10000;
  const recordSize = spec.recordSize ?? 8192;
  const f = Buffer.alloc(size);
  const slotCount = size / recordSize;
  f.writeBigUInt64LE(ERST_STORE_MAGIC, 0);
  f.writeUInt32LE(recordSize, 8);
  f.writeUInt32LE(Math.ceil((24 + 8 * slotCount) / recordSize) * recordSize, 12);
  f.writeUInt16LE(0x0100, 16);
  let count = 0;
  for (const [k, rec] of Object.entries(spec.slots ?? {})) {
    const i = Number(k);
    const at = i * recordSize;
    f.fill(0xff, at, at + recordSize);
    Buffer.from(rec).copy(f, at);
    f.writeBigUInt64LE(Buffer.from(rec).readBigUInt64LE(96), 24 + 8 * i);
    count++;
  }
  f.writeUInt32LE(count, 20);
  return f;
}

const FIXTURE = join(import.meta.dirname, 'fixtures', 'debian-6.1-panic.erst.gz');
const PANIC_LINE = 'Kernel panic - not syncing: sysrq triggered crash';

/** The ErstDecodeError `fn` throws (failing the test if it returns or throws anything else). */
function decodeError(fn: () => unknown): ErstDecodeError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ErstDecodeError) return e;
    throw new Error(`expected an ErstDecodeError, got ${String(e)}`, { cause: e });
  }
  throw new Error('expected an ErstDecodeError, got a value');
}

describe('a real store: Debian 6.1 panicked by SysRq c in QEMU 7.2', () => {
  const bytes = gunzipSync(readFileSync(FIXTURE));

  test('the header, two compressed dmesg parts of one panic, joined oldest first', () => {
    expect(bytes.length).toBe(0x10000);
    const store = decodeErst(bytes);
    expect(store.header).toEqual({ recordSize: 8192, storageOffset: 8192, version: 0x0100, recordCount: 2, slotCount: 8, firstSlot: 1 });
    expect(store.records.map(summarizeRecord)).toEqual([
      expect.objectContaining({ id: '6b1103b700000001', slot: 1, creator: 'pstore', type: 'dmesg', reason: 'Panic', dumpCount: 1, part: 1, compressed: true, compression: 'deflate-raw', severity: 'fatal', bytes: 6992, recordBytes: 7192 }),
      expect.objectContaining({ id: '6b1103b700000002', slot: 2, creator: 'pstore', type: 'dmesg', reason: 'Panic', dumpCount: 1, part: 2, compressed: true, bytes: 2612, recordBytes: 2812 }),
    ]);
    // Linux stores Unix seconds where UEFI has BCD.
    expect(summarizeRecord(store.records[0]!).time).toBe('2026-12-03T05:52:55.000Z');
    expect(store.dumps).toHaveLength(1);
    const dump = store.dumps[0]!;
    expect(dump).toMatchObject({ reason: 'Panic', dumpCount: 1, parts: [1, 2], complete: true, recordIds: [0x6b1103b700000001n, 0x6b1103b700000002n] });
    // Part 2 holds the older lines: the boot banner comes first, the panic last, and no `Panic#1 PartN` line is left.
    expect(dump.text.startsWith('<5>[    0.000000] Linux version 6.1.')).toBe(true);
    expect(dump.text).toContain(PANIC_LINE);
    expect(dump.text.indexOf('Linux version')).toBeLessThan(dump.text.indexOf(PANIC_LINE));
    expect(dump.text).not.toMatch(/Panic#1 Part/);
    expect(dump.text.length).toBe(17643 - 'Panic#1 Part1\n'.length + 8118 - 'Panic#1 Part2\n'.length);
  });

  test("the controller's kernel-log analyzer finds the panic in the joined text", () => {
    const text = decodeErst(bytes).dumps[0]!.text;
    const titles = analyzeKernelText(text, { file: 'pstore-dmesg.txt' }).map((f) => f.title);
    expect(titles).toContain('Kernel panic: sysrq triggered crash');
  });

  test('the store layer alone: the slots in use and their map ids', () => {
    const s = decodeStore(bytes);
    expect(s.slots.map((x) => [x.index, x.recordId, x.offset, x.data.length])).toEqual([
      [1, 0x6b1103b700000001n, 8192, 8192],
      [2, 0x6b1103b700000002n, 16384, 8192],
    ]);
    const cper = decodeCperRecord(s.slots[0]!.data);
    expect(cper.header).toMatchObject({ revision: 0x0100, sectionCount: 1, creatorId: CPER_CREATOR_PSTORE, notificationType: 'e8f56ffe-919c-4cc5-ba88-65abe14913bb', flags: 2 });
    expect(cper.sections[0]).toMatchObject({ offset: 200, length: 6992, sectionType: CPER_SECTION_TYPE_DMESG_Z, flags: 1, severity: 1 });
  });
});

describe('synthetic stores', () => {
  test('a fresh file QEMU never ran on (all zeroes) is an uninitialized, empty store', () => {
    expect(decodeErst(Buffer.alloc(0x10000))).toEqual({ initialized: false, records: [], dumps: [] });
  });

  test('a store QEMU initialized, with no record', () => {
    const s = decodeErst(erstStore());
    expect(s).toMatchObject({ initialized: true, records: [], dumps: [] });
    expect(s.header?.firstSlot).toBe(1);
  });

  test('one compressed record', () => {
    const s = decodeErst(erstStore({ slots: { 1: dmesgRecord(5n, 'Panic', 1, 1, '<0>[    1.000000] Kernel panic - not syncing: x\n') } }));
    expect(s.records).toHaveLength(1);
    expect(s.records[0]?.pstore).toMatchObject({ type: 'dmesg', compressed: true, reason: 'Panic', dumpCount: 1, part: 1 });
    expect(s.dumps).toEqual([{ reason: 'Panic', dumpCount: 1, recordIds: [5n], parts: [1], complete: true, timestamp: 1_796_277_175, text: '<0>[    1.000000] Kernel panic - not syncing: x\n' }]);
  });

  test('an uncompressed record (pstore stores the text when compression fails) and a zlib-wrapped one', () => {
    const s = decodeErst(
      erstStore({
        slots: { 1: dmesgRecord(7n, 'Oops', 1, 1, 'plain\n', 'none'), 2: dmesgRecord(8n, 'Panic', 2, 1, 'zlib\n', 'zlib') },
      }),
    );
    expect(s.records.map((r) => [r.pstore?.compressed, r.pstore?.compression, r.pstore?.text])).toEqual([
      [false, undefined, 'Oops#1 Part1\nplain\n'],
      [true, 'zlib', 'Panic#2 Part1\nzlib\n'],
    ]);
  });

  test('an oops then a panic of two parts, in any slot order: records by id, dumps oldest first, parts joined in order', () => {
    const s = decodeErst(
      erstStore({
        slots: {
          1: dmesgRecord(0x20n, 'Panic', 2, 2, 'panic-older\n'),
          3: dmesgRecord(0x10n, 'Oops', 1, 1, 'oops\n', 'raw', 100),
          5: dmesgRecord(0x1fn, 'Panic', 2, 1, 'panic-newer\n', 'raw', 200),
          6: cperRecord({ id: 0x30n, body: Buffer.from('mce'), sectionType: CPER_SECTION_TYPE_MCE }),
          7: cperRecord({ id: 0x08n, body: Buffer.from('firmware'), creator: '11111111-2222-3333-4444-555555555555', sectionType: CPER_SECTION_TYPE_DMESG }),
        },
      }),
    );
    expect(s.records.map((r) => r.recordId)).toEqual([0x08n, 0x10n, 0x1fn, 0x20n, 0x30n]);
    expect(s.records.map((r) => summarizeRecord(r).type)).toEqual(['cper', 'dmesg', 'dmesg', 'dmesg', 'mce']);
    expect(s.records[0]?.creator).toBe('11111111-2222-3333-4444-555555555555');
    expect(s.dumps.map((d) => [d.reason, d.parts, d.text])).toEqual([
      ['Oops', [1], 'oops\n'],
      ['Panic', [1, 2], 'panic-older\npanic-newer\n'],
    ]);
    expect(s.dumps[1]?.timestamp).toBe(1_796_277_175);
  });

  test('the same Panic#1 after a reboot is a later dump; a missing part leaves the dump incomplete', () => {
    const s = decodeErst(
      erstStore({
        slots: {
          1: dmesgRecord(1n, 'Panic', 1, 1, 'boot1-p1\n'),
          2: dmesgRecord(2n, 'Panic', 1, 3, 'boot1-p3\n'),
          3: dmesgRecord(9n, 'Panic', 1, 1, 'boot2\n'),
        },
      }),
    );
    expect(s.dumps.map((d) => [d.parts, d.complete, d.text])).toEqual([
      [[1, 3], false, 'boot1-p3\nboot1-p1\n'],
      [[1], true, 'boot2\n'],
    ]);
  });

  test('a record of the whole slot (8 KiB) and a store with 4 KiB slots', () => {
    const big = cperRecord({ id: 3n, body: Buffer.alloc(8192 - 200, 0x41), sectionType: CPER_SECTION_TYPE_DMESG });
    expect(decodeErst(erstStore({ slots: { 1: big } })).records[0]?.pstore?.text).toHaveLength(8192 - 200);
    const small = decodeErst(erstStore({ recordSize: 4096, slots: { 1: dmesgRecord(4n, 'Panic', 1, 1, 'x\n') } }));
    expect(small.header).toMatchObject({ recordSize: 4096, slotCount: 16, firstSlot: 1 });
    expect(small.dumps[0]?.text).toBe('x\n');
  });
});

describe('hostile stores: an ErstDecodeError naming the field', () => {
  const good = () => erstStore({ slots: { 1: dmesgRecord(5n, 'Panic', 1, 1, 'text\n') } });
  const patched = (fn: (b: Buffer) => void) => {
    const b = good();
    fn(b);
    return b;
  };
  const cases: [string, () => Uint8Array, string, RegExp?][] = [
    ['an empty file', () => Buffer.alloc(0), 'header', /truncated/],
    ['a file shorter than the header', () => good().subarray(0, 23), 'header', /truncated/],
    ['a file cut inside a slot', () => good().subarray(0, 10_000), 'store', /whole number/],
    ['a file cut inside the header slot', () => good().subarray(0, 4096), 'store', /whole number/],
    ['garbage', () => Buffer.from('this is not an ERST store at all, just some text'.repeat(100)), 'header.magic'],
    ['a zero record size', () => patched((b) => b.writeUInt32LE(0, 8)), 'header.recordSize'],
    ['a record size not a power of two', () => patched((b) => b.writeUInt32LE(8191, 8)), 'header.recordSize'],
    ['a record size larger than the file', () => patched((b) => b.writeUInt32LE(0x8000_0000, 8)), 'store'],
    ['a version QEMU does not write', () => patched((b) => b.writeUInt16LE(0x0200, 16)), 'header.version'],
    ['reserved not zero', () => patched((b) => b.writeUInt16LE(1, 18)), 'header.reserved'],
    ['a storage offset inside the map', () => patched((b) => b.writeUInt32LE(0, 12)), 'header.storageOffset'],
    ['a storage offset past the end', () => patched((b) => b.writeUInt32LE(0x2_0000, 12)), 'header.storageOffset'],
    ['a storage offset off a slot boundary', () => patched((b) => b.writeUInt32LE(8193, 12)), 'header.storageOffset'],
    ['a huge record count', () => patched((b) => b.writeUInt32LE(0xffff_ffff, 20)), 'header.recordCount'],
    ['a map id of all ones', () => patched((b) => b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 24 + 16)), 'map[2]'],
    ['the same id in two slots', () => patched((b) => (b.writeBigUInt64LE(5n, 24 + 16), b.writeUInt32LE(2, 20))), 'map[2]'],
    ['a slot in use that holds no CPER record', () => patched((b) => (b.writeBigUInt64LE(6n, 24 + 24), b.writeUInt32LE(2, 20))), 'slot[3].cper.signature'],
    ['a CPER id that is not the map id', () => patched((b) => b.writeBigUInt64LE(6n, 8192 + 96)), 'slot[1].cper.recordId'],
    ['a bad signature end', () => patched((b) => b.writeUInt32LE(0, 8192 + 6)), 'slot[1].cper.signatureEnd'],
    ['a record length past the slot', () => patched((b) => b.writeUInt32LE(8193, 8192 + 20)), 'slot[1].cper.recordLength'],
    ['a huge record length', () => patched((b) => b.writeUInt32LE(0xffff_ffff, 8192 + 20)), 'slot[1].cper.recordLength'],
    ['a record length below the header', () => patched((b) => b.writeUInt32LE(127, 8192 + 20)), 'slot[1].cper.recordLength'],
    ['a huge section count', () => patched((b) => b.writeUInt16LE(0xffff, 8192 + 10)), 'slot[1].cper.sectionCount'],
    ['a section body past the record', () => patched((b) => b.writeUInt32LE(0xffff_fff0, 8192 + 132)), 'slot[1].cper.section[0].length'],
    ['a section body inside the descriptors', () => patched((b) => b.writeUInt32LE(100, 8192 + 128)), 'slot[1].cper.section[0].length'],
    ['a pstore record with no section', () => patched((b) => b.writeUInt16LE(0, 8192 + 10)), 'slot[1].pstore.section'],
    ['a compressed body that is not deflate', () => patched((b) => b.fill(0xff, 8192 + 200, 8192 + 208)), 'slot[1].pstore.data', /not a deflate stream/],
    ['a compressed body cut short', () => patched((b) => b.writeUInt32LE(b.readUInt32LE(8192 + 132) - 4, 8192 + 132)), 'slot[1].pstore.data', /not a deflate stream/],
  ];
  test.each(cases)('%s', (_name, make, field, message) => {
    const e = decodeError(() => decodeErst(make()));
    expect(e.field).toBe(field);
    if (message) expect(e.message).toMatch(message);
  });

  test('a store larger than the cap is refused before anything is read', () => {
    expect(decodeError(() => decodeErst(Buffer.alloc(0x2_0000), { maxStoreBytes: 0x1_0000 })).field).toBe('store');
  });

  test('a zip bomb: a record inflating past the cap is an error, quickly, and the other records still read', () => {
    const bomb = deflateRawSync(Buffer.alloc(6 * 1024 * 1024, 0x41), { level: 9 });
    expect(bomb.length).toBeLessThan(8192 - 200);
    const store = erstStore({
      slots: { 1: cperRecord({ id: 1n, body: bomb }), 2: dmesgRecord(2n, 'Panic', 1, 1, 'survivor\n') },
    });
    const t0 = performance.now();
    const e = decodeError(() => decodeErst(store));
    expect(e.field).toBe('slot[1].pstore.data');
    expect(e.message).toMatch(/inflates to more than 1048576 bytes/);
    const reading = readErst(store, { maxInflatedBytes: 64 * 1024 });
    expect(reading.errors.map((x) => x.message)).toEqual([expect.stringMatching(/^slot\[1\]\.pstore\.data: inflates to more than 65536 bytes/)]);
    expect(reading.dumps.map((d) => d.text)).toEqual(['survivor\n']);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test('the total text cap bounds all records together', () => {
    const text = 'y'.repeat(40_000);
    const store = erstStore({ slots: { 1: dmesgRecord(1n, 'Panic', 1, 1, text), 2: dmesgRecord(2n, 'Panic', 1, 2, text) } });
    const r = readErst(store, { maxTotalTextBytes: 50_000 });
    expect(r.records).toHaveLength(1);
    expect(r.errors[0]?.field).toBe('slot[2].pstore.data');
  });

  test('readErst: a bad header is its one error, with no record', () => {
    const r = readErst(Buffer.from('garbage'));
    expect(r.records).toEqual([]);
    expect(r.errors.map((e) => e.field)).toEqual(['header']);
  });
});

describe('property: any bytes decode to a value or an ErstDecodeError (seeded)', () => {
  const valid = erstStore({
    slots: {
      1: dmesgRecord(0x10n, 'Oops', 1, 1, '<4>[    2.0] BUG: kernel NULL pointer dereference\n'.repeat(20)),
      2: dmesgRecord(0x11n, 'Panic', 2, 1, '<0>[    3.0] Kernel panic - not syncing: x\n'.repeat(30)),
      4: dmesgRecord(0x12n, 'Panic', 2, 2, 'older lines\n'.repeat(40), 'none'),
    },
  });
  const check = (bytes: Uint8Array) => {
    try {
      const s = decodeErst(bytes, { maxInflatedBytes: 256 * 1024 });
      expect(Array.isArray(s.records)).toBe(true);
    } catch (e) {
      if (!(e instanceof ErstDecodeError)) throw e;
    }
    // The lenient reading never throws at all.
    const r = readErst(bytes, { maxInflatedBytes: 256 * 1024 });
    expect(r.errors.every((e) => e instanceof ErstDecodeError)).toBe(true);
  };

  test('random bytes, some behind a valid header', () => {
    const header = valid.subarray(0, 24);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), fc.constantFrom(0, 4096, 8192, 0x10000), (tail, withHeader, pad) => {
        const b = Buffer.concat([withHeader ? header : Buffer.alloc(0), Buffer.from(tail), Buffer.alloc(pad)]);
        check(b);
      }),
      { seed: 0x5eed, numRuns: 300 },
    );
  });

  test('mutations of a valid store (bytes set, words set in the headers, truncation)', () => {
    const hot = [8, 12, 16, 20, 24, 32, 40, 8192, 8192 + 6, 8192 + 10, 8192 + 20, 8192 + 96, 8192 + 128, 8192 + 132, 8192 + 200, 16384 + 20, 16384 + 132, 32768 + 20];
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.array(fc.tuple(fc.constantFrom(...hot), fc.constantFrom(0, 1, 127, 128, 200, 4096, 8191, 8192, 0x10000, 0x7fff_ffff, 0xffff_ffff)), { maxLength: 3 }),
        fc.option(fc.integer({ min: 0, max: valid.length }), { nil: undefined }),
        (bytes, words, cut) => {
          const b = Buffer.from(valid);
          for (const [at, v] of bytes) b[at] = v;
          for (const [at, v] of words) b.writeUInt32LE(v, at);
          check(cut === undefined ? b : b.subarray(0, cut));
        },
      ),
      { seed: 42, numRuns: 400 },
    );
  });
});
