import { describe, expect, test } from 'vitest';
import {
  qemuArgv,
  QemuArgsError,
  READCONFIG_LINE_MAX_BYTES,
  renderReadconfig,
  shellQuote,
  type QemuArgsSpec,
} from '../../../host-reader/qemu-args/index.js';

const FULL: QemuArgsSpec = {
  acpiTable: '/var/lib/eve-diag/ssdt.aml',
  qmp: { path: '/run/hypervisor/kvm/vm1/qmp' },
  console: { path: '/run/hypervisor/kvm/vm1/cons', logfile: '/run/hypervisor/kvm/vm1/cons.log' },
  pvpanic: true,
  erst: { path: '/persist/vm1/erst.bin' },
  gdb: { path: '/run/hypervisor/kvm/vm1/gdb' },
};

const GOLDEN = `# eve-diag qemu-args: QEMU -readconfig fragment (QEMU 7.2 syntax, as EVE generates it).
# These options have no -readconfig section: pass them on the QEMU command line as well:
#   -acpitable file=/var/lib/eve-diag/ssdt.aml
#   -gdb chardev:evediag-gdb

[chardev "evediag-qmp"]
  backend = "socket"
  path = "/run/hypervisor/kvm/vm1/qmp"
  server = "on"
  wait = "off"

[mon "evediag-qmp"]
  mode = "control"
  chardev = "evediag-qmp"

[chardev "evediag-cons"]
  backend = "socket"
  path = "/run/hypervisor/kvm/vm1/cons"
  server = "on"
  wait = "off"
  mux = "on"
  logfile = "/run/hypervisor/kvm/vm1/cons.log"
  logappend = "on"

# The same as -serial chardev:evediag-cons: the next free serial port (ttyS0 when it is the first).
[device "evediag-serial"]
  driver = "isa-serial"
  chardev = "evediag-cons"

[device "evediag-pvpanic"]
  driver = "pvpanic"

[object "erstnvram"]
  qom-type = "memory-backend-file"
  mem-path = "/persist/vm1/erst.bin"
  size = "0x10000"
  share = "on"

[device "evediag-erst"]
  driver = "acpi-erst"
  memdev = "erstnvram"

[chardev "evediag-gdb"]
  backend = "socket"
  path = "/run/hypervisor/kvm/vm1/gdb"
  server = "on"
  wait = "off"
`;

type Parsed = { sections: Array<{ group: string; id: string; entries: Record<string, string> }>; comments: string[] };

/** Reads an ini the way QEMU 7.2's qemu_config_parse does (util/qemu-config.c), failing where it would. */
function parseLikeQemu(text: string): Parsed {
  const parsed: Parsed = { sections: [], comments: [] };
  const lines = text.split('\n');
  expect(lines.pop()).toBe(''); // ends with a newline
  for (const [i, line] of lines.entries()) {
    expect(new TextEncoder().encode(line).length, `line ${i + 1} fits QEMU's buffer`).toBeLessThanOrEqual(1022);
    if (line === '') continue;
    if (line.startsWith('#')) {
      parsed.comments.push(line);
      continue;
    }
    const group = /^\[(\S{1,63}) "([^"]{1,63})"\]$/.exec(line);
    if (group) {
      parsed.sections.push({ group: group[1] as string, id: group[2] as string, entries: {} });
      continue;
    }
    const kv = /^\s*(\S{1,63}) = "([^"]{1,1023})"$/.exec(line);
    const current = parsed.sections.at(-1);
    if (kv === null || current === undefined) throw new Error(`QEMU would reject line ${i + 1}: ${JSON.stringify(line)}`);
    current.entries[kv[1] as string] = kv[2] as string;
  }
  return parsed;
}

describe('readconfig', () => {
  test('golden: every option', () => {
    const r = renderReadconfig(FULL);
    expect(r.text).toBe(GOLDEN);
    expect(r.argv).toEqual(['-acpitable', 'file=/var/lib/eve-diag/ssdt.aml', '-gdb', 'chardev:evediag-gdb']);
  });

  test('the comment names exactly the flags that stay on the command line, shell-quoted', () => {
    const spec: QemuArgsSpec = { ...FULL, acpiTable: "/srv/it's here,1/t.aml" };
    const r = renderReadconfig(spec);
    expect(r.argv).toEqual(['-acpitable', "file=/srv/it's here,,1/t.aml", '-gdb', 'chardev:evediag-gdb']);
    const flagLines = parseLikeQemu(r.text).comments.filter((c) => c.startsWith('#   '));
    expect(flagLines).toEqual([`#   -acpitable ${shellQuote("file=/srv/it's here,,1/t.aml")}`, '#   -gdb chardev:evediag-gdb']);
    // Every other argv word has a section: the argv minus these flags is what the sections carry.
    expect(qemuArgv(spec).filter((w) => r.argv.includes(w))).toEqual(r.argv);
  });

  test('the -qmp shorthand becomes a chardev plus a QMP monitor (there is no shorthand section)', () => {
    const r = renderReadconfig({ acpiTable: '/t.aml', qmp: { path: '/run/q', style: 'qmp', id: 'q0' } });
    expect(parseLikeQemu(r.text).sections).toEqual([
      { group: 'chardev', id: 'q0', entries: { backend: 'socket', path: '/run/q', server: 'on', wait: 'off' } },
      { group: 'mon', id: 'q0', entries: { mode: 'control', chardev: 'q0' } },
    ]);
    expect(r.argv).toEqual(['-acpitable', 'file=/t.aml']);
  });

  test('values are literal: commas, spaces, single quotes and unicode stay as they are', () => {
    const odd = "/run/a,b c/it's ünï";
    const r = renderReadconfig({
      acpiTable: '/t.aml',
      console: { path: `${odd}/cons`, logfile: `${odd}/cons.log` },
      erst: { path: `${odd}/erst` },
    });
    const s = parseLikeQemu(r.text).sections;
    expect(s[0]?.entries).toMatchObject({ path: `${odd}/cons`, logfile: `${odd}/cons.log`, mux: 'on', logappend: 'on' });
    expect(s.find((x) => x.group === 'object')?.entries['mem-path']).toBe(`${odd}/erst`);
  });

  test.each<[string, QemuArgsSpec, string]>([
    ['a double quote in a socket path', { acpiTable: '/t.aml', qmp: { path: '/run/a"b' } }, 'qmp.path'],
    ['a double quote in the logfile', { acpiTable: '/t.aml', console: { path: '/c', logfile: '/l"og' } }, 'console.logfile'],
    ['a double quote in the ERST file', { acpiTable: '/t.aml', erst: { path: '/e"' } }, 'erst.path'],
  ])('%s: refused, naming the field (QEMU would cut the value short)', (_what, spec, field) => {
    expect(() => renderReadconfig(spec)).toThrow(QemuArgsError);
    expect(() => renderReadconfig(spec)).toThrow(new RegExp(`^${field.replace('.', '\\.')}: .*double quote`));
  });

  test('a double quote in the table path is fine: it is only in a comment', () => {
    const r = renderReadconfig({ acpiTable: '/t "1".aml' });
    expect(r.argv).toEqual(['-acpitable', 'file=/t "1".aml']);
    parseLikeQemu(r.text);
  });

  test('lines longer than QEMU reads whole are refused, naming the field', () => {
    const longest = '/' + 'x'.repeat(READCONFIG_LINE_MAX_BYTES - '  mem-path = ""'.length - 1);
    const atLimit = parseLikeQemu(renderReadconfig({ acpiTable: '/t.aml', erst: { path: longest } }).text);
    expect(atLimit.sections[0]?.entries['mem-path']).toBe(longest);
    expect(() => renderReadconfig({ acpiTable: '/t.aml', erst: { path: longest + 'x' } })).toThrow(/^erst\.path: too long/);
    expect(() => renderReadconfig({ acpiTable: '/' + 'a'.repeat(1100) })).toThrow(/^acpiTable: too long/);
  });
});

describe('readconfig: vmcoreinfo', () => {
  test('a [device] section (QEMU 7.2 accepts -device in -readconfig)', () => {
    const { text, argv } = renderReadconfig({ acpiTable: '/t.aml', vmcoreinfo: true });
    expect(text).toContain('[device "evediag-vmcoreinfo"]\n  driver = "vmcoreinfo"\n');
    expect(argv).toEqual(['-acpitable', 'file=/t.aml']);
  });
});
