import { execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type ConnectionOptions } from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashToken, newToken } from '../../controller/auth.js';
import type { Limits } from '../../controller/limits.js';
import { createController, type Controller } from '../../controller/server.js';
import type { FsBlobs } from '../../controller/store/blobs.js';
import { openStore } from '../../controller/store/open.js';
import type { Store } from '../../controller/store/store.js';
import { Spool } from '../../monitor/report/spool.js';
import type { ReportAck, ReportOffer } from '../../protocol/controller-api.js';
import type { ReportManifest } from '../../protocol/report-manifest.js';

/**
 * The controller's security expectations, route by route (issue 13 section 4), through fastify's
 * inject against a real store (SQLite in a temporary directory):
 *
 * - every route fastify has is in ROUTES with who may call it; a route missing from the table fails
 *   the first test, so no route is added without a security expectation;
 * - no token is 401 (the dashboard's pages: a redirect to the login form), a node token on an admin
 *   route 403, an admin token on a node route 403;
 * - node B cannot read, overwrite, commit or delete node A's reports, artifacts, files, bundles, apps,
 *   logs or dropped notices;
 * - hostile path parameters (../, %2e%2e, absolute paths, NUL, backslashes) never reach a file
 *   outside the data directory (an outside file's secret never comes back, and nothing answers 500);
 * - every body over its route's limit is 413; too many requests of one token (or login attempts of
 *   one address) are 429 with Retry-After;
 * - the database holds token hashes, never a token;
 * - TLS: 1.2 and 1.3 only, forward-secret AEAD suites only, checked with real handshakes.
 */

type Access =
  /** Anyone (liveness, metrics, the login form, static assets). */
  | 'public'
  /** A node token only (the node API). */
  | 'node'
  /** An admin token or a node token (scoped to the node); the session cookie too. */
  | 'reader'
  /** An admin token; the session cookie too (GET). */
  | 'admin'
  /** An admin bearer token only: a write, never authorized by the cookie. */
  | 'admin-write'
  /** A dashboard page: the admin session (cookie or bearer), else a redirect to /login. */
  | 'page'
  /** The login form's POST: an admin token in the body. */
  | 'login';

interface RouteExpectation {
  access: Access;
  /** A URL for the route; `{key}`, `{id}`, `{file}`, `{node}`, `{app}` are node A's. */
  sample: string;
  /** Routes that read a body: over `limit` bytes is 413. */
  body?: { limit: (l: Limits) => number };
  /** Hostile values are tried in these path parameters. */
  params?: string[];
}

/** The limits of the controller under test (small, so oversize bodies stay small). */
const LIMITS: Partial<Limits> = {
  maxManifestBytes: 8 * 1024,
  maxArtifactBytes: 8 * 1024,
  maxSmallBodyBytes: 2 * 1024,
  maxLogBodyBytes: 2 * 1024,
  maxRequestsPerSecond: 10_000,
  maxReportsPerHour: 1000,
};

/** Every route, with who may call it. Adding a route to the controller without a line here fails the coverage test. */
const ROUTES: Record<string, RouteExpectation> = {
  'GET /healthz': { access: 'public', sample: '/healthz' },
  // Prometheus scrapes without a token: counters of requests and jobs, nothing a node sent.
  'GET /metrics': { access: 'public', sample: '/metrics' },
  'POST /api/v1/reports': { access: 'node', sample: '/api/v1/reports', body: { limit: (l) => l.maxManifestBytes } },
  'PUT /api/v1/reports/:id/artifacts/:sha256': { access: 'node', sample: '/api/v1/reports/{id}/artifacts/{sha}', body: { limit: (l) => l.maxArtifactBytes }, params: ['id', 'sha256'] },
  'POST /api/v1/reports/:id/commit': { access: 'node', sample: '/api/v1/reports/{id}/commit', body: { limit: () => 1024 }, params: ['id'] },
  'POST /api/v1/events': { access: 'node', sample: '/api/v1/events', body: { limit: (l) => l.maxSmallBodyBytes } },
  'POST /api/v1/dropped': { access: 'node', sample: '/api/v1/dropped', body: { limit: (l) => l.maxSmallBodyBytes } },
  'POST /api/v1/logs': { access: 'node', sample: '/api/v1/logs?app={app}', body: { limit: (l) => l.maxLogBodyBytes } },
  'GET /api/v1/fleet': { access: 'reader', sample: '/api/v1/fleet' },
  'GET /api/v1/reports': { access: 'reader', sample: '/api/v1/reports' },
  'GET /api/v1/reports/:key': { access: 'reader', sample: '/api/v1/reports/{key}', params: ['key'] },
  'GET /api/v1/reports/:key/findings': { access: 'reader', sample: '/api/v1/reports/{key}/findings', params: ['key'] },
  'GET /api/v1/reports/:key/files/:file': { access: 'reader', sample: '/api/v1/reports/{key}/files/{file}', params: ['key', 'file'] },
  'GET /api/v1/reports/:key/bundle.tar.gz': { access: 'reader', sample: '/api/v1/reports/{key}/bundle.tar.gz', params: ['key'] },
  'GET /api/v1/apps/:node/:app': { access: 'reader', sample: '/api/v1/apps/{node}/{app}', params: ['node', 'app'] },
  'GET /api/v1/dropped': { access: 'reader', sample: '/api/v1/dropped' },
  'GET /api/v1/status': { access: 'admin', sample: '/api/v1/status' },
  'POST /api/v1/reanalyze': { access: 'admin-write', sample: '/api/v1/reanalyze?app=nothing-here', body: { limit: () => 16 * 1024 } },
  'GET /assets/:name': { access: 'public', sample: '/assets/app.css', params: ['name'] },
  'GET /login': { access: 'public', sample: '/login' },
  'POST /login': { access: 'login', sample: '/login', body: { limit: () => 4096 } },
  'POST /logout': { access: 'public', sample: '/logout', body: { limit: () => 1024 } },
  'GET /': { access: 'page', sample: '/' },
  'GET /reports': { access: 'page', sample: '/reports' },
  'GET /reports/:key': { access: 'page', sample: '/reports/{key}', params: ['key'] },
  'GET /reports/:key/view/:file': { access: 'page', sample: '/reports/{key}/view/{file}', params: ['key', 'file'] },
  'GET /reports/:key/bundle.tar.gz': { access: 'page', sample: '/reports/{key}/bundle.tar.gz', params: ['key'] },
};

const SECRET = `outside-the-data-directory-${randomUUID()}`;
let root: string;
let data: string;
let store: Store;
let ctl: Controller;
let admin: string;
let tokenA: string;
let tokenB: string;
/** Node A's report, as stored. */
let a: { key: number; id: string; file: string; sha: string; app: string; manifestSha: string };

async function nodeToken(s: Store, name: string): Promise<string> {
  const t = newToken();
  await s.addToken(hashToken(t), 'node', (await s.nodeId(name)) as number, `test ${name}`);
  return t;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
  json: Record<string, unknown>;
}

async function call(c: Controller, method: string, url: string, o: { token?: string; cookie?: string; body?: string | Buffer; type?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (o.token !== undefined) headers['authorization'] = `Bearer ${o.token}`;
  if (o.cookie !== undefined) headers['cookie'] = `eve_diag_admin=${encodeURIComponent(o.cookie)}`;
  if (o.body !== undefined) headers['content-type'] = o.type ?? 'application/json';
  const r = await c.app.inject({ method: method as 'GET', url, headers, ...(o.body !== undefined ? { payload: o.body } : {}) });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(r.body) as Record<string, unknown>;
  } catch {
    // not JSON: a page, a file, a tarball
  }
  return { status: r.statusCode, headers: r.headers, body: r.body, json };
}

/** A real bundle (the monitor's writer): a console capture and a JSON artifact. */
async function bundle(app: string, consoleText: string) {
  const dir = mkdtempSync(join(tmpdir(), 'eve-diag-sec-spool-'));
  try {
    const b = await new Spool({ dir }).write({
      app,
      verdict: 'guest-kernel-hung',
      evidence: { reason: 'kernel heartbeat stalled' },
      steps: [
        { kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: consoleText }] },
        { kind: 'qmp-state', ok: true, summary: 'qmp', artifacts: [{ name: 'qmp.json', mediaType: 'application/json', data: JSON.stringify({ nonce: randomUUID() }) }] },
      ],
    });
    const text = readFileSync(join(b.dir, 'manifest.json'), 'utf8');
    const files = new Map(b.manifest.steps.flatMap((s) => s.artifacts.map((x) => [x.sha256, readFileSync(join(b.dir, x.file))] as const)));
    return { manifest: b.manifest, text, files };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function upload(c: Controller, token: string, b: Awaited<ReturnType<typeof bundle>>): Promise<ReportAck> {
  const offer = await call(c, 'POST', '/api/v1/reports', { token, body: b.text });
  expect(offer.status, offer.body).toBe(202);
  for (const h of (offer.json as unknown as ReportOffer).missing) {
    const put = await call(c, 'PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, { token, body: b.files.get(h) as Buffer, type: 'application/octet-stream' });
    expect(put.status, put.body).toBe(201);
  }
  const commit = await call(c, 'POST', `/api/v1/reports/${b.manifest.id}/commit`, { token });
  expect(commit.status, commit.body).toBe(200);
  return commit.json as unknown as ReportAck;
}

function fill(sample: string): string {
  return sample
    .replace('{key}', String(a.key))
    .replace('{id}', a.id)
    .replace('{sha}', a.sha)
    .replace('{file}', a.file)
    .replace('{node}', 'node-a')
    .replace('{app}', a.app);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'eve-diag-sec-'));
  data = join(root, 'data');
  store = await openStore({ data });
  ctl = await createController({ store, limits: LIMITS, worker: false });
  admin = newToken();
  await store.addToken(hashToken(admin), 'admin', null, 'test admin');
  tokenA = await nodeToken(store, 'node-a');
  tokenB = await nodeToken(store, 'node-b');
  // Files a traversal would be after: beside the data directory, inside it but outside the artifacts.
  writeFileSync(join(root, 'outside.txt'), SECRET);
  writeFileSync(join(data, 'outside.txt'), SECRET);
  const b = await bundle('app-a', `[    1.0] Kernel panic - not syncing: node A ${randomUUID()}\n`);
  const ack = await upload(ctl, tokenA, b);
  const art = b.manifest.steps[0]?.artifacts[0] as ReportManifest['steps'][number]['artifacts'][number];
  a = { key: ack.key, id: b.manifest.id, file: art.file, sha: art.sha256, app: 'app-a', manifestSha: ack.manifestSha256 };
  const line = JSON.stringify({ severity: 'INFO', source: 's', content: `node A's log ${randomUUID()}`, msgid: '1', timestamp: '2026-12-01T10:00:00Z' });
  expect((await call(ctl, 'POST', `/api/v1/logs?app=${a.app}`, { token: tokenA, body: `${line}\n`, type: 'text/plain' })).status).toBe(200);
  const events = [{ id: 'event-a-1', app: a.app, verdict: 'guest-panicked', reason: 'a panic', at: '2026-12-01T10:00:00.000Z' }];
  expect((await call(ctl, 'POST', '/api/v1/events', { token: tokenA, body: JSON.stringify(events) })).status).toBe(200);
  const dropped = [{ id: 'dropped-by-a', bytes: 10, droppedAt: '2026-12-01T10:00:00.000Z', reason: 'spool quota' }];
  expect((await call(ctl, 'POST', '/api/v1/dropped', { token: tokenA, body: JSON.stringify(dropped) })).status).toBe(200);
});

afterAll(async () => {
  await ctl?.close();
  await store?.close();
  if (root !== undefined) rmSync(root, { recursive: true, force: true });
});

describe('every route has a security expectation', () => {
  test('the routes fastify has are exactly the table (a GET brings its HEAD)', () => {
    const registered = new Set<string>();
    for (const r of ctl.routes()) registered.add(`${r.method === 'HEAD' ? 'GET' : r.method} ${r.url}`);
    const missing = [...registered].filter((r) => !(r in ROUTES));
    expect(missing, 'routes with no security expectation in ROUTES').toEqual([]);
    expect(Object.keys(ROUTES).filter((r) => !registered.has(r)), 'expectations for routes that do not exist').toEqual([]);
    // Every route that takes a body says its limit.
    const noLimit = Object.entries(ROUTES).filter(([r, e]) => !r.startsWith('GET ') && e.body === undefined);
    expect(noLimit.map(([r]) => r)).toEqual([]);
  });
});

describe('authentication and roles, route by route', () => {
  const cases = Object.entries(ROUTES);

  test.each(cases)('%s', async (route, e) => {
    const method = route.split(' ')[0] as string;
    const url = fill(e.sample);
    const body = method === 'GET' ? undefined : method === 'POST' && url.startsWith('/login') ? `token=${encodeURIComponent(admin)}` : '{}';
    const type = url.startsWith('/login') ? 'application/x-www-form-urlencoded' : 'application/json';
    const as = async (o: { token?: string; cookie?: string }) => call(ctl, method, url, { ...o, ...(body !== undefined ? { body, type } : {}) });
    const denied401 = (r: Answer, who: string) => {
      expect(r.status, `${who}: ${r.body}`).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer');
    };
    const toLogin = (r: Answer, who: string) => {
      expect(r.status, `${who}: ${r.body}`).toBe(303);
      expect(r.headers['location']).toBe('/login');
    };
    const allowed = (r: Answer, who: string) => expect([401, 403, 429], `${who}: ${r.status} ${r.body}`).not.toContain(r.status);
    const wrong = 'edt_notarealtokenatallnotarealtoken';
    switch (e.access) {
      case 'public':
        allowed(await as({}), 'no token');
        break;
      case 'node':
        denied401(await as({}), 'no token');
        denied401(await as({ token: wrong }), 'a wrong token');
        expect((await as({ token: admin })).status, 'admin token').toBe(403);
        expect((await as({ cookie: admin })).status, 'the admin cookie').toBe(401);
        allowed(await as({ token: tokenA }), 'node token');
        break;
      case 'reader':
        denied401(await as({}), 'no token');
        denied401(await as({ token: wrong }), 'a wrong token');
        expect((await as({ token: admin })).status, 'admin').toBe(200);
        expect((await as({ cookie: admin })).status, 'the admin cookie').toBe(200);
        expect((await as({ token: tokenA })).status, 'the owning node').toBe(200);
        // A node token in the cookie is not a session: only admins log in.
        expect([200, 404], 'node token as cookie (its own data)').toContain((await as({ cookie: tokenA })).status);
        break;
      case 'admin':
        denied401(await as({}), 'no token');
        expect((await as({ token: tokenA })).status, 'node token').toBe(403);
        expect((await as({ cookie: tokenA })).status, 'node token as cookie').toBe(403);
        expect((await as({ token: admin })).status, 'admin').toBe(200);
        expect((await as({ cookie: admin })).status, 'the admin cookie').toBe(200);
        break;
      case 'admin-write':
        denied401(await as({}), 'no token');
        expect((await as({ token: tokenA })).status, 'node token').toBe(403);
        // A write is never authorized by the cookie (no cross-site request forgery).
        denied401(await as({ cookie: admin }), 'the admin cookie');
        expect((await as({ token: admin })).status, 'admin').toBe(200);
        break;
      case 'page':
        toLogin(await as({}), 'no session');
        toLogin(await as({ cookie: tokenA }), 'a node token as cookie');
        toLogin(await as({ token: tokenA }), 'a node bearer token');
        toLogin(await as({ cookie: 'edt_notarealtokenatallnotarealtoken' }), 'a wrong cookie');
        expect((await as({ cookie: admin })).status, 'the admin session').toBe(200);
        break;
      case 'login': {
        const form = async (token: string) => call(ctl, 'POST', url, { body: `token=${encodeURIComponent(token)}`, type });
        expect((await form(wrong)).status, 'a wrong token').toBe(401);
        const node = await form(tokenA);
        expect(node.status, 'a node token').toBe(401);
        expect(node.headers['set-cookie']).toBeUndefined();
        const ok = await form(admin);
        expect(ok.status).toBe(303);
        expect(String(ok.headers['set-cookie'])).toMatch(/HttpOnly; SameSite=Strict/);
        break;
      }
    }
  });
});

describe('node B cannot touch node A', () => {
  test('reads: reports, findings, files, bundles, apps, the list, the fleet, dropped notices', async () => {
    for (const path of [`/api/v1/reports/${a.key}`, `/api/v1/reports/${a.key}/findings`, `/api/v1/reports/${a.key}/files/${a.file}`, `/api/v1/reports/${a.key}/bundle.tar.gz`, `/api/v1/apps/node-a/${a.app}`]) {
      const r = await call(ctl, 'GET', path, { token: tokenB });
      expect(r.status, path).toBe(404);
      expect(r.body, path).not.toContain('Kernel panic');
      // The same path by node A: the 404 above is B's, not a broken path.
      expect((await call(ctl, 'GET', path, { token: tokenA })).status, path).toBe(200);
    }
    const list = await call(ctl, 'GET', '/api/v1/reports', { token: tokenB });
    expect(list.json['reports']).toEqual([]);
    const asNodeFilter = await call(ctl, 'GET', '/api/v1/reports?node=node-a', { token: tokenB });
    expect(asNodeFilter.json['reports']).toEqual([]);
    expect((await call(ctl, 'GET', '/api/v1/reports', { token: tokenA })).json['reports']).toHaveLength(1);
    expect(JSON.stringify((await call(ctl, 'GET', '/api/v1/fleet', { token: tokenB })).json)).not.toContain(a.app);
    expect(JSON.stringify((await call(ctl, 'GET', '/api/v1/fleet', { token: tokenA })).json)).toContain(a.app);
    expect((await call(ctl, 'GET', '/api/v1/dropped', { token: tokenB })).json['dropped']).toEqual([]);
    expect(JSON.stringify((await call(ctl, 'GET', '/api/v1/dropped', { token: tokenA })).json)).toContain('dropped-by-a');
    // The dashboard's pages are the admin's only.
    for (const path of [`/reports/${a.key}`, `/reports/${a.key}/view/${a.file}`, `/reports/${a.key}/bundle.tar.gz`]) {
      expect((await call(ctl, 'GET', path, { token: tokenB })).status, path).toBe(303);
    }
  });

  test('writes: B cannot commit, fill in or overwrite A\'s report, and there is no route that deletes', async () => {
    const before = await store.manifest(a.key);
    expect((await call(ctl, 'POST', `/api/v1/reports/${a.id}/commit`, { token: tokenB })).status).toBe(404);
    const put = await call(ctl, 'PUT', `/api/v1/reports/${a.id}/artifacts/${a.sha}`, { token: tokenB, body: 'overwritten by B', type: 'application/octet-stream' });
    expect(put.status).toBe(404);
    // B sending a manifest with A's report id makes B's own report; A's stays as it was.
    const forged = await bundle(a.app, 'written by node B\n');
    const text = JSON.stringify({ ...forged.manifest, id: a.id });
    const offer = await call(ctl, 'POST', '/api/v1/reports', { token: tokenB, body: text });
    expect(offer.status, offer.body).toBe(202);
    const mine = await store.reportByNodeId((await store.nodeId('node-a', false)) as number, a.id);
    expect(mine?.key).toBe(a.key);
    expect(await store.manifest(a.key)).toEqual(before);
    const file = await call(ctl, 'GET', `/api/v1/reports/${a.key}/files/${a.file}`, { token: admin });
    expect(file.body).toContain('Kernel panic - not syncing: node A');
    // No DELETE (or PATCH) route exists for anything: each is a 404, and the report is still there.
    for (const method of ['DELETE', 'PATCH'] as const) {
      for (const path of [`/api/v1/reports/${a.key}`, `/api/v1/reports/${a.id}`, `/api/v1/reports/${a.key}/files/${a.file}`, `/api/v1/reports/${a.id}/artifacts/${a.sha}`, `/api/v1/apps/node-a/${a.app}`]) {
        expect((await call(ctl, method, path, { token: tokenB })).status, `${method} ${path}`).toBe(404);
        expect((await call(ctl, method, path, { token: admin })).status, `${method} ${path}`).toBe(404);
      }
    }
    expect((await call(ctl, 'GET', `/api/v1/reports/${a.key}`, { token: tokenA })).status).toBe(200);
  });

  test('blobs: B naming the SHA-256 of A\'s artifact is asked for its bytes, cannot commit without them, and learns nothing of whether the controller holds it', async () => {
    const size = Number((await store.db.get('SELECT bytes FROM blobs WHERE sha256 = ?', [a.sha]))?.['bytes']);
    expect(size).toBeGreaterThan(0);
    const claim = async (id: string, bytes: number) => {
      const b = await bundle(a.app, 'B has not got these bytes\n');
      const m = structuredClone(b.manifest);
      const art = m.steps[0]!.artifacts[0]!;
      m.totalBytes += bytes - art.bytes;
      art.bytes = bytes;
      art.sha256 = a.sha;
      return { ...b, manifest: { ...m, id }, text: JSON.stringify({ ...m, id }) };
    };
    const b = await claim(`claims-${randomUUID()}`, size);
    const offer = await call(ctl, 'POST', '/api/v1/reports', { token: tokenB, body: b.text });
    expect(offer.status, offer.body).toBe(202);
    expect((offer.json as unknown as ReportOffer).missing).toContain(a.sha);
    const commit = await call(ctl, 'POST', `/api/v1/reports/${b.manifest.id}/commit`, { token: tokenB });
    expect(commit.status).toBe(409);
    expect(commit.json['missing']).toContain(a.sha);
    expect((await call(ctl, 'PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${a.sha}`, { token: tokenB, body: Buffer.alloc(size, 0x41), type: 'application/octet-stream' })).status).toBe(400);
    expect((await call(ctl, 'GET', '/api/v1/reports', { token: tokenB })).body).not.toContain(b.manifest.id);
    // Another size for that hash: the same answer as for a hash nobody sent (no oracle of what A holds).
    const liar = await claim(`claims-${randomUUID()}`, size + 7);
    const other = await call(ctl, 'POST', '/api/v1/reports', { token: tokenB, body: liar.text });
    expect(other.status, other.body).toBe(202);
    // A node that has the bytes sends them once and commits; the blob is still stored once.
    const blobs = Number((await store.db.get('SELECT COUNT(*) AS n FROM blobs'))?.['n']);
    const real = Buffer.from((await call(ctl, 'GET', `/api/v1/reports/${a.key}/files/${a.file}`, { token: tokenA })).body, 'utf8');
    expect((await call(ctl, 'PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${a.sha}`, { token: tokenB, body: real, type: 'application/octet-stream' })).status).toBe(201);
    for (const h of (offer.json as unknown as ReportOffer).missing.filter((h) => h !== a.sha)) {
      expect((await call(ctl, 'PUT', `/api/v1/reports/${b.manifest.id}/artifacts/${h}`, { token: tokenB, body: b.files.get(h) as Buffer, type: 'application/octet-stream' })).status).toBe(201);
    }
    expect((await call(ctl, 'POST', `/api/v1/reports/${b.manifest.id}/commit`, { token: tokenB })).status).toBe(200);
    expect(Number((await store.db.get('SELECT COUNT(*) AS n FROM blobs'))?.['n'])).toBe(blobs + 1); // B's qmp.json only
  });

  test('logs: B writing logs for A\'s app name stores them under B; A\'s logs are unchanged', async () => {
    const idA = (await store.nodeId('node-a', false)) as number;
    const idB = (await store.nodeId('node-b', false)) as number;
    const linesA = await store.logs(idA, a.app);
    const line = JSON.stringify({ severity: 'ERR', source: 's', content: 'forged by B', timestamp: '2026-12-01T10:00:01Z' });
    expect((await call(ctl, 'POST', `/api/v1/logs?app=${a.app}`, { token: tokenB, body: `${line}\n`, type: 'text/plain' })).status).toBe(200);
    expect(await store.logs(idA, a.app)).toEqual(linesA);
    expect((await store.logs(idB, a.app)).map((l) => l.content)).toEqual(['forged by B']);
  });
});

/** Hostile values of a path parameter: traversals, encoded traversals, absolute paths, NUL, backslashes. */
function hostileValues(): string[] {
  const abs = join(root, 'outside.txt');
  return [
    '..',
    '%2e%2e',
    '%2E%2E',
    '..%2foutside.txt',
    '%2e%2e%2f%2e%2e%2foutside.txt',
    '..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd',
    '..%5c..%5coutside.txt',
    encodeURIComponent(abs),
    '%2fetc%2fpasswd',
    'a%00b',
    `${a.file}%00.png`,
    '%00',
    '%zz',
    '%',
    '.',
    '~',
    '__proto__',
    'constructor',
    encodeURIComponent(`../../data/${'ab'}/../outside.txt`),
    encodeURIComponent('../'.repeat(20) + 'etc/passwd'),
  ];
}

describe('no path from a request to the filesystem outside the data directory', () => {
  const withParams = Object.entries(ROUTES).filter(([, e]) => e.params !== undefined);

  /** A request over a real socket: the path goes as written (inject, like a browser, would resolve `..`). */
  const raw = (method: string, path: string, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const q = request({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/octet-stream', 'content-length': String(body.length) } : {}) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      });
      q.on('error', reject);
      q.end(body);
    });
  let port = 0;
  beforeAll(async () => {
    port = (await ctl.listen('127.0.0.1', 0)).port;
  });

  test.each(withParams)('%s', async (route, e) => {
    const method = route.split(' ')[0] as string;
    const parts = route.split(' ')[1] as string;
    const credentials: Record<string, string> = e.access === 'node' ? { authorization: `Bearer ${tokenA}` } : e.access === 'page' ? { cookie: `eve_diag_admin=${encodeURIComponent(admin)}` } : { authorization: `Bearer ${admin}` };
    for (const param of e.params as string[]) {
      for (const bad of hostileValues()) {
        // The sample URL with this one parameter replaced (the others stay valid).
        const segs = parts.split('/').map((s) => (s === `:${param}` ? bad : s.startsWith(':') ? fill(`{${s.slice(1) === 'sha256' ? 'sha' : s.slice(1)}}`) : s));
        const url = segs.join('/') + (route === 'POST /api/v1/logs' ? `?app=${a.app}` : '');
        const r = await raw(method, url, credentials, method === 'GET' ? undefined : 'x');
        const what = `${method} ${url}: ${r.status} ${r.body.slice(0, 200)}`;
        // An app name is only a key in the database: an unknown one is an app with nothing (200).
        if (!(route === 'GET /api/v1/apps/:node/:app' && param === 'app')) expect(r.status, what).toBeGreaterThanOrEqual(400);
        expect(r.status, what).toBeLessThan(500);
        expect(r.body, what).not.toContain(SECRET);
        expect(r.body, what).not.toMatch(/root:.*:0:0:/);
      }
    }
  });

  test('the artifact store refuses a name that is not a SHA-256 before any path is made', async () => {
    for (const bad of ['../outside.txt', `${'a'.repeat(62)}/.`, '/etc/passwd', `${'a'.repeat(64)}\0`, 'A'.repeat(64)]) {
      await expect(store.blob(bad)).resolves.toBeUndefined(); // not in the blobs table: no file is opened
      expect(store.blobs).not.toBe('in-db');
      await expect((store.blobs as FsBlobs).get(bad)).rejects.toThrow(RangeError);
    }
  });

  test('the data directory and what is in it are the controller\'s only (0700 directories, 0600 artifacts)', () => {
    expect(statSync(data).mode & 0o777).toBe(0o700);
    const arts = join(data, 'artifacts');
    expect(statSync(arts).mode & 0o777).toBe(0o700);
    const sub = join(arts, a.sha.slice(0, 2));
    expect(statSync(sub).mode & 0o777).toBe(0o700);
    expect(statSync(join(sub, a.sha)).mode & 0o777).toBe(0o600);
  });
});

describe('size and rate limits', () => {
  test.each(Object.entries(ROUTES).filter(([, e]) => e.body !== undefined))('%s: a body over its limit is 413', async (route, e) => {
    const method = route.split(' ')[0] as string;
    const url = fill(e.sample);
    const limit = (e.body as { limit: (l: Limits) => number }).limit({ ...(await import('../../controller/limits.js')).DEFAULT_LIMITS, ...LIMITS });
    const token = e.access === 'node' ? tokenA : e.access === 'login' || e.access === 'public' ? undefined : admin;
    const r = await call(ctl, method, url, { ...(token !== undefined ? { token } : {}), body: Buffer.alloc(limit + 1, 0x61), type: 'application/octet-stream' });
    expect(r.status, r.body).toBe(413);
    expect(String(r.json['error'])).toMatch(/too large/);
    // At the limit it is read (whatever the route then thinks of it).
    const at = await call(ctl, method, url, { ...(token !== undefined ? { token } : {}), body: Buffer.alloc(Math.min(limit, 1024), 0x61), type: 'application/octet-stream' });
    expect(at.status, at.body).not.toBe(413);
  });

  test('every authenticated route: a token over its rate is 429 with Retry-After', async () => {
    const small = await openStore({ data: join(root, 'rate') });
    const c = await createController({ store: small, limits: { maxRequestsPerSecond: 1 }, worker: false });
    try {
      for (const [route, e] of Object.entries(ROUTES)) {
        if (e.access === 'public' || e.access === 'login') continue;
        const method = route.split(' ')[0] as string;
        // A fresh token per route: one bucket each (a burst of 4 at 1 per second).
        const t = e.access === 'node' || e.access === 'reader' ? await nodeToken(small, `rate-${route}`) : newToken();
        if (e.access !== 'node' && e.access !== 'reader') await small.addToken(hashToken(t), 'admin', null, route);
        const o = e.access === 'page' ? { cookie: t } : { token: t };
        const url = fill(e.sample);
        const statuses: number[] = [];
        for (let i = 0; i < 5; i++) statuses.push((await call(c, method, url, { ...o, ...(method === 'GET' ? {} : { body: '{}' }) })).status);
        expect(statuses.slice(0, 4), route).not.toContain(429);
        const over = await call(c, method, url, { ...o, ...(method === 'GET' ? {} : { body: '{}' }) });
        expect(over.status, `${route}: ${over.body}`).toBe(429);
        expect(Number(over.headers['retry-after']), route).toBeGreaterThan(0);
      }
    } finally {
      await c.close();
      await small.close();
    }
  });

  test('login attempts from one address are limited too: 429 with Retry-After', async () => {
    const small = await openStore({ data: join(root, 'login') });
    const c = await createController({ store: small, worker: false });
    try {
      const statuses: number[] = [];
      let retryAfter: unknown;
      for (let i = 0; i < 12; i++) {
        const r = await call(c, 'POST', '/login', { body: 'token=edt_notarealtokenatallnotarealtoken', type: 'application/x-www-form-urlencoded' });
        statuses.push(r.status);
        if (r.status === 429) retryAfter = r.headers['retry-after'];
      }
      expect(statuses.slice(0, 8)).toEqual(Array(8).fill(401));
      expect(statuses.slice(8)).toContain(429);
      expect(Number(retryAfter)).toBeGreaterThan(0);
    } finally {
      await c.close();
      await small.close();
    }
  });
});

describe('tokens are stored hashed', () => {
  test('no token, nor its random part, is anywhere in the data directory; their hashes are', async () => {
    // A checkpoint is not needed: the main file and its WAL are both read.
    const files: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else files.push(join(d, e.name));
      }
    };
    walk(data);
    expect(files.some((f) => f.endsWith('controller.db'))).toBe(true);
    const all = Buffer.concat(files.map((f) => readFileSync(f)));
    for (const [who, t] of [
      ['admin', admin],
      ['node A', tokenA],
      ['node B', tokenB],
    ] as const) {
      expect(all.includes(Buffer.from(t)), who).toBe(false);
      expect(all.includes(Buffer.from(t.slice(4))), `${who}, without its prefix`).toBe(false);
      expect(all.includes(Buffer.from(t.slice(4, 24))), `${who}, a piece`).toBe(false);
      // The search itself works: the hash is found.
      expect(all.includes(Buffer.from(hashToken(t))), `${who}'s hash`).toBe(true);
    }
  });
});

describe('TLS', () => {
  let dir: string;
  let tlsCtl: Controller | undefined;
  let tlsStore: Store | undefined;
  let port = 0;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'eve-diag-sec-tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    tlsStore = await openStore({ data: join(dir, 'data') });
    tlsCtl = await createController({ store: tlsStore, worker: false, tls: { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') } });
    port = (await tlsCtl.listen('127.0.0.1', 0)).port;
  });
  afterAll(async () => {
    await tlsCtl?.close();
    await tlsStore?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A handshake with `o`: the protocol and cipher, or the error's code. */
  function handshake(p: number, o: ConnectionOptions): Promise<{ protocol?: string | null; cipher?: string; error?: string }> {
    return new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port: p, rejectUnauthorized: false, ...o }, () => {
        const out = { protocol: s.getProtocol(), cipher: s.getCipher().name };
        s.end();
        resolve(out);
      });
      s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    });
  }

  // What an old or weak client offers: TLS 1.1; TLS 1.2 with CBC suites and static-RSA key exchange.
  const old: ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };
  const weak: ConnectionOptions[] = ['AES128-SHA', 'AES256-SHA256', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA384'].map((c) => ({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `${c}@SECLEVEL=0` }));

  test('these clients do get through to a permissive server (so a refusal below is the controller\'s)', async () => {
    const lax = createServer({ cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')), minVersion: 'TLSv1', ciphers: 'ALL@SECLEVEL=0' }, (s) => s.end());
    await new Promise<void>((r) => lax.listen(0, '127.0.0.1', r));
    try {
      const p = (lax.address() as { port: number }).port;
      expect(await handshake(p, old)).toMatchObject({ protocol: 'TLSv1.1' });
      for (const w of weak) expect(await handshake(p, w), String(w.ciphers)).toMatchObject({ protocol: 'TLSv1.2', cipher: String(w.ciphers).split('@')[0] });
    } finally {
      await new Promise((r) => lax.close(r));
    }
  });

  test('TLS 1.1 is refused; so are TLS 1.2 suites without forward secrecy or AEAD', async () => {
    const r = await handshake(port, old);
    expect(r.error, JSON.stringify(r)).toMatch(/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|HANDSHAKE_FAILURE/);
    for (const w of weak) {
      const x = await handshake(port, w);
      expect(x.error, `${String(w.ciphers)}: ${JSON.stringify(x)}`).toMatch(/HANDSHAKE_FAILURE/);
    }
  });

  test('TLS 1.2 with ECDHE and AES-GCM, and TLS 1.3, work', async () => {
    expect(await handshake(port, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).toMatchObject({ protocol: 'TLSv1.2', cipher: expect.stringMatching(/^ECDHE-RSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/) as unknown });
    expect(await handshake(port, { minVersion: 'TLSv1.3' })).toMatchObject({ protocol: 'TLSv1.3' });
    // And HTTP over it.
    const res = await new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(res).toMatch(/^HTTP\/1\.1 200/);
  });
});
