import { describe, expect, test } from 'vitest';
import { aml, fieldUnit, reserved } from '../../acpi/aml/index.js';
import { definitionBlockAsl } from '../../acpi/asl/emit.js';
import { buildDiagSsdt, type DiagSsdtOptions } from '../../acpi/diag/ssdt.js';
import { DefinitionBlock } from '../../acpi/table.js';
import { compileAsl, disassemble, iaslVersion, withoutCreator } from '../helpers/iasl.js';

/**
 * The real ACPICA compiler is the oracle: our ASL, compiled by iasl, must equal our AML byte for
 * byte (creator fields and checksum aside), and `iasl -d` must read our AML without complaint.
 * On a mismatch the failure shows both disassemblies.
 */
async function expectIaslAgrees(block: DefinitionBlock, flags: string[] = []) {
  const ours = block.encode();
  const asl = definitionBlockAsl(block);
  const theirs = await compileAsl(asl, flags);
  const a = Buffer.from(withoutCreator(ours));
  const b = Buffer.from(withoutCreator(theirs.aml));
  if (!a.equals(b)) {
    const [da, db] = await Promise.all([disassemble(ours), disassemble(theirs.aml)]);
    expect.soft(da.asl).toBe(db.asl);
  }
  expect(a.toString('hex')).toBe(b.toString('hex'));
  return theirs;
}

const diagVariants: Array<[string, DiagSsdtOptions]> = [
  ['defaults', { nonce: 0x0123456789abcdefn }],
  ['fast period, long ring', { nonce: 1n, kernelPeriodMs: 100, ringLength: 256 }],
  ['slow period, short ring, other names', { nonce: 2n, kernelPeriodMs: 3_600_000, ringLength: 4, kernelZone: 'KHB', agentZone: 'AHB_', oemId: 'ACME', oemTableId: 'HB1' }],
  ['root scope', { nonce: 3n, scope: '\\' }],
];

describe(`iasl cross-check`, () => {
  test('iasl is installed', async () => {
    expect(await iaslVersion()).toMatch(/^\d{8}$/);
  });

  test.each(diagVariants)('diagnostic SSDT (%s): iasl compiles our ASL to our AML, warnings as errors', async (_n, opts) => {
    const { block } = buildDiagSsdt(opts);
    const r = await expectIaslAgrees(block, []);
    expect(r.output).toMatch(/0 Errors, 0 Warnings, 0 Remarks/);
  });

  test.each(diagVariants)('diagnostic SSDT (%s): iasl -d reads our AML with no error or warning', async (_n, opts) => {
    const { aml: bytes, layout } = buildDiagSsdt(opts);
    const d = await disassemble(bytes);
    expect(d.output).not.toMatch(/error|warning/i);
    expect(d.asl).toMatch(new RegExp(`ThermalZone \\(\\\\?${layout.kernel.zone.split(/[.\\]/).pop()?.replace(/_+$/, '')}_*\\)`));
    expect(d.asl).toMatch(/Name \(_TZP, (One|0x[0-9A-F]+)\)/);
    expect(d.asl).toContain('DataTableRegion (EDGR, "SSDT"');
  });

  test('every term kind compiles the same through iasl', async () => {
    const L = aml.local;
    const block = new DefinitionBlock(
      { signature: 'SSDT', revision: 2, oemId: 'TEST', oemTableId: 'SINK', oemRevision: 7, creatorId: 'EVED', creatorRevision: 1 },
      [
        aml.scope('\\_SB', [
          aml.device('DEV0', [
            aml.name('_HID', aml.str('ACPI0001')),
            aml.name('PKG0', aml.pkg(1, 2, 0x1234, aml.str('x'))),
            aml.name('BUF0', aml.buffer(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))),
            aml.opRegion('REG0', 'SystemMemory', 0x1000, 0x100),
            aml.opRegion('REG1', 'SystemIO', 0x80, 4),
            aml.opRegion('REG2', 'PCI_Config', 0, 0x100),
            aml.opRegion('REG3', 'EmbeddedControl', 0, 0x10),
            aml.opRegion('REG4', 'SystemCMOS', 0, 0x10),
            aml.field('REG0', { access: 'AnyAcc', lock: false, update: 'Preserve' }, [fieldUnit('F000', 8), reserved(3), fieldUnit('F001', 5)]),
            aml.field('REG0', { access: 'ByteAcc', lock: true, update: 'WriteAsOnes' }, [reserved(64), fieldUnit('F002', 16)]),
            aml.field('REG1', { access: 'DWordAcc', lock: false, update: 'WriteAsZeros' }, [fieldUnit('F003', 32)]),
            aml.field('REG0', { access: 'QWordAcc', lock: false, update: 'Preserve' }, [reserved(128), fieldUnit('F004', 64)]),
            aml.field('REG0', { access: 'WordAcc', lock: false, update: 'Preserve' }, [reserved(256), fieldUnit('F005', 16)]),
            aml.mutex('MTX0', 3),
            aml.method('M002', { args: 2 }, [aml.return(aml.or(aml.arg(0), aml.arg(1)))]),
            aml.method('M000', { args: 2, serialized: true, syncLevel: 1 }, [
              aml.store(aml.add(aml.arg(0), aml.arg(1)), L(0)),
              aml.subtract(L(0), 1, L(1)),
              aml.multiply(L(1), 3, L(2)),
              aml.and(L(2), 0xff, L(3)),
              aml.or(L(3), 0x100, L(4)),
              aml.xor(L(4), 0xffff, L(5)),
              aml.shiftLeft(L(5), 2, L(6)),
              aml.shiftRight(L(6), 1, L(7)),
              aml.not(L(7), L(0)),
              aml.increment(L(0)),
              aml.decrement(L(0)),
              aml.store(aml.timer(), L(1)),
              aml.store('BUF0', L(2)),
              aml.createByteField(L(2), 0, 'CB00'),
              aml.createWordField(L(2), 1, 'CW00'),
              aml.createDWordField(L(2), 2, 'CD00'),
              aml.createQWordField(L(2), 0, 'CQ00'),
              aml.store(aml.add('CB00', aml.add('CW00', aml.add('CD00', 'CQ00'))), 'F000'),
              aml.store(aml.derefOf(aml.index('PKG0', 1)), L(3)),
              aml.store(aml.sizeOf('BUF0'), L(4)),
              aml.if(
                aml.lAnd(aml.lEqual(L(3), 2), aml.lOr(aml.lLess(L(4), 9), aml.lGreater(L(4), 100))),
                [aml.store(aml.lNot(L(0)), 'F001')],
                [aml.noop()],
              ),
              aml.while(aml.lLess(L(3), 10), [aml.increment(L(3)), aml.if(aml.lEqual(L(3), 5), [aml.break()])]),
              aml.if(aml.lNot(aml.acquire('MTX0', 0xffff)), [aml.release('MTX0')]),
              aml.notify('\\_SB.DEV0', 0x80),
              aml.store(aml.call('M002', L(0), L(1)), 'F002'),
              aml.store(aml.ones(), 'F003'),
              aml.store(aml.add('\\_SB.DEV0.F003', 'F004'), 'F005'),
              aml.return(aml.add(L(0), L(1))),
            ]),
          ]),
          aml.thermalZone('TZ00', [aml.name('_HOT', 3732), aml.method('_TMP', {}, [aml.return(2982)])]),
        ]),
        aml.scope('\\_SB.DEV0', [aml.method('M001', { args: 0 }, [aml.return(aml.call('^^DEV0.M000', 1, 2))])]),
      ],
    );
    await expectIaslAgrees(block, ['-vr', '-vw', '3144']);
  });

  test('External: iasl emits the same ExternalOp, wrapped in If (Zero) for old interpreters', async () => {
    const ext = aml.external('\\_SB.EXTM', 'Method', 2);
    const block = new DefinitionBlock(
      { signature: 'SSDT', revision: 2, oemId: 'TEST', oemTableId: 'EXT', oemRevision: 1, creatorId: 'EVED', creatorRevision: 1 },
      [ext, aml.method('FOO', {}, [aml.call('\\_SB.EXTM', 1, 2)])],
    );
    const theirs = await compileAsl(definitionBlockAsl(block));
    const ours = Buffer.from(block.encode().subarray(36)).toString('hex');
    const extHex = ours.slice(0, 26);
    expect(Buffer.from(theirs.aml.subarray(36)).toString('hex')).toBe('a00f00' + extHex + ours.slice(26));
  });

  test('records the iasl version compared against', async () => {
    // Shown in the closing note; the cross-check has been run against this version.
    const v = await iaslVersion();
    console.log(`iasl version: ${v}`);
    expect(v.length).toBeGreaterThan(0);
  });
});
