import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, test } from 'vitest';
import { maxWaitRatio, parseSchedstat, readThreadWaits } from '../../host-reader/vcpu-wait.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A fake /proc with one process and its threads' schedstat. */
async function fakeProc(pid: number, threads: Record<string, string>): Promise<string> {
  dir ??= await mkdtemp(join(tmpdir(), 'vcpu-wait-'));
  for (const [tid, text] of Object.entries(threads)) {
    await mkdir(join(dir, String(pid), 'task', tid), { recursive: true });
    await writeFile(join(dir, String(pid), 'task', tid, 'schedstat'), text);
  }
  return dir;
}

describe('parseSchedstat', () => {
  test('the wait is the second number; anything else is undefined', () => {
    expect(parseSchedstat('188306704 14339167 370\n')).toBe(14339167n);
    // Past 2^53 ns (104 days of waiting) the value stays exact.
    expect(parseSchedstat('1 18446744073709551615 2\n')).toBe(18446744073709551615n);
    for (const bad of ['', '1 2\n', '1 2 3 4\n', 'a b c\n', '-1 2 3\n', '1 2 3\n\n', `1 ${'9'.repeat(21)} 3\n`]) expect(parseSchedstat(bad), bad).toBeUndefined();
  });

  test('any text: a bigint or undefined, never a throw', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (t) => {
        const v = parseSchedstat(t);
        expect(v === undefined || typeof v === 'bigint').toBe(true);
      }),
      { seed: 14, numRuns: 2000 },
    );
  });
});

describe('readThreadWaits and maxWaitRatio', () => {
  test('the most-waiting thread over the window; a thread that appeared or went backwards is left out', async () => {
    const root = await fakeProc(42, { '42': '10 1000000 1\n', '43': '10 5000000 1\n', '44': 'garbage' });
    let t = 1000;
    const a = await readThreadWaits(42, root, () => t);
    expect([...a.waits.keys()].sort()).toEqual([42, 43]);
    await fakeProc(42, { '42': '10 2000000 1\n', '43': '10 405000000 1\n', '45': '10 999999999 1\n' });
    t = 1500;
    const b = await readThreadWaits(42, root, () => t);
    // Thread 43 waited 400 ms of 500: 0.8. Thread 45 is new: no window for it.
    expect(maxWaitRatio(a, b)).toEqual({ ratio: 0.8, tid: 43, windowMs: 500 });
    expect(maxWaitRatio(b, a)).toBeUndefined(); // no window
    expect(maxWaitRatio(a, { at: 2000, waits: new Map([[43, 0n]]) })).toBeUndefined(); // went backwards (a new thread with a reused tid)
    expect(maxWaitRatio(a, { at: 1001, waits: new Map([[43, 9_000_000_000n]]) })?.ratio).toBe(1); // clamped
  });

  test('a process that is gone rejects; this process has threads to read', async () => {
    const root = await fakeProc(42, {});
    await expect(readThreadWaits(7, root)).rejects.toThrow(/ENOENT/);
    const self = await readThreadWaits(process.pid);
    expect(self.waits.size).toBeGreaterThan(0);
  });
});
