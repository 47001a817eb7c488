import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { describeNmiOutput, NmiCollector } from '../../../monitor/diagnostics/nmi.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

/** What Debian 6.1 printed for a QMP inject-nmi on an idle guest (nmi.guest.test.ts). */
const UNKNOWN_NMI =
  '[   12.345678] Uhhuh. NMI received for unknown reason 30 on CPU 0.\r\n' +
  '[   12.345679] Dazed and confused, but trying to continue\r\n';

const temp = tempDirs('eve-diag-nmi-');
let server: FakeQmpServer;
let log: string;
let output: string;
beforeEach(async () => {
  server = await FakeQmpServer.start();
  log = join(temp(), 'console.log');
  writeFileSync(log, 'boot messages before the NMI\r\n');
  output = UNKNOWN_NMI;
  server.handle('inject-nmi', () => {
    setTimeout(() => appendFileSync(log, output), 30);
    return { return: {} };
  });
});
afterEach(async () => {
  await server.close();
});
const opts = (timeoutMs = 5000) => ({ timeoutMs, signal: new AbortController().signal, maxBytes: 64 * 1024 });
const fast = { quietMs: 100, headerTimeoutMs: 500, pollMs: 10 };

describe('NmiCollector', () => {
  test('injects one NMI and captures what the kernel printed after it (not before)', async () => {
    const r = await new NmiCollector(fast).collect({ name: 'vm', qmp: server.path, consoleLog: log }, opts());
    expect(r.ok).toBe(true);
    expect(r.summary).toMatch(/^nmi: injected; unknown NMI, the kernel carried on \(Dazed and confused\); \d+ B$/);
    expect(server.received.filter((c) => c.execute === 'inject-nmi')).toHaveLength(1);
    expect(r.artifacts[0]?.name).toBe('nmi.txt');
    expect(r.artifacts[0]?.data).toContain('Uhhuh. NMI received for unknown reason 30 on CPU 0.');
    expect(r.artifacts[0]?.data).not.toContain('boot messages');
  });

  test('nothing printed: ok false, and the (empty) capture is kept', async () => {
    output = '';
    const r = await new NmiCollector(fast).collect({ name: 'vm', qmp: server.path, consoleLog: log }, opts());
    expect(r.ok).toBe(false);
    expect(r.summary).toBe('nmi: injected; no kernel line about it on the console (0 B captured)');
  });

  test('QEMU refuses, or a transport is missing: ok false with the reason', async () => {
    server.handle('inject-nmi', { error: { class: 'GenericError', desc: 'Injecting an NMI is not supported by this machine' } });
    const r = await new NmiCollector(fast).collect({ name: 'vm', qmp: server.path, consoleLog: log }, opts());
    expect(r.summary).toMatch(/^nmi: .*not supported/);
    expect((await new NmiCollector().collect({ name: 'vm', consoleLog: log }, opts())).summary).toBe('nmi: the app has no QMP socket');
    expect((await new NmiCollector().collect({ name: 'vm', qmp: server.path }, opts())).summary).toMatch(/no console logfile/);
    expect(() => new NmiCollector({ quietMs: 0 })).toThrow(RangeError);
  });

  test('describeNmiOutput: unknown NMI, panic, backtrace', () => {
    expect(describeNmiOutput(UNKNOWN_NMI)).toBe('unknown NMI, the kernel carried on (Dazed and confused)');
    expect(describeNmiOutput(`${UNKNOWN_NMI}Kernel panic - not syncing: NMI: Not continuing\r\n`)).toBe('the kernel panicked (Kernel panic - not syncing: NMI: Not continuing)');
    expect(describeNmiOutput('NMI backtrace for cpu 1\nCall Trace:\n')).toBe('with a backtrace');
    expect(describeNmiOutput('hello\n')).toBe('no NMI line');
  });
});
