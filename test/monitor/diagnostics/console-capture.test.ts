import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ConsoleCaptureCollector } from '../../../monitor/diagnostics/console-capture.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'console-capture-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});
const opts = (maxBytes: number) => ({ timeoutMs: 1000, signal: new AbortController().signal, maxBytes });

describe('ConsoleCaptureCollector', () => {
  test('the whole log when it fits, sanitized', async () => {
    const log = join(dir, 'console.log');
    writeFileSync(log, '[    1.0] booting\r\n\x1b[1;31mKernel panic - not syncing\x1b[0m\r\n');
    const r = await new ConsoleCaptureCollector().collect({ name: 'vm', consoleLog: log }, opts(4096));
    expect(r.ok).toBe(true);
    expect(r.artifacts).toEqual([{ name: 'console.txt', mediaType: 'text/plain', data: '[    1.0] booting\nKernel panic - not syncing\n' }]);
    expect(r.summary).toMatch(/^console: .* 2 lines$/);
  });

  test('only the last maxBytes of a long log', async () => {
    const log = join(dir, 'console.log');
    const lines = Array.from({ length: 1000 }, (_, i) => `line ${i}\r\n`).join('');
    writeFileSync(log, lines);
    const r = await new ConsoleCaptureCollector({ name: 'tail.txt' }).collect({ name: 'vm', consoleLog: log }, opts(100));
    const a = r.artifacts[0];
    expect(a?.name).toBe('tail.txt');
    expect(a?.truncated).toBe(true);
    expect(Buffer.byteLength(a?.data as string)).toBeLessThanOrEqual(100);
    expect((a?.data as string).endsWith('line 999\n')).toBe(true);
    expect(r.summary).toMatch(/the last 100 B of/);
  });

  test('from an offset', async () => {
    const log = join(dir, 'console.log');
    writeFileSync(log, 'before\nafter\n');
    const r = await new ConsoleCaptureCollector({ from: 7 }).collect({ name: 'vm', consoleLog: log }, opts(4096));
    expect(r.artifacts[0]?.data).toBe('after\n');
  });

  test('no logfile, or a missing one: ok false with the reason, never a throw', async () => {
    const none = await new ConsoleCaptureCollector().collect({ name: 'vm' }, opts(100));
    expect(none).toMatchObject({ ok: false, artifacts: [] });
    expect(none.summary).toMatch(/no console logfile/);
    const missing = await new ConsoleCaptureCollector().collect({ name: 'vm', consoleLog: join(dir, 'gone.log') }, opts(100));
    expect(missing.ok).toBe(false);
    expect(missing.summary).toMatch(/ENOENT|no such file/i);
  });
});
