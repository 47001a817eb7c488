import { mkdirSync, readdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { Spool } from '../../../monitor/report/spool.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

const temp = tempDirs('eve-diag-spool-');

const KiB = 1024;
/** A report with one artifact of about `bytes`. */
const report = (app: string, bytes: number, at: number) => ({
  app,
  verdict: 'guest-kernel-hung' as const,
  createdAt: new Date(Date.UTC(2026, 11, 1, 0, 0, at)),
  steps: [{ kind: 'console-capture', ok: true, summary: 's', artifacts: [{ name: 'console.txt', mediaType: 'text/plain' as const, data: 'x'.repeat(bytes) }] }],
});

describe('Spool', () => {
  test('within its quota nothing is evicted; usage counts bundles and bytes', async () => {
    const s = new Spool({ dir: temp(), quotaBytes: 1024 * KiB, maxBundleBytes: 256 * KiB });
    await s.write(report('a', 100 * KiB, 1));
    await s.write(report('b', 100 * KiB, 2));
    const u = await s.usage();
    expect(u.bundles).toBe(2);
    expect(u.undelivered).toBe(2);
    expect(u.bytes).toBeGreaterThan(200 * KiB);
  });

  test('over the quota: delivered bundles go first, oldest first; then the oldest undelivered, recorded as dropped', async () => {
    const evicted: { id: string; delivered: boolean }[] = [];
    const s = new Spool({ dir: temp(), quotaBytes: 600 * KiB, maxBundleBytes: 200 * KiB, events: { evicted: (e) => evicted.push(e) } });
    const a = await s.write(report('a', 150 * KiB, 1));
    const b = await s.write(report('b', 150 * KiB, 2));
    const c = await s.write(report('c', 150 * KiB, 3));
    await s.markDelivered(b.id, { stored: true });
    expect(await s.isDelivered(b.id)).toBe(true);
    // Room for a 200 KiB bundle: 450 KiB + 200 KiB > 600 KiB, so the delivered b goes, not the older a.
    const d = await s.write(report('d', 150 * KiB, 4));
    expect(evicted).toEqual([{ id: b.id, bytes: expect.any(Number), delivered: true }]);
    expect((await s.entries()).map((e) => e.id)).toEqual([a.id, c.id, d.id]);
    expect(await s.dropped()).toEqual([]);
    // Nothing delivered left: the oldest undelivered goes, and the ledger says so.
    const e = await s.write(report('e', 150 * KiB, 5));
    expect(evicted.slice(1)).toEqual([{ id: a.id, bytes: expect.any(Number), delivered: false }]);
    expect((await s.entries()).map((x) => x.id)).toEqual([c.id, d.id, e.id]);
    expect(await s.dropped()).toEqual([{ id: a.id, bytes: expect.any(Number), droppedAt: expect.any(String), reason: 'spool quota' }]);
  });

  test('maintain removes crashed writers’ temporaries past their age, and leaves fresh ones and links alone', async () => {
    const dir = temp();
    const cleaned: number[] = [];
    const s = new Spool({ dir, quotaBytes: 1024 * KiB, maxBundleBytes: 256 * KiB, tmpMaxAgeMs: 60_000, events: { cleaned: (n) => cleaned.push(n) } });
    const old = join(dir, '.tmp-20261201T000000000Z-vm-deadbeef');
    mkdirSync(old);
    writeFileSync(join(old, '00-console.txt'), 'half');
    utimesSync(old, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    mkdirSync(join(dir, '.tmp-20261201T000001000Z-vm-cafecafe')); // a writer at work now
    const outside = temp();
    writeFileSync(join(outside, 'keep'), 'k');
    symlinkSync(outside, join(dir, '20261201T000002000Z-vm-00000000')); // not a bundle: a link
    await s.maintain();
    expect(cleaned).toEqual([1]);
    expect(readdirSync(dir).sort()).toEqual(['.tmp-20261201T000001000Z-vm-cafecafe', '20261201T000002000Z-vm-00000000']);
    expect(readdirSync(outside)).toEqual(['keep']);
    expect(await s.entries()).toEqual([]);
  });

  test('refuses nonsense sizes and a bundle bigger than the quota', () => {
    expect(() => new Spool({ dir: '/x', quotaBytes: 0 })).toThrow(RangeError);
    expect(() => new Spool({ dir: '/x', quotaBytes: 100, maxBundleBytes: 200 })).toThrow(/must not exceed/);
  });

  test('markDelivered refuses an id that is not a bundle name', async () => {
    const s = new Spool({ dir: temp() });
    await expect(s.markDelivered('../etc', {})).rejects.toThrow(/not a safe name/);
  });
});
