/**
 * The delivery half of the fault suite (issue 13 §2): spool -> shipper -> controller, no QEMU. Real
 * bundles (the monitor's own writer, or the captured fixtures), the real Shipper, a real controller
 * (in this process, or `eve-diag controller serve` as a child), test/helpers/fault-proxy.ts between
 * them. Each scenario counts, from the controller's store and the shipper's own output:
 *
 * - lost: bundles written to the spool that the controller neither holds as stored nor was told
 *   about (a dropped notice: a `.rejected` bundle or a spool ledger entry, announced);
 * - duplicates: report rows beyond the first per (node, report id), and per-report artifact rows
 *   beyond the first per hash;
 * - crashes: unhandled rejections in this process, children of ours that exited abnormally (not by
 *   a signal we sent);
 * - visible: the fault in the shipper's log (its records) and in its metrics (monitor/metrics.ts).
 *
 * Everything a scenario starts is registered in a Scope and stopped by pid (or closed, unmounted)
 * when it ends, also on failure; `stopEverything()` stops whatever a failed scenario left.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { openStore } from '../../controller/store/open.js';
import type { Store } from '../../controller/store/store.js';
import { ControllerClient } from '../../monitor/controller-client.js';
import { openSpool } from '../../monitor/daemon.js';
import type { LogRecord } from '../../monitor/manager.js';
import { MonitorMetrics } from '../../monitor/metrics.js';
import { Spool } from '../../monitor/report/spool.js';
import { Shipper } from '../../monitor/shipper.js';
import { MANIFEST_FILE } from '../../protocol/report-manifest.js';
import type { Clock } from '../../util/clock.js';
import { repoRoot } from '../../util/repo-root.js';
import { startController, type TestController } from '../helpers/controller.js';
import { startByteRelay, startFaultProxy, type FaultAction, type FaultProxy } from '../helpers/fault-proxy.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { startPostgres } from '../helpers/postgres.js';
import { reportInput } from './delivery-child.js';
import type { FaultRow, FaultScenario } from './scoreboard.js';

const ROOT = repoRoot();
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const run = promisify(execFile);

// -- cleanup ----------------------------------------------------------------------------------------

/** What one scenario started, stopped in reverse order; errors are collected, never thrown half-way. */
class Scope {
  readonly #steps: { what: string; fn: () => Promise<unknown> | unknown }[] = [];
  constructor() {
    open.add(this);
  }
  add(what: string, fn: () => Promise<unknown> | unknown): void {
    this.#steps.push({ what, fn });
  }
  async close(): Promise<string[]> {
    open.delete(this);
    const errors: string[] = [];
    for (const s of this.#steps.splice(0).reverse()) {
      try {
        await s.fn();
      } catch (e) {
        errors.push(`${s.what}: ${(e as Error).message}`);
      }
    }
    return errors;
  }
}
const open = new Set<Scope>();

/** Stops whatever scenarios left running (children by pid, controllers, PostgreSQL, mounts). */
export async function stopEverything(): Promise<string[]> {
  const errors: string[] = [];
  for (const s of [...open]) errors.push(...(await s.close()));
  return errors;
}

function tempDir(scope: Scope, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `eve-diag-fault-${prefix}-`));
  scope.add(`remove ${d}`, () => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Counts unhandled rejections while a scenario runs. */
function watchCrashes(scope: Scope): { count: () => number; seen: string[] } {
  const seen: string[] = [];
  const on = (e: unknown) => seen.push(String((e as Error)?.message ?? e));
  process.on('unhandledRejection', on);
  scope.add('unhandledRejection listener', () => process.off('unhandledRejection', on));
  return { count: () => seen.length, seen };
}

// -- children ---------------------------------------------------------------------------------------

interface Child {
  proc: ChildProcess;
  /** Its JSON stdout lines. */
  lines: Record<string, unknown>[];
  stderr(): string;
  /** Whether it ended other than by a signal we sent or exit 0. */
  abnormal(): boolean;
  kill(signal: NodeJS.Signals): Promise<void>;
}

function child(scope: Scope, args: string[]): Child {
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  let rest = '';
  const sent = new Set<string>();
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-8000)));
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
    const all = (rest + s).split('\n');
    rest = all.pop() ?? '';
    for (const l of all) {
      try {
        lines.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not ours
      }
    }
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const kill = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) {
      sent.add(signal);
      proc.kill(signal);
      const t = setTimeout(() => {
        sent.add('SIGKILL');
        proc.kill('SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(t);
    }
  };
  scope.add(`kill pid ${proc.pid}`, () => kill('SIGKILL'));
  return {
    proc,
    lines,
    stderr: () => stderr,
    abnormal: () => (proc.signalCode !== null ? !sent.has(proc.signalCode) : proc.exitCode !== null && proc.exitCode !== 0),
    kill,
  };
}

let bundled: Promise<string> | undefined;
/** test/faults/delivery-child.ts bundled (esbuild, as bench/ does) next to node_modules, so its imports resolve. */
function childScript(): Promise<string> {
  bundled ??= (async () => {
    // One fixed name under .cache (overwritten by each run; only this suite writes it).
    const outfile = join(ROOT, '.cache', 'faults', 'delivery-child.mjs');
    mkdirSync(join(ROOT, '.cache', 'faults'), { recursive: true });
    await build({ entryPoints: [join(ROOT, 'test', 'faults', 'delivery-child.ts')], bundle: true, platform: 'node', format: 'esm', packages: 'external', outfile, logLevel: 'warning' });
    return outfile;
  })();
  return bundled;
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, detail: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what} ${JSON.stringify(detail())?.slice(0, 1500) ?? ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The CLI is run as built: dist/ must be newer than its sources. */
function checkBuilt(): void {
  const built = statSync(CLI, { throwIfNoEntry: false })?.mtimeMs;
  if (built === undefined) throw new Error(`${CLI} is missing: run npm run build first`);
  const walk = (dir: string): string[] => readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
  const newer = ['cli', 'controller', 'protocol', 'util'].flatMap(walk).filter((f) => statSync(join(ROOT, f)).mtimeMs > built);
  if (newer.length > 0) throw new Error(`dist/ is older than ${newer.slice(0, 3).join(', ')}: run npm run build first`);
}

/** `eve-diag controller serve` as a child; resolves once it listens. */
async function serveCli(scope: Scope, store: string[], port = 0): Promise<Child & { url: string; port: number }> {
  const c = child(scope, [CLI, 'controller', 'serve', ...store, '--listen', `127.0.0.1:${port}`, '--limit', 'maxRequestsPerSecond=1000']);
  await until('the controller listening', () => c.lines.some((l) => l['msg'] === 'controller listening') || c.proc.exitCode !== null, 20_000, () => c.stderr());
  const l = c.lines.find((x) => x['msg'] === 'controller listening');
  if (l === undefined) throw new Error(`the controller exited before it listened: ${c.stderr()}`);
  const url = String(l['url']);
  return Object.assign(c, { url, port: Number(new URL(url).port) });
}

async function cliToken(data: string, node: string): Promise<string> {
  const r = await run(process.execPath, [CLI, 'controller', 'token', 'create', '--node', node, '--data', data, '--json'], { cwd: ROOT });
  return (JSON.parse(r.stdout) as { token: string }).token;
}

// -- bundles ------------------------------------------------------------------------------------------

/** `n` bundles by the monitor's own writer (Spool.write). */
async function fill(spool: Spool, app: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await spool.write(reportInput(app, i))).id);
  return ids;
}

/** The captured bundles of test/fixtures/bundles copied into `dir`, each under its manifest's id. */
function copyFixtures(dir: string): string[] {
  const ids: string[] = [];
  for (const k of readdirSync(FIXTURES)) {
    for (const s of readdirSync(join(FIXTURES, k))) {
      const src = join(FIXTURES, k, s);
      const id = (JSON.parse(readFileSync(join(src, MANIFEST_FILE), 'utf8')) as { id: string }).id;
      cpSync(src, join(dir, id), { recursive: true });
      ids.push(id);
    }
  }
  return ids.sort();
}

// -- the shipper in this process ------------------------------------------------------------------------

interface Shipping {
  shipper: Shipper;
  logs: LogRecord[];
  metrics: MonitorMetrics;
  failures(): string[];
  stop(): Promise<void>;
}

function ship(scope: Scope, url: string, token: string, spool: Spool, o: { timeoutMs?: number; clock?: Clock; production?: boolean; ca?: Buffer } = {}): Shipping {
  const logs: LogRecord[] = [];
  const metrics = new MonitorMetrics({ processMetrics: false });
  const client = new ControllerClient({ url, token, timeoutMs: o.timeoutMs ?? 5000, ...(o.ca ? { ca: o.ca } : {}) });
  // production: the daemon's backoff (1 s doubling to 300 s, idle 5 s), with the jitter fixed at its middle.
  const timing = o.production === true ? { random: () => 0.5 } : { backoffMs: 20, maxBackoffMs: 250, idleMs: 50 };
  const shipper = new Shipper({ spool, client, log: (r) => logs.push(r), metrics, ...timing, ...(o.clock ? { clock: o.clock } : {}) });
  shipper.start();
  let stopped = false;
  const stop = async () => {
    if (!stopped) await shipper.stop();
    stopped = true;
  };
  scope.add('stop the shipper', stop);
  return { shipper, logs, metrics, failures: () => logs.filter((l) => l.msg.startsWith('shipping to the controller failed')).map((l) => String(l['error'])), stop };
}

async function failureCounts(m: MonitorMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await m.shipperFailures.get()).values) out[String(v.labels['reason'])] = v.value;
  return out;
}

/** Failure counts from a child's printed metrics (getMetricsAsJSON). */
function childFailureCounts(c: Child): Record<string, number> | undefined {
  const m = c.lines.find((l) => Array.isArray(l['metrics']))?.['metrics'] as { name: string; values: { labels: Record<string, string>; value: number }[] }[] | undefined;
  if (m === undefined) return undefined;
  const out: Record<string, number> = {};
  for (const v of m.find((x) => x.name === 'eve_diag_shipper_failures_total')?.values ?? []) out[String(v.labels['reason'])] = v.value;
  const delivered = m.find((x) => x.name === 'eve_diag_shipper_delivered_total')?.values[0]?.value ?? 0;
  out['delivered'] = delivered;
  return out;
}

const fmt = (r: Record<string, number>) =>
  Object.entries(r)
    .map(([k, v]) => `${k}=${v}`)
    .join(',') || 'none';

// -- what the controller holds ------------------------------------------------------------------------

interface Tally {
  lost: number;
  duplicates: number;
  stored: number;
  announced: number;
  /** Marked delivered in the spool but not stored by the controller. */
  falselyDelivered: number;
  /** Bundles still in the spool neither delivered nor rejected. */
  pending: number;
}

async function tally(store: Store, node: string, written: readonly string[], spool: Spool): Promise<Tally> {
  const rows = await store.db.all('SELECT r.key, r.report_id, r.status FROM reports r JOIN nodes n ON n.id = r.node_id WHERE n.name = ?', [node]);
  const perId = new Map<string, number>();
  for (const r of rows) perId.set(String(r['report_id']), (perId.get(String(r['report_id'])) ?? 0) + 1);
  let duplicates = [...perId.values()].reduce((n, c) => n + Math.max(0, c - 1), 0);
  const keys = rows.map((r) => Number(r['key']));
  if (keys.length > 0) {
    const arts = await store.db.all(`SELECT report_key, sha256, COUNT(*) AS n FROM report_artifacts WHERE report_key IN (${keys.map(() => '?').join(', ')}) GROUP BY report_key, sha256`, keys);
    duplicates += arts.reduce((n, a) => n + Math.max(0, Number(a['n']) - 1), 0);
  }
  const stored = new Set(rows.filter((r) => r['status'] === 'stored').map((r) => String(r['report_id'])));
  const announced = new Set((await store.dropped()).filter((d) => d.node === node).map((d) => d.reportId));
  const entries = await spool.entries();
  return {
    lost: written.filter((id) => !stored.has(id) && !announced.has(id)).length,
    duplicates,
    stored: written.filter((id) => stored.has(id)).length,
    announced: written.filter((id) => announced.has(id)).length,
    falselyDelivered: entries.filter((e) => e.delivered && !stored.has(e.id)).length,
    pending: entries.filter((e) => !e.delivered && !e.rejected).length,
  };
}

async function allMarked(spool: Spool): Promise<boolean> {
  return (await spool.entries()).every((e) => e.delivered || e.rejected);
}

/** A controller in this process and a proxy in front of it, both stopped with the scope. */
async function controllerAndProxy(scope: Scope, decide?: (r: { n: number; method: string; path: string; bodyBytes: number }) => FaultAction): Promise<{ c: TestController; proxy: FaultProxy }> {
  const c = await startController({ limits: { maxRequestsPerSecond: 1000 } });
  scope.add('close the controller', () => c.close());
  const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: Number(new URL(c.url).port) }, ...(decide ? { decide } : {}) });
  scope.add('close the proxy', () => proxy.close());
  return { c, proxy };
}

type Done = (t: Tally, crashes: number, visible: boolean, ok: boolean, observed: string) => FaultRow;

function row(fault: string, expected: string, t: Tally, crashes: number, visible: boolean, ok: boolean, observed: string): FaultRow {
  return {
    fault,
    expected,
    observed: `${observed}; stored ${t.stored}, announced ${t.announced}, pending ${t.pending}${t.falselyDelivered > 0 ? `, ${t.falselyDelivered} marked delivered but not stored` : ''}`,
    crashes,
    lost: t.lost,
    duplicates: t.duplicates,
    falseHangs: 0,
    visible,
    pass: ok && t.falselyDelivered === 0,
  };
}

/** Runs a scenario body in a scope; a throw becomes a failed row (the error in `observed`). */
function scenario(name: string, quick: boolean, fault: string, expected: string, body: (scope: Scope, crashes: () => number, done: Done) => Promise<FaultRow>): FaultScenario {
  return {
    name,
    quick,
    guest: false,
    async run() {
      const scope = new Scope();
      const crashes = watchCrashes(scope);
      let r: FaultRow;
      try {
        r = await body(scope, crashes.count, (...a) => row(fault, expected, ...a));
      } catch (e) {
        r = { fault, expected, observed: `scenario error: ${(e as Error).message}`.slice(0, 2000), crashes: crashes.count(), lost: 0, duplicates: 0, falseHangs: 0, visible: false, pass: false };
      }
      const errors = await scope.close();
      if (errors.length > 0) r = { ...r, pass: false, observed: `${r.observed}; clean-up failed: ${errors.join('; ')}` };
      if (crashes.seen.length > 0) r = { ...r, crashes: crashes.seen.length, observed: `${r.observed}; unhandled: ${crashes.seen.slice(0, 3).join('; ')}` };
      return r;
    },
  };
}

// -- 1: down for long -------------------------------------------------------------------------------

/** A clock whose sleeps take 1 ms of real time and add what was asked to a virtual time. */
function fastClock(): Clock & { waits: number[]; virtualMs: () => number } {
  let v = 0;
  const waits: number[] = [];
  return {
    waits,
    virtualMs: () => v,
    now: () => v,
    sleep: (ms, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        waits.push(ms);
        v += ms;
        const onAbort = () => (clearTimeout(t), reject(signal?.reason));
        const t = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), 1);
        signal?.addEventListener('abort', onAbort, { once: true });
      }),
  };
}

const DOWN_TRIES = 40;
const downLong = scenario(
  'controller-down-long',
  true,
  `controller down for ${DOWN_TRIES} tries (~2 h of the daemon's backoff on a fake clock), then up`,
  'backoff capped at 300 s; every report delivered once when it is back',
  async (scope, crashes, done) => {
    const { c, proxy } = await controllerAndProxy(scope);
    const spool = new Spool({ dir: tempDir(scope, 'down') });
    const ids = await fill(spool, 'f-down', 5);
    await proxy.down();
    const clock = fastClock();
    const s = ship(scope, proxy.url, await c.nodeToken('f-down'), spool, { clock, production: true });
    await until(`${DOWN_TRIES} refused tries`, () => s.failures().length >= DOWN_TRIES, 20_000);
    const downMs = clock.virtualMs();
    const maxWait = Math.max(...clock.waits);
    const undelivered = (await s.metrics.shipperUndelivered.get()).values[0]?.value ?? 0;
    const failed = await failureCounts(s.metrics);
    const waitsBefore = clock.waits.length;
    await proxy.up();
    await until('every bundle delivered', () => allMarked(spool), 20_000, () => s.failures().slice(-3));
    // Virtual time from the controller coming back to the delivery: at most one backoff.
    const catchUp = clock.waits.slice(waitsBefore - 1, waitsBefore).reduce((a, b) => a + b, 0);
    await s.stop();
    const t = await tally(c.store, 'f-down', ids, spool);
    const visible = (failed['network'] ?? 0) >= DOWN_TRIES && undelivered === 5 && s.logs.some((l) => l.level === 'warn' && /ECONNREFUSED/.test(String(l['error'])));
    return done(
            t,
      crashes(),
      visible,
      t.stored === 5 && maxWait <= 300_000 && downMs >= 3_600_000,
      `${s.failures().length} refused tries over ${(downMs / 3_600_000).toFixed(2)} h virtual, longest wait ${maxWait / 1000} s, delivered ${catchUp / 1000} s (virtual) after the last refusal; failures{${fmt(failed)}}, undelivered gauge ${undelivered}`,
    );
  },
);

// -- 2: 500, 429, slow, cut ----------------------------------------------------------------------------

const answer500 = scenario('controller-500', true, 'controller answering 500 to every other request, 8 times (10 captured fixture bundles)', 'retried; every report delivered once', async (scope, crashes, done) => {
  let faults = 0;
  const { c, proxy } = await controllerAndProxy(scope, (r) => (r.n % 2 === 0 && faults++ < 8 ? { kind: 'answer', status: 500 } : { kind: 'forward' }));
  const dir = tempDir(scope, '500');
  const ids = copyFixtures(dir);
  const spool = new Spool({ dir });
  const s = ship(scope, proxy.url, await c.nodeToken('f-500'), spool);
  await until('every bundle delivered', () => allMarked(spool), 30_000, () => s.failures().slice(-3));
  await s.stop();
  const failed = await failureCounts(s.metrics);
  const t = await tally(c.store, 'f-500', ids, spool);
  const logged = s.failures().filter((f) => /: 500 fault proxy: 500/.test(f)).length;
  return done(
        t,
    crashes(),
    failed['500'] === 8 && logged === 8,
    t.stored === ids.length,
    `failures{${fmt(failed)}}, ${logged} logged`,
  );
});

const answer429 = scenario('controller-429', true, 'controller answering 429 with Retry-After: 1, twice', 'Retry-After honored (next try >= 1 s later, not the 20 ms backoff); delivered once', async (scope, crashes, done) => {
  const at: { n: number; t: number; kind: string }[] = [];
  let faults = 0;
  const { c, proxy } = await controllerAndProxy(scope, (r) => {
    const kind = r.n % 3 === 1 && faults++ < 2 ? 'answer' : 'forward';
    at.push({ n: r.n, t: performance.now(), kind });
    return kind === 'answer' ? { kind: 'answer', status: 429, headers: { 'retry-after': '1' } } : { kind: 'forward' };
  });
  const spool = new Spool({ dir: tempDir(scope, '429') });
  const ids = await fill(spool, 'f-429', 3);
  const s = ship(scope, proxy.url, await c.nodeToken('f-429'), spool);
  await until('every bundle delivered', () => allMarked(spool), 20_000, () => s.failures().slice(-3));
  await s.stop();
  const gaps = at.flatMap((a, i) => (a.kind === 'answer' && at[i + 1] !== undefined ? [Math.round(at[i + 1]!.t - a.t)] : []));
  const failed = await failureCounts(s.metrics);
  const retryIn = s.logs.filter((l) => l.msg.startsWith('shipping to the controller failed')).map((l) => Number(l['retryInMs']));
  const t = await tally(c.store, 'f-429', ids, spool);
  return done(
        t,
    crashes(),
    failed['429'] === 2 && retryIn.length === 2,
    t.stored === 3 && gaps.length === 2 && gaps.every((g) => g >= 950) && retryIn.every((r) => r >= 1000),
    `next try ${gaps.join(', ')} ms after each 429; shipper said retry in ${retryIn.join(', ')} ms; failures{${fmt(failed)}}`,
  );
});

const slow = scenario('controller-slow', true, 'link at 1 byte/s both ways for ~3.5 s (client timeout 1 s), then full speed', 'each try times out (bounded), nothing stored meanwhile; then delivered once', async (scope, crashes, done) => {
  const { c, proxy } = await controllerAndProxy(scope);
  const spool = new Spool({ dir: tempDir(scope, 'slow') });
  const ids = await fill(spool, 'f-slow', 3);
  proxy.bytesPerSecond = 1;
  const s = ship(scope, proxy.url, await c.nodeToken('f-slow'), spool, { timeoutMs: 1000 });
  await until('three timeouts', () => s.failures().filter((f) => /no answer within 1000 ms/.test(f)).length >= 3, 15_000, () => s.failures());
  const meanwhile = (await c.store.countReports()).stored;
  proxy.bytesPerSecond = undefined;
  await until('every bundle delivered', () => allMarked(spool), 20_000, () => s.failures().slice(-3));
  await s.stop();
  const failed = await failureCounts(s.metrics);
  const t = await tally(c.store, 'f-slow', ids, spool);
  return done(
        t,
    crashes(),
    (failed['network'] ?? 0) >= 3,
    t.stored === 3 && meanwhile === 0,
    `${s.failures().filter((f) => /no answer within/.test(f)).length} timeouts, ${meanwhile} stored while slow; failures{${fmt(failed)}}`,
  );
});

const cut = scenario('connection-reset', true, 'TCP reset mid-upload: a manifest after 100 bytes, two artifacts at half their body (plain HTTP: the proxy does not do TLS)', 'retried and resumed; every report delivered once', async (scope, crashes, done) => {
  const seen = new Map<string, number>();
  const { c, proxy } = await controllerAndProxy(scope, (r) => {
    const kind = r.method === 'PUT' ? 'put' : r.path === '/api/v1/reports' ? 'offer' : 'other';
    const i = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, i);
    if (kind === 'offer' && i === 2) return { kind: 'cut', afterBodyBytes: 100, reset: true };
    if (kind === 'put' && (i === 1 || i === 3)) return { kind: 'cut', afterBodyBytes: Math.floor(r.bodyBytes / 2), reset: true };
    return { kind: 'forward' };
  });
  const spool = new Spool({ dir: tempDir(scope, 'cut') });
  const ids = await fill(spool, 'f-cut', 4);
  const s = ship(scope, proxy.url, await c.nodeToken('f-cut'), spool);
  await until('every bundle delivered', () => allMarked(spool), 20_000, () => s.failures().slice(-3));
  await s.stop();
  const failed = await failureCounts(s.metrics);
  const cuts = proxy.requests.filter((r) => r.action === 'cut').length;
  const resets = s.failures().filter((f) => /ECONNRESET/.test(f)).length;
  const t = await tally(c.store, 'f-cut', ids, spool);
  return done(
        t,
    crashes(),
    failed['network'] === 3 && resets === 3,
    t.stored === 4 && cuts === 3,
    `${cuts} cut, ${resets} ECONNRESET logged; failures{${fmt(failed)}}`,
  );
});

// The cuts of a TLS link, by connection: the ClientHello and no more (mid-handshake); 3000 bytes up
// (the handshake done, an upload's record cut short); 2500 bytes down (past the server's handshake,
// an answer cut). Every connection is cut while it carries something: each is one failed try.
const TLS_CUTS = [{ afterUpBytes: 100 }, { afterUpBytes: 3000 }, { afterDownBytes: 2500 }];

const tlsCut = scenario('tls-cut', true, 'TLS sessions cut by the link (TCP RST): mid-handshake, mid-upload, mid-answer', 'retried over new sessions; every report delivered once', async (scope, crashes, done) => {
  const certs = tempDir(scope, 'tls');
  const [cert, key] = [join(certs, 'cert.pem'), join(certs, 'key.pem')];
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1']);
  const c = await startController({ limits: { maxRequestsPerSecond: 1000 }, tls: { cert, key } });
  scope.add('close the controller', () => c.close());
  const relay = await startByteRelay({ host: '127.0.0.1', port: Number(new URL(c.url).port) }, (n) => TLS_CUTS[n]);
  scope.add('close the relay', () => relay.close());
  const spool = new Spool({ dir: tempDir(scope, 'tlscut') });
  const ids = await fill(spool, 'f-tls', 4);
  const s = ship(scope, `https://127.0.0.1:${relay.port}`, await c.nodeToken('f-tls'), spool, { ca: readFileSync(cert) });
  await until('every bundle delivered', () => allMarked(spool), 30_000, () => s.failures().slice(-3));
  await s.stop();
  const failed = await failureCounts(s.metrics);
  const cuts = relay.conns.filter((x) => x.cut).length;
  const t = await tally(c.store, 'f-tls', ids, spool);
  const said = [...new Set(s.failures().map((f) => f.replace(/^.*?: /, '').slice(0, 60)))];
  return done(t, crashes(), (failed['network'] ?? 0) >= cuts && cuts === TLS_CUTS.length, t.stored === 4 && cuts === TLS_CUTS.length, `${relay.conns.length} connections, ${cuts} cut (${said.join(' | ')}); failures{${fmt(failed)}}`);
});

// -- 3: the shipper killed ------------------------------------------------------------------------------

function shipperKilled(name: string, when: 'put' | 'commit'): FaultScenario {
  const fault =
    when === 'put'
      ? 'shipper process SIGKILLed mid-upload (manifest offered, 2 artifacts PUT, the 3rd on its way), started again'
      : 'shipper process SIGKILLed after the controller committed a report, before the answer reached it (no .delivered mark), started again';
  const expected = 'the restarted shipper resumes; every report delivered once, no artifact sent twice';
  return scenario(name, true, fault, expected, async (scope, crashes, done) => {
    const script = await childScript();
    const ref: { first?: Child } = {};
    let killed: Promise<void> | undefined;
    let puts = 0;
    let commits = 0;
    let secondRun = false;
    const putsAfter: string[] = [];
    const { c, proxy } = await controllerAndProxy(scope, (r) => {
      if (secondRun && r.method === 'PUT') putsAfter.push(r.path);
      if (ref.first !== undefined && killed === undefined) {
        if (when === 'put' && r.method === 'PUT' && ++puts === 3) killed = ref.first.kill('SIGKILL');
        if (when === 'commit' && r.path.endsWith('/commit') && ++commits === 2) {
          // The commit goes through; its answer is cut and the shipper dies before it could mark the bundle.
          killed = ref.first.kill('SIGKILL');
          return { kind: 'drop-answer' };
        }
      }
      return { kind: 'forward' };
    });
    const dir = tempDir(scope, 'kill');
    const spool = new Spool({ dir });
    const ids = await fill(spool, 'f-kill', 4);
    const token = await c.nodeToken('f-kill');
    const first = (ref.first = child(scope, [script, 'ship', dir, proxy.url, token]));
    await until('the shipper killed', () => killed !== undefined, 15_000, () => first.stderr());
    await killed;
    const killedBy = first.proc.signalCode;
    const marked = (await spool.entries()).filter((e) => e.delivered).length;
    const mid = await c.store.db.all("SELECT r.report_id, r.status FROM reports r JOIN nodes n ON n.id = r.node_id WHERE n.name = 'f-kill'");
    secondRun = true;
    const second = child(scope, [script, 'ship', dir, proxy.url, token]);
    await until('every bundle delivered', () => allMarked(spool), 20_000, () => second.stderr());
    await second.kill('SIGTERM');
    const m = childFailureCounts(second);
    const t = await tally(c.store, 'f-kill', ids, spool);
    const resumed = second.lines.filter((l) => l['msg'] === 'report delivered').map((l) => String(l['report']));
    const uniquePuts = new Set(putsAfter).size;
    // What the controller showed meanwhile: the interrupted report offered, not stored (put), or stored but unmarked (commit).
    const visible = m !== undefined && m['delivered'] === ids.length - marked && resumed.length === ids.length - marked && (when === 'put' ? mid.some((r) => r['status'] === 'pending') : mid.filter((r) => r['status'] === 'stored').length > marked);
    return done(
            t,
      crashes() + (first.abnormal() ? 1 : 0) + (second.abnormal() ? 1 : 0),
      visible,
      killedBy === 'SIGKILL' && t.stored === ids.length && uniquePuts === putsAfter.length,
      `killed by ${killedBy} with ${marked} marked delivered, controller then held ${mid.map((r) => r['status']).join('/')}; restarted shipper delivered ${resumed.length} (metrics ${m === undefined ? 'missing' : fmt(m)}), ${putsAfter.length} PUTs (${uniquePuts} distinct)`,
    );
  });
}

// -- 4: the bundle writer killed ---------------------------------------------------------------------------

const writerKilled = scenario(
  'writer-killed',
  true,
  'bundle writer (Spool.write in a child) SIGKILLed in its 3rd bundle after 1 of 3 files',
  'the half bundle (.tmp-*) is never offered; it stays until maintain() finds it older than tmpMaxAgeMs, then is removed and logged',
  async (scope, crashes, done) => {
    const script = await childScript();
    const dir = tempDir(scope, 'writer');
    const w = child(scope, [script, 'write', dir, '3', '1']);
    await until('the writer paused in its 3rd bundle', () => w.lines.some((l) => typeof l['paused'] === 'string') || w.proc.exitCode !== null, 15_000, () => w.stderr());
    const tmp = String(w.lines.find((l) => typeof l['paused'] === 'string')?.['paused']);
    await w.kill('SIGKILL');
    const ids = readdirSync(dir).filter((n) => !n.startsWith('.'));
    const { c, proxy } = await controllerAndProxy(scope);
    const logs: LogRecord[] = [];
    const metrics = new MonitorMetrics({ processMetrics: false });
    // The daemon's own spool wiring (its clean-ups logged); its default tmpMaxAgeMs (10 min).
    const spool = openSpool({ dir, quotaBytes: 64 * 1024 * 1024, maxBundleBytes: 16 * 1024 * 1024 } as Parameters<typeof openSpool>[0], (r) => logs.push(r), metrics);
    await spool.maintain();
    const keptYoung = readdirSync(dir).includes(tmp.split('/').pop()!);
    const s = ship(scope, proxy.url, await c.nodeToken('f-writer'), spool);
    await until('every complete bundle delivered', async () => (await spool.entries()).length === ids.length && (await allMarked(spool)), 20_000, () => s.failures());
    await s.stop();
    const offered = proxy.requests.filter((r) => r.method === 'POST' && r.path === '/api/v1/reports').length;
    const old = new Date(Date.now() - 11 * 60 * 1000);
    utimesSync(tmp, old, old);
    await spool.maintain();
    const removed = !readdirSync(dir).includes(tmp.split('/').pop()!);
    const cleanLog = logs.find((l) => l.msg.startsWith('spool: removed temporary directories of a crashed writer'));
    const t = await tally(c.store, 'f-writer', ids, spool);
    return done(
            t,
      crashes() + (w.abnormal() ? 1 : 0),
      cleanLog !== undefined,
      w.proc.signalCode === 'SIGKILL' && ids.length === 2 && offered === 2 && t.stored === 2 && keptYoung && removed,
      `${ids.length} complete bundles, ${offered} offered; the .tmp- dir ${keptYoung ? 'left while young' : 'removed at once'}, ${removed ? 'removed' : 'NOT removed'} once 11 min old (log: ${cleanLog ? 'warn' : 'none'}; no metric counts clean-ups)`,
    );
  },
);

// -- 5: the controller killed mid-ingest -----------------------------------------------------------------

const controllerKilled = scenario(
  'controller-killed-sqlite',
  false,
  'controller process (SQLite) SIGKILLed as a commit arrives, restarted on the same data and port',
  'refused meanwhile; every report delivered once after the restart',
  async (scope, crashes, done) => {
    checkBuilt();
    const data = tempDir(scope, 'ctl-data');
    const token = await cliToken(data, 'f-ctlkill');
    const first = await serveCli(scope, ['--data', data]);
    let killed: Promise<void> | undefined;
    let commits = 0;
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: first.port },
      decide: (r) => {
        if (r.path.endsWith('/commit') && ++commits === 2 && killed === undefined) killed = first.kill('SIGKILL');
        return { kind: 'forward' };
      },
    });
    scope.add('close the proxy', () => proxy.close());
    const spool = new Spool({ dir: tempDir(scope, 'ctl-spool') });
    const ids = await fill(spool, 'f-ctlkill', 5);
    const s = ship(scope, proxy.url, token, spool);
    await until('the controller killed', () => killed !== undefined, 15_000, () => s.failures());
    await killed;
    await until('a failed try while it is down', () => s.failures().length > 0, 10_000);
    const second = await serveCli(scope, ['--data', data], first.port);
    await until('every bundle delivered', () => allMarked(spool), 30_000, () => s.failures().slice(-3));
    await s.stop();
    await second.kill('SIGTERM');
    const store = await openStore({ data });
    scope.add('close the store', () => store.close());
    const failed = await failureCounts(s.metrics);
    const t = await tally(store, 'f-ctlkill', ids, spool);
    const errors = second.lines.filter((l) => l['level'] === 'error').length;
    return done(
            t,
      crashes() + (second.abnormal() ? 1 : 0),
      (failed['network'] ?? 0) > 0 && s.failures().length > 0,
      first.proc.signalCode === 'SIGKILL' && t.stored === 5 && errors === 0,
      `failures{${fmt(failed)}}, ${errors} errors logged by the restarted controller`,
    );
  },
);

const postgresRestarted = scenario(
  'postgres-restarted',
  false,
  'PostgreSQL restarted (fast shutdown, start) under a running controller process while a node delivers',
  'the controller survives; every report delivered once',
  async (scope, crashes, done) => {
    checkBuilt();
    const pg = await startPostgres();
    scope.add('stop PostgreSQL', () => pg.stop());
    const store = await openStore({ database: pg.url });
    scope.add('close the store', () => store.close());
    const { hashToken, newToken } = await import('../../controller/auth.js');
    const token = newToken();
    await store.addToken(hashToken(token), 'node', (await store.nodeId('f-pg')) as number, 'f-pg');
    const ctl = await serveCli(scope, ['--database', pg.url]);
    const spool = new Spool({ dir: tempDir(scope, 'pg') });
    const ids = await fill(spool, 'f-pg', 12);
    const s = ship(scope, ctl.url, token, spool);
    await until('a few delivered', () => s.shipper.delivered >= 3, 20_000, () => s.failures());
    await pg.restart();
    const atRestart = s.shipper.delivered;
    await until('every bundle delivered', () => allMarked(spool), 40_000, () => ({ f: s.failures().slice(-3), ctl: ctl.stderr().slice(-500) }));
    await s.stop();
    const failed = await failureCounts(s.metrics);
    const t = await tally(store, 'f-pg', ids, spool);
    const ctlErrors = ctl.lines.filter((l) => l['level'] === 'error').length;
    const alive = ctl.proc.exitCode === null && ctl.proc.signalCode === null;
    await ctl.kill('SIGTERM');
    return done(
            t,
      crashes() + (alive ? 0 : 1) + (ctl.abnormal() ? 1 : 0),
      // A restart between two requests may go unnoticed by the node: then the controller's log shows it.
      Object.keys(failed).length > 0 || ctlErrors > 0 || ctl.lines.some((l) => /postgres|database|connection/i.test(JSON.stringify(l))),
      t.stored === ids.length && alive,
      `restarted after ${atRestart} delivered; shipper failures{${fmt(failed)}}; controller ${alive ? 'alive' : 'DEAD'}, ${ctlErrors} error lines`,
    );
  },
);

// -- 6: the spool's filesystem ---------------------------------------------------------------------------

/** A 1 MiB tmpfs at a new directory, unmounted (lazily if busy) with the scope. */
async function tmpfs(scope: Scope, name: string): Promise<string> {
  if (process.getuid?.() !== 0) throw new Error('mounting a tmpfs needs root');
  const dir = tempDir(scope, name);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir]);
  scope.add(`umount ${dir}`, () => run('umount', [dir]).catch(() => run('umount', ['-l', dir])));
  return dir;
}

const spoolFull = scenario(
  'spool-full',
  true,
  'spool on a full 1 MiB tmpfs: the writer and the shipper\'s delivered marks get ENOSPC, then space is freed',
  'no crash; ENOSPC logged and counted; nothing marked delivered that the controller lacks; all marked once space is back',
  async (scope, crashes, done) => {
    const dir = await tmpfs(scope, 'full');
    const { c, proxy } = await controllerAndProxy(scope);
    const spool = new Spool({ dir });
    const ids = await fill(spool, 'f-full', 3);
    // Fill what is left.
    let filler = 0;
    try {
      for (;;) writeFileSync(join(dir, `.fill-${filler++}`), Buffer.alloc(64 * 1024));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    }
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(dir, `.fill-small-${i}`), Buffer.alloc(512));
      } catch {
        break;
      }
    }
    const writeError = await spool.write(reportInput('f-full', 99)).then(
      () => 'none',
      (e: unknown) => String((e as Error).message),
    );
    const leftTmp = readdirSync(dir).filter((n) => n.startsWith('.tmp-')).length;
    const s = ship(scope, proxy.url, await c.nodeToken('f-full'), spool);
    await until('ENOSPC seen by the shipper', () => s.failures().some((f) => /ENOSPC/.test(f)), 15_000, () => s.failures());
    const whileFull = await tally(c.store, 'f-full', ids, spool);
    const failed = await failureCounts(s.metrics);
    for (const n of readdirSync(dir).filter((x) => x.startsWith('.fill-'))) rmSync(join(dir, n));
    await until('every bundle marked', () => allMarked(spool), 15_000, () => s.failures().slice(-3));
    await s.stop();
    const t = await tally(c.store, 'f-full', ids, spool);
    return done(
            { ...t, falselyDelivered: t.falselyDelivered + whileFull.falselyDelivered },
      crashes(),
      s.logs.some((l) => l.level === 'warn' && /ENOSPC/.test(String(l['error']))) && (failed['spool'] ?? 0) > 0,
      /ENOSPC/.test(writeError) && leftTmp === 0 && t.stored === 3,
      `writer: ${writeError.slice(0, 80)} (${leftTmp} .tmp- left); shipper while full: failures{${fmt(failed)}}, stored ${whileFull.stored}, marked ${3 - whileFull.pending}`,
    );
  },
);

const spoolReadOnly = scenario(
  'spool-read-only',
  true,
  'spool remounted read-only under the shipper, then read-write',
  'no crash; EROFS logged and counted; nothing marked delivered meanwhile; all marked once writable',
  async (scope, crashes, done) => {
    const dir = await tmpfs(scope, 'ro');
    const { c, proxy } = await controllerAndProxy(scope);
    const spool = new Spool({ dir });
    const ids = await fill(spool, 'f-ro', 3);
    await run('mount', ['-o', 'remount,ro', dir]);
    scope.add('remount rw', () => run('mount', ['-o', 'remount,rw', dir]).catch(() => undefined));
    const s = ship(scope, proxy.url, await c.nodeToken('f-ro'), spool);
    await until('EROFS seen by the shipper', () => s.failures().some((f) => /EROFS/.test(f)), 15_000, () => s.failures());
    const whileRo = await tally(c.store, 'f-ro', ids, spool);
    const failed = await failureCounts(s.metrics);
    await run('mount', ['-o', 'remount,rw', dir]);
    await until('every bundle marked', () => allMarked(spool), 15_000, () => s.failures().slice(-3));
    await s.stop();
    const t = await tally(c.store, 'f-ro', ids, spool);
    return done(
            t,
      crashes(),
      s.logs.some((l) => l.level === 'warn' && /EROFS/.test(String(l['error']))) && (failed['spool'] ?? 0) > 0,
      whileRo.pending === 3 && t.stored === 3,
      `while read-only: failures{${fmt(failed)}}, stored ${whileRo.stored} at the controller, ${3 - whileRo.pending} marked`,
    );
  },
);

const bundleRemoved = scenario(
  'bundle-removed',
  true,
  'a bundle directory removed (rm -r) under the shipper, just after its manifest was offered',
  'no crash; the report announced to the controller as not delivered; the others delivered once',
  async (scope, crashes, done) => {
    let victim: string | undefined;
    let offers = 0;
    const dir = tempDir(scope, 'removed');
    const { c, proxy } = await controllerAndProxy(scope, (r) => {
      if (r.method === 'POST' && r.path === '/api/v1/reports' && ++offers === 2) {
        victim = readdirSync(dir).filter((n) => !n.startsWith('.')).sort()[1];
        rmSync(join(dir, victim!), { recursive: true, force: true });
      }
      return { kind: 'forward' };
    });
    const spool = new Spool({ dir });
    const ids = await fill(spool, 'f-removed', 3);
    const s = ship(scope, proxy.url, await c.nodeToken('f-removed'), spool);
    await until('the rest delivered', async () => victim !== undefined && (await spool.entries()).length === 2 && (await allMarked(spool)), 15_000, () => s.failures());
    await until('the removed one announced', async () => (await c.store.dropped()).some((d) => d.reportId === victim), 5000).catch(() => undefined);
    await s.stop();
    const failed = await failureCounts(s.metrics);
    const t = await tally(c.store, 'f-removed', ids, spool);
    const notice = (await c.store.dropped()).find((d) => d.reportId === victim);
    return done(
            t,
      crashes(),
      s.logs.some((l) => l.level === 'error' && l['report'] === victim) && (failed['removed'] ?? 0) === 1,
      t.stored === 2 && notice !== undefined,
      `notice: ${notice?.reason ?? 'none'}; failures{${fmt(failed)}}`,
    );
  },
);

export const deliveryScenarios: FaultScenario[] = [
  downLong,
  answer500,
  answer429,
  slow,
  cut,
  tlsCut,
  shipperKilled('shipper-killed-mid-put', 'put'),
  shipperKilled('shipper-killed-after-commit', 'commit'),
  writerKilled,
  controllerKilled,
  postgresRestarted,
  spoolFull,
  spoolReadOnly,
  bundleRemoved,
];
