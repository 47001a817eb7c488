import { describe, expect, test } from 'vitest';
import {
  aml,
  BufferTerm,
  ByteSink,
  fieldUnit,
  NamePath,
  NameRef,
  ObjectType,
  type Name,
  reserved,
  writePkgLength,
  writeRawPkgLength,
  type ObjectTypeName,
  type TermObj,
} from '../../../acpi/aml/index.js';
import { decodeTable, decodeTermList, type DecodedTable } from '../../../acpi/decode/decode.js';
import { AmlReader } from '../../../acpi/decode/reader.js';
import { buildDiagSsdt, type DiagSsdtOptions } from '../../../acpi/diag/ssdt.js';
import { AmlDecodeError } from '../../../acpi/errors.js';
import { buildTable, byteSum, DefinitionBlock, HEADER_SIZE, type TableHeaderFields } from '../../../acpi/table.js';

const HDR: TableHeaderFields = {
  signature: 'SSDT',
  revision: 2,
  oemId: 'EVEDIA',
  oemTableId: 'DECODE',
  oemRevision: 1,
  creatorId: 'EVED',
  creatorRevision: 1,
};

/** Encode `body` as a table, decode it, and require the very same tree (same classes) back. */
function roundTrip(body: TermObj[]): DecodedTable {
  const block = new DefinitionBlock(HDR, body);
  const bytes = block.encode();
  const d = decodeTable(bytes);
  expect(d.checksumOk).toBe(true);
  expect(d.header.length).toBe(bytes.length);
  expect(d.block).toStrictEqual(block);
  expect(d.block.encode()).toEqual(bytes);
  return d;
}

/** A table around raw body bytes (length and checksum right). */
const table = (body: number[]): Uint8Array => buildTable(HDR, new Uint8Array(body));

function decodeError(bytes: Uint8Array): AmlDecodeError {
  try {
    decodeTable(bytes);
  } catch (e) {
    if (e instanceof AmlDecodeError) return e;
    throw e;
  }
  throw new Error('decoded without an error');
}

const seg = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));

/** Terms that need Args/Locals sit in a 7-argument method. */
const inMethod = (...terms: TermObj[]): TermObj[] => [aml.method('TEST', { args: 7 }, terms)];
const L = aml.local;
const A = aml.arg;

describe('round trip of every term kind', () => {
  const cases: Array<[string, TermObj[]]> = [
    [
      'Integer: Zero, One and every prefix at its boundaries',
      inMethod(
        ...[0, 1, 2, 0xff, 0x100, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000n, 0xffff_ffff_ffff_ffffn].map((v) => aml.store(v, L(0))),
      ),
    ],
    ['Ones', inMethod(aml.store(aml.ones(), L(0)))],
    ['String', inMethod(aml.store(aml.str(''), L(0)), aml.store(aml.str('hello, world'), L(1)), aml.store(aml.str('\x01\x7f"\\'), L(2)))],
    [
      'Buffer: empty, small, two- and three-byte PkgLength',
      [
        aml.name('BUF0', aml.buffer(new Uint8Array(0))),
        aml.name('BUF1', aml.buffer(new Uint8Array([1, 2, 3]))),
        aml.name('BUF2', aml.buffer(new Uint8Array(100).map((_, i) => i))),
        aml.name('BUF3', aml.buffer(new Uint8Array(5000).fill(0xa5))),
      ],
    ],
    [
      'Buffer: a size larger than the byte list, and a computed size',
      [aml.name('BUF0', new BufferTerm(new Uint8Array([1, 2]), aml.int(16))), ...inMethod(aml.store(new BufferTerm(new Uint8Array(0), A(0)), L(0)))],
    ],
    [
      'Package: empty, mixed, nested, 255 elements',
      [
        aml.name('PKG0', aml.pkg()),
        aml.name('PKG1', aml.pkg(1, 'FOO', aml.str('x'), aml.pkg(2, aml.pkg()), aml.buffer(new Uint8Array([9])), aml.ones(), '\\_SB.PCI0')),
        aml.name('PKG2', aml.pkg(...Array.from({ length: 255 }, (_, i) => i * 1000))),
      ],
    ],
    ['Local0-7 and Arg0-6', inMethod(...[0, 1, 2, 3, 4, 5, 6].map((i) => aml.store(A(i), L(i))), aml.store(L(7), A(0)))],
    [
      'NameRef: single, dual, multi, root, parent, prefix-only',
      inMethod(
        aml.store('FOO', L(0)),
        aml.store('\\_SB.PCI0', L(0)),
        aml.store('\\_SB.PCI0.LPCB.EC0', L(0)),
        aml.store('^^PARN', L(0)),
        aml.store(aml.ref(new NamePath(true, 0, [])), L(0)),
        aml.store(aml.ref(new NamePath(false, 1, [])), L(0)),
      ),
    ],
    [
      'MethodCall with 0, 3 and 7 arguments',
      [
        aml.method('M0', {}, []),
        aml.method('M3', { args: 3 }, [aml.return(A(2))]),
        aml.method('M7', { args: 7 }, []),
        ...inMethod(
          aml.store(aml.call('M0'), L(0)),
          aml.call('M3', 1, aml.call('M0'), aml.call('M3', 2, 3, 4)),
          aml.call('M7', 1, 2, 3, 4, 5, 6, 7),
          aml.return(aml.call('M0')),
        ),
      ],
    ],
    [
      'Store into every SuperName',
      inMethod(
        aml.store(1, L(0)),
        aml.store(1, A(6)),
        aml.store(1, 'FOO'),
        aml.store(1, aml.index(L(0), 2)),
        aml.store(1, aml.index(L(0), 2, L(1))),
        aml.store(1, aml.derefOf(L(0))),
      ),
    ],
    [
      'Binary operators with and without targets',
      inMethod(
        ...(['add', 'subtract', 'multiply', 'and', 'or', 'xor', 'shiftLeft', 'shiftRight'] as const).flatMap((op) => [
          aml[op](L(0), 5, L(1)),
          aml[op](A(0), aml.int(0x1_0000_0000n)),
          aml[op](L(0), 1, 'FOO'),
          aml.store(aml[op](L(0), aml[op](1, 2)), L(3)),
        ]),
      ),
    ],
    ['Not, Increment, Decrement', inMethod(aml.not(L(0), L(1)), aml.store(aml.not(L(0)), L(2)), aml.increment(L(0)), aml.decrement('CNT0'))],
    [
      'Logical operators, LNot, LNotEqual',
      inMethod(
        aml.store(aml.lEqual(L(0), 0), L(1)),
        aml.store(aml.lLess(L(0), 5), L(1)),
        aml.store(aml.lGreater(L(0), 1), L(1)),
        aml.store(aml.lAnd(1, aml.lOr(0, A(0))), L(1)),
        aml.store(aml.lNot(aml.lEqual(L(0), 3)), L(1)), // LNotEqual (Local0, 3)
      ),
    ],
    [
      'Timer, Index, DerefOf, SizeOf',
      inMethod(
        aml.store(aml.and(aml.timer(), 0xffff_ffff), L(0)),
        aml.index(L(0), 1),
        aml.index(L(0), 1, L(2)),
        aml.store(aml.derefOf(aml.index('PKG0', L(1))), L(3)),
        aml.store(aml.sizeOf(L(0)), L(4)),
        aml.store(aml.sizeOf('BUF0'), L(4)),
      ),
    ],
    [
      'Mutex, Acquire, Release, Notify',
      [
        aml.mutex('MTX0'),
        aml.mutex('MTX1', 15),
        ...inMethod(
          aml.store(aml.acquire('MTX0', 0xffff), L(0)),
          aml.acquire('MTX1', 0),
          aml.release('MTX0'),
          aml.notify('\\_TZ.TZ0', 0x80),
          aml.notify(A(0), L(1)),
        ),
      ],
    ],
    [
      'CreateByte/Word/DWord/QWordField',
      inMethod(
        aml.createByteField(A(0), 1, 'FLD0'),
        aml.createWordField(A(0), 2, 'FLD1'),
        aml.createDWordField(L(3), aml.multiply(aml.and(L(1), 15), 4), 'FLD2'),
        aml.createQWordField('BUF0', 0, '\\FLD3'),
      ),
    ],
    [
      'If, If/Else, empty Else, Else If chains, two Ifs in a row',
      inMethod(
        aml.if(L(0), [aml.break()]),
        aml.if(L(0), [aml.noop()], [aml.return(1)]),
        aml.if(L(0), [], []),
        aml.if(aml.lEqual(A(0), 0), [aml.store(0, L(1))], [aml.if(aml.lEqual(A(0), 1), [aml.store(1, L(1))], [aml.store(2, L(1))])]),
        aml.if(1, [aml.noop()]),
        aml.if(0, [aml.noop()], [aml.if(1, [])]),
      ),
    ],
    ['While, Break, Noop, Return', inMethod(aml.while(aml.lLess(L(0), 10), [aml.increment(L(0)), aml.if(A(0), [aml.break()]), aml.noop()]), aml.return(L(0)))],
    [
      'Scope, Device, ThermalZone, nested',
      [
        aml.scope('\\_TZ', [aml.thermalZone('TZ0', [aml.name('_HOT', 3732)]), aml.thermalZone('\\_TZ.TZ1', [])]),
        aml.scope('\\', [aml.device('DEV0', [aml.device('DEV1', [aml.name('_ADR', 0)])])]),
        aml.device('\\_SB.DEV2', []),
        aml.scope('DEV0.DEV1', [aml.name('X', 1)]),
      ],
    ],
    [
      'Name with every kind of value',
      [
        aml.name('N0', 0),
        aml.name('N1', aml.str('s')),
        aml.name('N2', aml.pkg(1)),
        aml.name('N3', aml.buffer(new Uint8Array([0xff]))),
        aml.name('N4', 'N0'),
        aml.name('\\N5', aml.ones()),
      ],
    ],
    [
      'Method flags',
      [
        aml.method('M0', {}, []),
        aml.method('M1', { args: 7, serialized: true, syncLevel: 15 }, [aml.noop()]),
        aml.method('M2', { args: 3, syncLevel: 4 }, []),
        aml.method('\\_SB.M3', { serialized: true }, []),
      ],
    ],
    [
      'External of every object type',
      (Object.keys(ObjectType) as ObjectTypeName[]).map((type, i) =>
        aml.external(`\\E${i.toString().padStart(3, '0')}`, type, type === 'Method' ? 5 : 0),
      ),
    ],
    [
      'OperationRegion: named spaces, a numeric space, computed offset and length',
      [
        aml.opRegion('REG0', 'SystemMemory', 0x1000, 0x10),
        aml.opRegion('REG1', 'SystemIO', 0x80, 1),
        aml.opRegion('REG2', 'FFixedHW', 0, 0),
        aml.opRegion('REG3', 0x80, 0xfed0_0000, 0x400),
        ...inMethod(aml.opRegion('REG4', 'PCI_Config', aml.add(A(0), 4), aml.sizeOf(L(0)))),
      ],
    ],
    ['DataTableRegion', [aml.dataTableRegion('DTR0', 'SSDT', 'EVEDIA', 'EVEDIAG'), aml.dataTableRegion('DTR1', 'DSDT', '', '')]],
    [
      'Field: flags, reserved bits, FieldLength of 1-4 bytes',
      [
        aml.opRegion('REG0', 'SystemMemory', 0, 0x1000_0000),
        aml.field('REG0', {}, [fieldUnit('AAAA', 1)]),
        aml.field('REG0', { access: 'DWordAcc', lock: true, update: 'WriteAsZeros' }, [fieldUnit('AAAA', 32), reserved(32), fieldUnit('BBBB', 8)]),
        aml.field('REG0', { access: 'BufferAcc', update: 'WriteAsOnes' }, [reserved(0), fieldUnit('C', 0x3f), fieldUnit('D', 0x40)]),
        aml.field('\\REG0', { access: 'QWordAcc' }, [fieldUnit('E', 0xfff), reserved(0x1000), fieldUnit('F', 0xfffff), fieldUnit('G', 0x10_0000), reserved(0x0fff_ffff)]),
      ],
    ],
    ['expressions standing alone in a TermList', [aml.int(5), aml.str('x'), aml.pkg(1), aml.ref('FOO'), aml.add(1, 2)]],
  ];
  test.each(cases)('%s', (_name, body) => {
    roundTrip(body);
  });

  test('an empty table', () => {
    roundTrip([]);
  });

  test('a four-byte PkgLength (a body over 1 MiB)', () => {
    // Compared by hand: a deep equality walk over a MiB of bytes is slower than the test timeout.
    const big = new Uint8Array(0x10_0010).fill(7);
    const bytes = new DefinitionBlock(HDR, [aml.name('BIG0', aml.buffer(big))]).encode();
    const d = decodeTable(bytes);
    expect(d.block.body).toHaveLength(1);
    const name = d.block.body[0] as Name;
    expect(name.name).toStrictEqual(NamePath.parse('BIG0'));
    const buf = name.value as BufferTerm;
    expect(buf).toBeInstanceOf(BufferTerm);
    expect(buf.size).toStrictEqual(aml.int(0x10_0010));
    expect(Buffer.from(buf.bytes).equals(Buffer.from(big))).toBe(true);
    expect(Buffer.from(d.block.encode()).equals(Buffer.from(bytes))).toBe(true);
  });

  test('250 nested Ifs are within the depth cap', () => {
    let t: TermObj = aml.noop();
    for (let i = 0; i < 250; i++) t = aml.if(1, [t]);
    roundTrip(inMethod(t));
  });
});

describe('the diagnostic SSDT', () => {
  const variants: Array<[string, DiagSsdtOptions]> = [
    ['defaults, nonce 1', { nonce: 1n }],
    ['other zones and scope', { nonce: 2n, scope: '\\_SB', kernelZone: 'KZ', agentZone: 'AZ' }],
    ['largest ring, longest period', { nonce: 0xffff_ffff_ffff_ffffn, ringLength: 256, kernelPeriodMs: 3_600_000 }],
    ['smallest ring, shortest period, other ids', { nonce: 0n, ringLength: 4, kernelPeriodMs: 100, oemId: 'X', oemTableId: 'Y_1', oemRevision: 0xffff_ffff }],
    ['a multi-segment scope', { nonce: 3n, scope: '\\_SB.PCI0' }],
  ];
  test.each(variants)('%s round-trips', (_name, opts) => {
    const diag = buildDiagSsdt(opts);
    const d = decodeTable(diag.aml);
    expect(d.checksumOk).toBe(true);
    expect(d.block).toStrictEqual(diag.block);
    expect(d.header).toMatchObject({ signature: 'SSDT', length: diag.aml.length, oemId: diag.layout.table.oemId, checksum: diag.aml[9] });
  });

  test('a changed byte shows as a bad checksum, not an error', () => {
    const bytes = buildDiagSsdt({ nonce: 1n }).aml.slice();
    bytes[24] = (bytes[24] as number) ^ 1; // OEM revision
    const d = decodeTable(bytes);
    expect(d.checksumOk).toBe(false);
    expect(d.header.oemRevision).toBe(0);
  });

  test('bytes past the length field are ignored', () => {
    const diag = buildDiagSsdt({ nonce: 1n });
    const padded = new Uint8Array(diag.aml.length + 7).fill(0xee);
    padded.set(diag.aml);
    expect(decodeTable(padded).block).toStrictEqual(diag.block);
  });

  const diag = buildDiagSsdt({ nonce: 1n }).aml;
  test('truncated at every length: only AmlDecodeError', () => {
    for (let n = 0; n < diag.length; n++) {
      expect(() => decodeTable(diag.subarray(0, n))).toThrow(AmlDecodeError);
    }
  });

  test('truncated at every length with the header patched to match: AmlDecodeError, or a table that re-encodes exactly', () => {
    let decoded = 0;
    for (let n = HEADER_SIZE; n < diag.length; n++) {
      const cut = diag.slice(0, n);
      new DataView(cut.buffer).setUint32(4, n, true);
      cut[9] = 0;
      cut[9] = (0x100 - byteSum(cut)) & 0xff;
      let d: DecodedTable;
      try {
        d = decodeTable(cut);
      } catch (e) {
        expect(e).toBeInstanceOf(AmlDecodeError);
        continue;
      }
      decoded++;
      expect(d.block.encode()).toEqual(cut);
    }
    // Cuts at term boundaries of the root TermList are whole tables: just the header, and the
    // Scope without the load-time EDBT call that follows it.
    expect(decoded).toBe(2);
  });
});

describe('method invocations and name resolution', () => {
  test('a call to a 2-argument method of a parent scope, followed by other terms', () => {
    // Method (\ADD2, 2) { Return (Add (Arg0, Arg1)) }
    // Device (DEV0) { Method (M) { Store (ADD2 (1, Local0), Local1); Noop; Return (ADD2 (Local1, 3)) } }
    roundTrip([
      aml.method('ADD2', { args: 2 }, [aml.return(aml.add(A(0), A(1)))]),
      aml.device('DEV0', [
        aml.device('DEV1', [
          aml.method('M', {}, [aml.store(aml.call('ADD2', 1, L(0)), L(1)), aml.noop(), aml.return(aml.call('ADD2', L(1), 3)), aml.noop()]),
        ]),
      ]),
      aml.call('ADD2', 4, 5),
      aml.noop(),
    ]);
  });

  test('a nearer non-method object shadows a method of the same name further up', () => {
    // FOO is \DEV0.FOO (an Integer) inside DEV0, but \FOO (1 argument) at the root.
    roundTrip([
      aml.method('FOO', { args: 1 }, []),
      aml.device('DEV0', [aml.name('FOO', 5), aml.method('M', {}, [aml.store('FOO', L(0)), aml.store(aml.call('\\FOO', L(0)), L(1))])]),
      aml.method('M', {}, [aml.store(aml.call('FOO', 7), L(0))]),
    ]);
  });

  test('External MethodObj gives the argument count', () => {
    roundTrip([
      aml.external('\\_SB.EXT', 'Method', 2),
      aml.external('\\_SB.EXTN', 'Int'),
      aml.scope('\\_SB', [aml.method('M', {}, [aml.call('EXT', 1, 2), aml.noop(), aml.store('EXTN', L(0))])]),
    ]);
  });

  test('parent prefixes, absolute paths, and multi-segment paths (not searched upward)', () => {
    // Inside \A.B.M the scope is the method itself: ^ is \A.B, ^^ is \A.
    roundTrip([
      aml.device('A', [
        aml.method('ONE', { args: 1 }, []),
        aml.device('B', [
          aml.method('TWO', { args: 2 }, []),
          aml.method('M', {}, [
            aml.call('^TWO', 1, 2),
            aml.call('^^ONE', 3),
            aml.call('\\A.ONE', 4),
            aml.call('^^B.TWO', 5, 6),
            aml.ref('^ONE'), // \A.B.ONE does not exist: a reference, not a call
            aml.ref('B.TWO'), // relative to \A.B.M: \A.B.M.B.TWO, not found
            aml.noop(),
            aml.ref('^^^^^ONE'), // above the root: not found
          ]),
        ]),
      ]),
    ]);
  });

  test('a method body sees methods declared later in the table', () => {
    roundTrip([aml.method('EARL', {}, [aml.call('LATE', 1), aml.noop()]), aml.method('LATE', { args: 1 }, [])]);
  });

  test('load-level code sees only what was declared before it', () => {
    roundTrip([aml.ref('LATE'), aml.int(2), aml.method('LATE', { args: 1 }, []), aml.call('LATE', 2)]);
  });

  test('names inside Package elements and Name values are references, never calls', () => {
    roundTrip([aml.method('FOO', { args: 1 }, []), aml.name('PKG0', aml.pkg('FOO', 1)), aml.name('REF0', 'FOO'), aml.noop()]);
  });

  test('a SuperName is never invoked', () => {
    roundTrip([aml.method('FOO', { args: 1 }, []), ...inMethod(aml.store(1, 'FOO'), aml.increment('FOO'), aml.store(aml.sizeOf('FOO'), L(0)))]);
  });

  test('a recursive method calls itself', () => {
    roundTrip([aml.method('FACT', { args: 1 }, [aml.if(aml.lLess(A(0), 2), [aml.return(1)]), aml.return(aml.multiply(A(0), aml.call('FACT', aml.subtract(A(0), 1))))])]);
  });

  test('names declared in a method body resolve in its own scope', () => {
    roundTrip(inMethod(aml.name('LOC0', 1), aml.method('INNR', { args: 1 }, []), aml.store(aml.call('INNR', 'LOC0'), L(0))));
  });

  test('methods declared in another table come from the context', () => {
    // \_SB.PCI0.FOO (One, Zero), as a TermList in scope \_SB
    const bytes = new Uint8Array([0x2e, ...seg('PCI0'), ...seg('FOO_'), 0x01, 0x00, 0xa3]);
    const ctx = { scope: '\\_SB', methods: new Map([['\\_SB.PCI0.FOO', 2]]) };
    expect(decodeTermList(bytes, 0, bytes.length, ctx)).toStrictEqual([aml.call('PCI0.FOO', 1, 0), aml.noop()]);
    // Without the context the same bytes are a reference and two Integers.
    expect(decodeTermList(bytes, 0, bytes.length, { scope: '\\_SB' })).toStrictEqual([aml.ref('PCI0.FOO'), aml.int(1), aml.int(0), aml.noop()]);
    // From the root the relative path does not reach it.
    expect(decodeTermList(bytes, 0, bytes.length, { methods: ctx.methods })).toHaveLength(4);
  });
});

describe('PkgLength and the reader', () => {
  const pkgBytes = (bodyLength: number): Uint8Array => {
    const s = new ByteSink();
    writePkgLength(s, bodyLength);
    return s.toBytes();
  };
  test.each([0, 1, 62, 63, 0xffd, 0xffe, 0xffffc, 0xffffd, 0x10_0000])('PkgLength of a %i-byte body ends after the body', (body) => {
    const head = pkgBytes(body);
    const bytes = new Uint8Array(head.length + body);
    bytes.set(head);
    const r = new AmlReader(bytes, 0, bytes.length);
    expect(r.pkgLength()).toBe(bytes.length);
    expect(r.offset).toBe(head.length);
  });
  test.each([0, 0x3f, 0x40, 0xfff, 0x1000, 0xfffff, 0x10_0000, 0x0fff_ffff])('FieldLength %i reads back raw', (v) => {
    const s = new ByteSink();
    writeRawPkgLength(s, v);
    const bytes = s.toBytes();
    const r = new AmlReader(bytes, 0, bytes.length);
    expect(r.fieldLength()).toBe(v);
    expect(r.atEnd).toBe(true);
  });
  test('a package ending beyond its parent', () => {
    const r = new AmlReader(new Uint8Array([0x05, 1, 2, 3, 4, 5]), 0, 4);
    expect(() => r.pkgLength()).toThrow(/PkgLength 5 ends the package at 0x5, beyond the enclosing end at 0x4/);
  });
  test.each([
    ['zero', [0x00]],
    ['shorter than itself', [0x41, 0x00]],
    ['reserved bits 5-4 set', [0x70, 0x00]],
    ['truncated', [0xc0, 0x00]],
  ])('a bad PkgLength (%s) throws AmlDecodeError at its offset', (_name, bytes) => {
    const r = new AmlReader(new Uint8Array([0xaa, ...bytes, 0, 0]), 1, bytes.length + 1);
    expect(() => r.pkgLength()).toThrow(expect.objectContaining({ name: 'AmlDecodeError', offset: 1 }));
  });
  test('reads never pass the window', () => {
    const r = new AmlReader(new Uint8Array(10), 2, 5);
    expect(() => r.u32()).toThrow(/needs 4 byte\(s\), 3 left before the end at 0x5/);
    expect(r.u16()).toBe(0);
    expect(() => r.u16()).toThrow(AmlDecodeError);
    expect(r.byte()).toBe(0);
    expect(() => r.peek()).toThrow(AmlDecodeError);
    expect(() => r.take(1)).toThrow(AmlDecodeError);
  });
  test('a window outside the bytes is a programmer error', () => {
    expect(() => new AmlReader(new Uint8Array(4), 2, 5)).toThrow(RangeError);
    expect(() => decodeTermList(new Uint8Array(4), 3, 2)).toThrow(RangeError);
  });
});

describe('malformed input throws AmlDecodeError with the offset', () => {
  test('a Scope whose PkgLength runs past the end of the table', () => {
    // Scope (\) with PkgLength 0x3F but 3 bytes of body
    const e = decodeError(table([0x10, 0x3f, 0x5c, 0x00]));
    expect(e.offset).toBe(HEADER_SIZE + 1);
    expect(e.message).toMatch(/PkgLength 63 .* beyond the enclosing end/);
  });

  test('a Method whose PkgLength runs past its Scope (but not past the table)', () => {
    // Scope (\) { Method (M___) } with the Method claiming 4 bytes past the Scope, then Noops
    const e = decodeError(table([0x10, 0x0a, 0x5c, 0x00, 0x14, 0x0a, ...seg('M___'), 0x00, 0xa3, 0xa3, 0xa3, 0xa3]));
    expect(e.offset).toBe(HEADER_SIZE + 5);
    expect(e.message).toContain('at offset 0x29');
  });

  test('unknown opcode: the message names it and the offset in hex', () => {
    const e = decodeError(table([0xa3, 0x5b, 0x99]));
    expect(e.offset).toBe(0x25);
    expect(e.message).toContain('0x25');
    expect(e.message).toContain('0x5B 0x99');
    const nested = decodeError(table([0x14, 0x07, ...seg('M___'), 0x00, 0x02]));
    expect(nested.message).toMatch(/offset 0x2b: unknown or unsupported opcode 0x02/);
    expect(decodeError(table([0x71, 0x60])).message).toMatch(/0x24.*0x71 \(RefOf\)/);
  });

  test.each([
    ['an unterminated String', [0x0d, 0x41, 0x42], /NUL/],
    ['a non-ASCII String', [0x0d, 0x41, 0xc3, 0xa9, 0x00], /0xC3 is not ASCII/],
    ['a NameSeg starting with a digit', [0x08, ...seg('1ABC'), 0x00], /invalid NameSeg/],
    ['a declaration with the null name', [0x08, 0x00, 0x00], /needs a name segment/],
    ['a MultiNamePrefix with no segments', [0x70, 0x00, 0x2f, 0x00], /SegCount of 0/],
    ['a Package whose NumElements does not match', [0x12, 0x04, 0x03, 0x01, 0x01], /NumElements is 3 but the package holds 2/],
    ['an Else without an If', [0xa1, 0x01], /Else/],
    ['an If where a TermArg is expected', [0x70, 0xa0, 0x01, 0x60], /0xA0 \(If\) where a TermArg/],
    ['a Store into a constant', [0x70, 0x01, 0x01], /not a supported SuperName/],
    ['a Mutex with reserved SyncFlags bits', [0x5b, 0x01, ...seg('MTX0'), 0x10], /sync level/],
    ['an External of an unknown type', [0x15, ...seg('EXT0'), 0x10, 0x00], /ObjectType 0x10/],
    ['an External Int with arguments', [0x15, ...seg('EXT0'), 0x01, 0x01], /only a Method External has arguments/],
    ['FieldFlags with an unknown access type', [0x5b, 0x81, 0x06, ...seg('REG0'), 0x06], /FieldFlags 0x06/],
    ['an AccessField element', [0x5b, 0x81, 0x08, ...seg('REG0'), 0x00, 0x01, 0x00], /unsupported FieldElement 0x01/],
    ['a parent prefix above the root in a declaration', [0x08, 0x5e, ...seg('FOO_'), 0x00], /more parent prefixes/],
    ['a method call missing its arguments', [0x14, 0x06, ...seg('M___'), 0x01, ...seg('M___')], /needs 1 byte/],
  ])('%s', (_name, body, message) => {
    expect(decodeError(table(body)).message).toMatch(message);
  });

  test.each([
    ['LNot', (t: TermObj) => aml.lNot(t as never)],
    ['Package', (t: TermObj) => aml.pkg(t as never)],
    ['If', (t: TermObj) => aml.if(1, [t])],
    ['Device', (t: TermObj) => aml.device('D', [t])],
  ])('nesting 300 %s terms is capped', (_name, wrap) => {
    let t: TermObj = aml.int(1);
    for (let i = 0; i < 300; i++) t = wrap(t);
    const bytes = new DefinitionBlock(HDR, [t]).encode();
    expect(decodeError(bytes).message).toMatch(/nested deeper than 256/);
  });

  test('header: too short, length field out of range, unprintable fields', () => {
    const good = table([]);
    expect(decodeError(good.subarray(0, 35)).message).toMatch(/shorter than the 36-byte header/);
    const short = good.slice();
    new DataView(short.buffer).setUint32(4, 35, true);
    expect(decodeError(short).offset).toBe(4);
    const long = good.slice();
    new DataView(long.buffer).setUint32(4, 37, true);
    expect(decodeError(long).message).toMatch(/length field is 37/);
    const sig = good.slice();
    sig[1] = 0x01;
    expect(decodeError(sig).message).toMatch(/signature/);
  });

  test('the null name is a NameRef in a SuperName position', () => {
    // Store (One, <NullName>): not ASL, but valid AML grammar
    const d = decodeTable(table([0x70, 0x01, 0x00]));
    expect(d.block.body).toStrictEqual([aml.store(1, new NameRef(new NamePath(false, 0, [])))]);
  });
});
