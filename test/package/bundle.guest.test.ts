import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { HOST_BUNDLE_NAME } from '../../build/host-bundle.js';
import { repoRoot } from '../../util/repo-root.js';
import { launchGuest, stopAllGuests } from '../helpers/guest.js';
import { killMonitors, startMonitor } from '../helpers/monitor-cli.js';

/**
 * The single-file host bundle (issue 14 §4) as an EVE service container gets it: dist/eve-diag.mjs
 * copied alone into an empty directory under /tmp (no package.json, no node_modules anywhere above),
 * run with plain `node`. Its monitor watches a real guest and calls its panic.
 */
const run = promisify(execFile);
const built = join(repoRoot(), 'dist', HOST_BUNDLE_NAME);
let dir: string;
let bundle: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-bundle-'));
  bundle = join(dir, HOST_BUNDLE_NAME);
  await copyFile(built, bundle);
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => killMonitors());

const node = (args: string[]) =>
  run(process.execPath, [bundle, ...args], { cwd: dir, timeout: 30_000 }).then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
  );

describe('dist/eve-diag.mjs, alone in a directory', () => {
  test('it is newer than the sources it bundles and runs without node_modules: --version, --help, ssdt build, a bad config', async () => {
    // npm run build writes it; a stale bundle would test old code.
    expect((await stat(built)).mtimeMs).toBeGreaterThanOrEqual((await stat(join(repoRoot(), 'dist', 'cli', 'main.js'))).mtimeMs - 60_000);
    const pkg = JSON.parse(await readFile(join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
    expect((await node(['--version'])).out.trim()).toBe(pkg.version);
    const help = await node(['--help']);
    expect(help.code, help.err).toBe(0);
    for (const c of ['monitor', 'read', 'watch', 'diagnose', 'qemu-args']) expect(help.out).toContain(c);
    const ssdt = await node(['ssdt', 'build', '-o', join(dir, 'ssdt'), '--json']);
    expect(ssdt.code, ssdt.err).toBe(0);
    expect(JSON.parse(ssdt.out).table.signature).toBe('SSDT');
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'apps:\n  - name: vm1\n    scenarios:\n      - name: k\n        probe: { type: kernel-heartbeat }\n        periodSeconds: 0\n');
    const r = await node(['monitor', '--config', bad]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/bad\.yaml:6: apps\[0\]\.scenarios\[0\]\.periodSeconds: must be/);
  });

  test('the controller on SQLite says it needs better-sqlite3 (not carried): exit 2 on --data, as any store that cannot be opened', async () => {
    const r = await node(['controller', 'serve', '--data', join(dir, 'controller'), '--listen', '127.0.0.1:0']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/better-sqlite3.*single-file bundle does not carry/);
  });

  test('read --json and monitor against a real guest: table found over procmem, a panic becomes a verdict', async () => {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
    await writeFile(join(dir, 't.aml'), aml);
    const layoutFile = join(dir, 't.json');
    await writeFile(layoutFile, JSON.stringify(layout));
    const guest = await launchGuest({ acpiTables: [join(dir, 't.aml')], append: 'quiet panic=0' });
    const r = await node(['read', '--qmp', guest.qmpPath, '--layout', layoutFile, '--json']);
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.memory).toMatchObject({ path: 'procmem', pid: guest.pid });
    expect(j.kernel.status).toBe('alive');
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${join(dir, 'spool')} }
apps:
  - name: vm1
    transports: { qmp: ${guest.qmpPath}, layout: ${layoutFile} }
    scenarios:
      - { name: run-state, probe: { type: qmp-status }, periodSeconds: 1, timeoutSeconds: 1 }
      - { name: kernel, probe: { type: kernel-heartbeat }, periodSeconds: 1, timeoutSeconds: 1 }
`,
    );
    const m = startMonitor(config, ['--metrics', '127.0.0.1:0'], bundle);
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'running-healthy', 60_000);
    await guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined); // the shell dies with the kernel
    const v = await m.waitFor((l) => l.msg === 'verdict' && (l['verdict'] === 'guest-kernel-hung' || l['verdict'] === 'guest-panicked'), 30_000);
    expect(String(v['reason'])).toMatch(/kernel heartbeat|panic/);
    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    await guest.stop();
  }, 180_000);
});
