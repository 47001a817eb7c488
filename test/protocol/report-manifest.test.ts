import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { isSafeName, manifestProblems, REPORT_MANIFEST_SCHEMA, type ReportManifest } from '../../protocol/report-manifest.js';

const sha = 'a'.repeat(64);
const valid = (): ReportManifest => ({
  schema: 'eve-diag/report-manifest',
  schemaVersion: 1,
  id: '20261126T120000000Z-vm1-0011aabb',
  createdAt: '2026-11-26T12:00:00.000Z',
  app: { name: 'vm1' },
  verdict: 'guest-userspace-hung',
  evidence: { kernel: 'alive', agent: 'stalled' },
  timeline: [{ at: '2026-11-26T11:59:59.000Z', kernel: 10, agent: 3 }],
  steps: [
    {
      index: 0,
      kind: 'sysrq',
      ok: true,
      status: 'done',
      summary: 'sysrq w via break',
      startedAt: '2026-11-26T12:00:00.000Z',
      durationMs: 412,
      artifacts: [{ name: 'sysrq-w.txt', file: '00-sysrq-w.txt', mediaType: 'text/plain', bytes: 10, sha256: sha, truncated: false }],
      omitted: [],
    },
  ],
  totalBytes: 10,
  truncated: false,
});

describe('the manifest schema', () => {
  test('docs/report-manifest.schema.json is the schema the code validates with', () => {
    const published: unknown = JSON.parse(readFileSync(new URL('../../docs/report-manifest.schema.json', import.meta.url), 'utf8'));
    expect(published).toEqual(JSON.parse(JSON.stringify(REPORT_MANIFEST_SCHEMA)));
  });

  test('a valid manifest has no problems', () => {
    expect(manifestProblems(valid())).toEqual([]);
  });

  test.each<[string, (m: ReportManifest) => void, RegExp]>([
    ['wrong schema name', (m) => ((m as { schema: string }).schema = 'other'), /^\/schema: must be "eve-diag\/report-manifest"/],
    ['a future version', (m) => ((m as { schemaVersion: number }).schemaVersion = 2), /^\/schemaVersion: must be 1/],
    ['an unknown verdict', (m) => ((m as { verdict: string }).verdict = 'fine'), /^\/verdict: must be one of/],
    ['an id with a slash', (m) => (m.id = '../evil'), /^\/id: must match/],
    ['a file with a path separator', (m) => (m.steps[0]!.artifacts[0]!.file = 'a/b'), /^\/steps\/0\/artifacts\/0\/file: must match/],
    ['a file named manifest.json', (m) => (m.steps[0]!.artifacts[0]!.file = 'manifest.json'), /file: must not match/],
    ['a bad sha256', (m) => (m.steps[0]!.artifacts[0]!.sha256 = 'xyz'), /sha256: must match/],
    ['a bad date', (m) => (m.createdAt = 'yesterday'), /^\/createdAt: must be an RFC 3339 date-time/],
    ['a timeline sample without at', (m) => (m.timeline = [{} as ReportManifest['timeline'][number]]), /^\/timeline\/0: must have property "at"/],
    ['an unknown property', (m) => ((m as unknown as Record<string, unknown>).extra = 1), /unexpected property "extra"/],
    ['a missing property', (m) => delete (m as Partial<ReportManifest>).steps, /must have property "steps"/],
    ['a wrong step index', (m) => (m.steps[0]!.index = 3), /^\/steps\/0\/index: must be 0/],
    ['a wrong total', (m) => (m.totalBytes = 11), /^\/totalBytes: must be the sum/],
    ['a negative size', (m) => (m.steps[0]!.artifacts[0]!.bytes = -1), /bytes: must be >= 0/],
  ])('%s is reported', (_name, mutate, problem) => {
    const m = valid();
    mutate(m);
    const problems = manifestProblems(m);
    expect(problems.some((p) => problem.test(p)), problems.join('\n')).toBe(true);
  });

  test('the same file twice is reported', () => {
    const m = valid();
    m.steps[0]!.artifacts.push({ ...m.steps[0]!.artifacts[0]! });
    m.totalBytes = 20;
    expect(manifestProblems(m)).toEqual(['/steps/0: file "00-sysrq-w.txt" appears twice']);
  });

  test('not an object at all', () => {
    expect(manifestProblems(null)).toEqual(['/: must be object']);
    expect(manifestProblems([])).toEqual(['/: must be object']);
  });
});

test('isSafeName', () => {
  for (const ok of ['a', 'sysrq-w.txt', '00-host-state.json', 'A_b.c-9']) expect(isSafeName(ok)).toBe(true);
  for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a\\b', 'a b', '-x', 'x'.repeat(129), 'é', 'a\nb', 5]) expect(isSafeName(bad)).toBe(false);
});
