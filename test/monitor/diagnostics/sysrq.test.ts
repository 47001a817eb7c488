import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { SysrqCollector } from '../../../monitor/diagnostics/sysrq.js';
import type { AppTarget } from '../../../monitor/types.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { FakeConsole } from '../../host-reader/console/fake-console.js';

let cons: FakeConsole;
let server: FakeQmpServer;
let consoleConnected: boolean;
beforeEach(async () => {
  cons = await FakeConsole.start();
  server = await FakeQmpServer.start();
  consoleConnected = false;
  // The fake QEMU: query-chardev reports the console socket, send-key makes the fake guest answer.
  server.handle('query-chardev', () => ({
    return: [
      { 'frontend-open': true, filename: 'mux', label: 'cons' },
      { 'frontend-open': true, filename: `${consoleConnected ? '' : 'disconnected:'}unix:${cons.path},server=on`, label: 'cons-base' },
    ],
  }));
  server.handle('send-key', (cmd) => {
    const keys = cmd.arguments?.keys as { data: string }[];
    cons.answerSysrq(keys[2]?.data ?? '?');
    return { return: {} };
  });
  server.handle('chardev-send-break', () => {
    cons.sendBreak();
    return { return: {} };
  });
});
afterEach(async () => {
  await server.close();
  await cons.close();
});

const target = (extra: Partial<AppTarget> = {}): AppTarget => ({
  name: 'vm',
  console: cons.path,
  consoleLog: cons.logPath,
  consoleMux: true,
  qmp: server.path,
  ...extra,
});
const opts = (maxBytes = 64 * 1024, timeoutMs = 5000) => ({ timeoutMs, signal: new AbortController().signal, maxBytes });
const fast = { quietMs: 60, headerTimeoutMs: 500, pollMs: 10 };

describe('SysrqCollector', () => {
  test('break on a mux console: one sanitized artifact per key with the kernel output', async () => {
    const r = await new SysrqCollector({ keys: 'wt', ...fast }).collect(target(), opts());
    expect(r.ok).toBe(true);
    expect(cons.sysrqKeys).toEqual(['w', 't']);
    expect(cons.bytes.toString('latin1')).toBe('\x01bw\x01bt'); // Ctrl-A b then the key, once per key
    expect(r.artifacts.map((a) => a.name)).toEqual(['sysrq-w.txt', 'sysrq-t.txt']);
    const w = r.artifacts[0]?.data as string;
    expect(w).toMatch(/^\[ +12\.345678\] sysrq: Show Blocked State\n/);
    expect(w).toContain('w-line 19\n');
    expect(w.includes('\x1b') || w.includes('\r')).toBe(false);
    expect(r.artifacts[1]?.data).toContain('sysrq: Show State');
    expect(r.artifacts[1]?.data).not.toContain('Show Blocked State'); // each key gets only its own output
    expect(r.summary).toMatch(/^sysrq w t via break \(mux Ctrl-A b\): w .*, t /);
  });

  test('send-key', async () => {
    const r = await new SysrqCollector({ keys: ['m'], method: 'send-key', ...fast }).collect(target(), opts());
    expect(r.ok).toBe(true);
    expect(cons.accepted).toBe(0); // the console socket was never touched
    expect(r.artifacts[0]?.data).toContain('sysrq: Show Memory');
    expect(r.summary).toMatch(/via send-key/);
  });

  test('auto picks send-key when there is no console socket', async () => {
    const r = await new SysrqCollector({ keys: 'w', ...fast }).collect(target({ console: undefined }), opts());
    expect(r.ok).toBe(true);
    expect(r.summary).toMatch(/via send-key/);
  });

  test('a console held by another client: falls back to send-key, or fails if told not to', async () => {
    consoleConnected = true;
    const r = await new SysrqCollector({ keys: 'w', ...fast }).collect(target(), opts());
    expect(r.ok).toBe(true);
    expect(cons.accepted).toBe(0);
    expect(r.summary).toMatch(/via send-key.*held by another client/);
    const strict = await new SysrqCollector({ keys: 'w', fallbackToSendKey: false, ...fast }).collect(target(), opts());
    expect(strict.ok).toBe(false);
    expect(strict.summary).toMatch(/already has a client/);
  });

  test('plain console: chardev-send-break on the id QMP names, then the key', async () => {
    const r = await new SysrqCollector({ keys: 'w', ...fast }).collect(target({ consoleMux: false }), opts());
    const brk = await server.waitForCommand('chardev-send-break');
    expect(brk.arguments).toEqual({ id: 'cons-base' });
    expect(cons.bytes.toString()).toBe('w');
    expect(r.ok).toBe(true);
    expect(r.artifacts[0]?.data).toContain('sysrq: Show Blocked State');
    expect(r.summary).toMatch(/via break \(chardev-send-break\)/);
  });

  test('a mux console with QMP down: goes on without the check, and says so', async () => {
    const r = await new SysrqCollector({ keys: 'w', ...fast }).collect(target({ qmp: join(server.dir, 'gone.sock') }), opts());
    expect(r.ok).toBe(true);
    expect(r.summary).toMatch(/QMP unreachable/);
  });

  test('no output (a dead kernel, or a BREAK that went nowhere): ok false, the key still has its artifact', async () => {
    cons.answerBreak = false;
    const r = await new SysrqCollector({ keys: 'w', ...fast }).collect(target(), opts());
    expect(r.ok).toBe(false);
    expect(r.artifacts.map((a) => a.name)).toEqual(['sysrq-w.txt']);
    expect(r.summary).toMatch(/w no sysrq output/);
  });

  test('a kernel that refuses the key (kernel.sysrq)', async () => {
    server.handle('send-key', () => {
      cons.print('[    5.0] sysrq: This sysrq operation is disabled.\r\n');
      return { return: {} };
    });
    const r = await new SysrqCollector({ keys: 'w', method: 'send-key', ...fast }).collect(target(), opts());
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/refused by kernel\.sysrq/);
  });

  test('maxBytes is shared by the keys: later keys get what earlier ones left', async () => {
    cons.sysrqOutputLines = 200; // about 5 KiB per key
    const r = await new SysrqCollector({ keys: 'wt', ...fast }).collect(target(), opts(4000));
    const sizes = r.artifacts.map((a) => Buffer.byteLength(a.data as string));
    expect(sizes[0]).toBeLessThanOrEqual(2000);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(4000);
    expect(r.artifacts.every((a) => a.truncated === true)).toBe(true);
    expect(r.summary).toMatch(/truncated/);
  });

  test('bounded by the timeout: keys left are skipped', async () => {
    cons.answerBreak = false;
    const t0 = Date.now();
    const r = await new SysrqCollector({ keys: 'wtm', quietMs: 60, headerTimeoutMs: 5000, pollMs: 10 }).collect(target(), opts(4096, 300));
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/skipped/);
  });

  test('no logfile, no transport: ok false, nothing sent', async () => {
    expect((await new SysrqCollector(fast).collect(target({ consoleLog: undefined }), opts())).summary).toMatch(/no console logfile/);
    expect((await new SysrqCollector(fast).collect(target({ console: undefined, qmp: undefined }), opts())).summary).toMatch(/neither/);
    expect((await new SysrqCollector({ method: 'send-key', ...fast }).collect(target({ qmp: undefined }), opts())).ok).toBe(false);
    expect(cons.accepted).toBe(0);
  });

  test('keys are checked at construction', () => {
    expect(() => new SysrqCollector({ keys: 'wc' })).toThrow(/changes the guest/);
    expect(() => new SysrqCollector({ keys: '' })).toThrow(RangeError);
    expect(() => new SysrqCollector({ keys: 'c', allowUnsafe: true })).not.toThrow();
    expect(new SysrqCollector().keys).toEqual(['w', 't', 'l', 'm', 'q']);
  });
});
