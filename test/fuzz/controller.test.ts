import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { describe, expect, test } from 'vitest';
import { hashToken, newToken } from '../../controller/auth.js';
import type { Limits } from '../../controller/limits.js';
import { createController, type Controller } from '../../controller/server.js';
import { openStore } from '../../controller/store/open.js';
import type { Store } from '../../controller/store/store.js';
import { MEDIA_TYPES, VERDICTS, manifestProblems, type ReportManifest } from '../../protocol/report-manifest.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/**
 * The controller's upload parsing fuzzed (issue 13 §1) through fastify's `inject` on a real
 * controller (SQLite in a temporary directory, in this process): manifests (random JSON, mutated
 * valid ones, bytes that are no JSON), artifacts (random, truncated, flipped, gzip corrupted or
 * bombing, under a wrong hash or report), commits, events, dropped notices and app logs (gzip and
 * not). Every answer is a 2xx, or a 4xx whose JSON `error` says what is wrong: never a 5xx, never a
 * hang, memory bounded by the limits. After each run the store is consistent: no report stored
 * without all its artifacts (each of the size and hash its manifest says), an analysis queued once
 * per stored report, nothing stored twice, every stored report readable back.
 *
 * Seeded as test/fuzz/decoders.test.ts; every case makes HTTP injects, so a property runs a third of
 * its budget (FUZZ_RUNS=300, the default: 100 cases).
 */

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
const SEED = Number(process.env['FUZZ_SEED'] ?? 20261203);
const params = { numRuns: Math.max(1, Math.ceil(RUNS / 3)), seed: SEED };
/** An answer that takes longer than this is a hang (generous: a loaded CI machine). */
const SLOW_MS = 2000;
/** A property's whole run (vitest's default of 5 s is for one plain test). */
const TIMEOUT = 60_000;

async function timed<T>(f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await f();
  const ms = performance.now() - t0;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return r;
}

const KIB = 1024;
/** Small limits, so that every one of them is reached by small inputs. */
const LIMITS: Partial<Limits> = {
  maxArtifactBytes: 64 * KIB,
  maxReportBytes: 256 * KIB,
  maxNodeBytes: 1e12,
  maxReportsPerHour: 1e9,
  maxRequestsPerSecond: 1e9,
  maxLogBodyBytes: 64 * KIB,
  maxLogInflatedBytes: 512 * KIB,
  maxLogLinesPerRequest: 500,
  keepLogLinesPerApp: 1e9,
};

const temp = tempDirs('eve-diag-fuzz-ctl-');

interface Harness {
  app: FastifyInstance;
  store: Store;
  controller: Controller;
  /** Node tokens: the one fuzzed, and another node whose reports the first must never touch. */
  token: string;
  other: string;
  close(): Promise<void>;
}

async function harness(): Promise<Harness> {
  const store = await openStore({ data: temp() });
  const controller = await createController({ store, limits: LIMITS, worker: false });
  const token = newToken();
  const other = newToken();
  await store.addToken(hashToken(token), 'node', (await store.nodeId('fuzz-node')) as number, 'fuzz');
  await store.addToken(hashToken(other), 'node', (await store.nodeId('other-node')) as number, 'fuzz other');
  await controller.app.ready();
  return {
    app: controller.app,
    store,
    controller,
    token,
    other,
    async close() {
      await controller.close();
      await store.close();
    },
  };
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/**
 * One request; the answer must be a 2xx with a JSON body, or a 4xx whose JSON `error` is a message
 * (bounded: an echoed header or id must not make it huge). Never a 5xx, a 3xx, or a slow answer.
 */
async function send(h: Harness, method: 'GET' | 'POST' | 'PUT', url: string, o: { body?: Buffer | string; headers?: Record<string, string>; token?: string; json?: boolean } = {}): Promise<Answer> {
  const res = await timed(() =>
    h.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${o.token ?? h.token}`, ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.headers ?? {}) },
      ...(o.body !== undefined ? { payload: o.body } : {}),
    }),
  );
  const what = `${method} ${url.slice(0, 200)} -> ${res.statusCode} ${res.body.slice(0, 500)}`;
  expect(res.statusCode, what).toBeGreaterThanOrEqual(200);
  expect(res.statusCode, what).toBeLessThan(500);
  expect(res.statusCode >= 300 && res.statusCode < 400, what).toBe(false);
  if (o.json === false && res.statusCode < 300) return { status: res.statusCode, body: { raw: res.rawPayload } };
  let body: unknown;
  expect(() => (body = JSON.parse(res.body)), what).not.toThrow();
  expect(typeof body === 'object' && body !== null, what).toBe(true);
  const b = body as Record<string, unknown>;
  if (res.statusCode >= 400) {
    expect(typeof b['error'], what).toBe('string');
    expect((b['error'] as string).length, what).toBeGreaterThan(0);
    expect((b['error'] as string).length, what).toBeLessThan(4096);
  }
  return { status: res.statusCode, body: b };
}

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

// -- valid inputs, and how they are mutated -----------------------------------------------------------

/** Artifact contents: a few shared ones (blobs one report already sent), and random ones. */
const SHARED = [Buffer.from('shared console text\n'), Buffer.alloc(0), Buffer.from('{"status":"running"}'), Buffer.alloc(3000, 0x61)];
const content = fc.oneof(fc.constantFrom(...SHARED), fc.uint8Array({ maxLength: 3000 }).map((b) => Buffer.from(b)));

interface Report {
  manifest: ReportManifest;
  files: Buffer[];
}

const report: fc.Arbitrary<Report> = fc
  .record({
    // Mostly fresh ids; a few from a small pool, so that an id comes again with another manifest (409).
    id: fc.oneof({ weight: 1, arbitrary: fc.nat({ max: 20 }) }, { weight: 4, arbitrary: fc.integer({ min: 100, max: 1e9 }) }).map((n) => `r-${n}`),
    stamp: fc.date({ min: new Date('2020-01-01T00:00:00Z'), max: new Date('2030-01-01T00:00:00Z'), noInvalidDate: true }),
    verdict: fc.constantFrom(...VERDICTS),
    steps: fc.array(fc.array(fc.record({ data: content, mediaType: fc.constantFrom(...MEDIA_TYPES) }), { maxLength: 3 }), { maxLength: 3 }),
  })
  .map(({ id, stamp, verdict, steps }) => {
    const files: Buffer[] = [];
    let n = 0;
    const manifest: ReportManifest = {
      schema: 'eve-diag/report-manifest',
      schemaVersion: 1,
      id,
      createdAt: stamp.toISOString(),
      app: { name: 'fuzz-app' },
      verdict,
      evidence: { reason: 'fuzzed' },
      timeline: [{ at: stamp.toISOString(), kernel: 'stalled' }],
      steps: steps.map((arts, index) => ({
        index,
        kind: 'collect',
        ok: true,
        status: 'done',
        summary: 'fuzz',
        startedAt: stamp.toISOString(),
        durationMs: 1,
        artifacts: arts.map((a) => {
          files.push(a.data);
          return { name: `a${n}`, file: `${index}-a${n++}.bin`, mediaType: a.mediaType, bytes: a.data.length, sha256: sha(a.data), truncated: false };
        }),
        omitted: [],
      })),
      totalBytes: files.reduce((t, f) => t + f.length, 0),
      truncated: false,
    };
    return { manifest, files };
  });

const DEEP = 100_000;
const deepArray = '['.repeat(DEEP) + ']'.repeat(DEEP);

/** Values a hostile node puts in a field. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(1e308, -1, -0, 2 ** 53, 2 ** 53 + 2, 1.5, 0, '', '.', '..', '.hidden', 'a/b', '../x', 'manifest.json', 'x'.repeat(129), 'é', '\u0000'),
  fc.constantFrom('2026-12-31T23:59:60Z', '2026-13-01T00:00:00Z', '2026-02-30T00:00:00Z', '+275760-09-13T00:00:00.001Z', '2026-12-03T10:00:00+25:00', '0'.repeat(64), 'A'.repeat(64), 'f'.repeat(63)),
  fc.constantFrom(null, [], {}, [[[]]], { a: { b: { c: {} } } }),
);

interface Edit {
  at: number;
  action: 'replace' | 'delete' | 'add';
  key: string;
  value: unknown;
}
const edit: fc.Arbitrary<Edit> = fc.record({ at: fc.nat(), action: fc.constantFrom('replace', 'delete', 'add'), key: fc.constantFrom('x', 'bytes', 'sha256', 'file', 'index', 'external', '__proto__', 'constructor'), value: hostileValue });

/** Every (container, key) of a JSON value, the root's container included. */
function slots(v: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []): [Record<string, unknown> | unknown[], string | number][] {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push([v, i]);
      slots(x, out);
    });
  } else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      out.push([v as Record<string, unknown>, k]);
      slots(x, out);
    }
  }
  return out;
}

/** `v` (a copy) with the edits applied: a value replaced, a member deleted, a member added. */
function mutate<T>(v: T, edits: readonly Edit[]): unknown {
  const copy = JSON.parse(JSON.stringify(v)) as unknown;
  for (const e of edits) {
    const all = slots(copy);
    if (all.length === 0) break;
    const [parent, key] = all[e.at % all.length] as [Record<string, unknown> | unknown[], string | number];
    const target = parent as Record<string | number, unknown>;
    // A copy of the value each time: one object put in two places (or into itself) is no JSON.
    const value = e.value === undefined ? undefined : (JSON.parse(JSON.stringify(e.value)) as unknown);
    if (e.action === 'replace') target[key] = value;
    else if (e.action === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete target[key];
    }
    else {
      const inner = target[key];
      if (typeof inner === 'object' && inner !== null && !Array.isArray(inner)) Object.defineProperty(inner, e.key, { value, enumerable: true, writable: true, configurable: true });
      else if (Array.isArray(inner)) inner.push(value);
    }
  }
  return copy;
}

/** The text of `v` mutated at the character level: cut, characters overwritten, a deep array spliced in. */
const textEdit = fc.record({
  cut: fc.option(fc.nat(), { nil: undefined }),
  chars: fc.array(fc.tuple(fc.nat(), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', '\\', '0', '-', 'e', '\u0000', '\ud800', '\u2028')), { maxLength: 4 }),
  deep: fc.constantFrom('none', 'none', 'first', 'inner'),
});
function mutateText(s: string, e: { cut: number | undefined; chars: [number, string][]; deep: 'none' | 'first' | 'inner' }): string {
  let t = s;
  // The nesting goes where a member's value is (the first member of the first or of the innermost
  // object: a manifest's evidence, an event's kernel), so the text stays JSON.
  if (e.deep === 'first') t = t.replace(/\{"/, `{"deep":${deepArray},"`);
  if (e.deep === 'inner') t = t.replace(/"(evidence|kernel)":\{/, `"$1":{"deep":${deepArray},`);
  for (const [at, ch] of e.chars) {
    const i = at % (t.length + 1);
    t = t.slice(0, i) + ch + t.slice(i + 1);
  }
  return e.cut === undefined ? t : t.slice(0, e.cut % (t.length + 1));
}

/** A body of the request: the JSON text, or random bytes, with a content type that may lie. */
const contentType = fc.constantFrom('application/json', 'text/plain', 'application/octet-stream', 'application/json; charset=latin1', 'multipart/form-data; boundary=x', '');

// -- the store after a run ------------------------------------------------------------------------------

/**
 * What must hold of the store whatever was sent: every stored report has all its artifacts, each
 * blob of the size and hash its manifest and its row say; one analysis job per stored report and
 * none for a pending one; one row per (node, report id); every stored report reads back (JSON and
 * bundle) with 200.
 */
async function checkStore(h: Harness, acked: Set<number>): Promise<void> {
  const db = h.store.db;
  const reports = await db.all('SELECT key, node_id, report_id, status, manifest, total_bytes FROM reports');
  const ids = reports.map((r) => `${String(r['node_id'])}/${String(r['report_id'])}`);
  expect(new Set(ids).size).toBe(ids.length);
  for (const r of reports) {
    const key = Number(r['key']);
    const m = JSON.parse(String(r['manifest'])) as ReportManifest;
    expect(manifestProblems(m)).toEqual([]);
    const rows = await db.all('SELECT file, sha256, bytes FROM report_artifacts WHERE report_key = ? ORDER BY file', [key]);
    const want = m.steps.flatMap((s) => s.artifacts.map((a) => ({ file: a.file, sha256: a.sha256, bytes: a.bytes }))).sort((a, b) => (a.file < b.file ? -1 : 1));
    expect(rows.map((x) => ({ file: String(x['file']), sha256: String(x['sha256']), bytes: Number(x['bytes']) }))).toEqual(want);
    const jobs = await db.get("SELECT COUNT(*) AS n FROM jobs WHERE kind = 'analyze-report' AND report_key = ?", [key]);
    if (r['status'] === 'stored') {
      expect(acked.has(key), `report ${key} stored but never acknowledged`).toBe(true);
      expect(Number(jobs?.['n'])).toBe(1);
      for (const a of want) {
        const blob = await h.store.blob(a.sha256);
        expect(blob, `report ${key}: artifact ${a.file} stored without its bytes`).toBeDefined();
        expect((blob as Buffer).length, `report ${key}: artifact ${a.file}`).toBe(a.bytes);
      }
      const owner = Number(r['node_id']) === (await h.store.nodeId('fuzz-node')) ? h.token : h.other;
      const read = await send(h, 'GET', `/api/v1/reports/${key}`, { token: owner });
      expect(read.status).toBe(200);
      const tgz = await send(h, 'GET', `/api/v1/reports/${key}/bundle.tar.gz`, { token: owner, json: false });
      expect(tgz.status).toBe(200);
      expect(gunzipSync(tgz.body['raw'] as Buffer).length).toBeGreaterThan(512);
    } else {
      expect(r['status']).toBe('pending');
      expect(acked.has(key)).toBe(false);
      expect(Number(jobs?.['n'])).toBe(0);
    }
  }
  for (const b of await db.all('SELECT sha256, bytes FROM blobs')) {
    const data = (await h.store.blob(String(b['sha256']))) as Buffer;
    expect(data.length).toBe(Number(b['bytes']));
    expect(sha(data)).toBe(String(b['sha256']));
  }
}

/** Memory after the run: the limits bound what a request can make the controller hold. */
function heap(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}
const MAX_GROWTH = 256 * 1024 * 1024;

async function withHarness(f: (h: Harness, acked: Set<number>) => Promise<void>): Promise<void> {
  const h = await harness();
  const acked = new Set<number>();
  const before = heap();
  try {
    await f(h, acked);
    await checkStore(h, acked);
    expect(heap() - before).toBeLessThan(MAX_GROWTH);
  } finally {
    await h.close();
  }
}

// -- the properties ---------------------------------------------------------------------------------------

describe('POST /api/v1/reports', () => {
  test('any manifest body: 2xx only for a manifest the schema accepts, else a 4xx naming the problem', async () => {
    const body = fc.oneof(
      report.map((r) => JSON.stringify(r.manifest)),
      fc.tuple(report, fc.array(edit, { minLength: 1, maxLength: 4 })).map(([r, e]) => JSON.stringify(mutate(r.manifest, e))),
      fc.tuple(report, textEdit).map(([r, e]) => mutateText(JSON.stringify(r.manifest), e)),
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
      fc.constantFrom('', 'null', '[]', '{}', '"eve-diag/report-manifest"', deepArray, `{"schema":"eve-diag/report-manifest","schemaVersion":1,"evidence":${deepArray}}`),
    );
    await withHarness(async (h, acked) => {
      await fc.assert(
        fc.asyncProperty(body, contentType, fc.constantFrom(undefined, 'gzip', 'identity', 'br'), async (b, type, enc) => {
          const a = await send(h, 'POST', '/api/v1/reports', { body: b, headers: { 'content-type': type, ...(enc !== undefined ? { 'content-encoding': enc } : {}) } });
          if (a.status < 300) {
            let parsed: unknown;
            expect(() => (parsed = JSON.parse(Buffer.from(b).toString('utf8')))).not.toThrow();
            expect(manifestProblems(parsed)).toEqual([]);
            expect([200, 202]).toContain(a.status);
            const ack = a.body['ack'] as { key?: number } | undefined;
            if (a.status === 200) acked.add(ack?.key as number);
            // Nothing to upload (no artifacts, or all held): committed, so the store check reads it back.
            if (a.status === 202 && (a.body['missing'] as unknown[]).length === 0) {
              const id = (parsed as ReportManifest).id;
              const c = await send(h, 'POST', `/api/v1/reports/${encodeURIComponent(id)}/commit`);
              expect(c.status, JSON.stringify(c.body)).toBe(200);
              acked.add(c.body['key'] as number);
            }
          }
        }),
        params,
      );
    });
  }, TIMEOUT);
});

describe('uploading a report step by step', () => {
  type Put = { put: number; how: 'right' | 'gzip' | 'truncated' | 'extra' | 'flipped' | 'gzip-corrupt' | 'gzip-cut' | 'bomb' | 'random' | 'empty'; sha: 'own' | 'other' | 'random' | 'upper' | 'short'; id: 'own' | 'random' | 'unsafe' | 'other-node' };
  type Op = Put | { commit: 'own' | 'random' | 'other-node' } | { offer: 'again' | 'changed' };
  const op: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        put: fc.nat(),
        how: fc.constantFrom('right', 'right', 'right', 'gzip', 'truncated', 'extra', 'flipped', 'gzip-corrupt', 'gzip-cut', 'bomb', 'random', 'empty'),
        sha: fc.oneof({ weight: 8, arbitrary: fc.constant('own' as const) }, { weight: 1, arbitrary: fc.constantFrom('other', 'random', 'upper', 'short') }),
        id: fc.oneof({ weight: 8, arbitrary: fc.constant('own' as const) }, { weight: 1, arbitrary: fc.constantFrom('random', 'unsafe', 'other-node') }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ commit: fc.constantFrom('own', 'own', 'random', 'other-node') }) },
    { weight: 1, arbitrary: fc.record({ offer: fc.constantFrom('again', 'changed') }) },
  );
  /** A gzip stream of zeros much larger than any artifact limit, compressed to less than the body limit. */
  let bomb: Buffer | undefined;
  const bombOf = () => (bomb ??= gzipSync(Buffer.alloc(32 * 1024 * 1024), { level: 9 }));

  function bodyOf(how: Put['how'], data: Buffer, noise: Buffer): { body: Buffer; headers: Record<string, string> } {
    const octets = { 'content-type': 'application/octet-stream' };
    const gz = { ...octets, 'content-encoding': 'gzip' };
    switch (how) {
      case 'right':
        return { body: data, headers: octets };
      case 'gzip':
        return { body: gzipSync(data), headers: gz };
      case 'truncated':
        return { body: data.subarray(0, Math.max(0, data.length - 1 - (noise[0] ?? 0))), headers: octets };
      case 'extra':
        return { body: Buffer.concat([data, noise.length > 0 ? noise : Buffer.from('x')]), headers: octets };
      case 'flipped': {
        const b = Buffer.from(data.length > 0 ? data : Buffer.from('x'));
        const at = (noise[0] ?? 0) % b.length;
        b[at] = (b[at] as number) ^ 0x01;
        return { body: b, headers: octets };
      }
      case 'gzip-corrupt': {
        const b = gzipSync(data);
        const flip = (at: number) => (b[at % b.length] = (b[at % b.length] as number) ^ 0xff);
        for (const [i, n] of noise.entries()) flip(n * 7 + i);
        if (noise.length === 0) flip(10);
        return { body: b, headers: gz };
      }
      case 'gzip-cut': {
        const b = gzipSync(data);
        return { body: b.subarray(0, (noise[0] ?? 0) % b.length), headers: gz };
      }
      case 'bomb':
        return { body: bombOf(), headers: gz };
      case 'random':
        return { body: noise, headers: noise.length % 2 === 0 ? octets : gz };
      case 'empty':
        return { body: Buffer.alloc(0), headers: octets };
    }
  }

  test('any sequence of artifact PUTs (right, gzip, truncated, corrupted, a bomb, wrong hash or report) and commits', async () => {
    await withHarness(async (h, acked) => {
      // The other node holds a report of its own: nothing the fuzzed node sends may touch it.
      const sampled = fc.sample(report.filter((r) => r.files.length > 0), { numRuns: 1, seed: SEED })[0] as Report;
      // An id the fuzzed node never uses, so a request naming it can only reach the other node's report.
      const theirs = { ...sampled, manifest: { ...sampled.manifest, id: 'theirs-0' } };
      const their = await send(h, 'POST', '/api/v1/reports', { body: JSON.stringify(theirs.manifest), token: h.other });
      expect(their.status).toBe(202);
      const theirKey = Number((await h.store.db.get('SELECT key FROM reports WHERE report_id = ?', [theirs.manifest.id]))?.['key']);

      const seen = new Map<string, number>();
      const saw = (what: string) => seen.set(what, (seen.get(what) ?? 0) + 1);
      await fc.assert(
        fc.asyncProperty(report, fc.array(fc.tuple(op, fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b))), { minLength: 1, maxLength: 12, size: 'medium' }), async (r, ops) => {
          const text = JSON.stringify(r.manifest);
          const offer = await send(h, 'POST', '/api/v1/reports', { body: text });
          // The same id with another manifest (an earlier case's): 409, and this case has nothing to upload.
          if (offer.status === 409) return;
          expect([200, 202]).toContain(offer.status);
          if (offer.status === 200) acked.add((offer.body['ack'] as { key: number }).key);
          const id = r.manifest.id;
          const shas = r.files.map((f) => sha(f));
          for (const [o, noise] of ops) {
            if ('commit' in o) {
              const target = o.commit === 'own' ? id : o.commit === 'random' ? `nope-${noise.toString('hex')}` : theirs.manifest.id;
              const a = await send(h, 'POST', `/api/v1/reports/${encodeURIComponent(target)}/commit`);
              if (o.commit !== 'own') {
                expect(a.status).toBe(404);
                continue;
              }
              const missing = await h.store.missingBlobs((await h.store.nodeId('fuzz-node')) as number, shas);
              saw(`commit ${a.status}`);
              if (a.status === 200) {
                expect(missing).toEqual([]);
                acked.add(a.body['key'] as number);
              } else {
                expect(a.status).toBe(409);
                expect((a.body['missing'] as string[]).sort()).toEqual([...missing].sort());
                expect(missing.length).toBeGreaterThan(0);
              }
            } else if ('offer' in o) {
              const again = o.offer === 'again' ? text : text.replace('"fuzzed"', '"changed"');
              const a = await send(h, 'POST', '/api/v1/reports', { body: again });
              if (o.offer === 'changed') expect(a.status).toBe(409);
              else {
                expect([200, 202]).toContain(a.status);
                if (a.status === 200) acked.add((a.body['ack'] as { key: number }).key);
              }
            } else {
              const i = r.files.length === 0 ? -1 : o.put % r.files.length;
              const data = i < 0 ? noise : (r.files[i] as Buffer);
              const own = i < 0 ? sha(noise) : (shas[i] as string);
              const hash = { own, other: theirs.files.length > 0 ? sha(theirs.files[0] as Buffer) : own, random: sha(noise), upper: own.toUpperCase(), short: own.slice(1) }[o.sha];
              const target = { own: id, random: `nope-${noise.length}`, unsafe: '..', 'other-node': theirs.manifest.id }[o.id];
              const { body, headers } = bodyOf(o.how, data, noise);
              const a = await send(h, 'PUT', `/api/v1/reports/${encodeURIComponent(target)}/artifacts/${hash}`, { body, headers });
              saw(`PUT ${o.how} ${a.status}`);
              const exact = (o.how === 'right' || o.how === 'gzip') && i >= 0 && o.sha === 'own' && o.id === 'own';
              if (exact) expect(a.status, JSON.stringify(a.body)).toBe(201);
              else if (a.status < 300) {
                // Accepted otherwise only when the bytes still are exactly the artifact (a random body that happens to be it).
                expect(a.status).toBe(201);
                expect(a.body['sha256']).toBe(hash);
                expect(shas).toContain(hash);
              }
              if (o.id === 'other-node' && a.status >= 400) expect([400, 404]).toContain(a.status);
              if (o.how === 'bomb' && o.sha === 'own' && o.id === 'own' && i >= 0) expect([400, 413]).toContain(a.status);
            }
          }
        }),
        params,
      );
      // Their report was never committed or changed by the fuzzed node.
      expect((await h.store.report(theirKey))?.status).toBe('pending');
      // The run reached every outcome (a budget this small may not: FUZZ_RUNS below the default).
      if (params.numRuns >= 100) {
        for (const k of ['commit 200', 'commit 409', 'PUT right 201', 'PUT gzip 201', 'PUT bomb 413', 'PUT gzip-corrupt 400', 'PUT flipped 400', 'PUT truncated 400']) expect(seen.get(k) ?? 0, `${k} in ${JSON.stringify([...seen])}`).toBeGreaterThan(0);
      }
    });
  }, TIMEOUT);

  test('a manifest claiming a stored blob under another size is refused: a report never lists a size its bytes do not have', async () => {
    await withHarness(async (h, acked) => {
      const data = Buffer.from('the real bytes of an artifact\n');
      const r = fc.sample(report, { numRuns: 1, seed: SEED })[0] as Report;
      const m = (bytes: number, id: string): ReportManifest => ({
        ...r.manifest,
        id,
        steps: [{ index: 0, kind: 'collect', ok: true, status: 'done', summary: '', startedAt: null, durationMs: null, artifacts: [{ name: 'a', file: '0-a.txt', mediaType: 'text/plain', bytes, sha256: sha(data), truncated: false }], omitted: [] }],
        totalBytes: bytes,
      });
      const first = await send(h, 'POST', '/api/v1/reports', { body: JSON.stringify(m(data.length, 'honest')) });
      expect(first.status).toBe(202);
      expect((await send(h, 'PUT', `/api/v1/reports/honest/artifacts/${sha(data)}`, { body: data, headers: { 'content-type': 'application/octet-stream' } })).status).toBe(201);
      const ok = await send(h, 'POST', '/api/v1/reports/honest/commit');
      expect(ok.status).toBe(200);
      acked.add(ok.body['key'] as number);
      for (const bytes of [data.length + 1000, data.length - 1, 0]) {
        const liar = await send(h, 'POST', '/api/v1/reports', { body: JSON.stringify(m(bytes, `liar-${bytes}`)) });
        if (liar.status === 200) acked.add((liar.body['ack'] as { key: number }).key);
        expect(liar.status, JSON.stringify(liar.body)).toBe(400);
        expect(liar.body['error']).toMatch(/bytes|size/);
      }
      // Two entries of one manifest with one hash and two sizes: one of them is a lie.
      const two = m(data.length, 'two-sizes');
      const step = two.steps[0] as ReportManifest['steps'][number];
      step.artifacts.push({ ...(step.artifacts[0] as ReportManifest['steps'][number]['artifacts'][number]), name: 'b', file: '0-b.txt', bytes: data.length + 1 });
      two.totalBytes = 2 * data.length + 1;
      const both = await send(h, 'POST', '/api/v1/reports', { body: JSON.stringify(two) });
      expect(both.status, JSON.stringify(both.body)).toBe(400);
      expect(both.body['error']).toMatch(/bytes|size/);
    });
  }, TIMEOUT);
});

describe('events, dropped notices and logs', () => {
  const event = fc.record({
    id: fc.nat({ max: 50 }).map((n) => `e-${n}`),
    app: fc.constantFrom('vm1', 'vm2'),
    verdict: fc.constantFrom(...VERDICTS),
    reason: fc.string({ maxLength: 40 }),
    at: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('2100-01-01T00:00:00Z') }).map((d) => d.toISOString()),
    kernel: fc.record({ status: fc.string({ maxLength: 10 }), beats: fc.nat(), ageMs: fc.nat() }),
  });
  const notice = fc.record({
    id: fc.nat({ max: 50 }).map((n) => `d-${n}`),
    bytes: fc.oneof(fc.nat(), fc.constantFrom(2 ** 53, -1, 1.5)),
    droppedAt: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('2100-01-01T00:00:00Z') }).map((d) => d.toISOString()),
    reason: fc.constantFrom('quota', 'x'.repeat(300)),
  });
  const listBody = <T>(item: fc.Arbitrary<T>) =>
    fc.oneof(
      fc.array(item, { maxLength: 5 }).map((a) => JSON.stringify(a)),
      fc.tuple(fc.array(item, { minLength: 1, maxLength: 5 }), fc.array(edit, { minLength: 1, maxLength: 3 })).map(([a, e]) => JSON.stringify(mutate(a, e))),
      fc.tuple(fc.array(item, { minLength: 1, maxLength: 3 }), textEdit).map(([a, e]) => mutateText(JSON.stringify(a), e)),
      fc.array(item, { minLength: 101, maxLength: 120 }).map((a) => JSON.stringify(a)),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 500 }).map((b) => Buffer.from(b)),
      fc.constantFrom(`[{"id":"e-1","app":"vm1","verdict":"unknown","reason":"","at":"2026-12-03T00:00:00Z","kernel":{"a":${deepArray}}}]`, deepArray, ''),
    );

  test('POST /events and /dropped: any body is stored (once per id) or refused with a 4xx naming the field', async () => {
    await withHarness(async (h) => {
      const seen = { events: new Set<string>(), dropped: new Set<string>() };
      await fc.assert(
        fc.asyncProperty(fc.oneof(listBody(event).map((b) => ['events', b] as const), listBody(notice).map((b) => ['dropped', b] as const)), contentType, fc.boolean(), async ([route, b], type, gz) => {
          const body = gz ? gzipSync(b) : b;
          const a = await send(h, 'POST', `/api/v1/${route}`, { body, headers: { 'content-type': type, ...(gz ? { 'content-encoding': 'gzip' } : {}) } });
          if (a.status < 300) {
            const list = JSON.parse(Buffer.from(b).toString('utf8')) as { id: string }[];
            expect(a.body['received']).toBe(list.length);
            const fresh = new Set(list.map((x) => x.id).filter((x) => !seen[route].has(x)));
            expect(a.body['stored']).toBe(fresh.size);
            for (const x of fresh) seen[route].add(x);
          } else if (a.status === 400 && !gz) {
            expect(a.body['error']).toMatch(/not JSON|invalid (events|notices)|too large|nested/);
          }
        }),
        params,
      );
      expect(Number((await h.store.db.get('SELECT COUNT(*) AS n FROM events'))?.['n'])).toBe(seen.events.size);
      expect(Number((await h.store.db.get('SELECT COUNT(*) AS n FROM dropped'))?.['n'])).toBe(seen.dropped.size);
    });
  }, TIMEOUT);

  // (nanos past ~1e24 once made an Invalid Date whose toISOString threw: a 500.)
  const nanos = fc.oneof(fc.integer({ min: -1e9, max: 2e9 }), fc.constantFrom(999_999_999, 1e15, -1e15, 1e30, -1e30, 0.5, '5', '-5', 'x'));
  const logTime = fc.oneof(
    fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('2100-01-01T00:00:00Z') }).map((d) => d.toISOString()),
    fc.record({ seconds: fc.oneof(fc.nat({ max: 4e9 }), fc.constantFrom(1e11, 1e11 - 1, -1, 1.5, '1700000000', '1e99', 'x')), nanos }, { requiredKeys: ['seconds'] }),
    fc.constantFrom('not a time', '+275760-09-13T00:00:00.001Z', '2026-12-31T23:59:60Z', 1700000000, null),
  );
  const logLine = fc.oneof(
    fc.record({ severity: fc.oneof(fc.constantFrom('INFO', 'ERROR'), fc.string({ maxLength: 40 })), source: fc.string({ maxLength: 300 }), content: fc.string({ unit: 'binary', maxLength: 300 }), msgid: fc.nat(), timestamp: logTime }, { requiredKeys: ['content', 'timestamp'] }).map((o) => JSON.stringify(o)),
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    fc.constantFrom('App logs list for app 123:', `{"content":"x","timestamp":${deepArray.slice(0, 20_000)}}`, `{"content":"${'y'.repeat(20_000)}","timestamp":"2026-12-03T00:00:00Z"}`, '\r', ''),
  );
  const logBody = fc.oneof(
    fc.array(logLine, { maxLength: 20 }).map((l) => Buffer.from(l.join('\n'))),
    fc.array(logLine, { maxLength: 20 }).map((l) => Buffer.from(l.join('\r\n') + '\n')),
    fc.constant(Buffer.from('{"content":"x","timestamp":"2026-12-03T00:00:00Z"}\n'.repeat(600))),
    fc.uint8Array({ maxLength: 2000 }).map((b) => Buffer.from(b)),
  );
  const appName = fc.oneof(fc.constantFrom('vm1', 'vm 2', 'é', 'x'.repeat(256), 'x'.repeat(257), '', 'a\u0001b', '%00', '%ZZ'), fc.string({ maxLength: 20 }));

  test('POST /logs: any body, gzip or not (corrupted, a bomb), any ?app: stored lines or a 4xx', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x0a), { level: 9 });
    await withHarness(async (h) => {
      let stored = 0;
      await fc.assert(
        fc.asyncProperty(logBody, fc.constantFrom('plain', 'gzip', 'gzip', 'gzip-cut', 'bomb', 'deflate'), fc.option(appName, { nil: undefined }), contentType, async (b, how, app, type) => {
          const body = how === 'plain' ? b : how === 'gzip' ? gzipSync(b) : how === 'gzip-cut' ? gzipSync(b).subarray(0, 12) : how === 'bomb' ? bomb : b;
          const enc = how === 'plain' ? undefined : how === 'deflate' ? 'deflate' : 'gzip';
          const url = `/api/v1/logs${app === undefined ? '' : `?app=${/%/.test(app) ? app : encodeURIComponent(app)}`}`;
          const a = await send(h, 'POST', url, { body, headers: { 'content-type': type, ...(enc ? { 'content-encoding': enc } : {}) } });
          // (A body without a content type is fastify's own 415, before the encoding is looked at.)
          if (how === 'bomb' && app === 'vm1' && type !== '') expect(a.status, JSON.stringify(a.body)).toBe(413);
          if (how === 'deflate' && app === 'vm1') expect(a.status, JSON.stringify(a.body)).toBe(415);
          if (type === '' && body.length > 0) expect(a.body['error']).toMatch(/content-type|Content-Type|media type/i);
          if (a.status < 300) {
            expect(typeof a.body['stored']).toBe('number');
            stored += a.body['stored'] as number;
          }
        }),
        params,
      );
      expect(Number((await h.store.db.get('SELECT COUNT(*) AS n FROM app_logs'))?.['n'])).toBe(stored);
    });
  }, TIMEOUT);

  test('POST /logs: a timestamp with nanos past Date\'s range or outside 0..999 999 999 is a rejected line, not a 500', async () => {
    await withHarness(async (h) => {
      const lines = [1e30, -1, 1_000_000_000, 0.5].map((n) => `{"content":"x","timestamp":{"seconds":1,"nanos":${n}}}`);
      const a = await send(h, 'POST', '/api/v1/logs?app=vm1', { body: lines.join('\n') + '\n{"content":"ok","timestamp":{"seconds":1,"nanos":"999999999"}}\n' });
      expect(a.status).toBe(200);
      expect(a.body).toMatchObject({ stored: 1, rejected: 4 });
    });
  }, TIMEOUT);
});
