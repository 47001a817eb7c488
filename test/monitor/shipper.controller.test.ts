import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashToken, newToken } from '../../controller/auth.js';
import { openStore } from '../../controller/store/open.js';
import type { Store } from '../../controller/store/store.js';
import { ControllerClient } from '../../monitor/controller-client.js';
import type { LogRecord } from '../../monitor/manager.js';
import { Spool } from '../../monitor/report/spool.js';
import { Shipper } from '../../monitor/shipper.js';
import { MANIFEST_FILE, type ReportManifest } from '../../protocol/report-manifest.js';
import { repoRoot } from '../../util/repo-root.js';
import { startController, type TestController } from '../helpers/controller.js';
import { startFaultProxy, type FaultAction } from '../helpers/fault-proxy.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { tempDirs } from '../helpers/temp-dirs.js';

/**
 * "Nothing is lost": a report written to the spool reaches the controller or is reported as not
 * delivered, and retries never store anything twice. A real Shipper against a real controller, with
 * test/helpers/fault-proxy.ts between them: the controller down, answering 500, cut mid-upload or
 * before its answer, slow; refusals for good; the controller process killed mid-upload and started
 * again; two controller processes on one PostgreSQL, which is restarted while the nodes deliver. Each
 * time: every spool bundle ends delivered (or rejected and announced), the controller holds each
 * report once with its artifacts, and each report was analyzed by exactly one job, taken once.
 */

const temp = tempDirs('eve-diag-ship-');
const ROOT = repoRoot();
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const PANIC_TITLE = 'Kernel panic: sysrq triggered crash';

// -- bundles ------------------------------------------------------------------------------------

/** The end of a real Debian 6.1 console after `echo c > /proc/sysrq-trigger` (test/fixtures/bundles/debian-6.1/panic). */
const PANIC_TRACE = `[    2.846363] sysrq: Trigger a crash
[    2.846732] Kernel panic - not syncing: sysrq triggered crash
[    2.847021] CPU: 0 PID: 83 Comm: init Not tainted 6.1.0-57-amd64 #1  Debian 6.1.192-3
[    2.847252] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[    2.847532] Call Trace:
[    2.848133]  <TASK>
[    2.848474]  dump_stack_lvl+0x44/0x5c
[    2.848835]  panic+0x118/0x2f4
[    2.848919]  ? _printk+0x68/0x83
[    2.848999]  sysrq_handle_crash+0x16/0x20
[    2.849107]  __handle_sysrq.cold+0x44/0x11c
[    2.849197]  write_sysrq_trigger+0x24/0x40
[    2.849301]  proc_reg_write+0x56/0xa0
[    2.849454]  vfs_write+0xc7/0x3f0
[    2.849808]  ksys_write+0x6b/0xf0
[    2.849887]  do_syscall_64+0x5d/0xb0
[    2.850395]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[    2.850662] RIP: 0033:0x47b7a0
[    2.851468] RSP: 002b:00007ffcabc7df28 EFLAGS: 00000202 ORIG_RAX: 0000000000000001
[    2.851654] RAX: ffffffffffffffda RBX: 0000000000000001 RCX: 000000000047b7a0
[    2.851790] RDX: 0000000000000002 RSI: 00000000122be650 RDI: 0000000000000001
[    2.852385]  </TASK>
[    2.852966] Kernel Offset: 0x2d200000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
[    2.853419] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---
`;

/** Identical in every report: the controller stores it once (artifacts are content-addressed). */
const QMP_STATE = JSON.stringify({ status: 'running', running: true, singlestep: false });

/** Writes `n` small, realistic bundles with the monitor's own spool: a console with a panic (unique per report) and a QMP state. */
async function fill(spool: Spool, app: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const console = `[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3\n[    0.000000] Command line: console=ttyS0 eve-diag.report=${app}-${i}\n${PANIC_TRACE}`;
    const b = await spool.write({
      app,
      verdict: 'guest-panicked',
      evidence: { reason: `kernel heartbeat stopped (report ${i})` },
      steps: [
        { kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: console }] },
        { kind: 'qmp-state', ok: true, summary: 'qmp', artifacts: [{ name: 'qmp.json', mediaType: 'application/json', data: QMP_STATE }] },
      ],
    });
    ids.push(b.id);
  }
  return ids;
}

// -- the shipper --------------------------------------------------------------------------------

interface Shipping {
  shipper: Shipper;
  logs: LogRecord[];
  /** The failures it backed off from (their messages). */
  failures(): string[];
  stop(): Promise<void>;
}

/** A shipper with small backoffs (tests take seconds), started. */
function ship(url: string, token: string, spool: Spool, o: { timeoutMs?: number } = {}): Shipping {
  const logs: LogRecord[] = [];
  const client = new ControllerClient({ url, token, timeoutMs: o.timeoutMs ?? 5000 });
  const shipper = new Shipper({ spool, client, log: (r) => logs.push(r), backoffMs: 20, maxBackoffMs: 250, idleMs: 50 });
  shipper.start();
  return {
    shipper,
    logs,
    failures: () => logs.filter((l) => l.msg.startsWith('shipping to the controller failed')).map((l) => String(l['error'])),
    stop: () => shipper.stop(),
  };
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs: number, detail: () => unknown = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what} ${JSON.stringify(detail())?.slice(0, 2000) ?? ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function allDelivered(spool: Spool): Promise<boolean> {
  return (await spool.entries()).every((e) => e.delivered);
}

/** Waits until every bundle of `spool` is delivered, then stops the shipper. */
async function delivered(s: Shipping, spool: Spool, timeoutMs = 30_000): Promise<void> {
  try {
    await until('every bundle delivered', () => allDelivered(spool), timeoutMs, () => s.failures().slice(-5));
  } finally {
    await s.stop();
  }
}

// -- what the controller holds ----------------------------------------------------------------------

const marks = (n: number) => Array.from({ length: n }, () => '?').join(', ');

/** Waits until every analysis job of these reports is finished. */
async function analyzed(store: Store, keys: readonly number[], timeoutMs = 20_000): Promise<void> {
  let open: unknown[] = [];
  await until(
    'every report analyzed',
    async () => {
      open = await store.db.all(`SELECT key, report_key, state, attempts, locked_by, locked_at, run_after, error FROM jobs WHERE state IN ('queued', 'running') AND report_key IN (${marks(keys.length)})`, [...keys]);
      return open.length === 0;
    },
    timeoutMs,
    () => open,
  );
}

/**
 * The controller holds each bundle of `spool` exactly once, stored, with its two artifacts and their
 * bytes, under the key its acknowledgement (the spool's delivered mark) names; each was analyzed by
 * exactly one job, taken once, which found the panic once. Returns the jobs' takers.
 */
async function expectOnce(store: Store, node: string, spool: Spool, n: number): Promise<string[]> {
  const entries = await spool.entries();
  expect(entries).toHaveLength(n);
  expect(entries.filter((e) => !e.delivered || e.rejected)).toEqual([]);
  const rows = await store.db.all('SELECT r.key, r.report_id, r.status FROM reports r JOIN nodes n ON n.id = r.node_id WHERE n.name = ? ORDER BY r.key', [node]);
  expect(rows.map((r) => String(r['report_id'])).sort()).toEqual(entries.map((e) => e.id).sort());
  expect(rows.filter((r) => r['status'] !== 'stored')).toEqual([]);
  const keyOf = new Map(rows.map((r) => [String(r['report_id']), Number(r['key'])]));
  for (const e of entries) {
    const ack = JSON.parse(readFileSync(join(e.dir, '.delivered'), 'utf8')) as { key: number };
    expect(ack.key, e.id).toBe(keyOf.get(e.id));
  }
  const keys = [...keyOf.values()];
  const arts = await store.db.all(`SELECT a.report_key, a.sha256, a.bytes, b.bytes AS stored FROM report_artifacts a LEFT JOIN blobs b ON b.sha256 = a.sha256 WHERE a.report_key IN (${marks(n)})`, keys);
  expect(arts).toHaveLength(2 * n);
  expect(arts.filter((a) => Number(a['stored']) !== Number(a['bytes']))).toEqual([]);
  await analyzed(store, keys);
  const jobs = await store.db.all(`SELECT report_key, state, attempts, locked_by FROM jobs WHERE kind = 'analyze-report' AND report_key IN (${marks(n)}) ORDER BY report_key`, keys);
  expect(jobs.map((j) => Number(j['report_key']))).toEqual([...keys].sort((a, b) => a - b));
  expect(jobs.filter((j) => j['state'] !== 'done' || Number(j['attempts']) !== 1)).toEqual([]);
  const panics = await store.db.all(`SELECT report_key, COUNT(*) AS n FROM findings WHERE title = ? AND report_key IN (${marks(n)}) GROUP BY report_key`, [PANIC_TITLE, ...keys]);
  expect(panics).toHaveLength(n);
  expect(panics.filter((p) => Number(p['n']) !== 1)).toEqual([]);
  return jobs.map((j) => String(j['locked_by']));
}

// -- 1 and 2: faults between a shipper and an in-process controller -------------------------------

describe('faults between the shipper and a real controller', { timeout: 40_000 }, () => {
  let c: TestController;
  beforeAll(async () => {
    c = await startController({ limits: { maxRequestsPerSecond: 1000 } });
  });
  afterAll(async () => c?.close());

  /** A proxy in front of the controller, a spool of `n` bundles, a shipper through the proxy. */
  async function setup(node: string, n: number, decide?: (r: { n: number; method: string; path: string; bodyBytes: number }) => FaultAction) {
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: Number(new URL(c.url).port) }, ...(decide ? { decide } : {}) });
    const spool = new Spool({ dir: temp() });
    await fill(spool, node, n);
    return { proxy, spool, token: await c.nodeToken(node) };
  }

  test('controller down at first, then up: the shipper retries with backoff and delivers', async () => {
    const { proxy, spool, token } = await setup('n-down', 4);
    try {
      await proxy.down();
      const s = ship(proxy.url, token, spool);
      await until('three failed tries', () => s.failures().length >= 3, 10_000);
      expect(s.shipper.delivered).toBe(0);
      await proxy.up();
      await delivered(s, spool);
      expect(s.failures().some((f) => /ECONNREFUSED/.test(f))).toBe(true);
      await expectOnce(c.store, 'n-down', spool, 4);
    } finally {
      await proxy.close();
    }
  });

  test('answering 500 for a while: every bundle delivered once', async () => {
    let served = 0;
    const { proxy, spool, token } = await setup('n-500', 4, (r) => (r.n % 3 === 1 && served++ < 6 ? { kind: 'answer', status: 500 } : { kind: 'forward' }));
    try {
      const s = ship(proxy.url, token, spool);
      await delivered(s, spool);
      // Every third request, six times: manifests or commits (POST) and artifacts (PUT) alike.
      expect(new Set(proxy.requests.filter((r) => r.action === 'answer').map((r) => r.method)).size).toBe(2);
      expect(s.failures().filter((f) => /: 500/.test(f))).toHaveLength(6);
      await expectOnce(c.store, 'n-500', spool, 4);
    } finally {
      await proxy.close();
    }
  });

  test('connections cut mid-upload, and answers lost after the controller acted: nothing twice', async () => {
    const seen = new Map<string, number>();
    const { proxy, spool, token } = await setup('n-cut', 5, (r) => {
      const kind = r.method === 'PUT' ? 'put' : r.path.endsWith('/commit') ? 'commit' : r.path === '/api/v1/reports' ? 'offer' : 'other';
      const i = (seen.get(kind) ?? 0) + 1;
      seen.set(kind, i);
      // A manifest and artifacts cut after a few bytes of their body; an artifact stored and a commit done whose answer never comes back.
      if (kind === 'offer' && i === 2) return { kind: 'cut', afterBodyBytes: 200 };
      if (kind === 'put' && (i === 1 || i === 4)) return { kind: 'cut', afterBodyBytes: Math.floor(r.bodyBytes / 2) };
      if (kind === 'put' && i === 6) return { kind: 'drop-answer' };
      if (kind === 'commit' && (i === 1 || i === 3)) return { kind: 'drop-answer' };
      return { kind: 'forward' };
    });
    try {
      const s = ship(proxy.url, token, spool);
      await delivered(s, spool);
      expect(proxy.requests.filter((r) => r.action === 'cut')).toHaveLength(3);
      expect(proxy.requests.filter((r) => r.action === 'drop-answer')).toHaveLength(3);
      expect(s.failures()).toHaveLength(6);
      await expectOnce(c.store, 'n-cut', spool, 5);
    } finally {
      await proxy.close();
    }
  });

  test('slow (300 bytes/s) for a while: the client timeout fires, then every bundle is delivered once', async () => {
    const { proxy, spool, token } = await setup('n-slow', 3);
    try {
      proxy.bytesPerSecond = 300;
      const s = ship(proxy.url, token, spool, { timeoutMs: 1000 });
      await until('two timeouts', () => s.failures().filter((f) => /no answer within 1000 ms/.test(f)).length >= 2, 15_000, () => s.failures());
      proxy.bytesPerSecond = undefined;
      await delivered(s, spool);
      await expectOnce(c.store, 'n-slow', spool, 3);
    } finally {
      await proxy.close();
    }
  });

  test('answers trickling in (100 bytes/s, never silent for long) for a while: the timeout bounds the whole request, then every bundle is delivered once', async () => {
    const { proxy, spool, token } = await setup('n-trickle', 3);
    try {
      proxy.answerBytesPerSecond = 100;
      const s = ship(proxy.url, token, spool, { timeoutMs: 1000 });
      await until('two timeouts', () => s.failures().filter((f) => /no answer within 1000 ms/.test(f)).length >= 2, 15_000, () => s.failures());
      proxy.answerBytesPerSecond = undefined;
      await delivered(s, spool);
      await expectOnce(c.store, 'n-trickle', spool, 3);
    } finally {
      await proxy.close();
    }
  });

  test('a manifest the controller refuses for good: that bundle is marked rejected and announced, the others delivered', async () => {
    const { proxy, spool, token } = await setup('n-refused', 3);
    try {
      // The middle bundle claims a manifest version this controller does not read: a 400, for good.
      const bad = (await spool.entries())[1]!;
      const m = JSON.parse(readFileSync(join(bad.dir, MANIFEST_FILE), 'utf8')) as ReportManifest;
      await writeFile(join(bad.dir, MANIFEST_FILE), JSON.stringify({ ...m, schemaVersion: 99 }));
      const s = ship(proxy.url, token, spool);
      await until('two delivered, one rejected', async () => (await spool.entries()).filter((e) => e.delivered || e.rejected).length === 3, 20_000, () => s.failures());
      await until('the rejection announced', async () => (await c.store.dropped()).some((d) => d.reportId === bad.id), 10_000);
      await s.stop();
      const entries = await spool.entries();
      expect(entries.map((e) => [e.id, e.delivered, e.rejected])).toEqual(entries.map((e) => [e.id, e.id !== bad.id, e.id === bad.id]));
      const notice = (await c.store.dropped()).find((d) => d.reportId === bad.id);
      expect(notice?.reason).toMatch(/rejected by the controller: .*400 unknown manifest schemaVersion 99/);
      expect(s.logs.some((l) => l.level === 'error' && l.msg.includes('rejected') && l['report'] === bad.id)).toBe(true);
      const stored = await c.store.db.all("SELECT r.report_id FROM reports r JOIN nodes n ON n.id = r.node_id WHERE n.name = 'n-refused'");
      expect(stored.map((r) => r['report_id']).sort()).toEqual(entries.filter((e) => e.id !== bad.id).map((e) => e.id).sort());
    } finally {
      await proxy.close();
    }
  });

  test('damaged bundles (an artifact file gone, a manifest cut short): rejected and announced, the ones after them delivered', async () => {
    const { proxy, spool, token } = await setup('n-damaged', 4);
    try {
      const [, gone, torn] = await spool.entries();
      const m = JSON.parse(readFileSync(join(gone!.dir, MANIFEST_FILE), 'utf8')) as ReportManifest;
      await rm(join(gone!.dir, m.steps[0]!.artifacts[0]!.file));
      const text = readFileSync(join(torn!.dir, MANIFEST_FILE), 'utf8');
      await writeFile(join(torn!.dir, MANIFEST_FILE), text.slice(0, text.length / 2));
      const s = ship(proxy.url, token, spool);
      await until('all delivered or rejected', async () => (await spool.entries()).every((e) => e.delivered || e.rejected), 20_000, () => s.failures().slice(-3));
      await until('the rejections announced', async () => (await c.store.dropped()).filter((d) => d.reportId === gone!.id || d.reportId === torn!.id).length === 2, 10_000);
      await s.stop();
      expect((await spool.entries()).map((e) => [e.delivered, e.rejected])).toEqual([
        [true, false],
        [false, true],
        [false, true],
        [true, false],
      ]);
      const reasons = new Map((await c.store.dropped()).map((d) => [d.reportId, d.reason]));
      expect(reasons.get(gone!.id)).toMatch(/not sent, the bundle is damaged: .* is missing or not a regular file/);
      expect(reasons.get(torn!.id)).toMatch(/not sent, the bundle is damaged: .*JSON/);
    } finally {
      await proxy.close();
    }
  });

  test('an artifact changed after its bundle was written, and a symlink in place of one: neither is sent (rejected and announced), the link never followed', async () => {
    const { proxy, spool, token } = await setup('n-tampered', 4);
    try {
      const [, changed, linked] = await spool.entries();
      const fileOf = (dir: string) => (JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as ReportManifest).steps[0]!.artifacts[0]!.file;
      const f = join(changed!.dir, fileOf(changed!.dir));
      const text = readFileSync(f, 'utf8');
      await writeFile(f, text.replace('sysrq', 'SYSRQ')); // same size, other bytes
      const secret = join(temp(), 'secret.txt');
      await writeFile(secret, 'not the guest console: must never leave the node\n');
      const l = join(linked!.dir, fileOf(linked!.dir));
      await rm(l);
      symlinkSync(secret, l);
      const s = ship(proxy.url, token, spool);
      await until('the two announced', async () => (await c.store.dropped()).filter((d) => d.reportId === changed!.id || d.reportId === linked!.id).length === 2, 20_000, () => s.failures().slice(-3));
      await until('the others delivered', async () => (await spool.entries()).every((e) => e.delivered || e.rejected), 20_000);
      await s.stop();
      expect((await spool.entries()).map((e) => [e.delivered, e.rejected])).toEqual([
        [true, false],
        [false, true],
        [false, true],
        [true, false],
      ]);
      const reasons = new Map((await c.store.dropped()).map((d) => [d.reportId, d.reason]));
      expect(reasons.get(changed!.id)).toMatch(/damaged: .*not the file its manifest lists/);
      expect(reasons.get(linked!.id)).toMatch(/damaged: .* is a symlink/);
      const blobs = await c.store.db.all('SELECT bytes FROM blobs');
      expect(blobs.map((b) => Number(b['bytes']))).not.toContain(Buffer.byteLength(readFileSync(secret)));
      expect(readFileSync(secret, 'utf8')).toMatch(/must never leave/);
    } finally {
      await proxy.close();
    }
  });

  test('a per-node limit: the bundles beyond it are rejected and announced, never silently dropped', async () => {
    const spool = new Spool({ dir: temp() });
    await fill(spool, 'n-limit', 4);
    const totals = await Promise.all((await spool.entries()).map(async (e) => (JSON.parse(readFileSync(join(e.dir, MANIFEST_FILE), 'utf8')) as ReportManifest).totalBytes));
    // Room for the first two reports only.
    const limited = await startController({ limits: { maxRequestsPerSecond: 1000, maxNodeBytes: totals[0]! + totals[1]! + 10 } });
    try {
      const s = ship(limited.url, await limited.nodeToken('n-limit'), spool);
      await until('all delivered or rejected', async () => (await spool.entries()).every((e) => e.delivered || e.rejected), 20_000, () => s.failures());
      await until('the rejections announced', async () => (await limited.store.dropped()).length === 2, 10_000);
      await s.stop();
      const entries = await spool.entries();
      expect(entries.map((e) => [e.delivered, e.rejected])).toEqual([
        [true, false],
        [true, false],
        [false, true],
        [false, true],
      ]);
      const dropped = await limited.store.dropped();
      expect(dropped.map((d) => d.reportId).sort()).toEqual(entries.slice(2).map((e) => e.id));
      for (const d of dropped) expect(d.reason).toMatch(/rejected by the controller: .*413 .*maxNodeBytes/);
      expect((await limited.store.countReports()).stored).toBe(2);
    } finally {
      await limited.close();
    }
  });
});

// -- 3 and 4: the controller as processes (the built CLI) -----------------------------------------

interface CliController {
  proc: ChildProcess;
  url: string;
  port: number;
  /** Its JSON log lines. */
  log: Record<string, unknown>[];
  /** The end of its stderr. */
  stderr(): string;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of children) p.kill('SIGKILL');
});

/** Kills every controller process still running, by pid, and waits for each to exit. */
async function killChildren(): Promise<void> {
  await Promise.all([...children].map((p) => stopChild(p, 'SIGKILL')));
}

async function stopChild(p: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (p.exitCode === null && p.signalCode === null) {
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
  children.delete(p);
}

/** The CLI is run as built: dist/ must be newer than every source file it is built from. */
function checkBuilt(): void {
  const built = statSync(CLI, { throwIfNoEntry: false })?.mtimeMs;
  if (built === undefined) throw new Error(`${CLI} is missing: run npm run build first`);
  const walk = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
  const newer = ['cli', 'controller', 'protocol', 'util'].flatMap(walk).filter((f) => statSync(join(ROOT, f)).mtimeMs > built);
  if (newer.length > 0) throw new Error(`dist/ is older than ${newer.slice(0, 3).join(', ')}: run npm run build first`);
}

/** `eve-diag controller serve` in a child process; resolves once it listens. */
async function serveCli(store: string[], port = 0): Promise<CliController> {
  const proc = spawn(process.execPath, [CLI, 'controller', 'serve', ...store, '--listen', `127.0.0.1:${port}`, '--limit', 'maxRequestsPerSecond=1000'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const log: Record<string, unknown>[] = [];
  let stderr = '';
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
  return new Promise((resolve, reject) => {
    let rest = '';
    const t = setTimeout(() => reject(new Error(`the controller did not start within 20 s: ${stderr}`)), 20_000);
    proc.once('exit', (code, signal) => {
      clearTimeout(t);
      reject(new Error(`the controller exited (${code ?? signal}) before it listened: ${stderr}`));
    });
    proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
      const lines = (rest + s).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        let r: Record<string, unknown>;
        try {
          r = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        log.push(r);
        if (r['msg'] === 'controller listening') {
          clearTimeout(t);
          const url = String(r['url']);
          resolve({ proc, url, port: Number(new URL(url).port), log, stderr: () => stderr });
        }
      }
    });
  });
}

const errorsOf = (c: CliController) => c.log.filter((r) => r['level'] === 'error');

describe('the controller process killed mid-upload (SQLite)', { timeout: 60_000 }, () => {
  beforeAll(checkBuilt);
  afterAll(killChildren, 30_000);

  test('SIGKILL while the shipper uploads, started again on the same data and port: all delivered, none twice', async () => {
    const data = temp();
    const created = await promisify(execFile)(process.execPath, [CLI, 'controller', 'token', 'create', '--node', 'n-kill', '--data', data, '--json'], { cwd: ROOT });
    const token = (JSON.parse(created.stdout) as { token: string }).token;
    let ctl = await serveCli(['--data', data]);
    const first = ctl;
    const spool = new Spool({ dir: temp() });
    await fill(spool, 'n-kill', 6);
    let puts = 0;
    let killed: Promise<void> | undefined;
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: ctl.port },
      decide: (r) => {
        // The third artifact: the first report is in, the second is half uploaded.
        if (r.method === 'PUT' && ++puts === 3) killed = stopChild(first.proc, 'SIGKILL');
        return { kind: 'forward' };
      },
    });
    let store: Store | undefined;
    try {
      const s = ship(proxy.url, token, spool);
      await until('the controller killed', () => killed !== undefined, 20_000, () => s.failures());
      await killed;
      expect(first.proc.signalCode).toBe('SIGKILL');
      await until('a failed try while it is down', () => s.failures().length > 0, 10_000);
      ctl = await serveCli(['--data', data], first.port);
      await delivered(s, spool);
      expect(s.shipper.delivered).toBe(6);
      store = await openStore({ data });
      await expectOnce(store, 'n-kill', spool, 6);
      expect(errorsOf(ctl)).toEqual([]);
    } finally {
      await proxy.close();
      await store?.close();
      await stopChild(ctl.proc, 'SIGTERM');
    }
  });
});

describe('two controller processes on one PostgreSQL', { timeout: 90_000 }, () => {
  let pg: Postgres | undefined;
  let store: Store;
  const ctl: CliController[] = [];
  beforeAll(async () => {
    checkBuilt();
    pg = await startPostgres();
    // The test's own store migrates the database first; both instances find it ready.
    store = await openStore({ database: pg.url });
    ctl.push(...(await Promise.all([serveCli(['--database', pg.url]), serveCli(['--database', pg.url])])));
  }, 60_000);
  afterAll(async () => {
    await killChildren();
    await store?.close();
    await pg?.stop();
  }, 30_000);

  /** `count` nodes, each with its own token and spool of `n` bundles, shipping to the two instances alternately. */
  async function nodes(prefix: string, n: number, count = 4) {
    return Promise.all(
      Array.from({ length: count }, (_, i) => i).map(async (i) => {
        const name = `${prefix}-${i}`;
        const token = newToken();
        await store.addToken(hashToken(token), 'node', (await store.nodeId(name)) as number, name);
        const spool = new Spool({ dir: temp() });
        await fill(spool, name, n);
        return { name, token, spool, url: (ctl[i % 2] as CliController).url };
      }),
    );
  }

  test('4 nodes x 50 reports: each stored once, analyzed exactly once, by one instance, no errors', async () => {
    const all = await nodes('pg', 50);
    const ships = all.map((x) => ship(x.url, x.token, x.spool));
    await Promise.all(ships.map((s, i) => delivered(s, all[i]!.spool, 60_000)));
    const takers: string[] = [];
    for (const x of all) takers.push(...(await expectOnce(store, x.name, x.spool, 50)));
    // Each job was taken once (attempts 1, checked above), by one of the two instances (its worker name is host:pid:random).
    const pids = ctl.map((x) => String(x.proc.pid));
    expect(takers.filter((t) => !pids.includes(t.split(':')[1] ?? ''))).toEqual([]);
    // Both did analyze (each is woken by the reports it stored, and both poll the one queue).
    for (const p of pids) expect(takers.some((t) => t.split(':')[1] === p)).toBe(true);
    expect(ships.flatMap((s) => s.failures())).toEqual([]);
    expect(ctl.flatMap(errorsOf)).toEqual([]);
  });

  test('every request raced by a copy of it on the other instance (a retry beside its original): each report stored once, analyzed once', async () => {
    const [x] = await nodes('pgdup', 20, 1);
    const a = ctl[0] as CliController;
    const b = ctl[1] as CliController;
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: a.port }, decide: () => ({ kind: 'duplicate', to: { host: '127.0.0.1', port: b.port } }) });
    try {
      const s = ship(proxy.url, x!.token, x!.spool);
      await delivered(s, x!.spool);
      await until('every copy answered', () => proxy.requests.every((r) => r.copyStatus !== undefined), 10_000);
      await expectOnce(store, x!.name, x!.spool, 20);
      // Neither the requests nor their copies failed: each side found the other's work, or waited for it.
      expect(proxy.requests.filter((r) => !(r.copyStatus! >= 200 && r.copyStatus! < 300))).toEqual([]);
      expect(s.failures()).toEqual([]);
      expect(ctl.flatMap(errorsOf)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  test('the PostgreSQL server restarted while the nodes deliver: nothing lost, nothing twice', async () => {
    const all = await nodes('pgr', 25);
    const ships = all.map((x) => ship(x.url, x.token, x.spool));
    const sent = () => ships.reduce((n, s) => n + s.shipper.delivered, 0);
    await until('a few reports delivered', () => sent() >= 15, 30_000);
    await pg!.restart();
    const afterRestart = sent();
    const alive = () => ctl.map((c) => ({ exit: c.proc.exitCode ?? c.proc.signalCode, stderr: c.stderr().slice(-1500) }));
    await Promise.all(ships.map((s, i) => delivered(s, all[i]!.spool, 60_000))).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}; the controllers: ${JSON.stringify(alive())}`);
    });
    expect(afterRestart).toBeLessThan(100);
    for (const x of all) await expectOnce(store, x.name, x.spool, 25);
    // Both instances are still up.
    expect(alive().map((a) => a.exit)).toEqual([null, null]);
  });
});
