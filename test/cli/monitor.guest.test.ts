import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { GUEST_KERNEL_SERIES, guestKernel, type GuestKernelName } from '../../build/kernels.js';
import { readManifest } from '../../monitor/report/index.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';
import { killMonitors, startMonitor } from '../helpers/monitor-cli.js';

/**
 * `eve-diag monitor` end to end: the compiled CLI as a user runs it, a real guest, a YAML config.
 * A fault in the guest must become a verdict in the JSON logs and a report bundle in the spool.
 */
let dir: string;
let tableFile: string;
let layoutFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-monitor-'));
  const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
  tableFile = join(dir, 't.aml');
  layoutFile = join(dir, 't.json');
  await writeFile(tableFile, aml);
  await writeFile(layoutFile, JSON.stringify(layout));
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => killMonitors());

async function config(guest: Guest, spool: string, collectors: string, agent = true): Promise<string> {
  const file = join(dir, `monitor-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(
    file,
    `spool: { dir: ${spool} }
apps:
  - name: vm1
    transports:
      qmp: ${guest.qmpPath}
      console: ${guest.consolePath}
      consoleLog: ${guest.consoleLogPath}
      consoleMux: true
      layout: ${layoutFile}
    scenarios:
      - name: run-state
        probe: { type: qmp-status }
        periodSeconds: 1
        timeoutSeconds: 1
      - name: kernel
        probe: { type: kernel-heartbeat }
        periodSeconds: 1
        timeoutSeconds: 1
        failureThreshold: 2
${agent ? `      - name: agent
        probe: { type: agent-heartbeat, params: { agentPeriodSeconds: 1 } }
        periodSeconds: 1
        timeoutSeconds: 1
        failureThreshold: 2
` : ''}    diagnostics:
      cooldownSeconds: 600
      collectors:
${collectors}
`,
  );
  return file;
}

const agentLoop = 'eve_diag.zone_path=/sys/class/thermal/thermal_zone1/temp eve_diag.period=1';

describe('eve-diag monitor against real guests', () => {
  // Both kernels: 6.12 registers thermal zones differently (issue 8), and a panic must still stop the beat.
  test.each(['debian-6.1', 'debian-6.12'] as GuestKernelName[])('kernel panic (%s) -> guest-kernel-hung, diagnostics write a bundle with the panic in the console capture; SIGTERM exits 0', async (kernelName) => {
    const kernel = await guestKernel(kernelName);
    expect(kernel.release.startsWith(GUEST_KERNEL_SERIES[kernelName]), kernel.release).toBe(true);
    const guest = await launchGuest({ kernel, acpiTables: [tableFile], append: `quiet panic=0 eve_diag.scenario=panic eve_diag.delay=25` });
    expect(await guest.run('uname -r')).toBe(kernel.release);
    // No agent in this guest: the thermal core's one read of the agent zone at registration is its only beat.
    const spool = join(dir, `spool-panic-${kernelName}`);
    const m = startMonitor(
      await config(
        guest,
        spool,
        `        - { type: console-capture, timeoutSeconds: 5 }
        - { type: qmp-state, timeoutSeconds: 5 }
        - { type: hmp-registers, timeoutSeconds: 5 }`,
        false,
      ),
    );
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'running-healthy', 60_000);
    await guest.waitForConsole(/Kernel panic/, 60_000);
    const v = await m.waitFor((l) => l.msg === 'verdict' && (l['verdict'] === 'guest-kernel-hung' || l['verdict'] === 'guest-panicked'), 30_000);
    expect(v['reason']).toMatch(/kernel heartbeat|panic/);
    const done = await m.waitFor((l) => l.msg === 'diagnostics done', 60_000);
    const bundle = String(done['report']);
    const manifest = await readManifest(bundle, { verifyFiles: true });
    expect(['guest-kernel-hung', 'guest-panicked']).toContain(manifest.verdict);
    // The timeline: the kernel heartbeat samples up to the verdict, alive before the panic, the stall last.
    const beats = manifest.timeline.filter((t) => t['probe'] === 'kernel-heartbeat');
    expect(beats.length).toBeGreaterThan(5);
    const statuses = beats.map((t) => t['status']);
    expect(statuses.lastIndexOf('alive')).toBeGreaterThanOrEqual(0);
    expect(statuses.lastIndexOf('alive')).toBeLessThan(statuses.indexOf('stalled'));
    expect(beats.at(-1)?.['outcome']).toBe('failure');
    expect(manifest.timeline.some((t) => t['probe'] === 'qmp-status' && t['runState'] === 'running')).toBe(true);
    const files = await readdir(bundle);
    expect(files.some((f) => f.endsWith('console.txt'))).toBe(true);
    expect(files.some((f) => f.endsWith('registers.txt'))).toBe(true);
    const { readFile } = await import('node:fs/promises');
    const consoleFile = files.find((f) => f.endsWith('console.txt')) as string;
    expect(await readFile(join(bundle, consoleFile), 'utf8')).toContain('Kernel panic');
    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    expect(m.lines.some((l) => l.msg === 'monitor stopped')).toBe(true);
    await guest.stop();
  });

  test('userspace frozen -> guest-userspace-hung, SysRq w/t output in the report', async () => {
    const guest = await launchGuest({ acpiTables: [tableFile], append: `quiet eve_diag.scenario=read-agent-zone ${agentLoop}` });
    const spool = join(dir, 'spool-user');
    const m = startMonitor(
      await config(
        guest,
        spool,
        `        - { type: sysrq, timeoutSeconds: 20, params: { keys: [w, t] } }
        - { type: host-state, timeoutSeconds: 5 }`,
      ),
    );
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'running-healthy', 60_000);
    // Freeze every guest process but init (the agent-zone reader included); the kernel keeps beating.
    await guest.run('kill -STOP -1');
    const v = await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'guest-userspace-hung', 30_000);
    expect(v['reason']).toMatch(/kernel alive/);
    const done = await m.waitFor((l) => l.msg === 'diagnostics done', 60_000);
    const bundle = String(done['report']);
    const manifest = await readManifest(bundle, { verifyFiles: true });
    expect(manifest.verdict).toBe('guest-userspace-hung');
    const files = await readdir(bundle);
    const { readFile } = await import('node:fs/promises');
    const t = files.find((f) => f.endsWith('sysrq-t.txt'));
    expect(t, files.join(', ')).toBeDefined();
    expect(await readFile(join(bundle, t as string), 'utf8')).toMatch(/sysrq: Show State/);
    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    await guest.stop();
  });
});
