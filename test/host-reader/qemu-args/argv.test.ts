import { execFileSync } from 'node:child_process';
import { describe, expect, test } from 'vitest';
import { qemuArgv, qemuOptValue, renderJson, renderShell, shellQuote, type QemuArgsSpec } from '../../../host-reader/qemu-args/index.js';

const FULL: QemuArgsSpec = {
  acpiTable: '/var/lib/eve-diag/ssdt.aml',
  qmp: { path: '/run/hypervisor/kvm/vm1/qmp' },
  console: { path: '/run/hypervisor/kvm/vm1/cons', logfile: '/run/hypervisor/kvm/vm1/cons.log' },
  pvpanic: true,
  erst: { path: '/persist/vm1/erst.bin' },
  gdb: { path: '/run/hypervisor/kvm/vm1/gdb' },
};

/** What a real POSIX shell makes of `line` as arguments: the oracle for quoting. */
function shellWords(line: string): string[] {
  const out = execFileSync('sh', ['-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('argv', () => {
  test('golden: every option', () => {
    expect(qemuArgv(FULL)).toEqual([
      ...['-acpitable', 'file=/var/lib/eve-diag/ssdt.aml'],
      ...['-chardev', 'socket,id=evediag-qmp,path=/run/hypervisor/kvm/vm1/qmp,server=on,wait=off'],
      ...['-mon', 'chardev=evediag-qmp,mode=control'],
      '-chardev',
      'socket,id=evediag-cons,path=/run/hypervisor/kvm/vm1/cons,server=on,wait=off,mux=on,logfile=/run/hypervisor/kvm/vm1/cons.log,logappend=on',
      ...['-serial', 'chardev:evediag-cons'],
      ...['-device', 'pvpanic,id=evediag-pvpanic'],
      ...['-object', 'memory-backend-file,id=erstnvram,mem-path=/persist/vm1/erst.bin,size=0x10000,share=on'],
      ...['-device', 'acpi-erst,id=evediag-erst,memdev=erstnvram'],
      ...['-chardev', 'socket,id=evediag-gdb,path=/run/hypervisor/kvm/vm1/gdb,server=on,wait=off'],
      ...['-gdb', 'chardev:evediag-gdb'],
    ]);
  });

  test('vmcoreinfo: -device vmcoreinfo,id=...', () => {
    expect(qemuArgv({ acpiTable: '/t.aml', vmcoreinfo: true })).toEqual(['-acpitable', 'file=/t.aml', '-device', 'vmcoreinfo,id=evediag-vmcoreinfo']);
    expect(renderJson({ acpiTable: '/t.aml', vmcoreinfo: { id: 'vmci' } })).toBe('["-acpitable","file=/t.aml","-device","vmcoreinfo,id=vmci"]');
  });

  test('golden: the table alone, and the -qmp shorthand', () => {
    expect(renderShell({ acpiTable: '/t.aml' })).toBe('-acpitable file=/t.aml');
    expect(qemuArgv({ acpiTable: '/t.aml', qmp: { path: '/run/q.sock', style: 'qmp', id: 'ignored-here' } })).toEqual([
      ...['-acpitable', 'file=/t.aml'],
      ...['-qmp', 'unix:/run/q.sock,server=on,wait=off'],
    ]);
  });

  test('commas in values are doubled for QEMU, everywhere a path goes', () => {
    expect(qemuOptValue('a,b,,c')).toBe('a,,b,,,,c');
    const argv = qemuArgv({
      acpiTable: '/d,1/t.aml',
      qmp: { path: '/d,1/q', style: 'qmp' },
      console: { path: '/d,1/c', logfile: '/d,1/c.log' },
      erst: { path: '/d,1/e' },
      gdb: { path: '/d,1/g' },
    });
    expect(argv).toContain('file=/d,,1/t.aml');
    expect(argv).toContain('unix:/d,,1/q,server=on,wait=off');
    expect(argv).toContain('socket,id=evediag-cons,path=/d,,1/c,server=on,wait=off,mux=on,logfile=/d,,1/c.log,logappend=on');
    expect(argv).toContain('memory-backend-file,id=erstnvram,mem-path=/d,,1/e,size=0x10000,share=on');
    expect(argv).toContain('socket,id=evediag-gdb,path=/d,,1/g,server=on,wait=off');
  });

  test('golden: the shell line quotes only what needs it', () => {
    const line = renderShell({ acpiTable: "/srv/my tables/it's.aml", console: { path: '/run/c', logfile: '/var/log/$HOME`x`/c.log' } });
    expect(line).toBe(
      "-acpitable 'file=/srv/my tables/it'\\''s.aml' " +
        "-chardev 'socket,id=evediag-cons,path=/run/c,server=on,wait=off,mux=on,logfile=/var/log/$HOME`x`/c.log,logappend=on' " +
        '-serial chardev:evediag-cons',
    );
  });

  test.each([
    ['plain', '/a/b.aml'],
    ['spaces', '/my dir/with  two spaces/t.aml'],
    ['single quotes', "/it's/''/t.aml"],
    ['double quotes and backslashes', '/a"b\\c\\"/t.aml'],
    ['shell syntax', '/$(reboot)/`id`/$HOME/*/?/[a]/;&|<>!#~/t.aml'],
    ['a leading tilde', '/~root/t.aml'],
    ['unicode', '/tables/ünïcödé ☃/t.aml'],
    ['commas', '/a,b/,,/t.aml'],
  ])('shell quoting survives a real sh: %s', (_what, path) => {
    const spec: QemuArgsSpec = { acpiTable: path, qmp: { path: '/run/q' + path.slice(1, 40) }, erst: { path: path + '.erst' } };
    expect(shellWords(renderShell(spec))).toEqual(qemuArgv(spec));
  });

  test('shellQuote: safe words stay bare, the empty word is quoted', () => {
    expect(shellQuote('-acpitable')).toBe('-acpitable');
    expect(shellQuote('file=/a,,b:c@d%e+f')).toBe('file=/a,,b:c@d%e+f');
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('~')).toBe("'~'");
    expect(shellQuote("'")).toBe("''\\'''");
  });

  test('golden: the JSON array, and it parses back to the argv', () => {
    const spec: QemuArgsSpec = { acpiTable: '/t "x".aml', pvpanic: true };
    expect(renderJson(spec)).toBe('["-acpitable","file=/t \\"x\\".aml","-device","pvpanic,id=evediag-pvpanic"]');
    expect(JSON.parse(renderJson(FULL))).toEqual(qemuArgv(FULL));
  });

  test('renderers validate too', () => {
    expect(() => renderShell({ acpiTable: 'rel.aml' })).toThrow(/acpiTable: must be an absolute path/);
    expect(() => renderJson({ acpiTable: '/t.aml', gdb: { path: '/g', id: '1' } })).toThrow(/gdb.id/);
  });
});
