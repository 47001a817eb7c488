import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { startController, type TestController } from '../helpers/controller.js';
import { JobRunner } from '../../controller/jobs.js';
import { openStore } from '../../controller/store/open.js';
import { Spool } from '../../monitor/report/spool.js';
import { ControllerClient } from '../../monitor/controller-client.js';
import { Shipper } from '../../monitor/shipper.js';
import { repoRoot } from '../../util/repo-root.js';

/** `eve-diag controller token|reports|reanalyze` on a SQLite data directory, in-process. */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-cli-ctl-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag controller token', () => {
  test('create (once, printed), list, revoke; the store keeps only the hash', async () => {
    const data = join(dir, 'tokens');
    const node = await runCli('controller', 'token', 'create', '--node', 'edge-17', '--label', 'first', '--data', data, '--json');
    expect(node.code, node.err).toBe(0);
    const made = JSON.parse(node.out) as { token: string; role: string; node: string; hashPrefix: string };
    expect(made).toMatchObject({ role: 'node', node: 'edge-17' });
    expect(made.token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const admin = await runCli('controller', 'token', 'create', '--admin', '--data', data);
    expect(admin.code, admin.err).toBe(0);
    expect(admin.out).toMatch(/\(shown once: the controller keeps only its hash, prefix [0-9a-f]{12}\)/);

    const list = await runCli('controller', 'token', 'list', '--data', data, '--json');
    expect(list.code, list.err).toBe(0);
    const tokens = JSON.parse(list.out) as { hashPrefix: string; role: string; node: string | null; revoked: boolean; label: string }[];
    expect(tokens.map((t) => [t.role, t.node, t.revoked, t.label]).sort()).toEqual([
      ['admin', null, false, ''],
      ['node', 'edge-17', false, 'first'],
    ]);
    expect(list.out).not.toContain(made.token);

    const revoke = await runCli('controller', 'token', 'revoke', made.hashPrefix.slice(0, 10), '--data', data);
    expect(revoke.out).toBe('1 token(s) revoked');
    const text = await runCli('controller', 'token', 'list', '--data', data);
    expect(text.out).toMatch(new RegExp(`^${made.hashPrefix.slice(0, 12)}\\S*\\s+node\\s+edge-17\\s+revoked\\s+first$`, 'm'));
  });

  test('bad flags: exit 2 naming the flag and the value, nothing created', async () => {
    const data = join(dir, 'bad');
    // [args, the flag named, the value quoted, what is wanted]
    const cases: [string[], string, string, RegExp][] = [
      [['token', 'create'], '--node', '', /give exactly one of --node NAME or --admin/],
      [['token', 'create', '--node', 'a', '--admin'], '--node', 'a', /give exactly one of --node NAME or --admin/],
      [['token', 'create', '--node', 'bad/name'], '--node', 'bad/name', /a node name/],
      [['token', 'revoke', 'xyz'], 'PREFIX', 'xyz', /8 to 64 hex digits/],
      [['reports', '--limit', '0'], '--limit', '0', /./],
      [['reports', '--verdict', 'sad'], '--verdict', 'sad', /./],
      [['reports', '--since', 'yesterday'], '--since', 'yesterday', /./],
      [['serve', '--listen', 'nowhere'], '--listen', 'nowhere', /./],
      [['serve', '--plugins', join(dir, 'missing')], '--plugins', join(dir, 'missing'), /not a directory/],
      [['serve', '--limit', 'maxBogus=1'], '--limit', 'maxBogus', /./],
    ];
    for (const [args, flag, value, re] of cases) {
      const r = await runCli('controller', ...args, '--data', data);
      const what = `${args.join(' ')}: ${r.out} ${r.err}`;
      expect(r.code, what).toBe(2);
      expect(r.err, what).toContain(flag);
      expect(r.err, what).toContain(value);
      expect(r.err, what).toMatch(re);
    }
    const list = await runCli('controller', 'token', 'list', '--data', data);
    expect(list.out).toBe('no tokens');
  });
});

describe('eve-diag controller reports / reanalyze', () => {
  let ctl: TestController;
  beforeAll(async () => {
    // No worker in the controller: the reanalyze test's CLI must be the only one taking its job.
    ctl = await startController({ worker: false });
    // Two reports from a node's spool, shipped as the monitor ships them.
    const spool = new Spool({ dir: join(dir, 'spool') });
    const panic = '[    5.000000] Kernel panic - not syncing: sysrq triggered crash\n[    5.000000] CPU: 0 PID: 1 Comm: sh\n';
    await spool.write({ app: 'vm1', verdict: 'guest-kernel-hung', steps: [{ kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: Buffer.from(panic) }] }] });
    await spool.write({ app: 'vm2', verdict: 'app-unhealthy', steps: [{ kind: 'console-capture', ok: true, summary: 'console', artifacts: [{ name: 'console.txt', mediaType: 'text/plain', data: Buffer.from('nothing\n') }] }] });
    await new Shipper({ spool, client: new ControllerClient({ url: ctl.url, token: await ctl.nodeToken('edge-1') }), log: () => undefined }).runOnce();
    const runner = new JobRunner({ store: ctl.store });
    while (await runner.runOne());
  });
  afterAll(async () => {
    await ctl?.close();
  });

  test('reports --json lists them newest first with their findings; filters; text output', async () => {
    // The CLI opens the in-process test controller's SQLite directory (WAL: both see the same data).
    const data = ctl.data;
    expect(data).toBeDefined();
    const all = await runCli('controller', 'reports', '--data', data as string, '--json');
    expect(all.code, all.err).toBe(0);
    const rows = JSON.parse(all.out) as { app: string; node: string; verdict: string; findings: number; worstSeverity: string | null }[];
    expect(rows.map((r) => [r.node, r.app, r.verdict])).toEqual([
      ['edge-1', 'vm2', 'app-unhealthy'],
      ['edge-1', 'vm1', 'guest-kernel-hung'],
    ]);
    expect(rows[1]).toMatchObject({ worstSeverity: 'critical' });
    const only = await runCli('controller', 'reports', '--data', data as string, '--verdict', 'guest-kernel-hung');
    expect(only.out.split('\n')).toHaveLength(1);
    expect(only.out).toMatch(/edge-1\/vm1 {2}guest-kernel-hung {2}\d+ finding\(s\) \(critical\)/);
    const none = await runCli('controller', 'reports', '--data', data as string, '--app', 'nope');
    expect(none.out).toBe('no reports');
  });

  test('reanalyze --wait runs the analyzers again here, with a plugin directory', async () => {
    const data = ctl.data as string;
    const plugins = join(dir, 'plugins');
    await import('node:fs/promises').then((fs) => fs.mkdir(plugins, { recursive: true }));
    await writeFile(join(plugins, 'count.mjs'), 'export const analyze = (r) => [{ severity: "info", title: `${r.artifacts.length} artifact(s)` }];');
    // The built CLI: a plugin runs in a worker thread, which loads the compiled plugin-worker.js.
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      execFile(process.execPath, [join(repoRoot(), 'dist', 'cli', 'main.js'), 'controller', 'reanalyze', '--data', data, '--app', 'vm1', '--wait', '--plugins', plugins, '--json'], (e, out, err) =>
        resolve({ code: e === null ? 0 : ((e as { code?: number }).code ?? -1), out, err }),
      );
    });
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ queued: 1, analyzed: 1 });
    const store = await openStore({ data });
    try {
      const [row] = await store.listReports({ app: 'vm1' });
      const titles = (await store.findings(row!.key)).map((f) => `${f.analyzer}: ${f.title}`);
      expect(titles).toContain('plugin:count: 1 artifact(s)');
      expect(titles).toContain('kernel-log: Kernel panic: sysrq triggered crash');
    } finally {
      await store.close();
    }
  });
});
