import { appendFile, mkdtemp, rename, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConsolePassiveProbe, type ConsolePassiveParams } from '../../../monitor/probes/console-passive.js';
import type { ProbeResult } from '../../../monitor/types.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-cons-log-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const mark = (seq: number) => `[   12.345678] eve-diag mark seq=${seq} uptime=12.34 load=0.01 mem_avail=401236kB agent=0.1.0\r\n`;
let n = 0;

/** A probe over a fresh logfile, on a hand-driven monotonic clock (wall clock real: mtimes are real). */
async function setup(initial = '', params: ConsolePassiveParams = {}) {
  const file = join(dir, `console-${++n}.log`);
  await writeFile(file, initial);
  let now = 0;
  const probe = new ConsolePassiveProbe({ maxAgeMs: 10_000, ...params }, { periodMs: 10_000, now: () => now });
  const run = (f = file): Promise<ProbeResult> => probe.run({ name: 'vm', consoleLog: f }, { timeoutMs: 1000, signal: new AbortController().signal });
  return { file, probe, run, advance: (ms: number) => (now += ms) };
}

describe('console-passive', () => {
  test('baseline, then new marks are a success, then no mark beyond maxAge is a failure', async () => {
    const { file, run, advance } = await setup(`boot\r\n${mark(1)}`);
    const base = await run();
    expect(base.outcome).toBe('unknown');
    expect(base.detail).toBe('baseline: last seq=1 already in the log');
    expect(base.evidence).toMatchObject({ lastSeq: 1, newMarks: 1 });
    expect(base.evidence?.ageMs).toBeUndefined();

    advance(5000);
    await appendFile(file, `some app output\r\n${mark(2)}${mark(3)}`);
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(ok.detail).toBe('2 new mark(s), last seq=3');
    expect(ok.evidence).toMatchObject({ lastSeq: 3, newMarks: 2, ageMs: 0 });

    advance(8000);
    const fresh = await run();
    expect(fresh.outcome).toBe('success');
    expect(fresh.evidence).toMatchObject({ newMarks: 0, ageMs: 8000 });

    advance(3000);
    await appendFile(file, 'output but no mark\r\n');
    const stale = await run();
    expect(stale.outcome).toBe('failure');
    expect(stale.detail).toBe('no mark for 11 s (last seq=3; max 10 s)');
  });

  test('no mark ever while watching longer than maxAge is a failure', async () => {
    const { run, advance } = await setup('boot\r\n');
    expect((await run()).detail).toBe('baseline: no mark in the log yet');
    advance(5000);
    expect((await run()).outcome).toBe('unknown');
    advance(6000);
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/no new mark in 11 s of watching/);
  });

  test('a logfile not written for longer than maxAge fails at once', async () => {
    const { file, run } = await setup(mark(7));
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/^console log not written for \d+ s/);
  });

  test('only the new tail is read; a line split between runs is carried', async () => {
    const { file, run, advance } = await setup('x'.repeat(5000) + '\n');
    await run();
    const line = mark(42);
    await appendFile(file, line.slice(0, 20));
    advance(1000);
    expect((await run()).evidence).toMatchObject({ newMarks: 0, offset: 5001 + 20 });
    await appendFile(file, line.slice(20));
    advance(1000);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ lastSeq: 42, newMarks: 1 });
  });

  test('a flood beyond maxReadBytes skips to the newest bytes', async () => {
    const { file, run, advance } = await setup('', { maxReadBytes: 4096 });
    await run();
    await appendFile(file, `${mark(1)}${'noise\r\n'.repeat(2000)}${mark(2)}`);
    advance(1000);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ lastSeq: 2, newMarks: 1 });
    expect(r.evidence?.skippedBytes).toBeGreaterThan(10_000);
  });

  test('truncation and rotation: the new file is read from its start', async () => {
    const { file, run, advance } = await setup(mark(1) + mark(2));
    await run();
    await truncate(file, 0);
    await appendFile(file, mark(3));
    advance(1000);
    const t = await run();
    expect(t.outcome).toBe('success');
    expect(t.evidence).toMatchObject({ reset: 'truncated', lastSeq: 3 });

    await rename(file, `${file}.1`);
    await writeFile(file, mark(1)); // a new agent counts from 1 again
    advance(1000);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ reset: 'rotated', lastSeq: 1, seqRestarted: true });
  });

  test('a Kernel panic line is kept as evidence until a later mark', async () => {
    const { file, run, advance } = await setup(mark(5));
    await run();
    await appendFile(file, '[  40.1] Kernel panic - not syncing: sysrq triggered crash\r\n[  40.2] CPU: 0 PID: 1 Comm: sh\r\n');
    advance(2000);
    const p = await run();
    expect(p.evidence?.panic).toEqual({ line: '[  40.1] Kernel panic - not syncing: sysrq triggered crash', ageMs: 0 });
    advance(3000);
    expect((await run()).evidence?.panic).toEqual({ line: '[  40.1] Kernel panic - not syncing: sysrq triggered crash', ageMs: 3000 });
    await appendFile(file, mark(1));
    advance(1000);
    expect((await run()).evidence?.panic).toBeUndefined();
  });

  test('a custom pattern without a sequence group', async () => {
    const { file, run, advance } = await setup('', { pattern: 'app heartbeat' });
    await run();
    await appendFile(file, 'Nov 26 app heartbeat ok\n');
    advance(1000);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.detail).toBe('1 new mark(s), last a mark');
    expect(r.evidence?.lastMark).toBe('Nov 26 app heartbeat ok');
  });

  test('no logfile configured or present is unknown', async () => {
    const { probe } = await setup();
    const signal = new AbortController().signal;
    expect((await probe.run({ name: 'x' }, { timeoutMs: 100, signal })).outcome).toBe('unknown');
    const missing = await probe.run({ name: 'x', consoleLog: join(dir, 'nope.log') }, { timeoutMs: 100, signal });
    expect(missing.outcome).toBe('unknown');
    expect(missing.evidence).toMatchObject({ errno: 'ENOENT' });
  });
});
