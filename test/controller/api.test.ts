import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashToken, newToken } from '../../controller/auth.js';
import { Spool } from '../../monitor/report/spool.js';
import type { ReportAck, ReportOffer } from '../../protocol/controller-api.js';
import type { ReportManifest } from '../../protocol/report-manifest.js';
import { startController, type TestController } from '../helpers/controller.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/**
 * The controller's HTTP API against a real controller (SQLite in a temporary directory, port 0):
 * authentication and node isolation, the three-step report upload and its idempotency, and bad input
 * refused with a 4xx naming what is wrong, nothing half stored.
 */
const temp = tempDirs('eve-diag-api-');
let c: TestController;
beforeAll(async () => {
  c = await startController({ limits: { maxReportsPerHour: 1000, maxRequestsPerSecond: 1000 } });
});
afterAll(async () => c.close());

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

async function call(method: string, path: string, token: string | undefined, body?: Buffer | string, headers: Record<string, string> = {}) {
  const res = await fetch(`${c.url}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : new Uint8Array(body) } : {}),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json as Record<string, unknown>, headers: res.headers };
}

/** A real bundle (the monitor's writer) with a console capture and a JSON artifact unique to it. */
async function bundle(app = 'vm1', consoleText = '[    1.000000] Kernel panic - not syncing: sysrq triggered crash\n') {
  const spool = new Spool({ dir: temp() });
  const b = await spool.write({
    app,
    verdict: 'guest-kernel-hung',
    evidence: { reason: 'kernel heartbeat stalled while the VM runs' },
    steps: [
      { kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: consoleText }] },
      { kind: 'qmp-state', ok: true, summary: 'qmp', artifacts: [{ name: 'qmp.json', mediaType: 'application/json', data: JSON.stringify({ status: 'running', nonce: randomUUID() }) }] },
    ],
  });
  const text = readFileSync(join(b.dir, 'manifest.json'), 'utf8');
  const files = new Map(b.manifest.steps.flatMap((s) => s.artifacts.map((a) => [a.sha256, readFileSync(join(b.dir, a.file))] as const)));
  return { manifest: b.manifest, text, files };
}

/** A bundle whose steps carry a PNG (a screendump) and bytes of another kind. */
async function binaryBundle(app: string) {
  const spool = new Spool({ dir: temp() });
  const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from(randomUUID())]);
  const b = await spool.write({
    app,
    verdict: 'guest-kernel-hung',
    evidence: {},
    steps: [
      { kind: 'screendump', ok: true, summary: 'screen', artifacts: [{ name: 'screen.png', mediaType: 'image/png', data: png }] },
      { kind: 'host-state', ok: true, summary: 'raw', artifacts: [{ name: 'raw.bin', mediaType: 'application/octet-stream', data: Buffer.from(`<script>${randomUUID()}</script>`) }] },
    ],
  });
  const text = readFileSync(join(b.dir, 'manifest.json'), 'utf8');
  const files = new Map(b.manifest.steps.flatMap((s) => s.artifacts.map((a) => [a.sha256, readFileSync(join(b.dir, a.file))] as const)));
  return { manifest: b.manifest, text, files };
}

async function upload(token: string, b: Awaited<ReturnType<typeof bundle>>) {
  const offer = await call('POST', '/api/v1/reports', token, b.text);
  expect(offer.status, JSON.stringify(offer.body)).toBe(202);
  for (const h of (offer.body as unknown as ReportOffer).missing) {
    const put = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, token, b.files.get(h), { 'content-type': 'application/octet-stream' });
    expect(put.status, JSON.stringify(put.body)).toBe(201);
  }
  const commit = await call('POST', `/api/v1/reports/${b.manifest.id}/commit`, token);
  expect(commit.status, JSON.stringify(commit.body)).toBe(200);
  return commit.body as unknown as ReportAck;
}

describe('authentication', () => {
  test('no token, a wrong token, a token of the wrong role: 401/403 with a message', async () => {
    expect((await call('GET', '/api/v1/fleet', undefined)).status).toBe(401);
    expect((await call('GET', '/api/v1/fleet', 'edt_notarealtokenatallnotarealtoken')).status).toBe(401);
    const node = await c.nodeToken('n-auth');
    const r = await call('POST', '/api/v1/reanalyze', node);
    expect(r.status).toBe(403);
    expect(r.body.error).toMatch(/admin token/);
    expect((await call('POST', '/api/v1/reports', c.admin, '{}')).status).toBe(403);
    expect((await call('GET', '/healthz', undefined)).status).toBe(200);
  });

  test('a node sees and writes only its own reports', async () => {
    const a = await c.nodeToken('n-a');
    const b = await c.nodeToken('n-b');
    const rep = await bundle('iso');
    const ack = await upload(a, rep);
    expect((await call('GET', `/api/v1/reports/${ack.key}`, a)).status).toBe(200);
    expect((await call('GET', `/api/v1/reports/${ack.key}`, b)).status).toBe(404);
    expect((await call('GET', `/api/v1/reports/${ack.key}/bundle.tar.gz`, b)).status).toBe(404);
    expect(((await call('GET', '/api/v1/reports', b)).body.reports as unknown[]).length).toBe(0);
    // The same report id from another node is another report; it cannot touch the first one.
    expect((await call('POST', `/api/v1/reports/${rep.manifest.id}/commit`, b)).status).toBe(404);
    expect((await call('PUT', `/api/v1/reports/${rep.manifest.id}/artifacts/${'0'.repeat(64)}`, b, 'x')).status).toBe(404);
    expect((await call('GET', `/api/v1/reports/${ack.key}`, c.admin)).status).toBe(200);
  });
});

describe('uploading a report', () => {
  test('manifest, the missing artifacts, commit: stored once, acknowledged with its hashes; every retry answers the same', async () => {
    const node = await c.nodeToken('n-up');
    const b = await bundle();
    const ack = await upload(node, b);
    expect(ack).toMatchObject({ id: b.manifest.id, stored: true, manifestSha256: sha(b.text) });
    expect(ack.artifacts.map((a) => a.sha256).sort()).toEqual([...b.files.keys()].sort());
    // Retries of every step: the same answers, nothing stored twice.
    const again = await call('POST', '/api/v1/reports', node, b.text);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: 'stored', missing: [], ack: { key: ack.key } });
    expect((await call('POST', `/api/v1/reports/${b.manifest.id}/commit`, node)).body).toMatchObject({ key: ack.key });
    const n = await c.store.db.get('SELECT COUNT(*) AS n FROM reports WHERE report_id = ?', [b.manifest.id]);
    expect(Number(n?.['n'])).toBe(1);
    const jobs = await c.store.db.get('SELECT COUNT(*) AS n FROM jobs WHERE report_key = ?', [ack.key]);
    expect(Number(jobs?.['n'])).toBe(1);
  });

  test('resumable: artifacts the controller holds (by hash) are not asked for again', async () => {
    const node = await c.nodeToken('n-res');
    const first = await bundle('a1', 'same console text\n');
    await upload(node, first);
    const second = await bundle('a2', 'same console text\n');
    const offer = (await call('POST', '/api/v1/reports', node, second.text)).body as unknown as ReportOffer;
    const consoleSha = second.manifest.steps[0]?.artifacts[0]?.sha256 as string;
    expect(offer.missing).not.toContain(consoleSha);
    expect(offer.missing).toHaveLength(1);
  });

  test('a cut upload: commit says what is missing (409); a gzip artifact is inflated and checked', async () => {
    const node = await c.nodeToken('n-cut');
    const b = await bundle('cut', `${'line of console text\n'.repeat(2000)}`);
    const offer = (await call('POST', '/api/v1/reports', node, b.text)).body as unknown as ReportOffer;
    const early = await call('POST', `/api/v1/reports/${b.manifest.id}/commit`, node);
    expect(early.status).toBe(409);
    expect((early.body.missing as string[]).sort()).toEqual([...offer.missing].sort());
    for (const h of offer.missing) {
      const r = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, gzipSync(b.files.get(h) as Buffer), { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' });
      expect(r.status).toBe(201);
    }
    expect((await call('POST', `/api/v1/reports/${b.manifest.id}/commit`, node)).status).toBe(200);
  });
});

describe('bad input is refused with a 4xx naming the problem, nothing half stored', () => {
  const reportCount = async () => Number((await c.store.db.get('SELECT COUNT(*) AS n FROM reports'))?.['n']);
  const blobCount = async () => Number((await c.store.db.get('SELECT COUNT(*) AS n FROM blobs'))?.['n']);

  test.each<[string, (m: ReportManifest) => unknown, number, RegExp]>([
    ['bad JSON', () => '{"schema": ', 400, /not JSON/],
    ['not a manifest', () => ({ hello: 1 }), 400, /not a report manifest/],
    ['an unknown schema version', (m) => ({ ...m, schemaVersion: 99 }), 400, /unknown manifest schemaVersion 99/],
    ['an artifact name with a path separator', (m) => ({ ...m, steps: [{ ...m.steps[0], artifacts: [{ ...m.steps[0]?.artifacts[0], file: '../../etc/passwd' }] }] }), 400, /invalid manifest/],
    ['an artifact named ..', (m) => ({ ...m, steps: [{ ...m.steps[0], artifacts: [{ ...m.steps[0]?.artifacts[0], file: '..' }] }] }), 400, /invalid manifest/],
    ['an id that is not a safe name', (m) => ({ ...m, id: 'x/../y' }), 400, /invalid manifest/],
  ])('%s', async (_name, mutate, status, re) => {
    const node = await c.nodeToken('n-bad');
    const b = await bundle('bad');
    const before = await reportCount();
    const v = mutate(b.manifest);
    const r = await call('POST', '/api/v1/reports', node, typeof v === 'string' ? v : JSON.stringify(v));
    expect(r.status).toBe(status);
    expect(String(r.body.error)).toMatch(re);
    expect(await reportCount()).toBe(before);
  });

  test('an artifact whose bytes do not hash to its name, or are short, is not stored', async () => {
    const node = await c.nodeToken('n-hash');
    const b = await bundle('hash');
    const offer = (await call('POST', '/api/v1/reports', node, b.text)).body as unknown as ReportOffer;
    const h = offer.missing[0] as string;
    const before = await blobCount();
    const data = b.files.get(h) as Buffer;
    const wrong = Buffer.from(data);
    wrong[0] = (wrong[0] as number) ^ 1;
    const r1 = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, wrong, { 'content-type': 'application/octet-stream' });
    expect(r1.status).toBe(400);
    expect(String(r1.body.error)).toMatch(/hash to [0-9a-f]{64}, not/);
    const r2 = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, data.subarray(0, data.length - 1), { 'content-type': 'application/octet-stream' });
    expect(r2.status).toBe(400);
    expect(String(r2.body.error)).toMatch(/truncated/);
    const r3 = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${'a'.repeat(64)}`, node, data, { 'content-type': 'application/octet-stream' });
    expect(r3.status).toBe(400);
    expect(String(r3.body.error)).toMatch(/has no artifact/);
    expect((await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/NOTAHASH`, node, data)).status).toBe(400);
    expect(await blobCount()).toBe(before);
    expect((await call('POST', `/api/v1/reports/${b.manifest.id}/commit`, node)).status).toBe(409);
  });

  test('a gzip bomb is cut at the size the manifest announced (413), bad gzip is a 400', async () => {
    const node = await c.nodeToken('n-bomb');
    const b = await bundle('bomb');
    const offer = (await call('POST', '/api/v1/reports', node, b.text)).body as unknown as ReportOffer;
    const h = offer.missing[0] as string;
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024)); // 64 MiB of zeros in ~64 KiB
    const r = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, bomb, { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' });
    expect(r.status).toBe(413);
    expect(String(r.body.error)).toMatch(/inflates to more than/);
    const bad = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, Buffer.from('not gzip'), { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' });
    expect(bad.status).toBe(400);
    expect((await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, 'x', { 'content-encoding': 'br' })).status).toBe(415);
  });

  test('the same id with another manifest is a conflict (409)', async () => {
    const node = await c.nodeToken('n-conf');
    const b = await bundle('conf');
    expect((await call('POST', '/api/v1/reports', node, b.text)).status).toBe(202);
    const other = JSON.stringify({ ...b.manifest, evidence: { reason: 'something else' } });
    const r = await call('POST', '/api/v1/reports', node, other);
    expect(r.status).toBe(409);
    expect(String(r.body.error)).toMatch(/another manifest/);
  });

  test('events and log lines are validated, stored once', async () => {
    const node = await c.nodeToken('n-ev');
    const ev = [{ id: 'e1', app: 'vm1', verdict: 'guest-kernel-hung', reason: 'stalled', at: new Date().toISOString(), kernel: { status: 'stalled', beats: 9, ageMs: 4000 } }];
    expect((await call('POST', '/api/v1/events', node, JSON.stringify(ev))).body).toMatchObject({ received: 1, stored: 1 });
    expect((await call('POST', '/api/v1/events', node, JSON.stringify(ev))).body).toMatchObject({ received: 1, stored: 0 });
    const bad = await call('POST', '/api/v1/events', node, JSON.stringify([{ ...ev[0], verdict: 'melted', extra: 1 }]));
    expect(bad.status).toBe(400);
    expect(String(bad.body.error)).toMatch(/verdict: one of/);
    const fleet = (await call('GET', '/api/v1/fleet', node)).body.apps as { app: string; verdict: string; kernel: unknown }[];
    expect(fleet).toEqual([expect.objectContaining({ app: 'vm1', verdict: 'guest-kernel-hung', kernel: { status: 'stalled', beats: 9, ageMs: 4000 } })]);
    const eden = 'App logs list for app 6a5b:\n{"severity":"INFO","source":"6a5b.1.1","content":"eve-diag mark seq=1","msgid":"1","timestamp":"2026-12-01T10:00:00Z"}\nnot json at all\n';
    const logs = await call('POST', '/api/v1/logs?app=vm1', node, eden, { 'content-type': 'text/plain' });
    expect(logs.body).toMatchObject({ stored: 1, skipped: 2, rejected: 0 });
    expect((await call('POST', '/api/v1/logs', node, eden, { 'content-type': 'text/plain' })).status).toBe(400);
  });
});

describe('limits', () => {
  test('a too large manifest is 413; too many requests for a token are 429 with Retry-After', async () => {
    const small = await startController({ limits: { maxManifestBytes: 2048, maxRequestsPerSecond: 2 } });
    try {
      const node = await small.nodeToken('n-lim');
      const r = await fetch(`${small.url}/api/v1/reports`, { method: 'POST', headers: { authorization: `Bearer ${node}`, 'content-type': 'application/json' }, body: 'x'.repeat(4096) });
      expect(r.status).toBe(413);
      expect(((await r.json()) as { error: string }).error).toMatch(/too large/);
      const statuses: number[] = [];
      let retryAfter: string | null = null;
      for (let i = 0; i < 20; i++) {
        const q = await fetch(`${small.url}/api/v1/fleet`, { headers: { authorization: `Bearer ${node}` } });
        statuses.push(q.status);
        if (q.status === 429) retryAfter = q.headers.get('retry-after');
      }
      expect(statuses).toContain(429);
      expect(Number(retryAfter)).toBeGreaterThan(0);
    } finally {
      await small.close();
    }
  });

  test('an artifact over maxArtifactBytes or a node over maxReportsPerHour is refused before anything is stored', async () => {
    const small = await startController({ limits: { maxArtifactBytes: 100, maxReportsPerHour: 1, maxRequestsPerSecond: 1000 } });
    try {
      const node = await small.nodeToken('n-lim2');
      const big = await bundle('big', 'x'.repeat(500));
      const r = await fetch(`${small.url}/api/v1/reports`, { method: 'POST', headers: { authorization: `Bearer ${node}` }, body: big.text });
      expect(r.status).toBe(413);
      expect(((await r.json()) as { error: string }).error).toMatch(/maxArtifactBytes 100/);
      const post = (t: string) => fetch(`${small.url}/api/v1/reports`, { method: 'POST', headers: { authorization: `Bearer ${node}` }, body: t });
      const ok = await bundle('one', 'x');
      expect((await post(ok.text)).status).toBe(202);
      const two = await bundle('two', 'y');
      const over = await post(two.text);
      expect(over.status).toBe(429);
      expect(((await over.json()) as { error: string }).error).toMatch(/maxReportsPerHour 1/);
    } finally {
      await small.close();
    }
  });
});

describe('reading', () => {
  test('a stored report: its manifest, artifacts, findings; a file as text; the bundle as .tar.gz', async () => {
    const node = await c.nodeToken('n-read');
    const b = await bundle('read');
    const ack = await upload(node, b);
    // The analysis runs in the controller's worker.
    for (let i = 0; i < 100 && (await c.store.findings(ack.key)).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const r = await call('GET', `/api/v1/reports/${ack.key}`, c.admin);
    expect(r.status).toBe(200);
    expect((r.body.findings as { title: string }[]).map((f) => f.title)).toContain('Kernel panic: sysrq triggered crash');
    const file = b.manifest.steps[0]?.artifacts[0]?.file as string;
    const raw = await fetch(`${c.url}/api/v1/reports/${ack.key}/files/${file}`, { headers: { authorization: `Bearer ${c.admin}` } });
    expect(raw.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(raw.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await raw.text()).toContain('Kernel panic');
    const tgz = await fetch(`${c.url}/api/v1/reports/${ack.key}/bundle.tar.gz`, { headers: { authorization: `Bearer ${c.admin}` } });
    expect(tgz.status).toBe(200);
    const { gunzipSync } = await import('node:zlib');
    const tar = gunzipSync(Buffer.from(await tgz.arrayBuffer())).toString('latin1');
    expect(tar).toContain(`${b.manifest.id}/manifest.json`);
    expect(tar).toContain(`${b.manifest.id}/${file}`);
    const bad = await call('GET', '/api/v1/reports?verdict=melted', c.admin);
    expect(bad.status).toBe(400);
    expect(String(bad.body.error)).toMatch(/verdict: one of/);
  });

  test('a PNG (the screendump) is served as an image, inline; other bytes as a download, never as text', async () => {
    const node = await c.nodeToken('n-binary');
    const b = await binaryBundle('binary');
    const ack = await upload(node, b);
    const [png, raw] = b.manifest.steps.map((st) => st.artifacts[0]?.file as string);
    const img = await fetch(`${c.url}/api/v1/reports/${ack.key}/files/${png}`, { headers: { authorization: `Bearer ${c.admin}` } });
    expect(img.headers.get('content-type')).toBe('image/png');
    expect(img.headers.get('content-disposition')).toMatch(/^inline; /);
    expect(Buffer.from(await img.arrayBuffer()).subarray(0, 4).toString('latin1')).toBe('\x89PNG');
    const bin = await fetch(`${c.url}/api/v1/reports/${ack.key}/files/${raw}`, { headers: { authorization: `Bearer ${c.admin}` } });
    expect(bin.headers.get('content-type')).toBe('application/octet-stream');
    expect(bin.headers.get('content-disposition')).toMatch(/^attachment; /);
    expect(bin.headers.get('x-content-type-options')).toBe('nosniff');
  });
});

/** Sends a request's headers and the start of a body it never finishes; resolves with the answer, if one comes before the body does. */
function answerBeforeBody(url: string, method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: { 'content-type': 'application/octet-stream', 'content-length': String(16 * 1024 * 1024), ...headers } });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`${method} ${path}: no answer within 3 s while the body was unfinished (the server waited for it)`));
    }, 3000);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown>, headers: res.headers });
      });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.write(Buffer.alloc(64 * 1024));
  });
}

describe('hardening', () => {
  test('a malformed session cookie is no cookie: 401 from the API, the login page from the dashboard', async () => {
    const bad = { cookie: 'eve_diag_admin=%E0%A4%A' };
    const r = await call('GET', '/api/v1/fleet', undefined, undefined, bad);
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer');
    expect((await call('GET', '/api/v1/reports', undefined, undefined, bad)).status).toBe(401);
    const page = await fetch(`${c.url}/`, { headers: bad, redirect: 'manual' });
    expect(page.status).toBe(303);
    expect(page.headers.get('location')).toBe('/login');
  });

  test('the scheme word Bearer is case-insensitive (RFC 9110 section 11.1)', async () => {
    for (const scheme of ['bearer', 'BEARER', 'Bearer ']) {
      expect((await call('GET', '/api/v1/fleet', undefined, undefined, { authorization: `${scheme} ${c.admin}` })).status, scheme).toBe(200);
    }
    expect((await call('GET', '/api/v1/fleet', undefined, undefined, { authorization: `Basic ${c.admin}` })).status).toBe(401);
  });

  test('text/plain bodies are raw bytes too: gzip logs, a non-ASCII artifact, an artifact over 1 MiB', async () => {
    const node = await c.nodeToken('n-text');
    const line = '{"severity":"INFO","source":"s","content":"gzip as text/plain","msgid":"1","timestamp":"2026-12-01T10:00:00Z"}\n';
    const logs = await call('POST', '/api/v1/logs?app=vm1', node, gzipSync(line), { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
    expect(logs.status, JSON.stringify(logs.body)).toBe(200);
    expect(logs.body).toMatchObject({ stored: 1 });
    for (const [name, text] of [
      ['non-ASCII', 'ünïcödé console ✓\n'],
      ['over 1 MiB', `${'x'.repeat(1023)}\n`.repeat(1536)],
    ] as const) {
      const b = await bundle(`text-${name.replace(/\W/g, '')}`, text);
      const h = b.manifest.steps[0]?.artifacts[0]?.sha256 as string;
      const offer = (await call('POST', '/api/v1/reports', node, b.text)).body as unknown as ReportOffer;
      expect(offer.missing).toContain(h);
      const put = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, b.files.get(h), { 'content-type': 'text/plain; charset=utf-8' });
      expect(put.status, `${name}: ${JSON.stringify(put.body)}`).toBe(201);
      expect(put.body).toMatchObject({ bytes: Buffer.byteLength(text) });
    }
  });

  test('a gzipped zero-byte artifact is accepted; one that inflates to a byte is not', async () => {
    const node = await c.nodeToken('n-empty');
    const b = await bundle('empty', '');
    const h = b.manifest.steps[0]?.artifacts[0]?.sha256 as string;
    expect(b.files.get(h)?.length).toBe(0);
    const offer = (await call('POST', '/api/v1/reports', node, b.text)).body as unknown as ReportOffer;
    expect(offer.missing).toContain(h);
    const gz = { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' };
    const put = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, gzipSync(Buffer.alloc(0)), gz);
    expect(put.status, JSON.stringify(put.body)).toBe(201);
    expect(put.body).toMatchObject({ sha256: h, bytes: 0 });
    const one = await call('PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, node, gzipSync('x'), gz);
    expect(one.status).toBe(413);
    expect(String(one.body.error)).toMatch(/inflates to more than 0 bytes/);
  });

  test('since and until compare times, whatever offset or precision the manifest wrote', async () => {
    const node = await c.nodeToken('n-tz');
    for (const [app, createdAt] of [
      ['tz-offset', '2026-12-01T10:00:00+02:00'], // 08:00Z
      ['tz-nofrac', '2026-12-01T08:00:00Z'],
    ] as const) {
      const b = await bundle(app);
      await upload(node, { ...b, text: JSON.stringify({ ...b.manifest, createdAt }) });
    }
    const count = async (q: string) => {
      const r = await call('GET', `/api/v1/reports?${q}`, c.admin);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return (r.body.reports as unknown[]).length;
    };
    for (const app of ['tz-offset', 'tz-nofrac']) {
      expect(await count(`app=${app}&since=2026-12-01T08:00:00Z`), app).toBe(1);
      expect(await count(`app=${app}&since=2026-12-01T08:00:00.500Z`), app).toBe(0);
      expect(await count(`app=${app}&since=2026-12-01T09:00:00Z`), app).toBe(0);
      expect(await count(`app=${app}&until=2026-12-01T09:00:00%2B01:00`), app).toBe(0);
      expect(await count(`app=${app}&until=2026-12-01T08:00:00.500Z`), app).toBe(1);
      expect(await count(`app=${app}&until=2026-12-01T09:00:00Z`), app).toBe(1);
    }
  });

  test('a filter given twice is a 400 saying so', async () => {
    for (const q of ['node=a&node=b', 'app=a&app=b', 'verdict=unknown&verdict=unknown', 'since=2026-12-01&since=2026-12-02', 'limit=1&limit=2']) {
      const k = q.split('=')[0] as string;
      for (const [method, path] of [
        ['GET', '/api/v1/reports'],
        ['POST', '/api/v1/reanalyze'],
      ] as const) {
        const r = await call(method, `${path}?${q}`, c.admin);
        expect(r.status, `${method} ${q}`).toBe(400);
        expect(String(r.body.error)).toMatch(new RegExp(`give ${k} once`));
      }
    }
    const logs = await call('POST', '/api/v1/reanalyze?logs=true&logs=false', c.admin);
    expect(logs.status).toBe(400);
    expect(String(logs.body.error)).toMatch(/give logs once/);
  });

  test('reanalyze honours limit, and a report or app whose analysis is queued gets no second job', async () => {
    const quiet = await startController({ worker: false, limits: { maxRequestsPerSecond: 1000 } });
    try {
      const node = await quiet.nodeToken('n-re');
      const keys: number[] = [];
      for (let i = 0; i < 3; i++) {
        const b = await bundle('re');
        const offer = (await (await fetch(`${quiet.url}/api/v1/reports`, { method: 'POST', headers: { authorization: `Bearer ${node}` }, body: b.text })).json()) as ReportOffer;
        for (const h of offer.missing) {
          await fetch(`${quiet.url}/api/v1/reports/${b.manifest.id}/artifacts/${h}`, { method: 'PUT', headers: { authorization: `Bearer ${node}`, 'content-type': 'application/octet-stream' }, body: new Uint8Array(b.files.get(h) as Buffer) });
        }
        keys.push(((await (await fetch(`${quiet.url}/api/v1/reports/${b.manifest.id}/commit`, { method: 'POST', headers: { authorization: `Bearer ${node}` } })).json()) as ReportAck).key);
      }
      const logLine = '{"content":"x","timestamp":"2026-12-01T10:00:00Z"}\n';
      expect((await fetch(`${quiet.url}/api/v1/logs?app=re`, { method: 'POST', headers: { authorization: `Bearer ${node}` }, body: logLine })).status).toBe(200);
      const reanalyze = async (q: string) => {
        const r = await fetch(`${quiet.url}/api/v1/reanalyze?${q}`, { method: 'POST', headers: { authorization: `Bearer ${quiet.admin}` } });
        expect(r.status).toBe(200);
        return ((await r.json()) as { queued: number }).queued;
      };
      const jobs = async () => (await quiet.store.db.all("SELECT report_key, kind FROM jobs WHERE state = 'queued' ORDER BY key")).map((j) => (j['kind'] === 'analyze-logs' ? 'logs' : Number(j['report_key'])));
      // The commits and the log lines queued one job each: nothing more to queue.
      expect(await jobs()).toEqual([...keys, 'logs']);
      expect(await reanalyze('app=re&logs=true')).toBe(0);
      expect(await jobs()).toEqual([...keys, 'logs']);
      // Once analyzed, they are queued again, at most `limit` of them (the newest first, as the list).
      await quiet.store.db.run("UPDATE jobs SET state = 'done'");
      expect(await reanalyze('app=re&limit=2')).toBe(2);
      expect(await jobs()).toEqual([keys[2], keys[1]]);
      expect(await reanalyze(`app=re&limit=1&before=${keys[1]}`)).toBe(1);
      expect(await reanalyze('app=re&logs=1')).toBe(1);
      expect(await jobs()).toEqual([keys[2], keys[1], keys[0], 'logs']);
    } finally {
      await quiet.close();
    }
  });

  test('the token and the rate limit are checked before the body is read', async () => {
    const small = await startController({ limits: { maxRequestsPerSecond: 1 } });
    try {
      const node = await small.nodeToken('n-early');
      const put = `/api/v1/reports/r1/artifacts/${'a'.repeat(64)}`;
      for (const [what, headers] of [
        ['no token', {}],
        ['a wrong token', { authorization: 'Bearer edt_notarealtokenatallnotarealtoken' }],
      ] as const) {
        for (const path of [put, '/api/v1/reports', '/api/v1/logs?app=x', '/api/v1/reanalyze']) {
          const r = await answerBeforeBody(small.url, path === put ? 'PUT' : 'POST', path, headers);
          expect(r.status, `${what} ${path}`).toBe(401);
          expect(r.headers['www-authenticate']).toBe('Bearer');
          expect(String(r.body.error)).toMatch(/a valid bearer token is required/);
        }
      }
      const wrongRole = await answerBeforeBody(small.url, 'PUT', put, { authorization: `Bearer ${small.admin}` });
      expect(wrongRole.status).toBe(403);
      expect(String(wrongRole.body.error)).toMatch(/this needs a node token/);
      // A burst of 4 at 1 per second, then 429: for a request whose body has not come either.
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await fetch(`${small.url}/api/v1/fleet`, { headers: { authorization: `Bearer ${node}` } })).status);
      expect(statuses).toEqual([200, 200, 200, 200]);
      const over = await answerBeforeBody(small.url, 'PUT', put, { authorization: `Bearer ${node}` });
      expect(over.status).toBe(429);
      expect(Number(over.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      await small.close();
    }
  });

  test('the rate limit is per token: two tokens of one node with one label do not share it', async () => {
    const small = await startController({ limits: { maxRequestsPerSecond: 1 } });
    try {
      const nodeId = (await small.store.nodeId('n-two')) as number;
      const [t1, t2] = [newToken(), newToken()];
      for (const t of [t1, t2]) await small.store.addToken(hashToken(t), 'node', nodeId, '');
      const fleet = async (t: string) => (await fetch(`${small.url}/api/v1/fleet`, { headers: { authorization: `Bearer ${t}` } })).status;
      const first: number[] = [];
      for (let i = 0; i < 5; i++) first.push(await fleet(t1));
      expect(first).toEqual([200, 200, 200, 200, 429]);
      expect(await fleet(t2)).toBe(200);
    } finally {
      await small.close();
    }
  });
});
