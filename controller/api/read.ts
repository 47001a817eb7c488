import type { FastifyInstance, FastifyReply } from 'fastify';
import { pack } from 'tar-stream';
import { createGzip } from 'node:zlib';
import { MANIFEST_FILE, VERDICTS } from '../../protocol/report-manifest.js';
import type { RateLimiter } from '../limits.js';
import type { ReportFilter, ReportRow, Store, TokenInfo } from '../store/store.js';
import { authorize, HttpError, whoOf } from './http.js';

/**
 * The read half of the API, for the dashboard and for scripts: the fleet, reports with filters, one
 * report with its findings and artifacts, a report's bundle as one .tar.gz, re-analysis. An admin
 * token reads everything; a node token reads only that node's own reports and apps.
 */

export interface ReadDeps {
  store: Store;
  limiter: RateLimiter;
  onReanalyze?: () => void;
}

const ISO = /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;

const FILTER_KEYS = ['node', 'app', 'verdict', 'since', 'until', 'before', 'limit'] as const;

/** 400 when query parameter `k` was given more than once (the query parser makes that an array). */
function once(q: Record<string, unknown>, k: string): void {
  const v = q[k];
  if (Array.isArray(v)) throw new HttpError(400, `${k}: give ${k} once (it was given ${v.length} times)`);
}

/** A report filter from query parameters; a bad value is a 400 naming it. */
export function filterOf(q: Record<string, unknown>): ReportFilter {
  const f: ReportFilter = {};
  for (const k of FILTER_KEYS) once(q, k);
  const text = (k: 'node' | 'app') => {
    const v = q[k];
    if (v === undefined || v === '') return;
    if (typeof v !== 'string' || v.length > 256) throw new HttpError(400, `${k}: at most 256 characters`);
    f[k] = v;
  };
  text('node');
  text('app');
  if (q['verdict'] !== undefined && q['verdict'] !== '') {
    if (!(VERDICTS as readonly unknown[]).includes(q['verdict'])) throw new HttpError(400, `verdict: one of ${VERDICTS.join(', ')} (got ${JSON.stringify(q['verdict'])})`);
    f.verdict = q['verdict'] as string;
  }
  for (const k of ['since', 'until'] as const) {
    const v = q[k];
    if (v === undefined || v === '') continue;
    if (typeof v !== 'string' || !ISO.test(v) || Number.isNaN(Date.parse(v))) throw new HttpError(400, `${k}: an ISO 8601 time such as 2026-12-01T00:00:00Z (got ${JSON.stringify(v)})`);
    f[k] = new Date(v).toISOString();
  }
  for (const k of ['before', 'limit'] as const) {
    const v = q[k];
    if (v === undefined || v === '') continue;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1 || (k === 'limit' && n > 500)) throw new HttpError(400, `${k}: a positive integer${k === 'limit' ? ' up to 500' : ''} (got ${JSON.stringify(v)})`);
    f[k] = n;
  }
  return f;
}

/** The report `key` if the caller may see it; 404 otherwise (a node never learns of another's). */
export async function visibleReport(store: Store, who: TokenInfo, key: string): Promise<ReportRow> {
  const n = Number(key);
  const r = Number.isSafeInteger(n) && n > 0 ? await store.report(n) : undefined;
  if (r === undefined || r.status !== 'stored' || (who.role === 'node' && r.nodeId !== who.nodeId)) throw new HttpError(404, `no report ${key}`);
  return r;
}

/** Streams a report's bundle (manifest plus artifact files) as a .tar.gz. */
export async function sendBundle(store: Store, r: ReportRow, reply: FastifyReply): Promise<FastifyReply> {
  const manifest = await store.db.get('SELECT manifest FROM reports WHERE key = ?', [r.key]);
  const tar = pack();
  const gz = createGzip();
  reply.header('content-type', 'application/gzip').header('content-disposition', `attachment; filename="${r.reportId}.tar.gz"`);
  const write = async () => {
    const dir = `${r.reportId}/`;
    tar.entry({ name: `${dir}${MANIFEST_FILE}`, mode: 0o644 }, String(manifest?.['manifest'] ?? ''));
    for (const a of await store.artifacts(r.key)) {
      const data = await store.blob(a.sha256);
      if (data !== undefined) tar.entry({ name: `${dir}${a.file}`, mode: 0o644 }, data);
    }
    tar.finalize();
  };
  write().catch((e: unknown) => tar.destroy(e as Error));
  return reply.send(tar.pipe(gz));
}

/**
 * How an artifact is served: text as text (never as something a browser would run), a PNG (the
 * screendump) as an image, shown inline (nosniff, and the CSP forbids scripts anyway); memory dumps
 * and other bytes as a download.
 */
export function servedAs(mediaType: string): { type: string; inline: boolean; kind: 'text' | 'image' | 'download' } {
  if (mediaType === 'text/plain' || mediaType === 'application/json') return { type: `${mediaType}; charset=utf-8`, inline: true, kind: 'text' };
  if (mediaType === 'image/png') return { type: 'image/png', inline: true, kind: 'image' };
  return { type: 'application/octet-stream', inline: false, kind: 'download' };
}

export function registerRead(app: FastifyInstance, d: ReadDeps): void {
  const { store } = d;
  // The caller is checked in onRequest, before any body is read; handlers take it with whoOf.
  const anyone = { onRequest: authorize(store, d.limiter, { roles: ['admin', 'node'], cookie: true }) };
  const admin = { onRequest: authorize(store, d.limiter, { roles: ['admin'], cookie: true }) };
  // Writes take the bearer token only: a session cookie never authorizes one (no cross-site request forgery).
  const adminWrite = authorize(store, d.limiter, { roles: ['admin'] });
  const scope = (w: TokenInfo) => (w.role === 'node' ? (w.nodeId as number) : undefined);

  app.get('/api/v1/fleet', anyone, async (req) => ({ apps: await store.fleet(scope(whoOf(req))) }));

  app.get('/api/v1/reports', anyone, async (req) => {
    const w = whoOf(req);
    const f = filterOf(req.query as Record<string, unknown>);
    const nodeId = scope(w);
    return { reports: await store.listReports({ ...f, ...(nodeId !== undefined ? { nodeId } : {}) }) };
  });

  app.get('/api/v1/reports/:key', anyone, async (req) => {
    const w = whoOf(req);
    const r = await visibleReport(store, w, (req.params as { key: string }).key);
    return { report: r, manifest: await store.manifest(r.key), artifacts: await store.artifacts(r.key), findings: await store.findings(r.key) };
  });

  app.get('/api/v1/reports/:key/findings', anyone, async (req) => {
    const r = await visibleReport(store, whoOf(req), (req.params as { key: string }).key);
    return { findings: await store.findings(r.key) };
  });

  app.get('/api/v1/reports/:key/files/:file', anyone, async (req, reply) => {
    const w = whoOf(req);
    const { key, file } = req.params as { key: string; file: string };
    const r = await visibleReport(store, w, key);
    const a = (await store.artifacts(r.key)).find((x) => x.file === file);
    const data = a === undefined ? undefined : await store.blob(a.sha256);
    if (a === undefined || data === undefined) throw new HttpError(404, `report ${key} has no file ${JSON.stringify(file)}`);
    const served = servedAs(a.mediaType);
    reply.header('content-type', served.type).header('content-disposition', `${served.inline ? 'inline' : 'attachment'}; filename="${a.file}"`);
    return reply.send(data);
  });

  app.get('/api/v1/reports/:key/bundle.tar.gz', anyone, async (req, reply) => sendBundle(store, await visibleReport(store, whoOf(req), (req.params as { key: string }).key), reply));

  app.get('/api/v1/apps/:node/:app', anyone, async (req) => {
    const w = whoOf(req);
    const { node, app: name } = req.params as { node: string; app: string };
    const nodeId = await store.nodeId(node, false);
    if (nodeId === undefined || (w.role === 'node' && nodeId !== w.nodeId)) throw new HttpError(404, `no node ${JSON.stringify(node)}`);
    return { node, app: name, findings: await store.appFindings(nodeId, name), logs: (await store.logs(nodeId, name, 200)).length };
  });

  app.get('/api/v1/dropped', anyone, async (req) => ({ dropped: await store.dropped(scope(whoOf(req))) }));

  app.get('/api/v1/status', admin, async () => ({ reports: await store.countReports(), jobs: await store.jobCounts() }));

  app.post('/api/v1/reanalyze', { bodyLimit: 16 * 1024, onRequest: adminWrite }, async (req) => {
    const q = { ...(req.query as Record<string, unknown>) };
    once(q, 'logs');
    const logs = q['logs'] === 'true' || q['logs'] === '1';
    delete q['logs'];
    const queued = await store.enqueueReanalysis(filterOf(q), logs);
    d.onReanalyze?.();
    return { queued };
  });
}
