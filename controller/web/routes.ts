import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { repoRoot } from '../../util/repo-root.js';
import { authenticate } from '../auth.js';
import { filterOf, sendBundle, servedAs, visibleReport } from '../api/read.js';
import { caller, HttpError, SESSION_COOKIE } from '../api/http.js';
import { RateLimiter } from '../limits.js';
import type { ReportFilter, ReportRow, Store, TokenInfo } from '../store/store.js';
import { artifactPage, fleetPage, imagePage, loginPage, notFoundPage, reportPage, reportsPage } from './pages.js';

/**
 * The dashboard, served by the controller: an admin logs in with an admin token (kept in an HttpOnly,
 * SameSite=Strict cookie, which only GETs accept: every write of the API wants the bearer token),
 * then reads pages rendered on the server. The assets are our CSS and
 * script and uPlot's build, served from fixed files (no path from a request reaches the filesystem).
 */

export interface WebDeps {
  store: Store;
  limiter: RateLimiter;
  /** The session cookie gets `Secure` when the controller serves TLS. */
  secure: boolean;
}

/**
 * Login attempts per client address: a token is 256 random bits (guessing is hopeless), but each
 * attempt costs a hash and a lookup, so a flood is cut (per second, bursts of 4x).
 */
export const LOGIN_ATTEMPTS_PER_SECOND = 2;

/** Most of one artifact shown in the page (the raw file is a link away). */
const VIEW_MAX_BYTES = 2 * 1024 * 1024;

function assetFiles(): Record<string, { path: string; type: string }> {
  const require = createRequire(import.meta.url);
  const uplot = (f: string) => join(require.resolve('uplot/package.json'), '..', 'dist', f);
  const own = join(repoRoot(), 'controller', 'web', 'assets');
  return {
    'app.css': { path: join(own, 'app.css'), type: 'text/css; charset=utf-8' },
    'app.js': { path: join(own, 'app.js'), type: 'text/javascript; charset=utf-8' },
    'uPlot.min.css': { path: uplot('uPlot.min.css'), type: 'text/css; charset=utf-8' },
    'uPlot.iife.min.js': { path: uplot('uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  };
}

export function registerWeb(app: FastifyInstance, d: WebDeps): void {
  const { store } = d;
  const assets = assetFiles();
  const logins = new RateLimiter(LOGIN_ATTEMPTS_PER_SECOND, LOGIN_ATTEMPTS_PER_SECOND * 4);
  const cache = new Map<string, Buffer>();
  const htmlReply = (reply: FastifyReply, body: string, code = 200) => reply.code(code).header('content-type', 'text/html; charset=utf-8').send(body);
  const session = async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      return await caller(store, d.limiter, req, { roles: ['admin'], cookie: true });
    } catch (e) {
      if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
        await reply.redirect('/login', 303);
        return undefined;
      }
      throw e;
    }
  };

  /** The report `key` if the caller may see it; else the not-found page is sent and undefined returned. */
  const visible = async (who: TokenInfo, key: string, reply: FastifyReply): Promise<ReportRow | undefined> => {
    try {
      return await visibleReport(store, who, key);
    } catch (e) {
      if (!(e instanceof HttpError) || e.status !== 404) throw e;
      await htmlReply(reply, notFoundPage(e.message), 404);
      return undefined;
    }
  };

  app.get('/assets/:name', async (req, reply) => {
    const name = (req.params as { name: string }).name;
    // Own keys only: `constructor` or `__proto__` would be Object.prototype's (and a 500).
    const a = Object.hasOwn(assets, name) ? assets[name] : undefined;
    if (a === undefined) throw new HttpError(404, 'no such asset');
    let data = cache.get(a.path);
    if (data === undefined) {
      data = await readFile(a.path);
      cache.set(a.path, data);
    }
    return reply.header('content-type', a.type).header('cache-control', 'public, max-age=3600').send(data);
  });

  app.get('/login', async (req, reply) => htmlReply(reply, loginPage()));

  app.post('/login', { bodyLimit: 4096 }, async (req, reply) => {
    const wait = logins.take(req.ip);
    if (wait > 0) throw new HttpError(429, 'too many login attempts from this address: slow down', { retryAfterSeconds: wait }, { 'retry-after': String(wait) });
    const form = new URLSearchParams((req.body as Buffer | undefined)?.toString('utf8') ?? '');
    const token = form.get('token') ?? '';
    const who = await authenticate(store, token);
    if (who?.role !== 'admin') return htmlReply(reply, loginPage('That is not an admin token.'), 401);
    const attrs = ['HttpOnly', 'SameSite=Strict', 'Path=/', 'Max-Age=43200', ...(d.secure ? ['Secure'] : [])];
    return reply.header('set-cookie', `${SESSION_COOKIE}=${encodeURIComponent(token)}; ${attrs.join('; ')}`).redirect('/', 303);
  });

  app.post('/logout', { bodyLimit: 1024 }, async (req, reply) => reply.header('set-cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`).redirect('/login', 303));

  app.get('/', async (req, reply) => {
    if ((await session(req, reply)) === undefined) return reply;
    return htmlReply(reply, fleetPage(await store.fleet()));
  });

  app.get('/reports', async (req, reply) => {
    if ((await session(req, reply)) === undefined) return reply;
    const q = req.query as Record<string, unknown>;
    let f: ReportFilter;
    try {
      f = filterOf(q);
    } catch (e) {
      // A bad filter gives the form back as typed, saying what is wrong (not the API's JSON error).
      if (!(e instanceof HttpError) || e.status !== 400) throw e;
      const typed = Object.fromEntries((['node', 'app', 'verdict', 'since', 'until'] as const).flatMap((k) => (typeof q[k] === 'string' ? [[k, q[k].slice(0, 256)]] : [])));
      return htmlReply(reply, reportsPage([], typed, Date.now(), e.message), 400);
    }
    return htmlReply(reply, reportsPage(await store.listReports(f), f));
  });

  app.get('/reports/:key', async (req, reply) => {
    const who = await session(req, reply);
    if (who === undefined) return reply;
    const r = await visible(who, (req.params as { key: string }).key, reply);
    if (r === undefined) return reply;
    const m = await store.manifest(r.key);
    if (m === undefined) return htmlReply(reply, notFoundPage('the report has no manifest'), 404);
    return htmlReply(reply, reportPage(r, m, await store.findings(r.key), await store.artifacts(r.key)));
  });

  app.get('/reports/:key/view/:file', async (req, reply) => {
    const who = await session(req, reply);
    if (who === undefined) return reply;
    const { key, file } = req.params as { key: string; file: string };
    const r = await visible(who, key, reply);
    if (r === undefined) return reply;
    const a = (await store.artifacts(r.key)).find((x) => x.file === file);
    const data = a === undefined ? undefined : await store.blob(a.sha256);
    if (a === undefined || data === undefined) return htmlReply(reply, notFoundPage(`report ${key} has no file ${file}`), 404);
    const served = servedAs(a.mediaType);
    if (served.kind === 'download') return reply.redirect(`/api/v1/reports/${r.key}/files/${encodeURIComponent(a.file)}`, 303);
    if (served.kind === 'image') return htmlReply(reply, imagePage(r, a));
    return htmlReply(reply, artifactPage(r, a, data.subarray(0, VIEW_MAX_BYTES).toString('utf8'), data.length > VIEW_MAX_BYTES));
  });

  app.get('/reports/:key/bundle.tar.gz', async (req, reply) => {
    const who = await session(req, reply);
    if (who === undefined) return reply;
    return sendBundle(store, await visibleReport(store, who, (req.params as { key: string }).key), reply);
  });
}
