import { appendFile, mkdir, mkdtemp, rename, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { classify, type ScenarioObservation } from '../../../monitor/classify.js';
import { createProbe, QmpLinks } from '../../../monitor/probes/index.js';
import { kernelEventKind, LogMarksProbe, type KernelEvent, type LogMarksParams } from '../../../monitor/probes/log-marks.js';
import type { ProbeResult } from '../../../monitor/types.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-log-marks-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const PERIOD = 5000; // withinPeriods 2 (default): marks are due within 10 s
const mark = (seq: number) => `[   12.345678] eve-diag mark seq=${seq} uptime=12.34 load=0.01 mem_avail=401236kB agent=0.1.0\r\n`;
const shMark = (seq: number) => `eve-diag mark seq=${seq} uptime=1.00 load=0.00 mem_avail=1kB agent=0.1.0-sh\n`;
/** One newlogd line (Go encoding/json of logs.LogEntry). */
const entry = (content: string, msgid = 1) =>
  `${JSON.stringify({ severity: 'info', source: '8ce1cc69-e1bb-4fe3-9613-e3eb1c5f5c4d.1.1', content, msgid, timestamp: { seconds: 1731935028, nanos: 398144495 } })}\n`;
/** One `eden pod logs --format=json` line (protojson: RFC 3339 timestamp, msgid a string). */
const edenEntry = (content: string, msgid = 1) => `${JSON.stringify({ severity: 'INFO', source: 'guest_vm', content, msgid: String(msgid), timestamp: '2026-12-03T06:00:00.123Z' })}\n`;
let n = 0;

/** A probe on a hand-driven monotonic clock (the wall clock is real: mtimes are real). */
function setup(params: LogMarksParams = {}, file = join(dir, `log-${++n}.log`)) {
  let now = 0;
  const probe = new LogMarksProbe(params, { periodMs: PERIOD, now: () => now });
  const run = (consoleLog: string | undefined = file): Promise<ProbeResult> =>
    probe.run({ name: 'vm', ...(consoleLog !== undefined ? { consoleLog } : {}) }, { timeoutMs: 1000, signal: new AbortController().signal });
  return { file, probe, run, advance: (ms: number) => (now += ms) };
}
const events = (r: ProbeResult) => (r.evidence?.kernelEvents ?? []) as KernelEvent[];

describe('log-marks, console source', () => {
  test('baseline, marks arriving are success, marks that stop are failure after withinPeriods periods', async () => {
    const { file, run, advance } = setup();
    await writeFile(file, `boot\r\n${mark(1)}`);
    const base = await run();
    expect(base.outcome).toBe('unknown');
    expect(base.detail).toBe('baseline: last seq=1 already in the log');
    expect(base.evidence).toMatchObject({ source: 'console', path: file, lastSeq: 1, newMarks: 1, maxAgeMs: 10_000 });

    advance(PERIOD);
    await appendFile(file, `app output\r\n${mark(2)}${shMark(3)}`);
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(ok.detail).toBe('2 new mark(s), last seq=3');
    expect(ok.evidence).toMatchObject({ newMarks: 2, lastSeq: 3, ageMs: 0 });
    expect(ok.evidence?.lastMark).toMatch(/^eve-diag mark seq=3 .*agent=0\.1\.0-sh$/);

    advance(PERIOD);
    expect((await run()).outcome).toBe('success'); // 5 s old: within 2 periods
    advance(PERIOD + 1);
    await appendFile(file, 'output but no mark\n');
    const stale = await run();
    expect(stale.outcome).toBe('failure');
    expect(stale.detail).toBe('no mark for 10 s (last seq=3; due within 10 s)');

    // They start again (the agent restarted: its seq restarts too).
    advance(PERIOD);
    await appendFile(file, mark(1));
    const again = await run();
    expect(again.outcome).toBe('success');
    expect(again.evidence).toMatchObject({ lastSeq: 1, seqRestarted: true });
  });

  test('no mark ever: unknown during the grace, then failure', async () => {
    const { file, run, advance } = setup({ graceMs: 20_000 });
    await writeFile(file, 'boot\n');
    expect((await run()).detail).toBe('baseline: no mark in the log yet');
    advance(15_000);
    await appendFile(file, 'still booting\n');
    const wait = await run();
    expect(wait.outcome).toBe('unknown');
    expect(wait.detail).toBe('no mark yet (15 s of watching)');
    advance(6000);
    await appendFile(file, 'still nothing\n');
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('no mark in 21 s of watching (grace 20 s)');
  });

  test('a baseline of a file not written for longer than the bound is a failure', async () => {
    const { file, run } = setup();
    await writeFile(file, mark(7));
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/^log not written for \d+ s \(marks due within 10 s\)$/);
  });

  test('a user pattern (a cron logger line); group 1 is the sequence number', async () => {
    const { file, run, advance } = setup({ pattern: 'cron-alive n=(\\d+)' });
    await writeFile(file, '');
    await run();
    advance(PERIOD);
    await appendFile(file, `Dec  3 06:00:01 vm root: cron-alive n=41\n${mark(9)}`);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ newMarks: 1, lastSeq: 41 });
  });

  test('a panic line is failure with kernel event panic, until a mark shows the guest runs again', async () => {
    const { file, run, advance } = setup();
    await writeFile(file, mark(1));
    await run();
    advance(1000);
    await appendFile(
      file,
      [
        mark(2).trimEnd(),
        '[   30.100000] INFO: task kworker/0:1:42 blocked for more than 122 seconds.',
        '[   31.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [loop:99]',
        '[   31.500000] Out of memory: Killed process 123 (hog) total-vm:1000kB',
        '[   32.000000] sysrq: Trigger a crash',
        '[   32.000001] Kernel panic - not syncing: sysrq triggered crash',
        '[   32.000002] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---',
        '',
      ].join('\r\n'),
    );
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('kernel panic in the log: [ 32.000001] Kernel panic - not syncing: sysrq triggered crash');
    expect(events(r).map((e) => e.kind)).toEqual(['hung-task', 'soft-lockup', 'oom', 'panic']);
    expect(r.evidence).toMatchObject({ panic: { line: '[ 32.000001] Kernel panic - not syncing: sysrq triggered crash', ageMs: 0 }, kernelEventCounts: { panic: 1, oom: 1 } });

    // The same panic, later: still a failure (marks are fresh, but the panic came after them).
    advance(1000);
    expect((await run()).outcome).toBe('failure');
    // A classifier with no live kernel heartbeat says guest-panicked.
    const obs: ScenarioObservation[] = [{ scenario: 'marks', probe: 'log-marks', result: 'failure', last: r }];
    expect(classify({ app: 'vm', scenarios: obs }).verdict).toBe('guest-panicked');

    advance(1000);
    await appendFile(file, 'rebooting\r\n' + mark(1));
    const back = await run();
    expect(back.outcome).toBe('success');
    expect(back.evidence?.panic).toBeUndefined();
    expect(events(back).find((e) => e.kind === 'panic')?.ageMs).toBe(2000); // history stays in the evidence
  });

  test('kernel events are bounded in number and line length', async () => {
    const { file, run, advance } = setup();
    await writeFile(file, '');
    await run();
    advance(1000);
    const lines = Array.from({ length: 40 }, (_, i) => `[ ${i}.0] BUG: soft lockup - CPU#0 stuck for ${i}s! [${'x'.repeat(2000)}]`).join('\n');
    await appendFile(file, `${lines}\n${mark(1)}`);
    const r = await run();
    expect(r.outcome).toBe('success');
    const ev = events(r);
    expect(ev).toHaveLength(16);
    expect(ev.every((e) => e.kind === 'soft-lockup' && e.line.length <= 300)).toBe(true);
    expect(ev[15]?.line).toMatch(/stuck for 39s/);
    expect(r.evidence).toMatchObject({ kernelEventCounts: { 'soft-lockup': 40 }, newKernelEvents: 40 });
  });

  test('truncation and rotation restart at 0; a line split across runs is joined', async () => {
    const { file, run, advance } = setup();
    await writeFile(file, `${mark(1)}${'x'.repeat(5000)}\n`);
    await run();
    advance(1000);
    await truncate(file, 0);
    await appendFile(file, mark(2));
    const t = await run();
    expect(t.outcome).toBe('success');
    expect(t.evidence).toMatchObject({ reset: 'truncated', lastSeq: 2, newMarks: 1 });

    advance(1000);
    await rename(file, `${file}.1`);
    await writeFile(file, 'eve-diag mark seq=3 upt');
    const rot = await run();
    expect(rot.evidence).toMatchObject({ reset: 'rotated', newMarks: 0, lastSeq: 2 });
    advance(1000);
    await appendFile(file, 'ime=1 load=0 mem_avail=1kB agent=x\n');
    const joined = await run();
    expect(joined.evidence).toMatchObject({ newMarks: 1, lastSeq: 3, resets: 2 });
  });

  test('rotated by rename while the writer keeps the old file (QEMU\'s logfile): unknown while the new file stays empty, never a failure; marks in the new file count again', async () => {
    const { file, run, advance } = setup();
    await writeFile(file, mark(1));
    await run();
    advance(1000);
    await appendFile(file, mark(2));
    expect((await run()).outcome).toBe('success');
    await rename(file, `${file}.1`);
    await writeFile(file, '');
    for (let i = 0; i < 6; i++) {
      advance(PERIOD);
      await appendFile(`${file}.1`, mark(3 + i)); // the writer's descriptor: the old file
      const r = await run();
      expect(r.outcome, r.detail).toBe('unknown');
      expect(r.detail).toMatch(/the log was replaced .* ago and nothing has been written to the new file since/);
    }
    // The writer reopened the path: marks there are marks again, and their absence a failure again.
    await appendFile(file, mark(20));
    expect((await run()).outcome).toBe('success');
    advance(3 * PERIOD);
    expect((await run()).outcome).toBe('failure');
  });

  test('huge lines are cut, a flood skips to the newest bytes: memory stays bounded', async () => {
    const { file, run, advance } = setup({ maxReadBytes: 64 * 1024, maxLineBytes: 1024 });
    await writeFile(file, '');
    await run();
    advance(1000);
    // A 200 KiB line without a newline, then a mark: the head of the line is kept (cut), the rest dropped.
    await appendFile(file, 'y'.repeat(50 * 1024));
    const partial = await run();
    expect(partial.evidence).toMatchObject({ newMarks: 0, cutLines: 1 });
    advance(1000);
    await appendFile(file, `${'y'.repeat(30 * 1024)}\n${mark(5)}`);
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ newMarks: 1, lastSeq: 5, cutLines: 1 });
    // 1 MiB appended at once: only the newest 64 KiB are read, and the mark at the end is found.
    advance(1000);
    await appendFile(file, `${'z'.repeat(1024 * 1024)}\n${mark(6)}`);
    const flood = await run();
    expect(flood.outcome).toBe('success');
    expect(flood.evidence).toMatchObject({ lastSeq: 6 });
    expect(flood.evidence?.skippedBytes).toBeGreaterThan(900 * 1024);
  });

  test('a file that does not exist yet is unknown; once it appears, all of it is new', async () => {
    const { file, run, advance } = setup();
    const missing = await run();
    expect(missing.outcome).toBe('unknown');
    expect(missing.evidence).toMatchObject({ errno: 'ENOENT', path: file });
    advance(1000);
    await writeFile(file, mark(1));
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ newMarks: 1, lastSeq: 1 });
  });

  test('no console logfile configured is unknown', async () => {
    const probe = new LogMarksProbe({}, { periodMs: PERIOD });
    const r = await probe.run({ name: 'vm' }, { timeoutMs: 1000, signal: new AbortController().signal });
    expect(r).toMatchObject({ outcome: 'unknown', detail: 'no console logfile configured' });
  });
});

describe('log-marks, log-entries source', () => {
  test('newlogd LogEntry lines: the app name line and invalid JSON are counted, never fatal', async () => {
    const file = join(dir, 'app.8ce1cc69-e1bb-4fe3-9613-e3eb1c5f5c4d.log1234');
    const { run, advance } = setup({ source: 'log-entries', path: file });
    await writeFile(file, `my-app\n${entry('[    0.588334] tpm_tis MSFT0101:00: 2.0 TPM')}`);
    const base = await run(undefined);
    expect(base.outcome).toBe('unknown');
    expect(base.evidence).toMatchObject({ source: 'log-entries', invalidLines: 1, newMarks: 0 });

    advance(PERIOD);
    await appendFile(file, `{"content": broken\n[1,2]\n{"severity":"info"}\n${entry(mark(4).trimEnd(), 2)}\n`);
    const r = await run(undefined);
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ newMarks: 1, lastSeq: 4, invalidLines: 4, lastMarkLogged: '2024-11-18T13:03:48.398Z' });

    advance(PERIOD);
    await appendFile(file, entry('Kernel panic - not syncing: Fatal exception', 3));
    const p = await run(undefined);
    expect(p.outcome).toBe('failure');
    expect(events(p)).toEqual([{ kind: 'panic', line: 'Kernel panic - not syncing: Fatal exception', ageMs: 0 }]);
  });

  test('eden pod logs --format=json lines, and memlogd lines', async () => {
    const file = join(dir, 'eden.json');
    const { run, advance } = setup({ source: 'log-entries', path: file });
    await writeFile(file, '');
    await run(undefined);
    advance(1000);
    await appendFile(file, `${edenEntry('eve-diag mark seq=10 agent=x')}${JSON.stringify({ time: '2026-12-03T06:00:01Z', source: 'guest_vm-x.1.1', msg: 'eve-diag mark seq=11 agent=x' })}\n`);
    const r = await run(undefined);
    expect(r.outcome).toBe('success');
    expect(r.evidence).toMatchObject({ newMarks: 2, lastSeq: 11, lastMarkLogged: '2026-12-03T06:00:01.000Z' });
    expect(r.evidence?.invalidLines).toBeUndefined();
  });

  test('sourcePattern: entries from another source (injected into this app\'s file) do not count', async () => {
    const file = join(dir, 'sources.json');
    const { run, advance } = setup({ source: 'log-entries', path: file, sourcePattern: '^8ce1cc69-e1bb-4fe3-9613-e3eb1c5f5c4d\\.' });
    await writeFile(file, '');
    await run(undefined);
    advance(1000);
    await appendFile(file, edenEntry('eve-diag mark seq=50 agent=x'));
    const other = await run(undefined);
    expect(other.evidence).toMatchObject({ newMarks: 0, otherSourceLines: 1 });
    advance(1000);
    await appendFile(file, entry('eve-diag mark seq=2 agent=x'));
    const own = await run(undefined);
    expect(own.outcome).toBe('success');
    expect(own.evidence).toMatchObject({ newMarks: 1, lastSeq: 2 });
    expect(() => new LogMarksProbe({ sourcePattern: 'x' }, { periodMs: 1000 })).toThrow(/^sourcePattern: only with source log-entries/);
  });

  test('a glob path follows the newest file (newlogd rotates); .gz files are ignored', async () => {
    const d = join(dir, 'collect');
    await mkdir(d);
    const glob = join(d, 'app.u1.log*');
    const { run, advance } = setup({ source: 'log-entries', path: glob });
    const none = await run(undefined);
    expect(none.outcome).toBe('unknown');
    expect(none.evidence).toMatchObject({ errno: 'ENOENT' });

    advance(1000);
    await writeFile(join(d, 'app.u1.log.1.gz'), 'not text');
    await writeFile(join(d, 'app.u2.log111'), entry(mark(99).trimEnd()));
    await writeFile(join(d, 'app.u1.log111'), `app\n${entry(mark(1).trimEnd())}`);
    const first = await run(undefined);
    expect(first.outcome).toBe('success');
    expect(first.evidence).toMatchObject({ file: join(d, 'app.u1.log111'), lastSeq: 1 });

    advance(1000);
    await rm(join(d, 'app.u1.log111')); // moved to appUpload/ as .gz
    await writeFile(join(d, 'app.u1.log222'), `app\n${entry(mark(2).trimEnd(), 2)}`);
    const next = await run(undefined);
    expect(next.outcome).toBe('success');
    expect(next.evidence).toMatchObject({ file: join(d, 'app.u1.log222'), reset: 'new-file', lastSeq: 2 });
  });

  test('an entry whose content holds many lines, and a line over the entry bound', async () => {
    const file = join(dir, 'multi.json');
    const { run, advance } = setup({ source: 'log-entries', path: file, maxLineBytes: 4096 });
    await writeFile(file, '');
    await run(undefined);
    advance(1000);
    await appendFile(file, `${entry(`${'a\n'.repeat(10)}BUG: kernel NULL pointer dereference, address: 0000000000000000`)}${entry('x'.repeat(10_000))}${entry(mark(3).trimEnd())}`);
    const r = await run(undefined);
    expect(r.outcome).toBe('success');
    expect(events(r).map((e) => e.kind)).toEqual(['oops']);
    expect(r.evidence).toMatchObject({ cutLines: 1, invalidLines: 1, lastSeq: 3 });
  });
});

describe('log-marks params and helpers', () => {
  test('invalid params throw, naming the field', () => {
    const ctx = { periodMs: 1000 };
    expect(() => new LogMarksProbe({ source: 'log-entries' }, ctx)).toThrow(/^path: required/);
    expect(() => new LogMarksProbe({ pattern: '(' }, ctx)).toThrow(/^pattern:/);
    expect(() => new LogMarksProbe({ withinPeriods: 0 }, ctx)).toThrow(/^withinPeriods:/);
    expect(() => new LogMarksProbe({ maxReadBytes: 10 }, ctx)).toThrow(/^maxReadBytes:/);
    expect(() => new LogMarksProbe({ maxLineBytes: 1 << 21 }, ctx)).toThrow(/^maxLineBytes:/);
    expect(() => new LogMarksProbe({ source: 'log-entries', path: '/a/*/x.log' }, ctx)).toThrow(/^path: a glob only/);
    expect(() => new LogMarksProbe({ source: 'syslog' as 'console' }, ctx)).toThrow(/^source:/);
    expect(createProbe({ type: 'log-marks', params: {} }, { links: new QmpLinks(), periodMs: 1000 }).kind).toBe('log-marks');
  });

  test('kernelEventKind', () => {
    expect(kernelEventKind('[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs')).toBe('panic');
    expect(kernelEventKind('---[ end Kernel panic - not syncing: x ]---')).toBeUndefined();
    expect(kernelEventKind('[ 2.0] Oops: 0002 [#1] PREEMPT SMP NOPTI')).toBe('oops');
    expect(kernelEventKind('[ 2.0] BUG: unable to handle page fault for address: 0')).toBe('oops');
    expect(kernelEventKind('[ 3.0] INFO: task sh:1 blocked for more than 120 seconds.')).toBe('hung-task');
    expect(kernelEventKind('[ 4.0] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [a:1]')).toBe('soft-lockup');
    expect(kernelEventKind('[ 5.0] NMI watchdog: Watchdog detected hard LOCKUP on cpu 0')).toBe('hard-lockup');
    expect(kernelEventKind('[ 6.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:')).toBe('rcu-stall');
    expect(kernelEventKind('[ 7.0] Out of memory: Killed process 1 (x) total-vm:1kB')).toBe('oom');
    expect(kernelEventKind('[ 7.0] Memory cgroup out of memory: Killed process 1 (x)')).toBe('oom');
    expect(kernelEventKind('all fine')).toBeUndefined();
  });

  test('classify: kernel alive and log marks failing is guest-userspace-hung', () => {
    const kernel: ScenarioObservation = { scenario: 'kernel', probe: 'kernel-heartbeat', result: 'success', last: { outcome: 'success', detail: 'alive', evidence: { status: 'alive' } } };
    const marks: ScenarioObservation = { scenario: 'app-marks', probe: 'log-marks', result: 'failure', last: { outcome: 'failure', detail: 'no mark' } };
    expect(classify({ app: 'vm', scenarios: [kernel, marks] })).toMatchObject({ verdict: 'guest-userspace-hung', reason: 'kernel alive, app-marks failing' });
  });
});
