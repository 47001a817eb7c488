import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ConsoleBusyError, SysrqError } from '../../../host-reader/console/errors.js';
import {
  checkSysrqKey,
  findConsoleChardev,
  sysrqByBreak,
  sysrqBySendKey,
  sysrqSendKeyArgs,
} from '../../../host-reader/console/sysrq.js';
import { QmpClient } from '../../../host-reader/qmp/index.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { FakeConsole } from './fake-console.js';

let cons: FakeConsole;
let server: FakeQmpServer;
let qmp: QmpClient;
beforeEach(async () => {
  cons = await FakeConsole.start();
  server = await FakeQmpServer.start();
  qmp = await QmpClient.connect(server.target);
});
afterEach(async () => {
  await qmp.close();
  await server.close();
  await cons.close();
});

/** query-chardev as QEMU 7.2 answers it for `-chardev socket,id=cons,path=P,server=on,mux=on`. */
const chardevs = (path: string, connected: boolean) => [
  { 'frontend-open': true, filename: 'mux', label: 'cons' },
  { 'frontend-open': true, filename: `${connected ? '' : 'disconnected:'}unix:${path},server=on`, label: 'cons-base' },
  { 'frontend-open': true, filename: 'unix:/run/qmp.sock,server=on', label: 'compat_monitor0' },
];

const until = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('keys', () => {
  test('only the keys that just print are allowed by default', () => {
    for (const k of 'dhlmpqtw') expect(() => checkSysrqKey(k)).not.toThrow();
    for (const k of 'bceifjkosu0z') expect(() => checkSysrqKey(k)).toThrow(/changes the guest/);
    expect(() => checkSysrqKey('b', true)).not.toThrow();
    expect(() => checkSysrqKey('W')).toThrow(RangeError);
    expect(() => checkSysrqKey('ww')).toThrow(RangeError);
  });

  test('send-key arguments: alt + sysrq + key', () => {
    expect(sysrqSendKeyArgs('t', 200)).toEqual({
      keys: [
        { type: 'qcode', data: 'alt' },
        { type: 'qcode', data: 'sysrq' },
        { type: 'qcode', data: 't' },
      ],
      'hold-time': 200,
    });
  });
});

describe('sysrqBySendKey', () => {
  test('sends QMP send-key', async () => {
    server.handle('send-key', { return: {} });
    await sysrqBySendKey(qmp, 'w');
    const cmd = await server.waitForCommand('send-key');
    expect(cmd.arguments).toEqual(sysrqSendKeyArgs('w'));
  });

  test('a QMP error becomes SysrqError with the cause', async () => {
    server.handle('send-key', { error: { class: 'GenericError', desc: 'no keyboard' } });
    const e = await sysrqBySendKey(qmp, 'w').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SysrqError);
    expect((e as Error).message).toMatch(/no keyboard/);
  });

  test('an unsafe key throws before anything is sent', async () => {
    await expect(sysrqBySendKey(qmp, 'c')).rejects.toThrow(RangeError);
    expect(server.received.some((c) => c.execute === 'send-key')).toBe(false);
  });
});

describe('sysrqByBreak', () => {
  test('mux console: Ctrl-A b, a pause, then the key', async () => {
    await sysrqByBreak('w', { consolePath: cons.path, mux: true, gapMs: 10, lingerMs: 10 });
    await until(() => cons.bytes.length === 3);
    expect(cons.bytes.toString('latin1')).toBe('\x01bw');
    await until(() => cons.sysrqKeys.length === 1);
    expect(cons.sysrqKeys).toEqual(['w']);
  });

  test('mux console with QMP: refuses when another client holds the socket', async () => {
    server.handle('query-chardev', { return: chardevs(cons.path, true) });
    await expect(sysrqByBreak('w', { consolePath: cons.path, mux: true, qmp })).rejects.toBeInstanceOf(ConsoleBusyError);
    expect(cons.accepted).toBe(0);
  });

  test('plain console: chardev-send-break on the id found by the socket path, then the key', async () => {
    server.handle('query-chardev', {
      return: [{ 'frontend-open': true, filename: `disconnected:unix:${cons.path},server=on`, label: 'serial0' }],
    });
    server.handle('chardev-send-break', { return: {} });
    await sysrqByBreak('t', { consolePath: cons.path, mux: false, qmp, lingerMs: 10 });
    const brk = await server.waitForCommand('chardev-send-break');
    expect(brk.arguments).toEqual({ id: 'serial0' });
    await until(() => cons.bytes.length === 1);
    expect(cons.bytes.toString()).toBe('t'); // no Ctrl-A on a plain chardev
  });

  test('plain console without QMP is a programmer error', async () => {
    await expect(sysrqByBreak('t', { consolePath: cons.path, mux: false })).rejects.toThrow(TypeError);
  });

  test('plain console whose chardev QMP does not know: SysrqError', async () => {
    server.handle('query-chardev', { return: [] });
    await expect(sysrqByBreak('t', { consolePath: cons.path, mux: false, qmp })).rejects.toBeInstanceOf(SysrqError);
  });
});

describe('findConsoleChardev', () => {
  test('finds the socket backend of a mux chardev and whether a client is connected', async () => {
    server.handle('query-chardev', { return: chardevs('/run/cons', false) });
    expect(await findConsoleChardev(qmp, '/run/cons')).toEqual({
      id: 'cons-base',
      muxId: 'cons',
      connected: false,
      filename: 'disconnected:unix:/run/cons,server=on',
    });
    server.handle('query-chardev', { return: chardevs('/run/cons', true) });
    expect(await findConsoleChardev(qmp, '/run/cons')).toMatchObject({ connected: true });
    expect(await findConsoleChardev(qmp, '/run/other')).toBeUndefined();
  });

  test('tolerates junk in the reply', async () => {
    server.handle('query-chardev', { return: [null, 3, { label: 1 }, { label: 'x', filename: 'pty:/dev/pts/3' }] });
    expect(await findConsoleChardev(qmp, '/run/cons')).toBeUndefined();
  });
});
