import { describe, expect, test } from 'vitest';
import { aml, ByteSink, fieldUnit, NamePath, offsetTo, reserved, writePkgLength, writeRawPkgLength, type AmlTerm } from '../../../acpi/aml/index.js';
import { AmlValueError } from '../../../acpi/errors.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const enc = (t: { encode(s: ByteSink): void }) => {
  const s = new ByteSink();
  t.encode(s);
  return hex(s.toBytes());
};

/**
 * Golden bytes per term: the ASL, the bytes iasl 20200925 produces for it, the builder call.
 * (The iasl cross-check in iasl.test.ts compiles these same terms and compares.)
 */
export const GOLDEN: Array<{ asl: string; hex: string; term: AmlTerm }> = [
  { asl: 'Zero', hex: '00', term: aml.int(0) },
  { asl: 'One', hex: '01', term: aml.int(1) },
  { asl: 'Ones', hex: 'ff', term: aml.ones() },
  { asl: '0x02', hex: '0a02', term: aml.int(2) },
  { asl: '0xFF', hex: '0aff', term: aml.int(0xff) },
  { asl: '0x0100', hex: '0b0001', term: aml.int(0x100) },
  { asl: '0xFFFF', hex: '0bffff', term: aml.int(0xffff) },
  { asl: '0x00010000', hex: '0c00000100', term: aml.int(0x10000) },
  { asl: '0xFFFFFFFF', hex: '0cffffffff', term: aml.int(0xffffffff) },
  { asl: '0x0000000100000000', hex: '0e0000000001000000', term: aml.int(0x1_0000_0000n) },
  { asl: '"AB"', hex: '0d414200', term: aml.str('AB') },
  { asl: 'Buffer (0x03) {0x01, 0x02, 0x03}', hex: '1106' + '0a03' + '010203', term: aml.buffer(new Uint8Array([1, 2, 3])) },
  { asl: 'Package (0x02) {One, 0x05}', hex: '1205' + '02' + '01' + '0a05', term: aml.pkg(1, 5) },
  { asl: 'Local3', hex: '63', term: aml.local(3) },
  { asl: 'Arg6', hex: '6e', term: aml.arg(6) },
  { asl: 'Store (One, Local0)', hex: '700160', term: aml.store(1, aml.local(0)) },
  { asl: 'Add (Local0, 0x05, Local1)', hex: '72600a0561', term: aml.add(aml.local(0), 5, aml.local(1)) },
  { asl: 'Subtract (Local0, One, )', hex: '74600100', term: aml.subtract(aml.local(0), 1) },
  { asl: 'Multiply (Arg0, 0x04, Local2)', hex: '77680a0462', term: aml.multiply(aml.arg(0), 4, aml.local(2)) },
  { asl: 'And (Timer, 0xFFFFFFFF, )', hex: '7b5b330cffffffff00', term: aml.and(aml.timer(), 0xffffffff) },
  { asl: 'Or (Local0, One, Local0)', hex: '7d600160', term: aml.or(aml.local(0), 1, aml.local(0)) },
  { asl: 'Xor (Local0, Local1, Local2)', hex: '7f606162', term: aml.xor(aml.local(0), aml.local(1), aml.local(2)) },
  { asl: 'ShiftLeft (Local0, 0x08, )', hex: '79600a0800', term: aml.shiftLeft(aml.local(0), 8) },
  { asl: 'ShiftRight (Arg0, 0x18, )', hex: '7a680a1800', term: aml.shiftRight(aml.arg(0), 24) },
  { asl: 'Not (Local0, Local1)', hex: '806061', term: aml.not(aml.local(0), aml.local(1)) },
  { asl: 'Increment (Local0)', hex: '7560', term: aml.increment(aml.local(0)) },
  { asl: 'Decrement (Local0)', hex: '7660', term: aml.decrement(aml.local(0)) },
  { asl: 'LEqual (Local0, Zero)', hex: '936000', term: aml.lEqual(aml.local(0), 0) },
  { asl: 'LLess (Local0, 0x05)', hex: '95600a05', term: aml.lLess(aml.local(0), 5) },
  { asl: 'LGreater (Local0, One)', hex: '946001', term: aml.lGreater(aml.local(0), 1) },
  { asl: 'LNot (Local0)', hex: '9260', term: aml.lNot(aml.local(0)) },
  { asl: 'LAnd (One, Zero)', hex: '900100', term: aml.lAnd(1, 0) },
  { asl: 'LOr (One, Zero)', hex: '910100', term: aml.lOr(1, 0) },
  { asl: 'Timer', hex: '5b33', term: aml.timer() },
  { asl: 'Index (Local0, One, )', hex: '88600100', term: aml.index(aml.local(0), 1) },
  { asl: 'DerefOf (Index (Local0, One, ))', hex: '8388600100', term: aml.derefOf(aml.index(aml.local(0), 1)) },
  { asl: 'SizeOf (Local0)', hex: '8760', term: aml.sizeOf(aml.local(0)) },
  { asl: 'Return (0x0BA6)', hex: 'a40ba60b', term: aml.return(2982) },
  { asl: 'Break', hex: 'a5', term: aml.break() },
  { asl: 'Noop', hex: 'a3', term: aml.noop() },
  { asl: 'If (Local0) {Break}', hex: 'a00360a5', term: aml.if(aml.local(0), [aml.break()]) },
  { asl: 'If (Local0) {Break} Else {Noop}', hex: 'a00360a5' + 'a102a3', term: aml.if(aml.local(0), [aml.break()], [aml.noop()]) },
  { asl: 'While (One) {Break}', hex: 'a20301a5', term: aml.while(1, [aml.break()]) },
  { asl: 'Name (_TZP, 0x0A)', hex: '085f545a500a0a', term: aml.name('_TZP', 10) },
  { asl: 'Method (FOO, 2, Serialized, 3) {Return (Arg1)}', hex: '1408464f4f5f3aa469', term: aml.method('FOO', { args: 2, serialized: true, syncLevel: 3 }, [aml.return(aml.arg(1))]) },
  { asl: 'Scope (\\_TZ) {}', hex: '10065c5f545a5f', term: aml.scope('\\_TZ', []) },
  { asl: 'Device (DEV0) {}', hex: '5b820544455630', term: aml.device('DEV0', []) },
  { asl: 'ThermalZone (TZ0) {}', hex: '5b8505545a305f', term: aml.thermalZone('TZ0', []) },
  { asl: 'External (\\_SB.FOO, MethodObj, 2)', hex: '155c2e5f53425f464f4f5f0802', term: aml.external('\\_SB.FOO', 'Method', 2) },
  { asl: 'Mutex (MTX0, 0)', hex: '5b014d54583000', term: aml.mutex('MTX0', 0) },
  { asl: 'Acquire (MTX0, 0xFFFF)', hex: '5b234d545830ffff', term: aml.acquire('MTX0', 0xffff) },
  { asl: 'Release (MTX0)', hex: '5b274d545830', term: aml.release('MTX0') },
  { asl: 'Notify (\\_TZ.TZ0, 0x80)', hex: '865c2e5f545a5f545a305f0a80', term: aml.notify('\\_TZ.TZ0', 0x80) },
  {
    asl: 'OperationRegion (REG0, SystemMemory, 0x1000, 0x10)',
    hex: '5b805245473000' + '0b0010' + '0a10',
    term: aml.opRegion('REG0', 'SystemMemory', 0x1000, 0x10),
  },
  { asl: 'OperationRegion (REG1, SystemIO, 0x80, One)', hex: '5b805245473101' + '0a80' + '01', term: aml.opRegion('REG1', 'SystemIO', 0x80, 1) },
  {
    asl: 'DataTableRegion (DTR0, "SSDT", "OEM", "TBL")',
    hex: '5b8844545230' + '0d5353445400' + '0d4f454d00' + '0d54424c00',
    term: aml.dataTableRegion('DTR0', 'SSDT', 'OEM', 'TBL'),
  },
  {
    asl: 'Field (REG0, DWordAcc, Lock, WriteAsZeros) {AAAA, 32, Offset (0x08), BBBB, 8}',
    hex: '5b8112524547305' + '3' + '414141412000204242424208',
    term: aml.field('REG0', { access: 'DWordAcc', lock: true, update: 'WriteAsZeros' }, [
      fieldUnit('AAAA', 32),
      reserved(32),
      fieldUnit('BBBB', 8),
    ]),
  },
  { asl: 'CreateDWordField (Local0, 0x04, FLD0)', hex: '8a600a04464c4430', term: aml.createDWordField(aml.local(0), 4, 'FLD0') },
  { asl: 'CreateQWordField (Arg0, Zero, FLD1)', hex: '8f6800464c4431', term: aml.createQWordField(aml.arg(0), 0, 'FLD1') },
  { asl: 'CreateByteField (Arg0, One, FLD2)', hex: '8c6801464c4432', term: aml.createByteField(aml.arg(0), 1, 'FLD2') },
  { asl: 'CreateWordField (Arg0, 0x02, FLD3)', hex: '8b680a02464c4433', term: aml.createWordField(aml.arg(0), 2, 'FLD3') },
  { asl: 'FOO (One, Local0)', hex: '464f4f5f0160', term: aml.call('FOO', 1, aml.local(0)) },
  { asl: '^^PARN', hex: '5e5e5041524e', term: aml.ref('^^PARN') },
  { asl: '\\_SB.PCI0.LPCB', hex: '5c2f035f53425f504349304c504342', term: aml.ref('\\_SB.PCI0.LPCB') },
];

describe('golden bytes per term', () => {
  test.each(GOLDEN)('$asl', ({ term, hex: expected }) => {
    expect(enc(term)).toBe(expected);
  });
});

describe('PkgLength', () => {
  const pkg = (body: number) => {
    const s = new ByteSink();
    writePkgLength(s, body);
    return hex(s.toBytes());
  };
  test.each([
    [0, '01'],
    [62, '3f'], // 62 + 1 byte = 63, the one-byte maximum
    [63, '4104'], // 63 + 2 = 65 = 0x41: two bytes
    [0xffd, '4fff'], // 0xFFD + 2 = 0xFFF, the two-byte maximum
    [0xffe, '810001'], // 0xFFE + 3 = 0x1001: three bytes
    [0xffffc, '8fffff'], // three-byte maximum 0xFFFFF
    [0xffffd, 'c1000001'], // 0xFFFFD + 4 = 0x100001: four bytes
  ])('body %i -> %s', (body, expected) => {
    expect(pkg(body)).toBe(expected);
  });
  test('too large throws', () => {
    expect(() => pkg(0x0ffffffc)).toThrow(RangeError);
  });
  test('raw field lengths do not count themselves', () => {
    const s = new ByteSink();
    writeRawPkgLength(s, 63);
    writeRawPkgLength(s, 64);
    expect(hex(s.toBytes())).toBe('3f' + '4004');
  });
  test('container framing is derived from the body', () => {
    // A Scope whose body crosses the one-byte boundary switches to a two-byte PkgLength.
    const small = aml.scope('\\_TZ', [aml.name('BUF0', aml.buffer(new Uint8Array(40)))]);
    const big = aml.scope('\\_TZ', [aml.name('BUF0', aml.buffer(new Uint8Array(60)))]);
    expect(enc(small).slice(2, 4)).toBe('37'); // \\_TZ_ 5 + Name 5 + Buffer 4 + 40 = 54, +1 = 0x37
    expect(enc(big).slice(2, 6)).toBe('4c04'); // 5 + 5 + 4 + 60 = 74, +2 = 0x4C: two bytes
  });
});

describe('names', () => {
  test.each([
    ['_TZ', '_TZ_'],
    ['A', 'A___'],
    ['\\', '\\'],
    ['^^FOO.BAR', '^^FOO_.BAR_'],
    ['\\_SB.PCI0', '\\_SB_.PCI0'],
  ])('%s parses', (text, canonical) => {
    expect(NamePath.parse(text).toString()).toBe(canonical);
  });
  test.each([['1ABC'], ['ABCDE'], ['ab'], [''], ['^'], ['\\^FOO'], ['FOO..BAR'], ['FO-O']])('%s is rejected with its value named', (bad) => {
    expect(() => NamePath.parse(bad, 'zone')).toThrow(AmlValueError);
    expect(() => NamePath.parse(bad, 'zone')).toThrow(/^zone: /);
  });
  test('bad values throw naming the field', () => {
    expect(() => aml.local(8)).toThrow(/Local.*8/);
    expect(() => aml.arg(7)).toThrow(/Arg/);
    expect(() => aml.method('FOO', { args: 8 }, [])).toThrow(/FOO_ args/);
    expect(() => aml.int(-1)).toThrow(AmlValueError);
    expect(() => aml.int(2 ** 64 + 1)).toThrow(AmlValueError);
    expect(() => aml.str('é')).toThrow(/ASCII/);
    expect(() => aml.acquire('MTX0', 0x10000)).toThrow(/timeout/);
    expect(() => aml.device('\\', [])).toThrow(/Device/);
    expect(() => offsetTo([fieldUnit('AAAA', 32)], 2)).toThrow(/backwards/);
  });
});
