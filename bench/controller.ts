/**
 * The controller under load, SQLite and PostgreSQL side by side. Per backend it starts the real
 * controller as a child process (`node dist/cli/main.js controller serve`, port 0; SQLite in a
 * temporary --data directory, PostgreSQL a real `postgres` on a temporary cluster and a free port,
 * started like test/helpers/postgres.ts does and stopped by pid, also on a failure or SIGINT), then:
 *  1. ingest: --ingest report bundles (a manifest with a heartbeat timeline plus 3-5 artifacts built
 *     from the captured console, register, SysRq and host-state files of test/fixtures/bundles: 8 to
 *     ~100 KB of console text each, every file unique) uploaded over HTTP as a node's shipper does
 *     (monitor/controller-client.ts: offer the manifest, PUT each missing artifact gzipped, commit),
 *     from --nodes nodes with a token each, --concurrency uploads at a time: reports/s, MB/s, and
 *     the latency of one report (offer to acknowledged commit), p50/p95. Then the time the
 *     controller's own analysis worker takes to analyze them (it runs meanwhile, as in production);
 *  2. fill: the store brought to --reports reports straight through SQL batches from this process
 *     (reports, their artifacts, findings and two verdict events each), not through the HTTP API;
 *  3. reads at that size, one request at a time with the admin token: the report page, the fleet page
 *     and the report-list API with a filter and a second page (`before=`), --requests each: p50/p95;
 *  4. the controller's RSS (/proc/PID/status VmRSS, and VmHWM) after start, ingest, fill and reads.
 * Prints one table with the targets (>= 200 reports/s, p95 < 100 ms) and pass/fail beside the figures.
 * Run: `bash bench/run.sh controller [--backend sqlite|postgres|both] [--reports N] ...`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { hashToken, newToken } from '../controller/auth.js';
import { openStore } from '../controller/store/open.js';
import type { Db, Param } from '../controller/store/db.js';
import type { Store } from '../controller/store/store.js';
import { CONTROLLER_TIMEOUT_MS_DEFAULT } from '../monitor/config.js';
import { ControllerClient, ControllerError } from '../monitor/controller-client.js';
import { paths, type ReportAck, type ReportOffer } from '../protocol/controller-api.js';
import { MANIFEST_SCHEMA_NAME, MANIFEST_SCHEMA_VERSION, type ManifestStep, type ReportManifest, type Verdict } from '../protocol/report-manifest.js';
import { startPostgres, type Postgres } from '../test/helpers/postgres.js';
import { intFlag } from './flags.js';

/** --load: the dashboard client asks for its pages this often (a tick that starts late starts at once, no catching up). */
const DASHBOARD_TICK_MS = 200;

const USAGE = `usage: bash bench/run.sh controller [--backend sqlite|postgres|both] [--reports N] [--ingest N] [--concurrency N] [--requests N] [--nodes N] [--analysis-wait S] [--json]
       bash bench/run.sh controller --load [--backend B] [--nodes N] [--concurrency N] [--ingest N] [--reports N] [--idle S] [--analysis-wait S] [--json]
  --backend B        sqlite, postgres or both (default both, side by side)
  --reports N        reports in the store for the read runs (default 100000; the ingested ones count);
                     with --load: reports filled in through SQL before the load (default 10000, 0 for none)
  --ingest N         bundles uploaded over HTTP (default 2000; with --load one per node, --nodes)
  --concurrency N    uploads in flight at once (default 8; with --load --nodes)
  --requests N       requests per read (report page, fleet page, list API; default 200)
  --nodes N          nodes (a token each; 4 apps each) the reports come from (default 100; with --load 1000)
  --analysis-wait S  seconds to wait for the analysis of the ingested reports (default 300)
  --load             the load run instead: every node uploads at once (--concurrency uploads in flight,
                     the node's own 30 s timeout, retried as the shipper does) while one dashboard client
                     asks for / and /reports every ${DASHBOARD_TICK_MS} ms with an admin session; the dashboard
                     is measured the same way idle, for --idle seconds before and after
  --idle S           with --load: seconds of idle dashboard measurement before and after (default 10)
  --json             print the results as JSON instead of the table`;

const BACKENDS = ['sqlite', 'postgres'] as const;
type Backend = (typeof BACKENDS)[number];

interface Options {
  load: boolean;
  idleS: number;
  backends: Backend[];
  reports: number;
  ingest: number;
  concurrency: number;
  requests: number;
  nodes: number;
  analysisWaitS: number;
  json: boolean;
}

function parseOptions(argv: string[]): Options {
  const fail = (msg: string): never => {
    console.error(`${msg}\n${USAGE}`);
    process.exit(2);
  };
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        backend: { type: 'string' },
        reports: { type: 'string' },
        ingest: { type: 'string' },
        concurrency: { type: 'string' },
        requests: { type: 'string' },
        nodes: { type: 'string' },
        'analysis-wait': { type: 'string' },
        load: { type: 'boolean' },
        idle: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    }));
  } catch (e) {
    return fail((e as Error).message);
  }
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (flag: string, v: string | undefined, dflt: number, min: number, max: number) => intFlag(fail, flag, v, dflt, min, max);
  const b = values.backend ?? 'both';
  if (b !== 'both' && !(BACKENDS as readonly string[]).includes(b)) fail(`--backend: sqlite, postgres or both (got ${JSON.stringify(b)})`);
  const load = values.load === true;
  if (!load && values.idle !== undefined) fail(`--idle: only with --load (got ${JSON.stringify(values.idle)})`);
  const nodes = int('nodes', values.nodes, load ? 1000 : 100, 1, 10_000);
  const ingest = int('ingest', values.ingest, load ? nodes : 2000, 10, 1_000_000);
  // --load fills the store before the load (any size, 0 too); the read runs count the ingested reports in.
  const reports = load ? int('reports', values.reports, 10_000, 0, 10_000_000) : int('reports', values.reports, 100_000, 100, 10_000_000);
  if (!load && reports < ingest) fail(`--reports: at least --ingest (${ingest}) (got ${JSON.stringify(values.reports)})`);
  return {
    load,
    idleS: int('idle', values.idle, 10, 2, 600),
    backends: b === 'both' ? [...BACKENDS] : [b as Backend],
    reports,
    ingest,
    // 1000 sockets at once is the point of --load; the default run keeps its old bound.
    concurrency: int('concurrency', values.concurrency, load ? nodes : 8, 1, load ? 10_000 : 256),
    requests: int('requests', values.requests, 200, 10, 100_000),
    nodes,
    analysisWaitS: int('analysis-wait', values['analysis-wait'], 300, 0, 3600),
    json: values.json === true,
  };
}

// --- helpers -----------------------------------------------------------------------------------------

interface Stats {
  n: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function stats(xs: readonly number[]): Stats {
  if (xs.length === 0) return { n: 0, mean: NaN, p50: NaN, p95: NaN, p99: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const rank = (q: number) => s[Math.max(0, Math.ceil(q * s.length) - 1)] as number; // nearest rank
  return { n: s.length, mean: s.reduce((a, b) => a + b, 0) / s.length, p50: rank(0.5), p95: rank(0.95), p99: rank(0.99), max: s[s.length - 1] as number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const progress = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

/** A small seeded PRNG (mulberry32): the same bundles every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** VmRSS and VmHWM of `pid` in MiB. */
function procRss(pid: number): { rss: number; hwm: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64

/** utime + stime of `pid` in ms (proc(5): fields 14 and 15, counted after the `(comm)` field). */
function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
}

// --- bundles -----------------------------------------------------------------------------------------

interface Fixtures {
  consoles: string[];
  registers: string[];
  sysrqW: string[];
  sysrqT: string[];
  hostStates: string[];
}

function loadFixtures(): Fixtures {
  const root = resolve('test/fixtures/bundles');
  const f: Fixtures = { consoles: [], registers: [], sysrqW: [], sysrqT: [], hostStates: [] };
  for (const kernel of readdirSync(root)) {
    for (const scenario of readdirSync(join(root, kernel))) {
      const dir = join(root, kernel, scenario);
      for (const file of readdirSync(dir)) {
        const text = readFileSync(join(dir, file), 'utf8');
        if (file.endsWith('-console.txt')) f.consoles.push(text);
        else if (file.endsWith('-registers.txt')) f.registers.push(text);
        else if (file.endsWith('-sysrq-w.txt')) f.sysrqW.push(text);
        else if (file.endsWith('-sysrq-t.txt')) f.sysrqT.push(text);
        else if (file.endsWith('-host-state.json')) f.hostStates.push(text);
      }
    }
  }
  for (const [k, v] of Object.entries(f)) if ((v as string[]).length === 0) throw new Error(`no ${k} in ${root}`);
  return f;
}

interface BundleFile {
  sha256: string;
  bytes: number;
  /** What goes on the wire (gzip for text over 1 KiB, as the shipper sends it). */
  wire: Buffer;
  gzip: boolean;
}

interface Bundle {
  id: string;
  node: number;
  app: string;
  manifestText: string;
  manifestSha256: string;
  manifest: ReportManifest;
  files: Map<string, BundleFile>;
  bytes: number;
  wireBytes: number;
}

const APPS = ['app-0', 'app-1', 'app-2', 'app-3'];
const TROUBLE: Verdict[] = ['guest-panicked', 'guest-kernel-hung', 'guest-userspace-hung', 'app-unhealthy', 'guest-starved', 'vm-not-running'];

/** `length` characters of text starting at a line of `src` (wrapped), behind a header line that makes it unique. */
function slice(src: string, header: string, start: number, length: number): string {
  let s = src.indexOf('\n', start % src.length) + 1;
  let out = `${header}\n`;
  while (out.length < length) {
    const take = src.slice(s, s + (length - out.length));
    out += take;
    s = 0;
  }
  return out;
}

/** A bundle as a node's monitor writes it: 3-5 artifacts in 3-4 steps, a timeline of heartbeat samples. */
function makeBundle(fx: Fixtures, i: number, node: number, app: string, createdAt: Date, rnd: () => number, withWire: boolean): Bundle {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const stamp = createdAt.toISOString().replace(/[-:]/g, '');
  const id = `${stamp.replace('.', '')}-${app}-${randomBytes(4).toString('hex')}`;
  const verdict = pick(TROUBLE);
  const header = `[    0.000000] eve-diag bench ${id} node-${node}/${app} #${i}`;
  const arts: { kind: string; name: string; mediaType: 'text/plain' | 'application/json'; text: string }[] = [];
  const consoleText = pick(fx.consoles).repeat(4);
  arts.push({ kind: 'console-capture', name: 'console.txt', mediaType: 'text/plain', text: slice(consoleText, header, Math.floor(rnd() * 100_000), 8_000 + Math.floor(rnd() * 92_000)) });
  arts.push({ kind: 'hmp-registers', name: 'registers.txt', mediaType: 'text/plain', text: `${header}\n${pick(fx.registers)}` });
  const host = JSON.parse(pick(fx.hostStates)) as Record<string, unknown>;
  host['collectedAt'] = createdAt.toISOString();
  host['bench'] = id;
  arts.push({ kind: 'host-state', name: 'host-state.json', mediaType: 'application/json', text: JSON.stringify(host, null, 2) });
  const extra = Math.floor(rnd() * 3); // 0..2 SysRq dumps: 3 to 5 artifacts
  if (extra >= 1) arts.push({ kind: 'sysrq', name: 'sysrq-w.txt', mediaType: 'text/plain', text: `${header}\n${pick(fx.sysrqW)}` });
  if (extra >= 2) arts.push({ kind: 'sysrq', name: 'sysrq-t.txt', mediaType: 'text/plain', text: slice(pick(fx.sysrqT), header, Math.floor(rnd() * 40_000), 10_000 + Math.floor(rnd() * 40_000)) });

  const files = new Map<string, BundleFile>();
  const steps: ManifestStep[] = [];
  let bytes = 0;
  let wireBytes = 0;
  for (const a of arts) {
    let step = steps.find((s) => s.kind === a.kind);
    if (step === undefined) {
      step = {
        index: steps.length,
        kind: a.kind,
        ok: true,
        status: 'done',
        summary: `${a.kind}: ${(a.text.length / 1024).toFixed(1)} KiB`,
        startedAt: createdAt.toISOString(),
        durationMs: Math.floor(rnd() * 400),
        artifacts: [],
        omitted: [],
      };
      steps.push(step);
    }
    const data = Buffer.from(a.text, 'utf8');
    const sha = sha256(data);
    step.artifacts.push({ name: a.name, file: `${String(step.index).padStart(2, '0')}-${a.name}`, mediaType: a.mediaType, bytes: data.length, sha256: sha, truncated: false });
    bytes += data.length;
    if (withWire) {
      const gz = data.length > 1024 ? gzipSync(data) : undefined;
      files.set(sha, { sha256: sha, bytes: data.length, wire: gz ?? data, gzip: gz !== undefined });
      wireBytes += (gz ?? data).length;
    } else {
      files.set(sha, { sha256: sha, bytes: data.length, wire: data, gzip: false });
    }
  }
  const t0 = createdAt.getTime() - 60_000;
  const timeline = Array.from({ length: 30 }, (_, k) => {
    const at = new Date(t0 + k * 2000).toISOString();
    const stalled = k > 20;
    return k % 2 === 0
      ? { at, probe: 'kernel-heartbeat', status: stalled ? 'stalled' : 'alive', beats: 1000 + Math.min(k, 20), ageMs: stalled ? (k - 20) * 2000 : 900 }
      : { at, probe: 'agent-heartbeat', status: stalled ? 'stalled' : 'alive', beats: 500 + Math.min(k, 20), ageMs: stalled ? (k - 20) * 2000 : 1100 };
  });
  const manifest: ReportManifest = {
    schema: MANIFEST_SCHEMA_NAME,
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    id,
    createdAt: createdAt.toISOString(),
    app: { name: app },
    verdict,
    evidence: { reason: `${verdict}: kernel heartbeat stalled for 20 s (bench report ${i})`, kernel: { status: 'stalled', beats: 1020 }, agent: { status: 'stalled' } },
    timeline,
    steps,
    totalBytes: bytes,
    truncated: false,
  };
  const manifestText = JSON.stringify(manifest, null, 2);
  return { id, node, app, manifestText, manifestSha256: sha256(manifestText), manifest, files, bytes, wireBytes: wireBytes + manifestText.length };
}

// --- the controller child ----------------------------------------------------------------------------

const LIMITS = ['maxRequestsPerSecond=100000', 'maxReportsPerHour=1000000'];

interface Child {
  proc: ChildProcess;
  pid: number;
  url: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

async function startChild(store: string[]): Promise<Child> {
  const main = resolve('dist/cli/main.js');
  if (!existsSync(main)) throw new Error(`${main} is missing: npm run build first`);
  const proc = spawn(process.execPath, [main, 'controller', 'serve', ...store, '--listen', '127.0.0.1:0', ...LIMITS.flatMap((l) => ['--limit', l])], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let stderr = '';
  let out = '';
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
  const url = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`the controller did not start within 30 s: ${stderr}`)), 30_000);
    proc.once('exit', (code, sig) => rej(new Error(`the controller exited (${code ?? sig}) before listening: ${stderr}`)));
    proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (line.includes('"controller listening"')) {
          clearTimeout(t);
          res(String((JSON.parse(line) as { url: string }).url));
        } else if (line.includes('"level":"error"')) {
          progress(`controller: ${line.slice(0, 300)}`);
        }
      }
    });
  });
  return {
    proc,
    pid: proc.pid as number,
    url,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
      live.delete(proc);
    },
  };
}

const agent = new Agent({ keepAlive: true, maxSockets: 16 });

/** GET with a bearer token: the status, the body and the wall time in ms. */
function get(base: string, path: string, token: string): Promise<{ status: number; body: Buffer; ms: number }> {
  return send(agent, 'GET', base, path, { authorization: `Bearer ${token}` });
}

/** One request on `via`: the status, the headers, the body and the wall time in ms (to the last byte). */
function send(via: Agent, method: string, base: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; ms: number }> {
  const t0 = performance.now();
  return new Promise((res, rej) => {
    const req = httpRequest(new URL(path, base), { method, agent: via, headers: body === undefined ? headers : { ...headers, 'content-length': String(body.length) }, timeout: 60_000 }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('error', rej);
      r.on('end', () => res({ status: r.statusCode ?? 0, headers: r.headers, body: Buffer.concat(chunks), ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
    req.on('error', rej);
    req.end(body);
  });
}

// --- the phases --------------------------------------------------------------------------------------

interface IngestResult {
  reports: number;
  seconds: number;
  reportsPerSec: number;
  mbPerSec: number;
  wireMbPerSec: number;
  bytes: number;
  wireBytes: number;
  artifacts: number;
  latencyMs: Stats;
  retries: number;
  analysisSeconds: number;
  analysisDone: number;
  analysisFailed: number;
  analysisLeft: number;
  /** The controller's CPU time (user + system) per report: during the upload, and until the analysis was done. */
  cpuMsPerReport: number;
  cpuMsPerReportWithAnalysis: number;
}

/** One report as a node's shipper sends it: offer the manifest, PUT each missing artifact, commit; resolves with the artifacts sent. */
async function upload(client: ControllerClient, b: Bundle): Promise<number> {
  let artifacts = 0;
  const offer = (await client.request('POST', paths.reports, { data: Buffer.from(b.manifestText, 'utf8'), type: 'application/json' })).body as ReportOffer;
  let ack = offer.ack;
  if (offer.status !== 'stored') {
    for (const h of offer.missing) {
      const f = b.files.get(h);
      if (f === undefined) throw new Error(`the controller asks for ${h}, which report ${b.id} does not have`);
      await client.request('PUT', paths.artifact(b.id, h), { data: f.wire, type: 'application/octet-stream', gzip: f.gzip });
      artifacts++;
    }
    ack = (await client.request('POST', paths.commit(b.id))).body as ReportAck;
  }
  if (ack?.manifestSha256 !== b.manifestSha256 || ack.artifacts.length !== b.files.size) throw new Error(`report ${b.id}: the acknowledgement does not match: ${JSON.stringify(ack).slice(0, 300)}`);
  return artifacts;
}

/** Waits (at most --analysis-wait) until the controller's analysis queue is empty; the job counts at the end. */
async function waitAnalysis(c: Child, admin: string, o: Options): Promise<Record<string, number>> {
  const deadline = Date.now() + o.analysisWaitS * 1000;
  let jobs: Record<string, number> = {};
  let lastShown = 0;
  for (;;) {
    const r = await get(c.url, '/api/v1/status', admin);
    if (r.status !== 200) throw new Error(`GET /api/v1/status: ${r.status} ${r.body.toString('utf8').slice(0, 200)}`);
    jobs = (JSON.parse(r.body.toString('utf8')) as { jobs: Record<string, number> }).jobs;
    const left = (jobs['queued'] ?? 0) + (jobs['running'] ?? 0);
    if (left === 0 || Date.now() > deadline) return jobs;
    if (Date.now() - lastShown > 10_000) {
      progress(`  analysis: ${jobs['done'] ?? 0} done, ${left} to go`);
      lastShown = Date.now();
    }
    await sleep(250);
  }
}

async function ingest(c: Child, tokens: string[], admin: string, bundles: Bundle[], o: Options): Promise<IngestResult> {
  const clients = tokens.map((token) => new ControllerClient({ url: c.url, token, timeoutMs: 60_000 }));
  const latency: number[] = [];
  let next = 0;
  let retries = 0;
  let artifacts = 0;
  let done = 0;
  const one = async (b: Bundle) => {
    artifacts += await upload(clients[b.node] as ControllerClient, b);
  };
  const t0 = performance.now();
  const cpu0 = procCpuMs(c.pid);
  const worker = async () => {
    while (next < bundles.length) {
      const b = bundles[next++] as Bundle;
      const s = performance.now();
      for (let attempt = 1; ; attempt++) {
        try {
          await one(b);
          break;
        } catch (e) {
          const status = (e as { status?: number }).status;
          if (attempt >= 5 || !(status === undefined || status === 429 || status >= 500)) throw e;
          retries++;
          await sleep(200 * attempt);
        }
      }
      latency.push(performance.now() - s);
      if (++done % 500 === 0) progress(`  ingested ${done}/${bundles.length}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, bundles.length) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = procCpuMs(c.pid);
  const bytes = bundles.reduce((s, b) => s + b.bytes + b.manifestText.length, 0);
  const wireBytes = bundles.reduce((s, b) => s + b.wireBytes, 0);

  // The controller analyzes each stored report (its worker runs meanwhile): until the queue is empty.
  progress(`  ingest done in ${seconds.toFixed(1)} s; waiting for the analysis of the ingested reports (at most ${o.analysisWaitS} s)`);
  const jobs = await waitAnalysis(c, admin, o);
  return {
    reports: bundles.length,
    seconds,
    reportsPerSec: bundles.length / seconds,
    mbPerSec: bytes / 1e6 / seconds,
    wireMbPerSec: wireBytes / 1e6 / seconds,
    bytes,
    wireBytes,
    artifacts,
    latencyMs: stats(latency),
    retries,
    analysisSeconds: (performance.now() - t0) / 1000,
    analysisDone: jobs['done'] ?? 0,
    analysisFailed: jobs['failed'] ?? 0,
    analysisLeft: (jobs['queued'] ?? 0) + (jobs['running'] ?? 0),
    cpuMsPerReport: (cpu1 - cpu0) / bundles.length,
    cpuMsPerReportWithAnalysis: (procCpuMs(c.pid) - cpu0) / bundles.length,
  };
}

/** Multi-row INSERT of `rows` (`cols` columns each) in chunks that stay under both databases' parameter limits. */
async function insertRows(db: Db, head: string, cols: number, rows: Param[][], returning = ''): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  const per = Math.max(1, Math.floor(30_000 / cols));
  const tuple = `(${Array.from({ length: cols }, () => '?').join(', ')})`;
  for (let i = 0; i < rows.length; i += per) {
    const chunk = rows.slice(i, i + per);
    const sql = `${head} VALUES ${chunk.map(() => tuple).join(', ')}${returning}`;
    if (returning !== '') out.push(...(await db.all(sql, chunk.flat())));
    else await db.run(sql, chunk.flat());
  }
  return out;
}

interface FillResult {
  reports: number;
  seconds: number;
  rowsPerSec: number;
  rows: number;
}

/**
 * Brings the store to `total` stored reports straight through SQL (not the HTTP API): each report with
 * its manifest, 3-5 artifact rows (their bytes shared with a pool of 64 bundles put through the store
 * once), one finding, and two verdict events (the trouble, 40 s before the report; healthy again 5
 * minutes after), spread over the last 30 days and over the nodes' apps.
 */
async function fill(store: Store, fx: Fixtures, nodeIds: number[], have: number, total: number): Promise<FillResult> {
  const rnd = rng(0xf111);
  const now = Date.now();
  const pool: Bundle[] = [];
  for (let i = 0; i < 64; i++) {
    const b = makeBundle(fx, i, 0, 'app-0', new Date(now), rnd, false);
    for (const [sha, f] of b.files) await store.putBlob(sha, f.wire);
    pool.push(b);
  }
  const n = total - have;
  const t0 = performance.now();
  const batch = 500;
  let rowsDone = 0;
  const severityOf: Record<string, string> = { 'guest-panicked': 'critical', 'guest-kernel-hung': 'critical', 'guest-userspace-hung': 'error', 'app-unhealthy': 'error', 'guest-starved': 'warning', 'vm-not-running': 'warning' };
  for (let start = 0; start < n; start += batch) {
    const count = Math.min(batch, n - start);
    const reports: Param[][] = [];
    const meta: { id: string; nodeId: number; app: string; verdict: string; at: number; b: Bundle }[] = [];
    for (let k = 0; k < count; k++) {
      const i = start + k;
      const at = now - 30 * 86_400_000 + Math.floor(((i + 0.5) / n) * 30 * 86_400_000);
      const nodeIdx = Math.floor(rnd() * nodeIds.length);
      const nodeId = nodeIds[nodeIdx] as number;
      const app = APPS[Math.floor(rnd() * APPS.length)] as string;
      const b = pool[i % pool.length] as Bundle;
      const verdict = TROUBLE[Math.floor(rnd() * TROUBLE.length)] as string;
      const createdAt = new Date(at).toISOString();
      const id = `${createdAt.replace(/[-:.]/g, '')}-${app}-f${i.toString(16).padStart(7, '0')}`;
      const m: ReportManifest = { ...b.manifest, id, createdAt, app: { name: app }, verdict: verdict as Verdict, evidence: { ...b.manifest.evidence, reason: `${verdict}: kernel heartbeat stalled for 20 s (fill ${i})` } };
      const text = JSON.stringify(m, null, 2);
      const received = new Date(at + 2000).toISOString();
      reports.push([nodeId, id, app, verdict, String(m.evidence['reason']), createdAt, received, received, 'stored', text, sha256(text), m.totalBytes, 1, severityOf[verdict] ?? 'info']);
      meta.push({ id, nodeId, app, verdict, at, b });
    }
    await store.db.tx(async (tx) => {
      const keys = await insertRows(
        tx,
        'INSERT INTO reports (node_id, report_id, app, verdict, reason, created_at, received_at, stored_at, status, manifest, manifest_sha256, total_bytes, findings, worst_severity)',
        14,
        reports,
        ' RETURNING key, node_id, report_id',
      );
      const keyOf = new Map(keys.map((r) => [`${String(r['node_id'])}/${String(r['report_id'])}`, Number(r['key'])]));
      const arts: Param[][] = [];
      const findings: Param[][] = [];
      const events: Param[][] = [];
      for (const r of meta) {
        const key = keyOf.get(`${r.nodeId}/${r.id}`);
        if (key === undefined) throw new Error(`fill: no key came back for ${r.id}`);
        for (const s of r.b.manifest.steps) for (const a of s.artifacts) arts.push([key, s.index, s.kind, a.file, a.name, a.mediaType, a.bytes, a.sha256]);
        const t = new Date(r.at + 5000).toISOString();
        findings.push([
          key,
          r.nodeId,
          r.app,
          'kernel-log',
          severityOf[r.verdict] ?? 'info',
          'Kernel panic - not syncing: sysrq triggered crash',
          'The console shows a kernel panic; the call trace below is where it happened.',
          JSON.stringify([{ artifact: '00-console.txt', lineStart: 340, lineEnd: 362, excerpt: 'Kernel panic - not syncing: sysrq triggered crash\nCPU: 0 PID: 1 Comm: sh\nCall Trace:\n <TASK>\n dump_stack_lvl+0x47/0x60\n panic+0x192/0x350' }]),
          t,
        ]);
        const data = (s: string) => JSON.stringify({ kernel: { status: s, beats: 1020, ageMs: s === 'alive' ? 900 : 20_000 }, agent: { status: s, beats: 520, ageMs: 1100 } });
        events.push([r.nodeId, `ev-${r.id}-a`, r.app, r.verdict, `${r.verdict}: heartbeat stalled`, new Date(r.at - 40_000).toISOString(), new Date(r.at - 39_000).toISOString(), data('stalled')]);
        events.push([r.nodeId, `ev-${r.id}-b`, r.app, 'running-healthy', 'all probes healthy', new Date(r.at + 300_000).toISOString(), new Date(r.at + 301_000).toISOString(), data('alive')]);
      }
      await insertRows(tx, 'INSERT INTO report_artifacts (report_key, step, kind, file, name, media_type, bytes, sha256)', 8, arts);
      await insertRows(tx, 'INSERT INTO findings (report_key, node_id, app, analyzer, severity, title, explanation, evidence, created_at)', 9, findings);
      await insertRows(tx, 'INSERT INTO events (node_id, event_id, app, verdict, reason, at, received_at, data)', 8, events);
      rowsDone += reports.length + arts.length + findings.length + events.length;
    });
    if ((start / batch) % 20 === 19) progress(`  filled ${start + count}/${n}`);
  }
  // The events went in through SQL, not addEvents: the fleet state is computed from them once.
  await store.refreshFleet();
  // PostgreSQL's autovacuum would ANALYZE tables this size within a minute; do it now rather than
  // measure plans made for empty tables. (SQLite: the controller never runs ANALYZE, neither do we.)
  if (store.db.dialect === 'postgres') await store.db.run('ANALYZE');
  const seconds = (performance.now() - t0) / 1000;
  return { reports: n, seconds, rows: rowsDone, rowsPerSec: rowsDone / seconds };
}

interface ReadResult {
  report: Stats;
  fleet: Stats;
  list: Stats;
  fleetRows: number;
  reportBytes: number;
  fleetBytes: number;
}

async function reads(c: Child, admin: string, store: Store, nodes: string[], o: Options): Promise<ReadResult> {
  const rnd = rng(0x4ead);
  const range = await store.db.get("SELECT MIN(key) AS lo, MAX(key) AS hi FROM reports WHERE status = 'stored'");
  const lo = Number(range?.['lo']);
  const hi = Number(range?.['hi']);
  const check = (r: { status: number; body: Buffer }, what: string, must: string) => {
    if (r.status !== 200 || !r.body.includes(must)) throw new Error(`${what}: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`);
  };
  const reportOnce = async () => {
    const key = lo + Math.floor(rnd() * (hi - lo + 1));
    const r = await get(c.url, `/reports/${key}`, admin);
    check(r, `GET /reports/${key}`, 'id="findings"');
    return r;
  };
  const fleetOnce = async () => {
    const r = await get(c.url, '/', admin);
    check(r, 'GET /', '<table class="fleet">');
    return r;
  };
  const verdicts = TROUBLE;
  let page2: string | undefined;
  const listOnce = async () => {
    let q: string;
    if (page2 !== undefined) {
      q = page2;
      page2 = undefined;
    } else {
      const node = nodes[Math.floor(rnd() * nodes.length)] as string;
      const kind = Math.floor(rnd() * 3);
      const app = APPS[Math.floor(rnd() * APPS.length)] as string;
      const verdict = verdicts[Math.floor(rnd() * verdicts.length)] as string;
      q = kind === 0 ? `node=${node}` : kind === 1 ? `verdict=${verdict}` : `node=${node}&app=${app}`;
      q += '&limit=50';
    }
    const r = await get(c.url, `/api/v1/reports?${q}`, admin);
    check(r, `GET /api/v1/reports?${q}`, '"reports"');
    if (!q.includes('before=')) {
      const rows = (JSON.parse(r.body.toString('utf8')) as { reports: { key: number }[] }).reports;
      const last = rows[rows.length - 1];
      if (rows.length === 50 && last !== undefined) page2 = `${q}&before=${last.key}`;
    }
    return r;
  };
  const run = async (what: string, f: () => Promise<{ ms: number; body: Buffer }>) => {
    for (let i = 0; i < 5; i++) await f(); // warm-up, not counted
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < o.requests; i++) {
      const r = await f();
      ms.push(r.ms);
      bytes += r.body.length;
    }
    const s = stats(ms);
    progress(`  ${what}: p50 ${s.p50.toFixed(1)} ms, p95 ${s.p95.toFixed(1)} ms`);
    return { s, bytes: bytes / o.requests };
  };
  const report = await run('report page', reportOnce);
  const fleet = await run('fleet page', fleetOnce);
  const list = await run('report list API', listOnce);
  const fleetRows = (await fleetOnce()).body.toString('utf8').split('<tr>').length - 2;
  return { report: report.s, fleet: fleet.s, list: list.s, fleetRows, reportBytes: report.bytes, fleetBytes: fleet.bytes };
}

interface BackendResult {
  backend: Backend;
  version: string;
  startRss: { rss: number; hwm: number };
  ingest: IngestResult;
  ingestRss: { rss: number; hwm: number };
  fill: FillResult;
  fillRss: { rss: number; hwm: number };
  read: ReadResult;
  readRss: { rss: number; hwm: number };
  storeReports: number;
}

interface Setup {
  store: Store;
  version: string;
  admin: string;
  nodes: string[];
  nodeIds: number[];
  tokens: string[];
  child: Child;
  startRss: { rss: number; hwm: number };
}

/** A fresh store (a temporary SQLite directory or PostgreSQL cluster), an admin token, --nodes node tokens, the controller child on it. */
async function setupBackend(backend: Backend, o: Options, cleanups: (() => Promise<void>)[]): Promise<Setup> {
  progress(`${backend}: setting up`);
  let where: { data: string } | { database: string };
  let pgServer: Postgres | undefined;
  if (backend === 'sqlite') {
    const dir = await mkdtemp(join(tmpdir(), 'eve-diag-bench-ctl-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    where = { data: dir };
  } else {
    pgServer = await startPostgres();
    const server = pgServer;
    cleanups.push(() => server.stop());
    where = { database: pgServer.url };
  }
  const store = await openStore(where);
  cleanups.push(() => store.close());
  const version =
    backend === 'sqlite' ? `SQLite ${String((await store.db.get('SELECT sqlite_version() AS v'))?.['v'])}` : String((await store.db.get('SHOW server_version'))?.['server_version']).replace(/^/, 'PostgreSQL ');
  const admin = newToken();
  await store.addToken(hashToken(admin), 'admin', null, 'bench admin');
  const nodes = Array.from({ length: o.nodes }, (_, i) => `bench-node-${String(i).padStart(4, '0')}`);
  const nodeIds: number[] = [];
  const tokens: string[] = [];
  for (const n of nodes) {
    const id = (await store.nodeId(n)) as number;
    const t = newToken();
    await store.addToken(hashToken(t), 'node', id, 'bench');
    nodeIds.push(id);
    tokens.push(t);
  }

  const child = await startChild('data' in where ? ['--data', where.data] : ['--database', where.database]);
  cleanups.push(() => child.stop());
  await sleep(1000);
  const startRss = procRss(child.pid);
  return { store, version, admin, nodes, nodeIds, tokens, child, startRss };
}

async function runBackend(backend: Backend, fx: Fixtures, o: Options, cleanups: (() => Promise<void>)[]): Promise<BackendResult> {
  const { store, version, admin, nodes, nodeIds, tokens, child, startRss } = await setupBackend(backend, o, cleanups);

  progress(`${backend}: building ${o.ingest} bundles`);
  const rnd = rng(0xb0d1e5 + (backend === 'sqlite' ? 0 : 1));
  const bundles = Array.from({ length: o.ingest }, (_, i) => {
    const node = i % o.nodes;
    return makeBundle(fx, i, node, APPS[Math.floor(i / o.nodes) % APPS.length] as string, new Date(Date.now() - (o.ingest - i) * 1000), rnd, true);
  });
  progress(`${backend}: ingesting ${o.ingest} bundles over HTTP, ${o.concurrency} at a time, from ${o.nodes} nodes`);
  const ing = await ingest(child, tokens, admin, bundles, o);
  const ingestRss = procRss(child.pid);
  bundles.length = 0;

  progress(`${backend}: filling the store to ${o.reports} reports through SQL batches`);
  const fl = await fill(store, fx, nodeIds, o.ingest, o.reports);
  const fillRss = procRss(child.pid);
  const storeReports = (await store.countReports()).stored;

  progress(`${backend}: reads, ${o.requests} requests each, one at a time`);
  const rd = await reads(child, admin, store, nodes, o);
  const readRss = procRss(child.pid);
  return { backend, version, startRss, ingest: ing, ingestRss, fill: fl, fillRss, read: rd, readRss, storeReports };
}

// --- the load run (--load) ---------------------------------------------------------------------------

/** What a node's shipper waits for one answer (the monitor's default): an answer later than that is a failure at the node. */
const NODE_TIMEOUT_MS = CONTROLLER_TIMEOUT_MS_DEFAULT;
const LOAD_ATTEMPTS = 5;
const TARGET_DASH_IDLE_P95_MS = 100;
const TARGET_DASH_LOAD_P95_MS = 1000;
const TARGET_DASH_LOAD_MAX_MS = 3000;

const PHASES = ['idle-before', 'upload', 'analysis', 'idle-after'] as const;
type Phase = (typeof PHASES)[number];
const PHASE_TEXT: Record<Phase, string> = {
  'idle-before': 'idle, before the load',
  upload: 'under load (every node uploading)',
  analysis: 'during the analysis that follows',
  'idle-after': 'idle, after (store as the load left it)',
};
/** The pages the dashboard client asks for, and a string each answer must hold (a login page is no answer). */
const DASHBOARD_PAGES = [
  { path: '/', must: '<table class="fleet">' },
  { path: '/reports', must: '<table class="reports">' },
] as const;

/** Why an attempt failed, as the error table counts it: the HTTP status, a timeout, or the network error's code. */
function errorKey(e: unknown): string {
  if (e instanceof ControllerError) {
    if (e.status !== undefined) return String(e.status);
    if (e.message.includes('no answer within')) return 'timeout';
    const code = (e.cause as NodeJS.ErrnoException | undefined)?.code;
    return `network ${code ?? e.message.slice(0, 40)}`;
  }
  const code = (e as NodeJS.ErrnoException).code;
  return code !== undefined ? `network ${code}` : `other: ${(e as Error).message.slice(0, 60)}`;
}

const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

/**
 * One dashboard user: every DASHBOARD_TICK_MS it asks for each page in DASHBOARD_PAGES on its own
 * keep-alive socket (not queued behind the uploads' sockets) with the session cookie a browser would
 * send. Each answer is filed under the phase its tick began in.
 */
class DashboardClient {
  phase: Phase = 'idle-before';
  readonly ms = new Map<string, number[]>();
  readonly errors: Record<string, number> = {};
  readonly ticks: Record<Phase, number> = { 'idle-before': 0, upload: 0, analysis: 0, 'idle-after': 0 };
  readonly late: Record<Phase, number> = { 'idle-before': 0, upload: 0, analysis: 0, 'idle-after': 0 };
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 1 });
  #stopped = false;
  readonly #done: Promise<void>;

  constructor(
    readonly base: string,
    readonly cookie: string,
  ) {
    this.#done = this.#run();
  }

  async #run(): Promise<void> {
    let next = performance.now();
    while (!this.#stopped) {
      const phase = this.phase;
      this.ticks[phase]++;
      for (const page of DASHBOARD_PAGES) {
        try {
          const r = await send(this.#agent, 'GET', this.base, page.path, { cookie: this.cookie, accept: 'text/html' });
          if (r.status === 200 && r.body.includes(page.must)) {
            const k = `${phase} ${page.path}`;
            this.ms.set(k, [...(this.ms.get(k) ?? []), r.ms]);
          } else bump(this.errors, `${phase} ${page.path} ${r.status}${r.status === 200 ? ' (not the page)' : ''}`);
        } catch (e) {
          bump(this.errors, `${phase} ${page.path} ${errorKey(e)}`);
        }
      }
      next += DASHBOARD_TICK_MS;
      const now = performance.now();
      if (now > next) {
        this.late[phase]++;
        next = now;
      } else await sleep(next - now);
    }
  }

  stats(phase: Phase, path: string): Stats {
    return stats(this.ms.get(`${phase} ${path}`) ?? []);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#done;
    this.#agent.destroy();
  }
}

/** Logs in at /login with the admin token, as a browser does; the cookie to send. */
async function login(base: string, admin: string): Promise<string> {
  const r = await send(agent, 'POST', base, '/login', { 'content-type': 'application/x-www-form-urlencoded' }, Buffer.from(`token=${encodeURIComponent(admin)}`));
  const set = [r.headers['set-cookie'] ?? []].flat()[0];
  if (r.status !== 303 || set === undefined) throw new Error(`POST /login: ${r.status}, set-cookie ${JSON.stringify(set)}: ${r.body.toString('utf8').slice(0, 200)}`);
  return set.split(';')[0] as string;
}

interface LoadIngestResult {
  reports: number;
  acknowledged: number;
  /** Reports still not acknowledged after LOAD_ATTEMPTS attempts. */
  failed: number;
  seconds: number;
  reportsPerSec: number;
  wireMbPerSec: number;
  artifacts: number;
  /** Offer to acknowledged commit of each acknowledged report, its retries included. */
  latencyMs: Stats;
  /** Offer to acknowledged commit, first attempts that succeeded only. */
  firstAttemptMs: Stats;
  attempts: number;
  /** Failed attempts by HTTP status or network error. */
  errors: Record<string, number>;
  firstFailures: string[];
  cpuMsPerReport: number;
  /** Sockets the bench had open to the controller at once, at most (ss would say the same). */
  maxInFlight: number;
}

/**
 * Every bundle uploaded with --concurrency at a time (with --load: all at once), each from its own
 * node's client with the node's 30 s timeout; a retryable failure (5xx, 429, 401/403/408, network,
 * timeout) is tried again after its Retry-After or 200 ms x attempt, as the shipper would, at most
 * LOAD_ATTEMPTS times; nothing throws: every failure is counted by its status.
 */
async function loadIngest(c: Child, tokens: string[], bundles: Bundle[], o: Options): Promise<LoadIngestResult> {
  const clients = tokens.map((token) => new ControllerClient({ url: c.url, token, timeoutMs: NODE_TIMEOUT_MS }));
  const latency: number[] = [];
  const firstAttempt: number[] = [];
  const errors: Record<string, number> = {};
  const firstFailures: string[] = [];
  let next = 0;
  let attempts = 0;
  let artifacts = 0;
  let failed = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const t0 = performance.now();
  const cpu0 = procCpuMs(c.pid);
  const worker = async () => {
    while (next < bundles.length) {
      const b = bundles[next++] as Bundle;
      const s = performance.now();
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      for (let attempt = 1; ; attempt++) {
        attempts++;
        try {
          artifacts += await upload(clients[b.node] as ControllerClient, b);
          latency.push(performance.now() - s);
          if (attempt === 1) firstAttempt.push(performance.now() - s);
          break;
        } catch (e) {
          bump(errors, errorKey(e));
          if (firstFailures.length < 5) firstFailures.push(`${b.id}: ${(e as Error).message.slice(0, 200)}`);
          const retryable = e instanceof ControllerError ? e.retryable : (e as NodeJS.ErrnoException).code !== undefined;
          if (!retryable || attempt >= LOAD_ATTEMPTS) {
            failed++;
            break;
          }
          await sleep(e instanceof ControllerError && e.retryAfterMs !== undefined ? Math.min(e.retryAfterMs, 10_000) : 200 * attempt);
        }
      }
      inFlight--;
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, bundles.length) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = procCpuMs(c.pid);
  const wireBytes = bundles.reduce((s, b) => s + b.wireBytes, 0);
  return {
    reports: bundles.length,
    acknowledged: latency.length,
    failed,
    seconds,
    reportsPerSec: latency.length / seconds,
    wireMbPerSec: wireBytes / 1e6 / seconds,
    artifacts,
    latencyMs: stats(latency),
    firstAttemptMs: stats(firstAttempt),
    attempts,
    errors,
    firstFailures,
    cpuMsPerReport: (cpu1 - cpu0) / Math.max(1, latency.length),
    maxInFlight,
  };
}

interface LoadResult {
  backend: Backend;
  version: string;
  nodes: number;
  prefill: number;
  fillSeconds: number;
  ingest: LoadIngestResult;
  /** 1-minute load average when the uploads began and ended. */
  loadavgUpload: [number, number];
  analysisSeconds: number;
  analysisDone: number;
  analysisFailed: number;
  analysisLeft: number;
  storeReports: number;
  storeExpected: number;
  dashboard: Record<Phase, Record<string, Stats>>;
  dashboardErrors: Record<string, number>;
  dashboardTicks: Record<Phase, number>;
  dashboardLate: Record<Phase, number>;
  fleetRows: number;
  fleetKb: number;
  reportsKb: number;
  startRss: { rss: number; hwm: number };
  loadRss: { rss: number; hwm: number };
  endRss: { rss: number; hwm: number };
}

async function runLoad(backend: Backend, fx: Fixtures, o: Options, cleanups: (() => Promise<void>)[]): Promise<LoadResult> {
  const { store, version, admin, nodeIds, tokens, child, startRss } = await setupBackend(backend, o, cleanups);
  let fillSeconds = 0;
  if (o.reports > 0) {
    progress(`${backend}: filling the store with ${o.reports} reports through SQL batches first (the pages have something to show)`);
    fillSeconds = (await fill(store, fx, nodeIds, 0, o.reports)).seconds;
  }
  const prefill = (await store.countReports()).stored;
  progress(`${backend}: building ${o.ingest} bundles`);
  const rnd = rng(0x10ad + (backend === 'sqlite' ? 0 : 1));
  const bundles = Array.from({ length: o.ingest }, (_, i) => {
    const node = i % o.nodes;
    return makeBundle(fx, i, node, APPS[Math.floor(i / o.nodes) % APPS.length] as string, new Date(Date.now() - (o.ingest - i) * 1000), rnd, true);
  });
  const cookie = await login(child.url, admin);
  const dash = new DashboardClient(child.url, cookie);
  let ing: LoadIngestResult;
  let loadavgUpload: [number, number];
  let jobs: Record<string, number>;
  let analysisSeconds: number;
  let loadRss: { rss: number; hwm: number };
  try {
    progress(`${backend}: the dashboard idle, ${o.idleS} s`);
    await sleep(o.idleS * 1000);
    progress(`${backend}: ${o.ingest} bundles from ${o.nodes} nodes, ${o.concurrency} at once, the dashboard asked every ${DASHBOARD_TICK_MS} ms`);
    dash.phase = 'upload';
    const la0 = loadavg()[0] as number;
    const t0 = performance.now();
    ing = await loadIngest(child, tokens, bundles, o);
    loadavgUpload = [la0, loadavg()[0] as number];
    loadRss = procRss(child.pid);
    progress(`  ${ing.acknowledged}/${ing.reports} acknowledged in ${ing.seconds.toFixed(1)} s, p99 ${ing.latencyMs.p99.toFixed(0)} ms, ${ing.failed} failed; waiting for the analysis (at most ${o.analysisWaitS} s)`);
    dash.phase = 'analysis';
    jobs = await waitAnalysis(child, admin, o);
    analysisSeconds = (performance.now() - t0) / 1000;
    progress(`${backend}: the dashboard idle again, ${o.idleS} s`);
    dash.phase = 'idle-after';
    await sleep(o.idleS * 1000);
  } finally {
    await dash.stop();
  }
  bundles.length = 0;
  const storeReports = (await store.countReports()).stored;
  const fleet = await send(agent, 'GET', child.url, '/', { cookie });
  const list = await send(agent, 'GET', child.url, '/reports', { cookie });
  const dashboard = Object.fromEntries(PHASES.map((p) => [p, Object.fromEntries(DASHBOARD_PAGES.map((pg) => [pg.path, dash.stats(p, pg.path)]))])) as Record<Phase, Record<string, Stats>>;
  return {
    backend,
    version,
    nodes: o.nodes,
    prefill,
    fillSeconds,
    ingest: ing,
    loadavgUpload,
    analysisSeconds,
    analysisDone: jobs['done'] ?? 0,
    analysisFailed: jobs['failed'] ?? 0,
    analysisLeft: (jobs['queued'] ?? 0) + (jobs['running'] ?? 0),
    storeReports,
    storeExpected: prefill + ing.acknowledged,
    dashboard,
    dashboardErrors: dash.errors,
    dashboardTicks: dash.ticks,
    dashboardLate: dash.late,
    fleetRows: fleet.body.toString('utf8').split('<tr>').length - 2,
    fleetKb: fleet.body.length / 1000,
    reportsKb: list.body.length / 1000,
    startRss,
    loadRss,
    endRss: procRss(child.pid),
  };
}

// --- output ------------------------------------------------------------------------------------------

function num(v: number, digits?: number): string {
  if (!Number.isFinite(v)) return '-';
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3);
  return v.toFixed(d);
}

const TARGET_INGEST = 200;
const TARGET_P95_MS = 100;

function printTable(results: readonly BackendResult[], header: string[], footer: string[]): void {
  const rows: string[][] = [['', ...results.map((r) => r.backend), 'target']];
  const blank = () => results.map(() => '');
  const line = (label: string, f: (r: BackendResult) => number, digits?: number, target?: { text: string; ok: (v: number) => boolean }) =>
    rows.push([label, ...results.map((r) => `${num(f(r), digits)}${target === undefined ? '' : target.ok(f(r)) ? '  pass' : '  FAIL'}`), target?.text ?? '']);
  const text = (label: string, f: (r: BackendResult) => string) => rows.push([label, ...results.map(f), '']);
  const section = (title: string) => rows.push([title, ...blank(), '']);
  const r0 = results[0] as BackendResult;

  text('store', (r) => r.version);
  section(`ingest over HTTP: ${r0.ingest.reports} bundles (manifest + 3-5 artifacts), offer/PUT gzip/commit, into an empty store`);
  line('  reports/s', (r) => r.ingest.reportsPerSec, 1, { text: `>= ${TARGET_INGEST}`, ok: (v) => v >= TARGET_INGEST });
  line('  MB/s stored (artifacts + manifest)', (r) => r.ingest.mbPerSec, 1);
  line('  MB/s on the wire (gzip)', (r) => r.ingest.wireMbPerSec, 1);
  line('  KB per report, stored', (r) => r.ingest.bytes / r.ingest.reports / 1000, 0);
  line('  artifacts uploaded', (r) => r.ingest.artifacts, 0);
  line('  latency per report ms, p50', (r) => r.ingest.latencyMs.p50);
  line('  latency per report ms, p95', (r) => r.ingest.latencyMs.p95);
  line('  latency per report ms, max', (r) => r.ingest.latencyMs.max);
  line('  controller CPU ms per report, upload', (r) => r.ingest.cpuMsPerReport, 1);
  line('  controller CPU ms per report, + analysis', (r) => r.ingest.cpuMsPerReportWithAnalysis, 1);
  line('  retried (5xx, 429, network)', (r) => r.ingest.retries, 0);
  line('  analysis: s from ingest start to empty queue', (r) => r.ingest.analysisSeconds, 1);
  text('  analysis: jobs done/failed/left', (r) => `${r.ingest.analysisDone}/${r.ingest.analysisFailed}/${r.ingest.analysisLeft}`);
  section('fill: straight through SQL batches from the bench (not the HTTP API), 500 reports a transaction');
  line('  reports added', (r) => r.fill.reports, 0);
  line('  rows (reports, artifacts, findings, events)', (r) => r.fill.rows, 0);
  line('  s', (r) => r.fill.seconds, 1);
  line('  reports in the store', (r) => r.storeReports, 0);
  section(`reads at that size, admin token, one request at a time (${r0.read.report.n} each after 5 warm-up)`);
  line('  report page ms, p50', (r) => r.read.report.p50);
  line('  report page ms, p95', (r) => r.read.report.p95, undefined, { text: `< ${TARGET_P95_MS}`, ok: (v) => v < TARGET_P95_MS });
  line('  fleet page ms, p50', (r) => r.read.fleet.p50);
  line('  fleet page ms, p95', (r) => r.read.fleet.p95, undefined, { text: `< ${TARGET_P95_MS}`, ok: (v) => v < TARGET_P95_MS });
  line('  report list API ms, p50', (r) => r.read.list.p50);
  line('  report list API ms, p95', (r) => r.read.list.p95, undefined, { text: `< ${TARGET_P95_MS}`, ok: (v) => v < TARGET_P95_MS });
  line('  fleet rows (node, app)', (r) => r.read.fleetRows, 0);
  text('  KB per report page / fleet page', (r) => `${num(r.read.reportBytes / 1000, 0)} / ${num(r.read.fleetBytes / 1000, 0)}`);
  section('controller RSS MiB (VmRSS of the child; peak VmHWM in brackets)');
  const rss = (label: string, f: (r: BackendResult) => { rss: number; hwm: number }) => text(label, (r) => `${num(f(r).rss, 0)} (${num(f(r).hwm, 0)})`);
  rss('  after start', (r) => r.startRss);
  rss('  after ingest + analysis', (r) => r.ingestRss);
  rss('  after fill', (r) => r.fillRss);
  rss('  after the reads', (r) => r.readRss);
  render(rows, header, footer);
}

/** Prints `rows` (label, a cell per backend, target) aligned; a row with only a label is a section title. */
function render(rows: string[][], header: string[], footer: string[]): void {
  const isSection = (r: string[]) => r[0] !== '' && !(r[0] ?? '').startsWith(' ') && r.slice(1).every((x) => x === '') && r[0] !== 'store';
  const cells = rows.filter((r) => !isSection(r));
  const widths = rows[0]?.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length))) ?? [];
  for (const h of header) console.log(h);
  console.log('');
  for (const r of rows) {
    console.log(isSection(r) ? r[0] : r.map((x, c) => (c === 0 ? x.padEnd(widths[0] ?? 0) : x.padStart(widths[c] ?? 0))).join('  ').trimEnd());
  }
  console.log('');
  for (const f of footer) console.log(f);
}

function printLoadTable(results: readonly LoadResult[], header: string[], footer: string[]): void {
  const rows: string[][] = [['', ...results.map((r) => r.backend), 'target']];
  const blank = () => results.map(() => '');
  const verdict = (ok: boolean) => (ok ? '  pass' : '  FAIL');
  const line = (label: string, f: (r: LoadResult) => number, digits?: number, target?: { text: string; ok: (v: number, r: LoadResult) => boolean }) =>
    rows.push([label, ...results.map((r) => `${num(f(r), digits)}${target === undefined ? '' : verdict(target.ok(f(r), r))}`), target?.text ?? '']);
  const text = (label: string, f: (r: LoadResult) => string, target = '') => rows.push([label, ...results.map(f), target]);
  const section = (title: string) => rows.push([title, ...blank(), '']);
  const counts = (m: Record<string, number>) =>
    Object.keys(m).length === 0
      ? 'none'
      : Object.entries(m)
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ');
  const r0 = results[0] as LoadResult;

  text('store', (r) => r.version);
  text('  reports in the store before the load (SQL fill)', (r) => num(r.prefill, 0));
  section(`ingest: ${r0.ingest.reports} reports from ${r0.nodes} nodes (a token each), ${r0.ingest.maxInFlight} uploads in flight at once (offer, PUT gzip, commit; node timeout ${NODE_TIMEOUT_MS / 1000} s, ${LOAD_ATTEMPTS} attempts)`);
  line('  reports acknowledged', (r) => r.ingest.acknowledged, 0, { text: 'all', ok: (v, r) => v === r.ingest.reports });
  line('  reports failed (not acknowledged)', (r) => r.ingest.failed, 0, { text: '0', ok: (v) => v === 0 });
  line('  s from the first offer to the last commit', (r) => r.ingest.seconds, 1);
  line('  reports/s', (r) => r.ingest.reportsPerSec, 1);
  line('  MB/s on the wire (gzip)', (r) => r.ingest.wireMbPerSec, 1);
  line('  latency offer -> ack ms, p50', (r) => r.ingest.latencyMs.p50, 0);
  line('  latency offer -> ack ms, p95', (r) => r.ingest.latencyMs.p95, 0);
  line('  latency offer -> ack ms, p99', (r) => r.ingest.latencyMs.p99, 0, { text: `< ${NODE_TIMEOUT_MS} (node timeout)`, ok: (v) => v < NODE_TIMEOUT_MS });
  line('  latency offer -> ack ms, max', (r) => r.ingest.latencyMs.max, 0);
  line('  latency ms p99, first attempts only', (r) => r.ingest.firstAttemptMs.p99, 0);
  line('  upload attempts (each 3-7 HTTP requests)', (r) => r.ingest.attempts, 0);
  text('  failed attempts by status', (r) => counts(r.ingest.errors), 'none');
  line('  controller CPU ms per report, upload', (r) => r.ingest.cpuMsPerReport, 1);
  text('  load average 1 min, uploads begin -> end', (r) => `${r.loadavgUpload[0].toFixed(2)} -> ${r.loadavgUpload[1].toFixed(2)}`);
  line('  analysis: s from the first offer to an empty queue', (r) => r.analysisSeconds, 1);
  text('  analysis: jobs done/failed/left', (r) => `${r.analysisDone}/${r.analysisFailed}/${r.analysisLeft}`);
  text('  reports in the store / expected (fill + acknowledged)', (r) => `${r.storeReports} / ${r.storeExpected}${verdict(r.storeReports === r.storeExpected)}`, 'equal');
  section(`dashboard: one client with an admin session, / and /reports every ${DASHBOARD_TICK_MS} ms; ms p50 / p95 / max (answers)`);
  for (const pg of DASHBOARD_PAGES) {
    for (const phase of PHASES) {
      const idle = phase === 'idle-before' || phase === 'idle-after';
      const target = idle ? `p95 < ${TARGET_DASH_IDLE_P95_MS}` : `p95 < ${TARGET_DASH_LOAD_P95_MS}, max < ${TARGET_DASH_LOAD_MAX_MS}`;
      const ok = (s: Stats) => s.n > 0 && (idle ? s.p95 < TARGET_DASH_IDLE_P95_MS : s.p95 < TARGET_DASH_LOAD_P95_MS && s.max < TARGET_DASH_LOAD_MAX_MS);
      text(
        `  ${pg.path.padEnd(8)} ${PHASE_TEXT[phase]}`,
        (r) => {
          const s = r.dashboard[phase][pg.path] as Stats;
          return `${num(s.p50, 0)} / ${num(s.p95, 0)} / ${num(s.max, 0)} (${s.n})${verdict(ok(s))}`;
        },
        target,
      );
    }
  }
  text('  ticks that began late (> 200 ms after the last), under load', (r) => `${r.dashboardLate.upload} of ${r.dashboardTicks.upload}`);
  text('  ticks that began late, idle before', (r) => `${r.dashboardLate['idle-before']} of ${r.dashboardTicks['idle-before']}`);
  text('  dashboard errors', (r) => `${counts(r.dashboardErrors)}${verdict(Object.keys(r.dashboardErrors).length === 0)}`, 'none');
  text('  fleet rows (node, app) / KB of / and /reports at the end', (r) => `${r.fleetRows} / ${num(r.fleetKb, 0)} / ${num(r.reportsKb, 0)}`);
  section('controller RSS MiB (VmRSS of the child; peak VmHWM in brackets)');
  const rss = (label: string, f: (r: LoadResult) => { rss: number; hwm: number }) => text(label, (r) => `${num(f(r).rss, 0)} (${num(f(r).hwm, 0)})`);
  rss('  after start', (r) => r.startRss);
  rss('  when the uploads ended', (r) => r.loadRss);
  rss('  at the end', (r) => r.endRss);
  render(rows, header, footer);
}

// --- main --------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const command = ['bash', 'bench/run.sh', 'controller', ...process.argv.slice(2)].join(' ');
  const cleanups: (() => Promise<void>)[] = [];
  // One cleanup at a time (SIGINT's and main's finally share it): what it stops is stopped before exit.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      while (cleanups.length > 0) await (cleanups.pop() as () => Promise<void>)().catch(() => undefined);
    })().finally(() => (cleaning = undefined)));
  const onSignal = (sig: NodeJS.Signals) => {
    progress(`${sig}: stopping the controller and PostgreSQL`);
    cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143)).catch(() => undefined);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const load0 = loadavg();
  const t0 = performance.now();
  try {
    const fx = loadFixtures();
    if (o.load) {
      await mainLoad(o, fx, command, load0, t0, cleanups, cleanup);
      return;
    }
    const results: BackendResult[] = [];
    for (const b of o.backends) {
      results.push(await runBackend(b, fx, o, cleanups));
      await cleanup();
    }
    const load1 = loadavg();
    const minutes = (performance.now() - t0) / 60_000;
    if (o.json) {
      console.log(JSON.stringify({ command, cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, loadavg: { start: load0, end: load1 }, minutes, options: o, limits: LIMITS, results }, null, 2));
      return;
    }
    printTable(
      results,
      [
        'eve-diag controller: ingest, reads at scale, memory; SQLite and PostgreSQL',
        `command: ${command}`,
        `host: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at the start, ${load1
          .map((x) => x.toFixed(2))
          .join(' ')} at the end`,
        `controller: node dist/cli/main.js controller serve (a child process, analysis worker on), --limit ${LIMITS.join(' --limit ')}`,
        `  (the default per-token 50 requests/s and 600 reports/h per node would throttle the bench itself, not the controller)`,
        `stores: SQLite in a temporary --data directory (WAL, synchronous=FULL, artifacts as files); PostgreSQL 1 server on a temporary cluster (shared_buffers=64MB, artifacts in the database)`,
        `ingest: ${o.nodes} nodes x ${APPS.length} apps, ${o.concurrency} uploads in flight, the bench and the controller share the machine`,
      ],
      [
        `The bench, the controller, PostgreSQL and the controller's analysis of the ingested reports all run on these ${cpus().length} cores, and the`,
        `machine is shared with other work: the figures are pessimistic. Total time ${minutes.toFixed(1)} min.`,
      ],
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
    agent.destroy();
  }
}

async function mainLoad(o: Options, fx: Fixtures, command: string, load0: number[], t0: number, cleanups: (() => Promise<void>)[], cleanup: () => Promise<void>): Promise<void> {
  const results: LoadResult[] = [];
  for (const b of o.backends) {
    results.push(await runLoad(b, fx, o, cleanups));
    await cleanup();
  }
  const load1 = loadavg();
  const minutes = (performance.now() - t0) / 60_000;
  if (o.json) {
    console.log(JSON.stringify({ command, cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, loadavg: { start: load0, end: load1 }, minutes, options: o, limits: LIMITS, results }, null, 2));
    return;
  }
  printLoadTable(
    results,
    [
      `eve-diag controller under load: ${o.nodes} nodes uploading at once while the dashboard is used`,
      `command: ${command}`,
      `host: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}; load average ${load0.map((x) => x.toFixed(2)).join(' ')} at the start, ${load1
        .map((x) => x.toFixed(2))
        .join(' ')} at the end`,
      `controller: node dist/cli/main.js controller serve (a child process, analysis worker on), --limit ${LIMITS.join(' --limit ')}`,
      `ingest: ${o.ingest} bundles (manifest + 3-5 artifacts, 8-100 KB of console each) from ${o.nodes} nodes x ${APPS.length} apps, ${o.concurrency} uploads at a time, over loopback,`,
      `  each node its own client and token (http.globalAgent: keep-alive, no socket limit); latency = the first offer to the acknowledged commit`,
      `dashboard: POST /login with the admin token, then the session cookie; its own keep-alive socket; ${o.idleS} s idle before and after the load`,
    ],
    [
      `Targets: the p99 of a report under the node's own answer timeout (${NODE_TIMEOUT_MS / 1000} s: a slower answer is a timeout and a retry at the`,
      `node); the dashboard p95 < ${TARGET_DASH_IDLE_P95_MS} ms idle (the read target of the default run) and, under load, p95 < ${TARGET_DASH_LOAD_P95_MS} ms and max < ${TARGET_DASH_LOAD_MAX_MS} ms`,
      `(a page within a second keeps a user's flow; 3 s is where a page looks broken). The bench, the controller, PostgreSQL and`,
      `the analysis all run on these ${cpus().length} cores, shared with other work: the figures are pessimistic. Total time ${minutes.toFixed(1)} min.`,
    ],
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
