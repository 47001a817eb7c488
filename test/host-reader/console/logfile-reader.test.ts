import { appendFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ConsoleAbortError, ConsoleError, ConsoleTimeoutError } from '../../../host-reader/console/errors.js';
import { LogfileTail, logfileSize, readLogfile, tailLogfile } from '../../../host-reader/console/logfile-reader.js';

let dir: string;
let log: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'logfile-reader-'));
  log = join(dir, 'console.log');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readLogfile', () => {
  test('reads from an offset to the end', async () => {
    writeFileSync(log, 'hello world');
    const r = await readLogfile(log, { from: 6 });
    expect(r.data.toString()).toBe('world');
    expect(r).toMatchObject({ start: 6, end: 11, size: 11, reset: false, skipped: 0, remaining: 0 });
  });

  test('bounded read keeping the head: the rest is left for the next read', async () => {
    writeFileSync(log, '0123456789');
    const r = await readLogfile(log, { from: 2, maxBytes: 3 });
    expect(r.data.toString()).toBe('234');
    expect(r).toMatchObject({ start: 2, end: 5, remaining: 5, skipped: 0 });
    const next = await readLogfile(log, { from: r.end, maxBytes: 3 });
    expect(next.data.toString()).toBe('567');
  });

  test('bounded read keeping the tail skips the middle', async () => {
    writeFileSync(log, '0123456789');
    const r = await readLogfile(log, { from: 1, maxBytes: 3, keep: 'tail' });
    expect(r.data.toString()).toBe('789');
    expect(r).toMatchObject({ start: 7, end: 10, skipped: 6, remaining: 0 });
    expect((await tailLogfile(log, 4)).data.toString()).toBe('6789');
  });

  test('an offset past the end means the file was truncated: it restarts at 0', async () => {
    writeFileSync(log, 'new');
    const r = await readLogfile(log, { from: 100 });
    expect(r).toMatchObject({ reset: true, start: 0, end: 3 });
    expect(r.data.toString()).toBe('new');
  });

  test('a replaced file (other inode) restarts at 0 even when it is longer', async () => {
    writeFileSync(log, 'first file');
    const first = await readLogfile(log, { from: 0 });
    writeFileSync(join(dir, 'other'), 'second file, longer than the first');
    renameSync(join(dir, 'other'), log);
    const r = await readLogfile(log, { from: first.end, identity: first.identity });
    expect(r.reset).toBe(true);
    expect(r.data.toString()).toBe('second file, longer than the first');
  });

  test('a missing file is a ConsoleError with the errno cause', async () => {
    const e = await readLogfile(join(dir, 'nope')).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConsoleError);
    expect(((e as ConsoleError).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(await logfileSize(join(dir, 'nope'))).toBe(0);
  });

  test('bad arguments throw at once', async () => {
    await expect(readLogfile(log, { from: -1 })).rejects.toThrow(RangeError);
    await expect(readLogfile(log, { maxBytes: 1.5 })).rejects.toThrow(RangeError);
  });
});

describe('LogfileTail', () => {
  test('poll returns what was appended since, bounded per poll', async () => {
    writeFileSync(log, 'old\n');
    const tail = await LogfileTail.atEnd(log, { maxReadBytes: 4 });
    expect(tail.offset).toBe(4);
    appendFileSync(log, 'abcdefgh');
    const a = await tail.poll();
    expect(a.data.toString()).toBe('abcd');
    expect(a.remaining).toBe(4);
    expect((await tail.poll()).data.toString()).toBe('efgh');
    expect((await tail.poll()).data.length).toBe(0);
  });

  test('a missing file reads as empty, then is followed once it appears', async () => {
    const tail = await LogfileTail.atEnd(log);
    expect(tail.offset).toBe(0);
    expect((await tail.poll()).data.length).toBe(0);
    writeFileSync(log, 'appeared');
    expect((await tail.poll()).data.toString()).toBe('appeared');
  });

  test('truncation is noticed and counted', async () => {
    writeFileSync(log, 'a long first life of the log\n');
    const tail = await LogfileTail.atEnd(log);
    truncateSync(log, 0);
    appendFileSync(log, 'reborn\n');
    const r = await tail.poll();
    expect(r.reset).toBe(true);
    expect(r.data.toString()).toBe('reborn\n');
    expect(tail.resets).toBe(1);
  });

  test('waitFor matches text written later, across reads', async () => {
    writeFileSync(log, 'sysrq: Show State (old, before the tail)\n');
    const tail = await LogfileTail.atEnd(log, { pollMs: 10, maxReadBytes: 5 });
    const waiting = tail.waitFor(/sysrq: (Show [A-Za-z ]+)\r?\n/, { timeoutMs: 2000 });
    setTimeout(() => appendFileSync(log, 'noise\r\n[ 1.0] sys'), 30);
    setTimeout(() => appendFileSync(log, 'rq: Show Blocked State\r\n'), 60);
    const { match } = await waiting;
    expect(match[1]).toBe('Show Blocked State');
  });

  test('waitFor survives a truncation', async () => {
    writeFileSync(log, 'x'.repeat(100));
    const tail = await LogfileTail.atEnd(log, { pollMs: 10 });
    const waiting = tail.waitFor(/READY/, { timeoutMs: 2000 });
    setTimeout(() => writeFileSync(log, 'READY\n'), 30);
    await expect(waiting).resolves.toMatchObject({ end: 6 });
  });

  test('waitFor times out with ConsoleTimeoutError', async () => {
    writeFileSync(log, '');
    const tail = new LogfileTail(log, { pollMs: 10 });
    const e = await tail.waitFor(/never/, { timeoutMs: 50 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConsoleTimeoutError);
  });

  test('waitFor honours an AbortSignal', async () => {
    writeFileSync(log, '');
    const tail = new LogfileTail(log, { pollMs: 10 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 30);
    await expect(tail.waitFor(/never/, { timeoutMs: 5000, signal: ac.signal })).rejects.toBeInstanceOf(ConsoleAbortError);
  });

  test('waitFor matches within a bounded window only', async () => {
    writeFileSync(log, '');
    const tail = new LogfileTail(log, { pollMs: 10 });
    appendFileSync(log, `START${'y'.repeat(1000)}END`);
    await expect(tail.waitFor(/START[\s\S]*END/, { timeoutMs: 60, windowChars: 100 })).rejects.toBeInstanceOf(ConsoleTimeoutError);
  });

  test('waitQuiet waits for the file to stop growing, without moving the offset', async () => {
    writeFileSync(log, '');
    const tail = new LogfileTail(log, { pollMs: 10 });
    let n = 0;
    const writer = setInterval(() => {
      if (n++ < 5) appendFileSync(log, 'more\n');
    }, 20);
    try {
      const r = await tail.waitQuiet({ quietMs: 80, timeoutMs: 2000 });
      expect(r.quiet).toBe(true);
      expect(r.size).toBe(25);
      expect(r.waitedMs).toBeGreaterThanOrEqual(80);
      expect(tail.offset).toBe(0);
    } finally {
      clearInterval(writer);
    }
  });

  test('waitQuiet gives up after timeoutMs when output never settles', async () => {
    writeFileSync(log, '');
    const tail = new LogfileTail(log, { pollMs: 5 });
    const writer = setInterval(() => appendFileSync(log, 'spam\n'), 5);
    try {
      const r = await tail.waitQuiet({ quietMs: 100, timeoutMs: 120 });
      expect(r.quiet).toBe(false);
    } finally {
      clearInterval(writer);
    }
  });
});
