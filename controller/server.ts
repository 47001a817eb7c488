import { readFile } from 'node:fs/promises';
import type { SecureVersion } from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry } from 'prom-client';
import type { AnalyzeOptions } from './analyzers/index.js';
import { HttpError, sendError } from './api/http.js';
import { registerIngest } from './api/ingest.js';
import { registerRead } from './api/read.js';
import { JobRunner } from './jobs.js';
import { DEFAULT_LIMITS, RateLimiter, type Limits } from './limits.js';
import type { Store } from './store/store.js';
import { registerWeb } from './web/routes.js';

/**
 * The controller: one HTTP service (fastify) for the node API, the read API and the dashboard, plus
 * its analysis worker. Any number of instances may share one PostgreSQL.
 */

export interface TlsFiles {
  cert: string;
  key: string;
  /** Require client certificates signed by this CA. */
  clientCa?: string;
}

export interface ControllerOptions {
  store: Store;
  limits?: Partial<Limits>;
  tls?: TlsFiles;
  analyze?: AnalyzeOptions;
  /** Run the analysis worker in this instance (default true). */
  worker?: boolean;
  log?: (r: { level: string; msg: string; [k: string]: unknown }) => void;
  /** Idle poll interval of the analysis worker. */
  pollMs?: number;
}

export interface Controller {
  app: FastifyInstance;
  jobs: JobRunner | undefined;
  metrics: Registry;
  /** Every route registered, as fastify saw it (`:param` syntax; each GET has its HEAD twin). */
  routes(): { method: string; url: string }[];
  listen(host: string, port: number): Promise<{ host: string; port: number; url: string }>;
  close(): Promise<void>;
}

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/**
 * TLS 1.2 and 1.3 only. TLS 1.3's suites are all AEAD (OpenSSL's default set); for TLS 1.2 only
 * ECDHE key exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305 (Mozilla's "intermediate"
 * list): Node's default would also take CBC suites and static-RSA key exchange (`HIGH`).
 */
export const TLS_MIN_VERSION: SecureVersion = 'TLSv1.2';
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export async function createController(o: ControllerOptions): Promise<Controller> {
  const limits = { ...DEFAULT_LIMITS, ...(o.limits ?? {}) };
  const https = o.tls
    ? {
        cert: await readFile(o.tls.cert),
        key: await readFile(o.tls.key),
        minVersion: TLS_MIN_VERSION,
        ciphers: TLS12_CIPHERS,
        honorCipherOrder: true,
        ...(o.tls.clientCa ? { ca: await readFile(o.tls.clientCa), requestCert: true, rejectUnauthorized: true } : {}),
      }
    : null;
  const app = (https ? Fastify({ https, logger: false }) : Fastify({ logger: false })) as unknown as FastifyInstance;
  app.server.requestTimeout = 120_000; // a client sending 1 byte/s is cut, not waited for
  app.server.headersTimeout = 30_000;
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });

  const registry = new Registry();
  const ingested = new Counter({ name: 'eve_diag_controller_ingest_total', help: 'Things nodes sent and the controller stored.', labelNames: ['what'] as const, registers: [registry] });
  const responses = new Counter({ name: 'eve_diag_controller_responses_total', help: 'HTTP responses by status class.', labelNames: ['status'] as const, registers: [registry] });
  new Gauge({
    name: 'eve_diag_controller_jobs',
    help: 'Analysis jobs by state.',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      for (const [state, n] of Object.entries(await o.store.jobCounts().catch(() => ({})))) this.set({ state }, n);
    },
  });

  const limiter = new RateLimiter(limits.maxRequestsPerSecond, limits.maxRequestsPerSecond * 4);
  const jobs = o.worker === false ? undefined : new JobRunner({ store: o.store, ...(o.analyze ? { analyze: o.analyze } : {}), ...(o.log ? { log: o.log } : {}), ...(o.pollMs ? { pollMs: o.pollMs } : {}) });

  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
    return payload;
  });
  app.addHook('onResponse', async (_req, reply) => {
    responses.inc({ status: `${Math.floor(reply.statusCode / 100)}xx` });
  });
  app.setErrorHandler((e, _req, reply) => {
    if (e instanceof HttpError) return sendError(reply, e);
    const err = e as Error & { statusCode?: number; code?: string };
    // fastify's own: body too large, bad content type, malformed JSON, timeouts.
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      const msg = err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `request body too large (${err.message})` : err.message;
      return reply.code(err.statusCode).send({ error: msg });
    }
    o.log?.({ level: 'error', msg: 'request failed', error: String(err.stack ?? err) });
    return reply.code(500).send({ error: 'internal error' });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` }));

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/metrics', async (_req, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  registerIngest(app, {
    store: o.store,
    limits,
    limiter,
    onStored: () => jobs?.kick(),
    count: (what, n = 1) => ingested.inc({ what }, n),
  });
  registerRead(app, { store: o.store, limiter, onReanalyze: () => jobs?.kick() });
  registerWeb(app, { store: o.store, limiter, secure: https !== null });

  jobs?.start();
  return {
    app,
    jobs,
    metrics: registry,
    routes: () => routes.map((r) => ({ ...r })),
    async listen(host, port) {
      await app.listen({ host, port });
      const addr = app.server.address();
      const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
      const shown = host.includes(':') ? `[${host}]` : host;
      return { host, port: bound, url: `${https ? 'https' : 'http'}://${shown}:${bound}` };
    },
    async close() {
      await jobs?.stop();
      await app.close();
    },
  };
}
