import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  cleanSpool,
  listSpool,
  ManifestError,
  newBundleId,
  readManifest,
  ReportError,
  writeBundle,
  type ReportInput,
} from '../../../monitor/report/bundle.js';
import { manifestProblems } from '../../../protocol/report-manifest.js';

let spool: string;
beforeEach(async () => {
  spool = join(await mkdtemp(join(tmpdir(), 'report-spool-')), 'spool');
});
afterEach(async () => {
  await rm(join(spool, '..'), { recursive: true, force: true });
});

const input = (over: Partial<ReportInput> = {}): ReportInput => ({
  app: { name: 'vm1' },
  verdict: 'guest-userspace-hung',
  evidence: { kernel: { status: 'alive', beats: 120 }, agent: { status: 'stalled' }, note: 'guest said \x1b[31mhi\x1b[0m', nothing: undefined },
  timeline: [
    { at: Date.UTC(2026, 10, 26, 12, 0, 0), kernel: 118, agent: 40 },
    { at: '2026-11-26T12:00:01.000Z', kernel: 119, agent: 40 },
    { at: new Date(Date.UTC(2026, 10, 26, 12, 0, 2)), kernel: 120, agent: 40 },
  ],
  steps: [
    {
      kind: 'sysrq',
      ok: true,
      status: 'done',
      summary: 'sysrq w t\nvia break',
      startedAt: '2026-11-26T12:00:03.000Z',
      durationMs: 812.4,
      artifacts: [
        { name: 'sysrq-w.txt', mediaType: 'text/plain', data: 'sysrq: Show Blocked State\r\n\x1b[0m' },
        { name: 'sysrq-t.txt', mediaType: 'text/plain', data: Buffer.from('sysrq: Show State\r\n') },
      ],
    },
    { kind: 'qmp-state', ok: false, summary: 'qmp-state: no QMP socket', artifacts: [] },
    {
      kind: 'host-state',
      ok: true,
      summary: 'host: load 1',
      artifacts: [
        { name: 'host-state.json', mediaType: 'application/json', data: '{\n  "load": 1\n}\n' },
        { name: 'raw.bin', mediaType: 'application/octet-stream', data: new Uint8Array([0, 1, 2, 0x1b, 255]) },
      ],
    },
  ],
  createdAt: new Date('2026-11-26T12:00:05.123Z'),
  ...over,
});

describe('writeBundle', () => {
  test('writes the manifest and the artifacts; the manifest validates and matches the files', async () => {
    const { id, dir, manifest } = await writeBundle(spool, input());
    expect(id).toMatch(/^20261126T120005123Z-vm1-[0-9a-f]{8}$/);
    expect(dir).toBe(join(spool, id));
    expect(readdirSync(dir).sort()).toEqual(['00-sysrq-t.txt', '00-sysrq-w.txt', '02-host-state.json', '02-raw.bin', 'manifest.json']);
    expect(readdirSync(spool)).toEqual([id]); // no temporary directory left
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'manifest.json')).mode & 0o777).toBe(0o600);

    expect(readFileSync(join(dir, '00-sysrq-w.txt'), 'utf8')).toBe('sysrq: Show Blocked State\n'); // sanitized
    expect(readFileSync(join(dir, '02-raw.bin'))).toEqual(Buffer.from([0, 1, 2, 0x1b, 255])); // binary kept
    expect(manifest).toMatchObject({
      schema: 'eve-diag/report-manifest',
      schemaVersion: 1,
      id,
      createdAt: '2026-11-26T12:00:05.123Z',
      app: { name: 'vm1' },
      verdict: 'guest-userspace-hung',
      evidence: { kernel: { status: 'alive', beats: 120 }, agent: { status: 'stalled' }, note: 'guest said hi' },
      timeline: [
        { at: '2026-11-26T12:00:00.000Z', kernel: 118, agent: 40 },
        { at: '2026-11-26T12:00:01.000Z', kernel: 119, agent: 40 },
        { at: '2026-11-26T12:00:02.000Z', kernel: 120, agent: 40 },
      ],
      truncated: false,
    });
    expect(manifest.steps[0]).toMatchObject({ index: 0, kind: 'sysrq', ok: true, status: 'done', summary: 'sysrq w t via break', durationMs: 812 });
    expect(manifest.steps[1]).toMatchObject({ index: 1, status: 'done', startedAt: null, durationMs: null, artifacts: [] });
    const w = manifest.steps[0]?.artifacts[0];
    expect(w).toEqual({
      name: 'sysrq-w.txt',
      file: '00-sysrq-w.txt',
      mediaType: 'text/plain',
      bytes: 26,
      sha256: createHash('sha256').update('sysrq: Show Blocked State\n').digest('hex'),
      truncated: false,
    });
    expect(manifest.totalBytes).toBe(readdirSync(dir).filter((f) => f !== 'manifest.json').reduce((n, f) => n + statSync(join(dir, f)).size, 0));
    expect(manifestProblems(manifest)).toEqual([]);

    const read = await readManifest(dir);
    expect(read).toEqual(manifest);
    expect(await listSpool(spool)).toEqual([{ id, dir }]);
  });

  test('a write that fails leaves no bundle and no temporary directory', async () => {
    let writes = 0;
    const io = {
      async writeFile(path: string, data: Uint8Array) {
        if (++writes === 3) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        await writeFile(path, data);
      },
    };
    const e = await writeBundle(spool, input(), { io }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ReportError);
    expect((e as ReportError).message).toMatch(/ENOSPC/);
    expect(readdirSync(spool)).toEqual([]);
    expect(await listSpool(spool)).toEqual([]);
  });

  test('the manifest is written last: a reader never sees a bundle without one', async () => {
    const order: string[] = [];
    await writeBundle(spool, input(), { io: { writeFile: async (p, d) => (order.push(p.split('/').pop() ?? ''), writeFile(p, d)) } });
    expect(order.at(-1)).toBe('manifest.json');
    expect(order.every((p, i) => i === order.length - 1 || p !== 'manifest.json')).toBe(true);
  });

  test('an existing bundle with the same id is never overwritten', async () => {
    const { id } = await writeBundle(spool, input(), { id: 'fixed-id' });
    await expect(writeBundle(spool, input(), { id })).rejects.toThrow(/already exists/);
    expect(readdirSync(spool)).toEqual(['fixed-id']);
  });

  test.each([
    ['a path separator', 'dir/x.txt'],
    ['a parent reference', '..'],
    ['a leading dot', '.hidden'],
    ['a backslash', 'a\\b'],
    ['an empty name', ''],
  ])('an artifact name with %s is refused before anything is written', async (_what, name) => {
    const bad = input({ steps: [{ kind: 'x', ok: true, summary: '', artifacts: [{ name, mediaType: 'text/plain', data: 'x' }] }] });
    await expect(writeBundle(spool, bad)).rejects.toThrow(/not a safe file name/);
    expect(() => readdirSync(spool)).toThrow(); // the spool was not even created
  });

  test('the same artifact name twice in a step is refused; in two steps it is fine', async () => {
    const a = { name: 'sysrq-w.txt', mediaType: 'text/plain' as const, data: 'w' };
    await expect(writeBundle(spool, input({ steps: [{ kind: 'x', ok: true, summary: '', artifacts: [a, a] }] }))).rejects.toThrow(/appears twice/);
    const two = await writeBundle(spool, input({ steps: [0, 1].map(() => ({ kind: 'sysrq', ok: true, summary: '', artifacts: [a] })) }));
    expect(two.manifest.steps.map((s) => s.artifacts[0]?.file)).toEqual(['00-sysrq-w.txt', '01-sysrq-w.txt']);
  });

  test('bad input is refused: verdict, app, bundle id, timeline', async () => {
    await expect(writeBundle(spool, input({ verdict: 'bad' as 'unknown' }))).rejects.toThrow(/unknown verdict/);
    await expect(writeBundle(spool, input({ app: '' }))).rejects.toThrow(TypeError);
    await expect(writeBundle(spool, input(), { id: '../x' })).rejects.toThrow(/bundle id/);
    await expect(writeBundle(spool, input({ timeline: [{ at: 'noon' }] }))).rejects.toThrow(/timeline\[0\]\.at/);
  });

  test('the total size is bounded: text is cut, the rest omitted, and the manifest says so', async () => {
    const steps = [
      { kind: 'console-capture', ok: true, summary: 'big', artifacts: [{ name: 'console.txt', mediaType: 'text/plain' as const, data: 'c'.repeat(200_000) }] },
      { kind: 'qmp-state', ok: true, summary: 'json', artifacts: [{ name: 'q.json', mediaType: 'application/json' as const, data: `"${'q'.repeat(50_000)}"` }] },
    ];
    const { dir, manifest } = await writeBundle(spool, input({ steps }), { maxTotalBytes: 100_000 });
    const total = readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
    expect(total).toBeLessThanOrEqual(100_000);
    expect(manifest.truncated).toBe(true);
    expect(manifest.steps[0]?.artifacts[0]).toMatchObject({ truncated: true });
    expect(manifest.steps[1]?.artifacts).toEqual([]);
    expect(manifest.steps[1]?.omitted).toEqual([{ name: 'q.json', bytes: 50_002, reason: 'the bundle size cap was reached' }]);
    await expect(readManifest(dir)).resolves.toBeDefined();
  });

  test('timeline and evidence are bounded', async () => {
    const timeline = Array.from({ length: 50 }, (_, i) => ({ at: i * 1000, n: i }));
    const { manifest } = await writeBundle(spool, input({ timeline, evidence: { blob: 'e'.repeat(100_000) } }), {
      maxTimelineSamples: 10,
      maxEvidenceBytes: 1000,
    });
    expect(manifest.timeline.map((t) => t.n)).toEqual([40, 41, 42, 43, 44, 45, 46, 47, 48, 49]); // the newest
    expect(manifest.evidence).toMatchObject({ truncated: true });
    expect(manifest.truncated).toBe(true);
  });
});

describe('readManifest', () => {
  test('a tampered artifact, a missing one, or a broken manifest is a ManifestError', async () => {
    const { dir } = await writeBundle(spool, input());
    writeFileSync(join(dir, '00-sysrq-w.txt'), 'sysrq: Show Blocked Stat!\n');
    await expect(readManifest(dir)).rejects.toThrow(/does not match its sha256/);
    await expect(readManifest(dir, { verifyFiles: false })).resolves.toBeDefined();
    await rm(join(dir, '00-sysrq-t.txt'));
    const e = await readManifest(dir).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ManifestError);
    expect((e as ManifestError).problems.some((p) => /00-sysrq-t.txt is missing/.test(p))).toBe(true);
    writeFileSync(join(dir, 'manifest.json'), '{"schema": "eve-diag/report-manifest"}');
    await expect(readManifest(dir)).rejects.toThrow(/must have property "schemaVersion"/);
    writeFileSync(join(dir, 'manifest.json'), 'not json');
    await expect(readManifest(dir)).rejects.toThrow(/not JSON/);
    await expect(readManifest(join(spool, 'nope'))).rejects.toBeInstanceOf(ReportError);
  });
});

describe('spool', () => {
  test('listSpool lists complete bundles only, oldest first; a missing spool is empty', async () => {
    expect(await listSpool(spool)).toEqual([]);
    const late = await writeBundle(spool, input({ createdAt: new Date('2026-11-26T13:00:00Z') }));
    const early = await writeBundle(spool, input({ createdAt: new Date('2026-11-26T11:00:00Z') }));
    mkdirSync(join(spool, '.tmp-crashed'));
    writeFileSync(join(spool, 'stray-file'), 'x');
    expect((await listSpool(spool)).map((e) => e.id)).toEqual([early.id, late.id]);
  });

  test('cleanSpool removes stale temporary directories only', async () => {
    const { id } = await writeBundle(spool, input());
    mkdirSync(join(spool, '.tmp-old'));
    mkdirSync(join(spool, '.tmp-fresh'));
    const old = new Date(Date.now() - 2 * 3600_000);
    utimesSync(join(spool, '.tmp-old'), old, old);
    expect(await cleanSpool(spool)).toBe(1);
    expect(readdirSync(spool).sort()).toEqual(['.tmp-fresh', id].sort());
  });

  test('bundle ids sort by time and carry a safe app name', () => {
    expect(newBundleId(new Date('2026-01-02T03:04:05.006Z'), '../My App/ä')).toMatch(/^20260102T030405006Z-My_App__-[0-9a-f]{8}$/);
    expect(newBundleId(new Date(0), '...')).toMatch(/^19700101T000000000Z-app-/);
  });
});
