import { describe, expect, test } from 'vitest';
import { DEFAULT_IDS, planQemuArgs, QemuArgsError, type QemuArgsSpec } from '../../../host-reader/qemu-args/index.js';

const TABLE = '/var/lib/eve-diag/ssdt.aml';

function errorOf(spec: unknown): QemuArgsError {
  try {
    planQemuArgs(spec as QemuArgsSpec);
  } catch (e) {
    if (e instanceof QemuArgsError) return e;
    throw e;
  }
  throw new Error('no error');
}

describe('planQemuArgs', () => {
  test('the table alone is one piece; every option adds its pieces in command-line order', () => {
    expect(planQemuArgs({ acpiTable: TABLE })).toEqual([{ kind: 'acpitable', file: TABLE }]);
    const kinds = planQemuArgs({
      acpiTable: TABLE,
      qmp: { path: '/run/q' },
      console: { path: '/run/c', logfile: '/run/c.log' },
      pvpanic: true,
      erst: { path: '/run/erst' },
      gdb: { path: '/run/g' },
    }).map((p) => p.kind);
    expect(kinds).toEqual(['acpitable', 'chardev-socket', 'qmp-monitor', 'chardev-socket', 'serial', 'device', 'object', 'device', 'chardev-socket', 'gdb']);
  });

  test('defaults ids; explicit ids are used as given', () => {
    const pieces = planQemuArgs({ acpiTable: TABLE, qmp: { path: '/q', style: 'qmp' }, gdb: { path: '/g', id: 'myGdb_1' }, pvpanic: { id: 'pp' } });
    expect(pieces).toContainEqual({ kind: 'qmp-shorthand', id: DEFAULT_IDS.qmp, path: '/q' });
    expect(pieces).toContainEqual({ kind: 'gdb', chardev: 'myGdb_1' });
    expect(pieces).toContainEqual({ kind: 'device', driver: 'pvpanic', id: 'pp', props: [] });
    expect(planQemuArgs({ acpiTable: TABLE, pvpanic: false })).toHaveLength(1);
  });

  const long = (n: number) => '/' + 'x'.repeat(n - 1);
  test.each<[string, Record<string, unknown>, string, RegExp]>([
    ['missing table', { acpiTable: undefined }, 'acpiTable', /a path is required/],
    ['empty table', { acpiTable: '' }, 'acpiTable', /a path is required/],
    ['relative table', { acpiTable: 'out/ssdt.aml' }, 'acpiTable', /absolute/],
    ['colon in table', { acpiTable: '/a:b.aml' }, 'acpiTable', /':'/],
    ['directory table', { acpiTable: '/tmp/' }, 'acpiTable', /not a directory/],
    ['newline in path', { qmp: { path: '/run/q\nx' } }, 'qmp.path', /control characters/],
    ['NUL in path', { erst: { path: '/run/e\0' } }, 'erst.path', /control characters/],
    ['relative socket', { qmp: { path: 'qmp.sock' } }, 'qmp.path', /absolute/],
    ['socket of 108 bytes', { gdb: { path: long(108) } }, 'gdb.path', /107 bytes/],
    ['socket of 55 characters but 109 UTF-8 bytes', { gdb: { path: '/' + 'é'.repeat(54) } }, 'gdb.path', /107 bytes/],
    ['file of 4096 bytes', { erst: { path: long(4096) } }, 'erst.path', /4095 bytes/],
    ['console without logfile', { console: { path: '/run/c' } }, 'console.logfile', /required/],
    ['relative logfile', { console: { path: '/run/c', logfile: 'c.log' } }, 'console.logfile', /absolute/],
    ['id with a comma', { qmp: { path: '/q', id: 'a,b' } }, 'qmp.id', /letter followed by/],
    ['id starting with a digit', { gdb: { path: '/g', id: '0gdb' } }, 'gdb.id', /letter followed by/],
    ['empty id', { console: { path: '/c', logfile: '/l', id: '' } }, 'console.id', /letter followed by/],
    ['id with a dot', { erst: { path: '/e', memdevId: 'a.b' } }, 'erst.memdevId', /letter followed by/],
    ['id of 64 characters', { pvpanic: { id: 'p'.repeat(64) } }, 'pvpanic.id', /63 characters/],
    ['bad qmp style', { qmp: { path: '/q', style: 'hmp' } }, 'qmp.style', /'mon' or 'qmp'/],
    ['qmp not an object', { qmp: '/run/q' }, 'qmp', /an object/],
    ['same chardev id twice', { qmp: { path: '/q', id: 'x' }, gdb: { path: '/g', id: 'x' } }, 'gdb.id', /already used by qmp.id/],
    ['the mux backend id', { console: { path: '/c', logfile: '/l', id: 'x' }, gdb: { path: '/g', id: 'x-base' } }, 'gdb.id', /already used by console.id/],
    ['same device id twice', { pvpanic: { id: 'd' }, erst: { path: '/e', id: 'd' } }, 'erst.id', /device id is already used by pvpanic.id/],
    ['same path twice', { qmp: { path: '/run/s' }, gdb: { path: '/run/s' } }, 'gdb.path', /same path as qmp.path/],
    ['logfile is the table', { console: { path: '/c', logfile: TABLE } }, 'console.logfile', /same path as acpiTable/],
  ])('%s: throws naming %s and the value', (_what, extra, field, reason) => {
    const e = errorOf({ acpiTable: TABLE, ...extra });
    expect(e.field).toBe(field);
    expect(e.message).toMatch(reason);
    expect(e.message.startsWith(`${field}: `)).toBe(true);
    expect(e.message).toContain(`(got ${JSON.stringify(e.value)})`);
  });

  test('the agent port: a virtio-serial controller, the chardev, a named port on it', () => {
    const pieces = planQemuArgs({ acpiTable: TABLE, agentPort: { path: '/run/vm/agent.sock' } });
    expect(pieces.slice(1)).toEqual([
      { kind: 'device', driver: 'virtio-serial-pci', id: 'evediag-vser', props: [] },
      { kind: 'chardev-socket', id: 'evediag-agent', path: '/run/vm/agent.sock', mux: false },
      { kind: 'device', driver: 'virtserialport', id: 'evediag-agent-port', props: [['bus', 'evediag-vser.0'], ['chardev', 'evediag-agent'], ['name', 'org.lfedge.eve.diag.0']] },
    ]);
    expect(errorOf({ acpiTable: TABLE, agentPort: { path: '/a', name: 'bad name' } }).field).toBe('agentPort.name');
    expect(errorOf({ acpiTable: TABLE, agentPort: { path: '/a' }, gdb: { path: '/g', id: 'evediag-agent' } }).field).toBe('agentPort.id');
  });

  test('vmcoreinfo: one device, off unless asked, after ERST; its id is checked like the others', () => {
    expect(planQemuArgs({ acpiTable: TABLE }).some((p) => p.kind === 'device' && p.driver === 'vmcoreinfo')).toBe(false);
    expect(planQemuArgs({ acpiTable: TABLE, vmcoreinfo: false })).toHaveLength(1);
    expect(planQemuArgs({ acpiTable: TABLE, vmcoreinfo: true }).slice(1)).toEqual([{ kind: 'device', driver: 'vmcoreinfo', id: DEFAULT_IDS.vmcoreinfo, props: [] }]);
    const kinds = planQemuArgs({ acpiTable: TABLE, erst: { path: '/e' }, vmcoreinfo: { id: 'vmci' }, gdb: { path: '/g' } }).map((p) => (p.kind === 'device' ? p.driver : p.kind));
    expect(kinds).toEqual(['acpitable', 'object', 'acpi-erst', 'vmcoreinfo', 'chardev-socket', 'gdb']);
    expect(errorOf({ acpiTable: TABLE, vmcoreinfo: { id: '0x' } }).field).toBe('vmcoreinfo.id');
    expect(errorOf({ acpiTable: TABLE, vmcoreinfo: 'yes' }).field).toBe('vmcoreinfo');
    expect(errorOf({ acpiTable: TABLE, pvpanic: { id: 'd' }, vmcoreinfo: { id: 'd' } }).message).toMatch(/already used by pvpanic.id/);
  });

  test('the same id in different namespaces is fine (a chardev and a device)', () => {
    expect(() => planQemuArgs({ acpiTable: TABLE, gdb: { path: '/g', id: 'x' }, pvpanic: { id: 'x' } })).not.toThrow();
  });
});
