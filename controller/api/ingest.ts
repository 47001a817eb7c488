import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { droppedNoticeProblems, paths, SHA256_RE, verdictEventProblems, type DroppedNotice, type ReportOffer, type VerdictEvent } from '../../protocol/controller-api.js';
import { isSafeName, manifestProblems, MANIFEST_SCHEMA_NAME, MANIFEST_SCHEMA_VERSION, type ReportManifest } from '../../protocol/report-manifest.js';
import { parseLogEntries } from '../logs.js';
import type { Limits, RateLimiter } from '../limits.js';
import { ConflictError, type Store } from '../store/store.js';
import { authorize, HttpError, whoOf } from './http.js';

/**
 * The node-facing half of the API (protocol/controller-api.ts): reports in three resumable steps,
 * verdict events, dropped-report notices, app logs. Every body is bounded before it is read, checked
 * before anything is stored, and a node only ever touches its own reports.
 */

export interface IngestDeps {
  store: Store;
  limits: Limits;
  limiter: RateLimiter;
  /** A report was stored: analysis can start. */
  onStored?: (key: number) => void;
  /** Counters for the controller's metrics. */
  count?: (what: 'report' | 'artifact' | 'bytes' | 'event' | 'log-line' | 'rejected', n?: number) => void;
}

const ONE_HOUR_MS = 3_600_000;
const gunzipAsync = promisify(gunzip);

/** The gunzipped body when it says `Content-Encoding: gzip`, else the body; at most `max` bytes out (inflated on libuv's pool, off the event loop). */
async function inflate(req: FastifyRequest, body: Buffer, max: number): Promise<Buffer> {
  const enc = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (enc === 'identity') return body;
  if (enc !== 'gzip') throw new HttpError(415, `Content-Encoding ${JSON.stringify(enc)}: only gzip or none`);
  const tooLarge = () => new HttpError(413, `the body inflates to more than ${max} bytes`);
  let out: Buffer;
  try {
    // maxOutputLength must be at least 1 (0 is ERR_OUT_OF_RANGE): one byte more is let out, then refused below.
    out = await gunzipAsync(body, { maxOutputLength: Math.max(1, max) });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge();
    throw new HttpError(400, `not valid gzip: ${(e as Error).message}`);
  }
  if (out.length > max) throw tooLarge();
  return out;
}

/** An RFC 3339 time as `toISOString` writes it (UTC, milliseconds: such times compare as strings); one `Date` cannot read (a leap second) is kept as written. */
function utcOf(t: string): string {
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? t : new Date(ms).toISOString();
}

/**
 * Deepest nesting of arrays and objects a body may have. JSON.parse takes any depth, but
 * JSON.stringify recurses: a body nested 10 000 deep overflows the stack wherever it is stringified
 * again (a field's size check, the read API's answer), a 500 or a stored report that cannot be read.
 * Nothing a node sends needs more than a few levels.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether `v` nests arrays and objects deeper than `max` (iterative: the walk itself must not overflow). */
function nestedDeeper(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [x, depth] = top;
    if (typeof x !== 'object' || x === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(x) ? x : Object.values(x)) if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

function jsonOf(body: Buffer, what: string): unknown {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `${what}: not JSON (${(e as Error).message})`);
  }
  if (nestedDeeper(v, MAX_JSON_DEPTH)) throw new HttpError(400, `${what}: arrays and objects nested deeper than ${MAX_JSON_DEPTH} levels`);
  return v;
}

/** Hashes looked up per query (under both databases' parameter limits). */
const BLOB_LOOKUPS_PER_QUERY = 500;

/**
 * Artifacts whose size is not the size of the bytes their hash names: listed twice with two sizes,
 * or with another size than a blob this node has already sent. Such a report could be committed
 * without its bytes sent again (the blob is there) and would list a size its file does not have.
 * (Blobs of other nodes are not looked at: an answer would tell a node that another holds them.)
 */
async function sizeMismatches(store: Store, nodeId: number, artifacts: readonly { file: string; bytes: number; sha256: string }[]): Promise<string[]> {
  const claimed = new Map<string, { file: string; bytes: number }>();
  const out: string[] = [];
  for (const a of artifacts) {
    const first = claimed.get(a.sha256);
    if (first === undefined) claimed.set(a.sha256, a);
    else if (first.bytes !== a.bytes) out.push(`artifact ${a.file}: SHA-256 ${a.sha256} is listed with ${a.bytes} bytes, and with ${first.bytes} bytes for ${first.file}`);
  }
  const shas = [...claimed.keys()];
  for (let i = 0; i < shas.length && out.length < 20; i += BLOB_LOOKUPS_PER_QUERY) {
    const chunk = shas.slice(i, i + BLOB_LOOKUPS_PER_QUERY);
    const rows = await store.db.all(`SELECT b.sha256, b.bytes FROM blobs b JOIN node_blobs o ON o.sha256 = b.sha256 AND o.node_id = ? WHERE b.sha256 IN (${chunk.map(() => '?').join(', ')})`, [nodeId, ...chunk]);
    for (const r of rows) {
      const a = claimed.get(String(r['sha256']));
      const held = Number(r['bytes']);
      if (a !== undefined && held !== a.bytes) out.push(`artifact ${a.file}: ${a.bytes} bytes, but its SHA-256 ${String(r['sha256'])} names ${held} bytes (held by the controller)`);
    }
  }
  return out.slice(0, 20);
}

export function registerIngest(app: FastifyInstance, d: IngestDeps): void {
  const { store, limits } = d;
  // Every route checks the node token in onRequest, before its body is read.
  const onRequest = authorize(store, d.limiter, { roles: ['node'] });
  const node = (req: FastifyRequest) => whoOf(req).nodeId as number;
  const rawBody = { parseAs: 'buffer' as const };

  // Raw bodies for every route of this API (JSON is parsed here, with our own limits and messages).
  // fastify's own application/json and text/plain parsers are replaced too: a text/plain body read
  // as a string would break gzip and non-ASCII bytes, and be bounded by fastify's default 1 MiB.
  for (const type of ['*', 'application/json', 'text/plain']) {
    app.addContentTypeParser(type, { ...rawBody, bodyLimit: limits.maxArtifactBytes }, (_req, body, done) => done(null, body));
  }

  const reportOf = async (nodeId: number, id: string) => {
    if (!isSafeName(id)) throw new HttpError(400, `report id ${JSON.stringify(id)}: letters, digits, . _ - (at most 128), no leading dot`);
    const r = await store.reportByNodeId(nodeId, id);
    if (r === undefined) throw new HttpError(404, `no report ${id} from this node: POST its manifest first`);
    return r;
  };

  app.post(paths.reports, { bodyLimit: limits.maxManifestBytes, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const text = (req.body as Buffer | undefined)?.toString('utf8') ?? '';
    const m = jsonOf(Buffer.from(text, 'utf8'), 'the manifest') as Partial<ReportManifest>;
    if (typeof m !== 'object' || m === null || m.schema !== MANIFEST_SCHEMA_NAME) throw new HttpError(400, `not a report manifest (schema must be ${JSON.stringify(MANIFEST_SCHEMA_NAME)})`);
    if (m.schemaVersion !== MANIFEST_SCHEMA_VERSION) throw new HttpError(400, `unknown manifest schemaVersion ${JSON.stringify(m.schemaVersion)} (this controller reads ${MANIFEST_SCHEMA_VERSION})`);
    const problems = manifestProblems(m);
    if (problems.length > 0) throw new HttpError(400, `invalid manifest: ${problems[0]}`, { problems: problems.slice(0, 20) });
    const manifest = m as ReportManifest;
    for (const s of manifest.steps) {
      for (const a of s.artifacts) {
        if (a.bytes > limits.maxArtifactBytes) throw new HttpError(413, `artifact ${a.file}: ${a.bytes} bytes, more than maxArtifactBytes ${limits.maxArtifactBytes}`);
      }
    }
    if (manifest.totalBytes > limits.maxReportBytes) throw new HttpError(413, `report of ${manifest.totalBytes} bytes, more than maxReportBytes ${limits.maxReportBytes}`);
    const wrongSizes = await sizeMismatches(store, nodeId, manifest.steps.flatMap((s) => s.artifacts));
    if (wrongSizes.length > 0) throw new HttpError(400, `invalid manifest: ${wrongSizes[0]}`, { problems: wrongSizes });
    const sha = createHash('sha256').update(text).digest('hex');
    const known = await store.reportByNodeId(nodeId, manifest.id);
    if (known === undefined) {
      const usage = await store.nodeUsage(nodeId, new Date(Date.now() - ONE_HOUR_MS).toISOString());
      if (usage.recent >= limits.maxReportsPerHour) throw new HttpError(429, `more than maxReportsPerHour ${limits.maxReportsPerHour} reports from this node in the last hour`, { retryAfterSeconds: 60 }, { 'retry-after': '60' });
      if (usage.bytes + manifest.totalBytes > limits.maxNodeBytes) throw new HttpError(413, `this node has ${usage.bytes} bytes stored: a report of ${manifest.totalBytes} would pass maxNodeBytes ${limits.maxNodeBytes}`);
    }
    let r;
    try {
      // The row's createdAt in UTC (the stored manifest keeps the node's text): since/until compare it as a string.
      r = await store.offerReport(nodeId, { ...manifest, createdAt: utcOf(manifest.createdAt) }, text, sha);
    } catch (e) {
      if (e instanceof ConflictError) throw new HttpError(409, e.message);
      throw e;
    }
    const shas = manifest.steps.flatMap((s) => s.artifacts.map((a) => a.sha256));
    const offer: ReportOffer =
      r.status === 'stored'
        ? { id: manifest.id, status: 'stored', missing: [], ack: await store.commitReport(r.key) }
        : { id: manifest.id, status: 'pending', missing: await store.missingBlobs(nodeId, shas) };
    return reply.code(r.status === 'stored' ? 200 : 202).send(offer);
  });

  app.put('/api/v1/reports/:id/artifacts/:sha256', { bodyLimit: limits.maxArtifactBytes, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const { id, sha256 } = req.params as { id: string; sha256: string };
    if (!SHA256_RE.test(sha256)) throw new HttpError(400, `${JSON.stringify(sha256)} is not a SHA-256 (64 lowercase hex digits)`);
    const r = await reportOf(nodeId, id);
    const wanted = await store.artifact(r.key, sha256);
    if (wanted === undefined) throw new HttpError(400, `report ${id} has no artifact with SHA-256 ${sha256}`);
    const body = await inflate(req, (req.body as Buffer | undefined) ?? Buffer.alloc(0), wanted.bytes);
    if (body.length !== wanted.bytes) throw new HttpError(400, `artifact ${wanted.file}: ${body.length} bytes received, the manifest says ${wanted.bytes} (truncated?)`);
    const got = createHash('sha256').update(body).digest('hex');
    if (got !== sha256) throw new HttpError(400, `artifact ${wanted.file}: the bytes hash to ${got}, not ${sha256}`);
    await store.putBlob(sha256, body, nodeId);
    d.count?.('artifact');
    d.count?.('bytes', body.length);
    return reply.code(201).send({ sha256, bytes: body.length, stored: true });
  });

  app.post('/api/v1/reports/:id/commit', { bodyLimit: 1024, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const { id } = req.params as { id: string };
    const r = await reportOf(nodeId, id);
    // A blob another report sent after this one's offer may not be of the size this manifest says
    // (checked here, before the commit: a stored blob never changes size).
    const wrongSizes = r.status === 'pending' ? await sizeMismatches(store, nodeId, await store.artifacts(r.key)) : [];
    if (wrongSizes.length > 0) throw new HttpError(400, `report ${id} cannot be stored: ${wrongSizes[0]}`, { problems: wrongSizes });
    try {
      const ack = await store.commitReport(r.key);
      if (r.status === 'pending') {
        d.count?.('report');
        d.onStored?.(r.key);
      }
      return reply.send(ack);
    } catch (e) {
      if (e instanceof ConflictError) {
        const shas = (await store.artifacts(r.key)).map((a) => a.sha256);
        throw new HttpError(409, e.message, { missing: await store.missingBlobs(nodeId, shas) });
      }
      throw e;
    }
  });

  app.post(paths.events, { bodyLimit: limits.maxSmallBodyBytes, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const v = jsonOf((req.body as Buffer | undefined) ?? Buffer.alloc(0), 'the events');
    const problems = verdictEventProblems(v);
    if (problems.length > 0) throw new HttpError(400, `invalid events: ${problems[0]}`, { problems });
    const stored = await store.addEvents(nodeId, v as VerdictEvent[]);
    d.count?.('event', stored);
    return reply.send({ received: (v as unknown[]).length, stored });
  });

  app.post(paths.dropped, { bodyLimit: limits.maxSmallBodyBytes, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const v = jsonOf((req.body as Buffer | undefined) ?? Buffer.alloc(0), 'the notices');
    const problems = droppedNoticeProblems(v);
    if (problems.length > 0) throw new HttpError(400, `invalid notices: ${problems[0]}`, { problems });
    return reply.send({ received: (v as unknown[]).length, stored: await store.addDropped(nodeId, v as DroppedNotice[]) });
  });

  app.post(paths.logs, { bodyLimit: limits.maxLogBodyBytes, onRequest }, async (req, reply) => {
    const nodeId = node(req);
    const appName = (req.query as { app?: unknown }).app;
    if (typeof appName !== 'string' || appName.length === 0 || appName.length > 256 || [...appName].some((ch) => ch.charCodeAt(0) < 0x20)) {
      throw new HttpError(400, 'app: the query parameter ?app=NAME (1..256 printable characters) names whose logs these are');
    }
    const body = await inflate(req, (req.body as Buffer | undefined) ?? Buffer.alloc(0), limits.maxLogInflatedBytes);
    const parsed = parseLogEntries(body.toString('utf8'), { maxLines: limits.maxLogLinesPerRequest });
    if (parsed.truncated) throw new HttpError(413, `more than maxLogLinesPerRequest ${limits.maxLogLinesPerRequest} lines: send them in smaller requests`);
    if (parsed.lines.length > 0) await store.addLogs(nodeId, appName, parsed.lines, limits.keepLogLinesPerApp);
    d.count?.('log-line', parsed.lines.length);
    return reply.send({ stored: parsed.lines.length, skipped: parsed.skipped, rejected: parsed.rejectedCount, problems: parsed.rejected });
  });
}
