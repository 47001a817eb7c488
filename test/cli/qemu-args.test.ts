import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { runCli } from '../helpers/cli.js';

let dir: string;
let table: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-cli-qa-'));
  table = join(dir, 'ssdt.aml');
  await writeFile(table, buildDiagSsdt({ nonce: 0xc0ffeen }).aml);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag qemu-args', () => {
  test('the table alone: one argv line', async () => {
    const r = await runCli('qemu-args', '--table', table);
    expect(r).toEqual({ code: 0, out: `-acpitable file=${table}`, err: '' });
  });

  test('--eve-dom NAME fills the EVE socket layout and our console log beside it', async () => {
    const r = await runCli('qemu-args', '--table', table, '--eve-dom', '0a1b2c3d-0000-4000-8000-00000000beef.1.1', '--format', 'json');
    expect(r.code).toBe(0);
    const dom = '/run/hypervisor/kvm/0a1b2c3d-0000-4000-8000-00000000beef.1.1';
    expect(JSON.parse(r.out)).toEqual([
      ...['-acpitable', `file=${table}`],
      ...['-chardev', `socket,id=evediag-qmp,path=${dom}/qmp,server=on,wait=off`],
      ...['-mon', 'chardev=evediag-qmp,mode=control'],
      ...['-chardev', `socket,id=evediag-cons,path=${dom}/cons,server=on,wait=off,mux=on,logfile=${dom}/cons.log,logappend=on`],
      ...['-serial', 'chardev:evediag-cons'],
    ]);
  });

  test('explicit flags win over --eve-dom', async () => {
    const r = await runCli('qemu-args', '--table', table, '--eve-dom', 'vm1', '--qmp', '/tmp/my-qmp', '--format', 'json');
    const argv = JSON.parse(r.out) as string[];
    expect(argv).toContain('socket,id=evediag-qmp,path=/tmp/my-qmp,server=on,wait=off');
    expect(argv.join(' ')).toContain('path=/run/hypervisor/kvm/vm1/cons,');
  });

  test('every option, every format', async () => {
    const args = ['qemu-args', '--table', table, '--qmp', '/run/q', '--console', '/run/c', '--console-log', '/run/c.log'];
    const more = ['--pvpanic', '--vmcoreinfo', '--erst', '/run/erst', '--gdb', '/run/g'];
    const argv = await runCli(...args, ...more);
    expect(argv.code).toBe(0);
    expect(argv.out).toContain('-device pvpanic,id=evediag-pvpanic -object memory-backend-file,id=erstnvram,mem-path=/run/erst,size=0x10000,share=on');
    expect(argv.out).toContain('-gdb chardev:evediag-gdb');
    expect(argv.out).toContain('-device vmcoreinfo,id=evediag-vmcoreinfo');
    const json = await runCli(...args, ...more, '--format', 'json');
    expect(JSON.parse(json.out)).toHaveLength(22);
    const ini = await runCli(...args, ...more, '--format', 'readconfig');
    expect(ini.out).toMatch(/^# eve-diag qemu-args: QEMU -readconfig fragment/);
    expect(ini.out).toContain(`#   -acpitable file=${table}\n#   -gdb chardev:evediag-gdb\n`);
    expect(ini.out).toContain('[device "evediag-serial"]\n  driver = "isa-serial"\n  chardev = "evediag-cons"');
    expect(ini.out).toContain('[device "evediag-vmcoreinfo"]\n  driver = "vmcoreinfo"');
    const xml = await runCli(...args, '--format', 'libvirt');
    expect(xml.out).toContain('xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"');
    expect(xml.out).toContain('<qemu:arg value="chardev:evediag-cons"/>');
  });

  test('relative paths are made absolute; commas are doubled, spaces quoted', async () => {
    const odd = join(dir, 'a b,c.aml');
    await writeFile(odd, buildDiagSsdt({ nonce: 1n }).aml);
    const r = await runCli('qemu-args', '--table', relative(process.cwd(), odd), '--erst', 'erst.bin');
    expect(r.code).toBe(0);
    expect(r.out).toBe(`-acpitable 'file=${odd.replaceAll(',', ',,')}' -object memory-backend-file,id=erstnvram,mem-path=${join(process.cwd(), 'erst.bin')},size=0x10000,share=on -device acpi-erst,id=evediag-erst,memdev=erstnvram`);
  });

  const bad = async (...args: string[]) => {
    const r = await runCli('qemu-args', ...args);
    expect(r.code, r.err).toBe(2);
    expect(r.out).toBe('');
    return r.err;
  };

  test('the table must exist and be one whole ACPI table', async () => {
    expect(await bad('--table', join(dir, 'nope.aml'))).toMatch(/--table: cannot read the table: ENOENT.*nope\.aml/);
    const aml = buildDiagSsdt({ nonce: 2n }).aml;
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['short', aml.subarray(0, 20), /not an ACPI table: 20 bytes, shorter than the 36-byte header/],
      ['truncated', aml.subarray(0, aml.length - 1), /not an ACPI table: header length \d+, file \d+ bytes/],
      ['padded', Buffer.concat([aml, Buffer.alloc(4)]), /header length/],
      ['text', Buffer.from('[chardev "x"]\n  backend = "socket"\n  path = "/x"\n'), /not an ACPI table: (signature|header length)/],
      ['bad checksum', Uint8Array.from(aml, (b, i) => (i === 100 ? b ^ 1 : b)), /checksum invalid/],
    ];
    for (const [name, bytes, re] of cases) {
      const f = join(dir, `${name}.aml`);
      await writeFile(f, bytes);
      const err = await bad('--table', f);
      expect(err, name).toMatch(re);
      expect(err, name).toContain(JSON.stringify(f));
    }
    expect(await bad('--table', dir)).toMatch(/--table: cannot read the table: EISDIR/);
  });

  test.each([
    [['--qmp', ''], /--qmp: a path is required \(got ""\)/],
    [['--console', '/run/c'], /--console-log: required with --console/],
    [['--console-log', '/run/c.log'], /--console: required with --console-log/],
    [['--eve-dom', '../etc'], /--eve-dom: an EVE domain name.*\(got "\.\.\/etc"\)/],
    [['--eve-dom', 'a/b'], /--eve-dom: .*\(got "a\/b"\)/],
    [['--eve-dom', 'x'.repeat(90)], /--eve-dom: its --qmp path \/run\/hypervisor\/kvm\/x+\/qmp: at most 107 bytes/],
    [['--gdb', '/' + 'g'.repeat(120)], /--gdb: at most 107 bytes .*\(got "\/g+"\)/],
    [['--qmp', '/run/s', '--gdb', '/run/s'], /--gdb: the same path as qmp\.path \(got "\/run\/s"\)/],
    [['--qmp', '/run/a"b', '--format', 'readconfig'], /--qmp: a -readconfig value cannot contain a double quote .*\(got "\/run\/a\\"b"\)/],
    [['--erst', '/run/e\nx'], /--erst: control characters/],
    [['--format', 'xml'], /--format <format>' argument 'xml' is invalid/],
    [['--bogus'], /unknown option '--bogus'/],
  ])('bad input %j: exit 2, names the flag and the value', async (args, re) => {
    expect(await bad('--table', table, ...args)).toMatch(re);
  });

  test('a table path with a colon is refused (QEMU would read two files)', async () => {
    const f = join(dir, 'a:b.aml');
    await writeFile(f, buildDiagSsdt({ nonce: 3n }).aml);
    expect(await bad('--table', f)).toMatch(/--table: may not contain ':'/);
  });

  test('--table is required', async () => {
    expect(await bad()).toMatch(/required option '--table <file.aml>'/);
  });

  test('--help explains the formats and the EVE layout, exit 0', async () => {
    const r = await runCli('qemu-args', '--help');
    expect(r.code).toBe(0);
    for (const s of ['argv', 'json', 'readconfig', 'libvirt', '/run/hypervisor/kvm/NAME/cons.log', 'xmlns:qemu', '-acpitable and -gdb have no']) {
      expect(r.out).toContain(s);
    }
  });
});
