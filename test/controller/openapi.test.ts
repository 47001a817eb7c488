import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse } from 'yaml';
import type { ReportAck, ReportOffer } from '../../protocol/controller-api.js';
import type { ReportManifest } from '../../protocol/report-manifest.js';
import { startController, type TestController } from '../helpers/controller.js';

/**
 * docs/controller-api.yaml against the controller it describes: every /api/ route fastify registered
 * is in the document (method and path), every operation of the document is served, the document is
 * sane OpenAPI 3.1 (each operation answers something, path parameters declared, every $ref resolves),
 * and real answers (one report's upload and reads, events, logs, notices, refusals) have a status,
 * a media type and a JSON shape the document gives for them.
 */

type Obj = Record<string, unknown>;

const DOC_URL = new URL('../../docs/controller-api.yaml', import.meta.url);
// The operations of a Path Item (OpenAPI 3.1 section 4.8.9); `parameters`, `summary`... are not.
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const doc = parse(readFileSync(DOC_URL, 'utf8')) as unknown;
const root = isObj(doc) ? doc : {};
const paths = isObj(root['paths']) ? root['paths'] : {};

/** fastify's `/a/:b/c` as an OpenAPI path template `/a/{b}/c` (a name ends where fastify's does). */
function templateOf(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** The value at a JSON pointer (RFC 6901) in `from`, or undefined. */
function pointer(from: unknown, ptr: string): unknown {
  if (ptr === '' || ptr === '/') return from;
  let at = from;
  for (const raw of ptr.replace(/^\//, '').split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(at)) at = at[Number(key)];
    else if (isObj(at)) at = at[key];
    else return undefined;
  }
  return at;
}

/** A Reference Object of this document, followed; anything else as it is. */
function deref(v: unknown): unknown {
  for (let hops = 0; isObj(v) && typeof v['$ref'] === 'string' && v['$ref'].startsWith('#'); hops++) {
    if (hops > 10) throw new Error(`a $ref loop at ${v['$ref']}`);
    v = pointer(root, v['$ref'].slice(1));
  }
  return v;
}

/** Every operation of the document as "METHOD /path", with its Path Item and Operation Objects. */
function operations(): { id: string; path: string; item: Obj; op: Obj }[] {
  const out = [];
  for (const [path, item] of Object.entries(paths)) {
    if (!isObj(item)) continue;
    for (const m of METHODS) {
      const op = item[m];
      if (isObj(op)) out.push({ id: `${m.toUpperCase()} ${path}`, path, item, op });
    }
  }
  return out;
}

/** Every `$ref` string in `v`, with where it sits. */
function refs(v: unknown, at = ''): { at: string; ref: string }[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => refs(x, `${at}/${i}`));
  if (!isObj(v)) return [];
  return Object.entries(v).flatMap(([k, x]) => (k === '$ref' && typeof x === 'string' ? [{ at, ref: x }] : refs(x, `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`)));
}

describe('docs/controller-api.yaml is sane OpenAPI 3.1', () => {
  test('version, info, and at least one path', () => {
    expect(root['openapi']).toMatch(/^3\.1\.\d+$/);
    const info = root['info'];
    expect(isObj(info) && typeof info['title'] === 'string' && typeof info['version'] === 'string', 'info.title and info.version').toBe(true);
    expect(operations().length).toBeGreaterThan(0);
  });

  test('each operation has a unique operationId and responses with status codes and descriptions', () => {
    const problems: string[] = [];
    const ids = new Map<string, string>();
    for (const { id, op } of operations()) {
      const opId = op['operationId'];
      if (typeof opId !== 'string') problems.push(`${id}: no operationId`);
      else if (ids.has(opId)) problems.push(`${id}: operationId ${opId} is also ${ids.get(opId)}`);
      else ids.set(opId, id);
      const responses = op['responses'];
      if (!isObj(responses) || Object.keys(responses).length === 0) {
        problems.push(`${id}: no responses`);
        continue;
      }
      for (const [code, r] of Object.entries(responses)) {
        if (!/^([1-5]\d\d|[1-5]XX|default)$/.test(code)) problems.push(`${id}: response ${code} is not a status code`);
        const resolved = deref(r);
        if (!isObj(resolved) || typeof resolved['description'] !== 'string') problems.push(`${id} ${code}: no description`);
      }
    }
    expect(problems).toEqual([]);
  });

  test("each operation's security names a declared scheme", () => {
    const components = isObj(root['components']) ? root['components'] : {};
    const schemes = isObj(components['securitySchemes']) ? components['securitySchemes'] : {};
    const problems: string[] = [];
    for (const { id, op } of operations()) {
      const security = op['security'] ?? root['security'];
      if (!Array.isArray(security)) {
        problems.push(`${id}: no security (give [] for none)`);
        continue;
      }
      for (const req of security as unknown[]) for (const name of Object.keys(isObj(req) ? req : {})) if (!(name in schemes)) problems.push(`${id}: unknown security scheme ${name}`);
    }
    expect(problems).toEqual([]);
  });

  test('the path parameters of each operation are those of its template', () => {
    const problems: string[] = [];
    for (const { id, path, item, op } of operations()) {
      const inTemplate = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] as string).sort();
      const params = [...((item['parameters'] as unknown[] | undefined) ?? []), ...((op['parameters'] as unknown[] | undefined) ?? [])].map(deref);
      const declared = params.filter((p): p is Obj => isObj(p) && p['in'] === 'path');
      for (const p of declared) if (p['required'] !== true) problems.push(`${id}: path parameter ${String(p['name'])} must be required`);
      const names = declared.map((p) => String(p['name'])).sort();
      if (JSON.stringify(names) !== JSON.stringify(inTemplate)) problems.push(`${id}: template has {${inTemplate.join('}, {')}}, parameters declare ${JSON.stringify(names)}`);
    }
    expect(problems).toEqual([]);
  });

  test('every $ref resolves, in the document or in a file beside it', () => {
    const problems: string[] = [];
    for (const { at, ref } of refs(root)) {
      const [file, fragment = ''] = ref.split('#') as [string, string?];
      let target: unknown = root;
      if (file !== '') {
        const url = new URL(file, DOC_URL);
        if (!existsSync(url)) {
          problems.push(`${at}: ${ref}: no file ${url.pathname}`);
          continue;
        }
        target = JSON.parse(readFileSync(url, 'utf8')) as unknown;
      }
      if (pointer(target, fragment) === undefined) problems.push(`${at}: ${ref}: nothing there`);
    }
    expect(problems).toEqual([]);
  });
});

// No analysis worker: the answers checked below do not depend on the analyzers (findings are made by hand).
let c: TestController;
beforeAll(async () => {
  c = await startController({ worker: false, limits: { maxRequestsPerSecond: 1000 } });
});
afterAll(async () => c.close());

describe('docs/controller-api.yaml describes the routes the controller serves', () => {
  let served: Set<string>;
  beforeAll(() => {
    const routes = c.controller.routes();
    const gets = new Set(routes.filter((r) => r.method === 'GET').map((r) => r.url));
    // fastify answers HEAD for every GET by itself (exposeHeadRoutes): the document says so once.
    served = new Set(routes.filter((r) => !(r.method === 'HEAD' && gets.has(r.url))).map((r) => `${r.method} ${templateOf(r.url)}`));
  });

  test('the controller registers /api/ routes at all (the accessor works)', () => {
    expect([...served].filter((r) => r.includes(' /api/')).length).toBeGreaterThan(10);
  });

  test('every /api/ route is documented', () => {
    const documented = new Set(operations().map((o) => o.id));
    const undocumented = [...served].filter((r) => / \/api\//.test(r) && !documented.has(r));
    expect(undocumented, 'routes missing from docs/controller-api.yaml').toEqual([]);
  });

  test('every documented operation is served', () => {
    const unserved = operations()
      .map((o) => o.id)
      .filter((id) => !served.has(id));
    expect(unserved, 'operations in docs/controller-api.yaml the controller does not register').toEqual([]);
  });
});

// ajv-formats is CommonJS: its default export arrives as the module object under NodeNext.
const addFormats = ((addFormatsPlugin as unknown as { default?: unknown }).default ?? addFormatsPlugin) as (ajv: Ajv2020) => Ajv2020;

describe('real answers are what docs/controller-api.yaml says', () => {
  // The document as one schema resource (strict off: OpenAPI's own keywords are not JSON Schema),
  // and the manifest schema at the address the document's relative $ref names.
  const ajv = addFormats(new Ajv2020({ strict: false, allErrors: true }));
  ajv.addSchema({ ...root, $id: DOC_URL.href });
  const manifestUrl = new URL('./report-manifest.schema.json', DOC_URL);
  ajv.addSchema({ ...(JSON.parse(readFileSync(manifestUrl, 'utf8')) as Obj), $id: manifestUrl.href });
  const escape = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');
  const seen: string[] = [];

  /** Checks one answer of `METHOD template` against the document; returns its JSON body. */
  async function check(method: string, template: string, res: Response): Promise<unknown> {
    const where = `${method} ${template} ${res.status}`;
    seen.push(where);
    let at = `/paths/${escape(template)}/${method.toLowerCase()}/responses/${res.status}`;
    const node = pointer(root, at);
    expect(node, `${where}: a status the document does not list`).toBeDefined();
    if (isObj(node) && typeof node['$ref'] === 'string') at = node['$ref'].slice(1);
    const content = pointer(root, `${at}/content`);
    const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    expect(Object.keys(isObj(content) ? content : {}), `${where}: media type ${type}`).toContain(type);
    if (type !== 'application/json') return undefined;
    const body = (await res.json()) as unknown;
    const validate = ajv.compile({ $ref: `${DOC_URL.href}#${at}/content/${escape(type)}/schema` });
    expect(validate(body) ? [] : validate.errors, `${where}: ${JSON.stringify(body).slice(0, 400)}`).toEqual([]);
    return body;
  }

  const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  const call = (method: string, path: string, token: string | undefined, body?: Buffer | string, headers: Record<string, string> = {}) =>
    fetch(`${c.url}${path}`, {
      method,
      headers: { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : new Uint8Array(body) } : {}),
    });

  test('an upload, its reads, events, logs, notices and refusals', async () => {
    const node = await c.nodeToken('n-openapi');
    const other = await c.nodeToken('n-openapi-other');
    const consoleText = Buffer.from(`${'[    1.000000] Kernel panic - not syncing: sysrq triggered crash\n'.repeat(40)}`);
    const qmp = Buffer.from(JSON.stringify({ status: 'running' }));
    const artifact = (name: string, file: string, mediaType: ReportManifest['steps'][number]['artifacts'][number]['mediaType'], data: Buffer) => ({ name, file, mediaType, bytes: data.length, sha256: sha(data), truncated: false });
    const step = (index: number, kind: string, a: ReturnType<typeof artifact>) => ({ index, kind, ok: true, status: 'done' as const, summary: kind, startedAt: new Date().toISOString(), durationMs: 5, artifacts: [a], omitted: [] });
    const manifest: ReportManifest = {
      schema: 'eve-diag/report-manifest',
      schemaVersion: 1,
      id: 'openapi-report-1',
      createdAt: new Date().toISOString(),
      app: { name: 'vm1' },
      verdict: 'guest-kernel-hung',
      evidence: { reason: 'kernel heartbeat stalled' },
      timeline: [{ at: new Date().toISOString(), kernel: 'stalled' }],
      steps: [step(0, 'console-capture', artifact('console.txt', '0-console.txt', 'text/plain', consoleText)), step(1, 'qmp-state', artifact('qmp.json', '1-qmp.json', 'application/json', qmp))],
      totalBytes: consoleText.length + qmp.length,
      truncated: false,
    };
    const files = new Map([consoleText, qmp].map((d) => [sha(d), d]));
    const text = JSON.stringify(manifest);
    const id = manifest.id;

    // Refusals first: no token, the wrong role, a bad manifest, another manifest under the same id.
    await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', undefined, text));
    await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', c.admin, text));
    await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', node, JSON.stringify({ ...manifest, totalBytes: 1 })));
    const offer = (await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', node, text))) as ReportOffer;
    expect(offer.status).toBe('pending');
    await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', node, JSON.stringify({ ...manifest, truncated: true })));

    const artifactPath = '/api/v1/reports/{id}/artifacts/{sha256}';
    const put = (h: string, body: Buffer | string, headers: Record<string, string> = {}, token = node) =>
      call('PUT', `/api/v1/reports/${id}/artifacts/${h}`, token, body, { 'content-type': 'application/octet-stream', ...headers });
    await check('PUT', artifactPath, await put('NOTAHASH', 'x'));
    await check('PUT', artifactPath, await put(offer.missing[0] as string, 'x', {}, other));
    await check('PUT', artifactPath, await put(offer.missing[0] as string, 'x', { 'content-encoding': 'br' }));
    await check('POST', '/api/v1/reports/{id}/commit', await call('POST', `/api/v1/reports/${id}/commit`, node));
    for (const h of offer.missing) await check('PUT', artifactPath, await put(h, gzipSync(files.get(h) as Buffer), { 'content-encoding': 'gzip' }));
    const ack = (await check('POST', '/api/v1/reports/{id}/commit', await call('POST', `/api/v1/reports/${id}/commit`, node))) as ReportAck;
    await check('POST', '/api/v1/reports', await call('POST', '/api/v1/reports', node, text));

    const event = { id: 'openapi-e1', app: 'vm1', verdict: 'guest-kernel-hung', reason: 'stalled', at: new Date().toISOString(), kernel: { status: 'stalled', beats: 9, ageMs: 4000 } };
    await check('POST', '/api/v1/events', await call('POST', '/api/v1/events', node, JSON.stringify([event])));
    await check('POST', '/api/v1/events', await call('POST', '/api/v1/events', node, JSON.stringify([{ ...event, verdict: 'melted' }])));
    await check('POST', '/api/v1/dropped', await call('POST', '/api/v1/dropped', node, JSON.stringify([{ id: 'openapi-gone', bytes: 10, droppedAt: new Date().toISOString(), reason: 'quota' }])));
    const logs = 'App logs list for app 6a5b:\n{"severity":"ERROR","source":"6a5b.1.1","content":"segfault","timestamp":"2026-12-01T10:00:00Z"}\n{"content":"no time"}\n';
    await check('POST', '/api/v1/logs', await call('POST', '/api/v1/logs?app=vm1', node, gzipSync(logs), { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' }));
    await check('POST', '/api/v1/logs', await call('POST', '/api/v1/logs', node, logs, { 'content-type': 'application/x-ndjson' }));

    // The analysis, by hand: one finding on the report, one on the app's logs.
    for (let job = await c.store.claimJob('openapi-test'); job !== undefined; job = await c.store.claimJob('openapi-test')) {
      const evidence = [{ artifact: '0-console.txt', lineStart: 1, lineEnd: 1, excerpt: 'Kernel panic' }];
      await c.store.completeJob(job, 'openapi-test', [{ analyzer: 'test', severity: job.kind === 'analyze-report' ? 'critical' : 'warning', title: job.kind, explanation: 'made by the test', evidence }]);
    }

    for (const token of [c.admin, node]) {
      await check('GET', '/api/v1/fleet', await call('GET', '/api/v1/fleet', token));
      await check('GET', '/api/v1/reports', await call('GET', '/api/v1/reports?app=vm1&limit=10', token));
      await check('GET', '/api/v1/dropped', await call('GET', '/api/v1/dropped', token));
      const full = (await check('GET', '/api/v1/reports/{key}', await call('GET', `/api/v1/reports/${ack.key}`, token))) as { findings: unknown[] };
      expect(full.findings).toHaveLength(1);
      await check('GET', '/api/v1/reports/{key}/findings', await call('GET', `/api/v1/reports/${ack.key}/findings`, token));
      const app = (await check('GET', '/api/v1/apps/{node}/{app}', await call('GET', '/api/v1/apps/n-openapi/vm1', token))) as { findings: unknown[] };
      expect(app.findings).toHaveLength(1);
    }
    await check('GET', '/api/v1/reports', await call('GET', '/api/v1/reports?verdict=melted', c.admin));
    await check('GET', '/api/v1/reports/{key}', await call('GET', `/api/v1/reports/${ack.key}`, other));
    await check('GET', '/api/v1/apps/{node}/{app}', await call('GET', '/api/v1/apps/n-openapi/vm1', other));
    for (const file of ['0-console.txt', '1-qmp.json', 'nope.txt']) await check('GET', '/api/v1/reports/{key}/files/{file}', await call('GET', `/api/v1/reports/${ack.key}/files/${file}`, c.admin));
    await check('GET', '/api/v1/reports/{key}/bundle.tar.gz', await call('GET', `/api/v1/reports/${ack.key}/bundle.tar.gz`, node));
    await check('GET', '/api/v1/reports/{key}/bundle.tar.gz', await call('GET', '/api/v1/reports/0/bundle.tar.gz', node));
    await check('GET', '/api/v1/status', await call('GET', '/api/v1/status', c.admin));
    await check('GET', '/api/v1/status', await call('GET', '/api/v1/status', node));
    await check('POST', '/api/v1/reanalyze', await call('POST', '/api/v1/reanalyze?logs=true', c.admin));
    await check('POST', '/api/v1/reanalyze', await call('POST', '/api/v1/reanalyze', node));
    await check('POST', '/api/v1/reanalyze', await call('POST', '/api/v1/reanalyze?since=yesterday', c.admin));
    await check('GET', '/healthz', await call('GET', '/healthz', undefined));
    await check('GET', '/metrics', await call('GET', '/metrics', undefined));

    // Every operation of the document was exercised at least once.
    const exercised = new Set(seen.map((s) => s.split(' ').slice(0, 2).join(' ')));
    expect(operations().map((o) => o.id).filter((o) => !exercised.has(o))).toEqual([]);
  });
});
