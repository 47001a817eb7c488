import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { cleanSpool, externalArtifact, isExternalArtifact, readManifest, writeBundle, type ReportInput } from '../../../monitor/report/bundle.js';
import { Spool } from '../../../monitor/report/spool.js';
import { manifestProblems, type ReportManifest } from '../../../protocol/report-manifest.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

/** External artifacts (a memory dump written to disk by QEMU): moved into the bundle, hashed, not shipped. */

const temp = tempDirs('eve-diag-external-');
const KiB = 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A dump-like file of `bytes` in `dir` (not all zeroes, so a hash mix-up shows). */
function dumpFile(dir: string, bytes: number, name = '.tmp-memory-1.kdump'): { path: string; data: Buffer } {
  const data = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4096) data[i] = i % 251;
  const path = join(dir, name);
  writeFileSync(path, data);
  return { path, data };
}

const input = (path: string, over: Partial<ReportInput> = {}): ReportInput => ({
  app: 'vm1',
  verdict: 'guest-panicked',
  createdAt: new Date('2026-12-03T06:00:00.000Z'),
  steps: [
    { kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: 'Kernel panic\n' }] },
    { kind: 'memory-dump', ok: true, summary: 'dump', artifacts: [externalArtifact('memory.kdump', 'application/vnd.eve-diag.kdump', path)] },
  ],
  ...over,
});

describe('external artifacts in a bundle', () => {
  test('the file moves into the bundle, is listed under external with its size and SHA-256, and is not counted in totalBytes', async () => {
    const spool = temp();
    const { path, data } = dumpFile(spool, 300 * KiB);
    const a = externalArtifact('memory.kdump', 'application/vnd.eve-diag.kdump', path);
    expect(isExternalArtifact(a)).toBe(true);
    expect(isExternalArtifact({ name: 'x', mediaType: 'text/plain', data: '' })).toBe(false);

    const b = await writeBundle(spool, input(path));
    expect(existsSync(path)).toBe(false);
    const step = b.manifest.steps[1];
    expect(step?.artifacts).toEqual([]);
    expect(step?.external).toEqual([
      { name: 'memory.kdump', file: '01-memory.kdump', mediaType: 'application/vnd.eve-diag.kdump', bytes: data.length, sha256: sha(data), uploaded: false },
    ]);
    expect(b.manifest.steps[0]?.external).toBeUndefined(); // only where there is one
    expect(b.manifest.totalBytes).toBe('Kernel panic\n'.length);
    expect(b.manifest.truncated).toBe(false);
    expect(readFileSync(join(b.dir, '01-memory.kdump')).equals(data)).toBe(true);

    // readManifest checks the external file too.
    expect((await readManifest(b.dir)).steps[1]?.external?.[0]?.sha256).toBe(sha(data));
    const damaged = Buffer.from(data);
    damaged[0] = 0xff;
    writeFileSync(join(b.dir, '01-memory.kdump'), damaged);
    await expect(readManifest(b.dir)).rejects.toThrow(/external file 01-memory\.kdump does not match its sha256/);
  });

  test('larger than maxExternalBytes, gone, or not a regular file: omitted, and the file is deleted', async () => {
    const spool = temp();
    const big = dumpFile(spool, 64 * KiB);
    const b = await writeBundle(spool, input(big.path), { maxExternalBytes: 10 * KiB });
    expect(existsSync(big.path)).toBe(false);
    expect(b.manifest.steps[1]?.external).toBeUndefined();
    expect(b.manifest.steps[1]?.omitted).toEqual([{ name: 'memory.kdump', bytes: 64 * KiB, reason: expect.stringMatching(/no room/) }]);
    expect(b.manifest.truncated).toBe(true);
    expect(readdirSync(b.dir).sort()).toEqual(['00-console.txt', 'manifest.json']);

    const gone = await writeBundle(spool, input(join(spool, '.tmp-never-written')));
    expect(gone.manifest.steps[1]?.omitted[0]?.reason).toMatch(/gone/);
  });

  test('a bad input throws before anything is written, and still deletes the external file', async () => {
    const spool = temp();
    const { path } = dumpFile(spool, 4 * KiB);
    await expect(writeBundle(spool, input(path, { verdict: 'nope' as never }))).rejects.toThrow(RangeError);
    expect(existsSync(path)).toBe(false);
    const rel = input('relative.kdump');
    await expect(writeBundle(spool, rel)).rejects.toThrow(/absolute path/);
  });

  test('the schema: uploaded is always false, and a file may not be both an artifact and external', async () => {
    const spool = temp();
    const { path } = dumpFile(spool, 4 * KiB);
    const m = (await writeBundle(spool, input(path))).manifest;
    expect(manifestProblems(m)).toEqual([]);
    const copy = () => JSON.parse(JSON.stringify(m)) as ReportManifest & { steps: { external: Record<string, unknown>[] }[] };
    const up = copy();
    (up.steps[1]?.external[0] as Record<string, unknown>)['uploaded'] = true;
    expect(manifestProblems(up).join('\n')).toMatch(/uploaded: must be false/);
    const twice = copy();
    (twice.steps[1]?.external[0] as Record<string, unknown>)['file'] = '00-console.txt';
    expect(manifestProblems(twice).join('\n')).toMatch(/appears twice/);
  });

  test('cleanSpool removes stale .tmp-* files (a dump nobody took in), leaving fresh ones', async () => {
    const spool = temp();
    const old = dumpFile(spool, KiB, '.tmp-memory-old.kdump');
    const fresh = dumpFile(spool, KiB, '.tmp-memory-new.kdump');
    const hourAgo = Date.now() / 1000 - 7200;
    utimesSync(old.path, hourAgo, hourAgo);
    expect(await cleanSpool(spool, 3600_000)).toBe(1);
    expect(existsSync(old.path)).toBe(false);
    expect(existsSync(fresh.path)).toBe(true);
  });
});

describe('external artifacts in the Spool', () => {
  const report = (app: string, bytes: number, at: number) => ({
    app,
    verdict: 'guest-kernel-hung' as const,
    createdAt: new Date(Date.UTC(2026, 11, 1, 0, 0, at)),
    steps: [{ kind: 'console-capture', ok: true, summary: 's', artifacts: [{ name: 'console.txt', mediaType: 'text/plain' as const, data: 'x'.repeat(bytes) }] }],
  });

  test('the quota counts a dump; it may push out delivered bundles, never an undelivered report', async () => {
    const dir = temp();
    const evicted: string[] = [];
    const s = new Spool({ dir, quotaBytes: 1000 * KiB, maxBundleBytes: 100 * KiB, events: { evicted: (e) => evicted.push(e.id) } });
    const a = await s.write(report('a', 90 * KiB, 1));
    const b = await s.write(report('b', 90 * KiB, 2));
    await s.markDelivered(a.id, { stored: true });

    // 600 KiB fits beside two bundles and room for a third.
    const d1 = dumpFile(dir, 600 * KiB);
    const c = await s.write({ ...report('c', KiB, 3), steps: [{ kind: 'memory-dump', ok: true, summary: 'd', artifacts: [externalArtifact('memory.kdump', 'application/vnd.eve-diag.kdump', d1.path)] }] });
    expect(c.manifest.steps[0]?.external?.[0]?.bytes).toBe(600 * KiB);
    expect((await s.usage()).bytes).toBeGreaterThan(780 * KiB);
    expect(evicted).toEqual([]);

    // Another 600 KiB: only the delivered a may go, which is not enough: the dump is left out, b and c stay.
    const d2 = dumpFile(dir, 600 * KiB, '.tmp-memory-2.kdump');
    const e = await s.write({ ...report('e', KiB, 4), steps: [{ kind: 'memory-dump', ok: true, summary: 'd', artifacts: [externalArtifact('memory.kdump', 'application/vnd.eve-diag.kdump', d2.path)] }] });
    expect(e.manifest.steps[0]?.external).toBeUndefined();
    expect(e.manifest.steps[0]?.omitted[0]?.reason).toMatch(/no room/);
    expect(existsSync(d2.path)).toBe(false);
    expect(evicted).toEqual([a.id]);
    expect((await s.entries()).map((x) => x.id)).toEqual([b.id, c.id, e.id]);
  });

  test('a dump over maxExternalBytes is left out without evicting anything', async () => {
    const dir = temp();
    const s = new Spool({ dir, quotaBytes: 1000 * KiB, maxBundleBytes: 100 * KiB, maxExternalBytes: 100 * KiB });
    const d = dumpFile(dir, 200 * KiB);
    const b = await s.write({ ...report('a', KiB, 1), steps: [{ kind: 'memory-dump', ok: true, summary: 'd', artifacts: [externalArtifact('memory.kdump', 'application/vnd.eve-diag.kdump', d.path)] }] });
    expect(b.manifest.steps[0]?.omitted).toHaveLength(1);
    expect(() => new Spool({ dir, quotaBytes: 10, maxBundleBytes: 10, maxExternalBytes: -1 })).toThrow(RangeError);
  });
});
