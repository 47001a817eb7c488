#!/usr/bin/env node
/**
 * `npm run demo`: the main job on an embedded demo VM. Builds the diagnostic SSDT and the demo VM
 * (Debian's kernel + a busybox initramfs), boots it under QEMU (TCG) with the injected flags, shows
 * the live heartbeat view, makes the guest kernel panic, shows the kernel heartbeat going stalled
 * and the verdict; then the monitor's diagnostic chain writes the report bundle into a spool, its
 * shipper delivers it to a controller (SQLite in the temporary directory), and the demo prints the
 * analyzers' findings and the dashboard's URL. QEMU is stopped (by pid) whatever happens; `--keep`
 * leaves the controller running until Ctrl-C, to open the dashboard.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { definitionBlockAsl } from '../acpi/asl/emit.js';
import { buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { qemuArgv, renderShell } from '../host-reader/qemu-args/index.js';
import { openSession, type Session } from '../host-reader/session.js';
import type { Poll } from '../host-reader/reader.js';
import { buildGuestImage, GUEST_READY_LINE } from '../build/guest-image.js';
import { bzImageVersion } from '../build/kernels.js';
import { executeSetup, machineState, planSetup } from '../build/setup.js';
import { repoRoot } from '../util/repo-root.js';
import { hashToken, newToken } from '../controller/auth.js';
import { createController, type Controller } from '../controller/server.js';
import { openStore } from '../controller/store/open.js';
import type { Store } from '../controller/store/store.js';
import { ControllerClient } from '../monitor/controller-client.js';
import { ConsoleCaptureCollector, HmpRegistersCollector, HostStateCollector, runDiagnostics } from '../monitor/diagnostics/index.js';
import type { TimelineSample } from '../monitor/report/bundle.js';
import { Spool } from '../monitor/report/spool.js';
import { Shipper } from '../monitor/shipper.js';

const PERIOD_MS = 1000;
const t0 = performance.now();
const since = () => `${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s`;
const STEPS = 8;
const step = (n: number, text: string) => console.log(`\n[${n}/${STEPS}] ${text}`);
const info = (text: string) => console.log(`      ${text}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A poll as the monitor's report timeline keeps it: one sample per heartbeat probe. */
function timelineOf(p: Poll, at: number): TimelineSample[] {
  const runState = p.report.vm.status;
  return (['kernel', 'agent'] as const).map((which) => {
    const h = p.report[which];
    return {
      at: new Date(at).toISOString(),
      scenario: 'demo',
      probe: `${which}-heartbeat`,
      outcome: h.status === 'alive' ? 'success' : h.status === 'stalled' ? 'failure' : 'unknown',
      status: h.status,
      ...(h.beats !== undefined ? { beats: h.beats } : {}),
      ...(h.ageMs !== undefined ? { ageMs: h.ageMs } : {}),
      ...(runState !== undefined ? { runState } : {}),
    };
  });
}

/** Compact one-line view of a poll, for the demo's scrolling log. */
function line(p: Poll): string {
  const k = p.report.kernel;
  const a = p.report.agent;
  const age = (ms?: number) => (ms === undefined ? '' : ` age ${(ms / 1000).toFixed(1)} s`);
  return (
    `${since()}  VM ${(p.report.vm.status ?? '?').padEnd(8)}  kernel ${k.status.padEnd(8)} beats ${String(k.beats ?? '-').padStart(3)}${age(k.ageMs)}` +
    `   agent ${a.status.padEnd(8)} beats ${String(a.beats ?? '-').padStart(3)}${age(a.ageMs)}`
  );
}

const USAGE = `Usage: npm run demo [-- --keep]

The main job of eve-diag on an embedded demo VM (Debian's kernel, a busybox initramfs, QEMU TCG):
the diagnostic SSDT gives a kernel heartbeat with no agent in the guest; the guest kernel panics;
the heartbeat stalls while QEMU still says "running"; the monitor's diagnostics write a report, its
shipper sends it to a controller, whose analyzers find the panic and its call trace.

  --keep   leave the controller (and its dashboard) running after the demo, until Ctrl-C
  --help   this text`;

async function main(argv: readonly string[]): Promise<number> {
  const unknown = argv.filter((a) => !['--keep', '--help', '-h'].includes(a));
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  if (unknown.length > 0) {
    console.error(`eve-diag demo: unknown option ${unknown[0]}\n\n${USAGE}`);
    return 2;
  }
  const keep = argv.includes('--keep');
  let qemu: ChildProcess | undefined;
  let session: Session | undefined;
  let controller: Controller | undefined;
  let store: Store | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-demo-'));
  const stopQemu = async () => {
    if (!qemu || qemu.exitCode !== null || qemu.signalCode !== null) return;
    const exited = new Promise((r) => qemu!.once('exit', r));
    qemu.kill('SIGTERM');
    const t = setTimeout(() => qemu?.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  const stopController = async () => {
    await controller?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    controller = undefined;
    store = undefined;
  };
  const onSignal = () => {
    Promise.allSettled([stopQemu(), stopController()])
      .then(() => rm(dir, { recursive: true, force: true }))
      .finally(() => process.exit(130))
      .catch(() => undefined);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    step(1, 'checking Debian packages');
    // The installer `npm test` and .ci/run use too: as root it installs what is missing.
    const setup = await executeSetup(planSetup('demo', await machineState('demo')), {
      log: info,
      uid: process.getuid?.(),
      rootCommand: `sudo ${process.execPath} ${join(repoRoot(), 'dist', 'build', 'setup.js')} demo   # then npm run demo again`,
    });
    if (setup !== 0) return setup;

    step(2, 'building the diagnostic SSDT');
    const ssdt = buildDiagSsdt({ kernelPeriodMs: PERIOD_MS });
    const amlPath = join(dir, 'eve-diag-ssdt.aml');
    const layoutPath = join(dir, 'eve-diag-ssdt.json');
    await writeFile(amlPath, ssdt.aml);
    await writeFile(layoutPath, JSON.stringify(ssdt.layout, null, 2));
    await writeFile(join(dir, 'eve-diag-ssdt.asl'), definitionBlockAsl(ssdt.block));
    info(`${amlPath}: ${ssdt.aml.length} bytes, kernel zone ${ssdt.layout.kernel.zone} every ${PERIOD_MS} ms, agent zone ${ssdt.layout.agent.zone}`);

    step(3, 'building the demo VM (Debian kernel + busybox initramfs)');
    const image = await buildGuestImage();
    info(`guest kernel ${image.release}: ${await bzImageVersion(image.kernel)}`);
    info(`kernel ${image.kernel}, initramfs ${image.initrd}`);

    step(4, 'booting it under QEMU (q35, SeaBIOS, TCG) with the injected flags');
    const qmpPath = join(dir, 'qmp.sock');
    const consPath = join(dir, 'cons.sock');
    const logPath = join(dir, 'console.log');
    // The same flags `eve-diag qemu-args` prints.
    const injected = qemuArgv({ acpiTable: amlPath, qmp: { path: qmpPath }, console: { path: consPath, logfile: logPath } });
    info(`injected (eve-diag qemu-args): ${renderShell({ acpiTable: amlPath, qmp: { path: qmpPath }, console: { path: consPath, logfile: logPath } })}`);
    const append = 'console=ttyS0 quiet eve_diag.scenario=read-agent-zone eve_diag.zone_path=/sys/class/thermal/thermal_zone1/temp eve_diag.period=1';
    const args = ['-accel', 'tcg', '-M', 'q35', '-m', '512', '-smp', '1', '-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot',
      '-kernel', image.kernel, '-initrd', image.initrd, '-append', append, ...injected];
    qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    qemu.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    info(`QEMU pid ${qemu.pid}`);
    const bootStart = performance.now();
    const { readFile } = await import('node:fs/promises');
    for (;;) {
      if (qemu.exitCode !== null) throw new Error(`QEMU exited (${qemu.exitCode}): ${stderr.trim()}`);
      const log = await readFile(logPath, 'utf8').catch(() => '');
      if (log.includes(GUEST_READY_LINE)) break;
      if (performance.now() - bootStart > 90_000) throw new Error('the demo VM did not boot within 90 s');
      await sleep(200);
    }
    info(`guest init running after ${((performance.now() - bootStart) / 1000).toFixed(1)} s`);

    step(5, 'live heartbeat view: the kernel beats with no agent; a reader in the guest drives the agent zone');
    session = await openSession({ qmpPath, layout: ssdt.layout });
    const timeline: TimelineSample[] = [];
    for (let i = 0; i < 14; i++) {
      const p = await session.poller.poll();
      timeline.push(...timelineOf(p, Date.now()));
      if (i === 0 && p.snapshot) {
        info(`table found at guest physical 0x${p.snapshot.address.toString(16)} in ${p.snapshot.discovery?.ms.toFixed(0)} ms (${p.snapshot.discovery?.reads} pmemsave reads), checksum ${p.snapshot.checksumOk ? 'valid' : 'INVALID'}`);
      }
      info(line(p));
      await sleep(500);
    }

    step(6, 'making the guest kernel panic (echo c > /proc/sysrq-trigger on its console)');
    await new Promise<void>((resolve, reject) => {
      const s = connect(consPath, () => s.end('echo c > /proc/sysrq-trigger\n', () => resolve()));
      s.on('data', () => undefined); // keep reading while connected (DESIGN fact 8)
      s.on('error', reject);
    });
    const panicAt = performance.now();
    let verdict: Poll | undefined;
    let panicLine = '';
    while (performance.now() - panicAt < 30_000) {
      const p = await session.poller.poll();
      timeline.push(...timelineOf(p, Date.now()));
      info(line(p));
      if (!panicLine) {
        const log = await readFile(logPath, 'utf8').catch(() => '');
        panicLine = /Kernel panic[^\r\n]*/.exec(log)?.[0] ?? '';
        if (panicLine) info(`console: ${panicLine}`);
      }
      if (p.report.kernel.status === 'stalled') {
        verdict = p;
        break;
      }
      await sleep(500);
    }
    console.log('');
    if (!verdict) {
      console.log('verdict: the kernel heartbeat did not stall within 30 s: unexpected');
      return 1;
    }
    const k = verdict.report.kernel;
    console.log(
      `verdict: guest kernel stopped ${((performance.now() - panicAt) / 1000).toFixed(1)} s after the panic: ` +
        `kernel heartbeat ${k.status} (no beat for ${((k.ageMs ?? 0) / 1000).toFixed(1)} s, period ${k.expectedPeriodMs} ms), ` +
        `while QEMU reports the VM as "${verdict.report.vm.status}".`,
    );
    console.log(`         ${k.detail}`);

    // The monitor's part after a verdict: its collectors write the report bundle into the spool.
    step(7, 'diagnostics: the console log, the vCPU registers and the host state into a report bundle');
    await session.close(); // QEMU serves one QMP client: the collectors connect on their own
    session = undefined;
    const target = { name: 'demo-vm', qmp: qmpPath, consoleLog: logPath, ...(qemu.pid !== undefined ? { pid: qemu.pid } : {}) };
    const run = await runDiagnostics(
      target,
      [new ConsoleCaptureCollector(), new HmpRegistersCollector(), new HostStateCollector()].map((collector) => ({ collector, timeoutMs: 20_000, maxBytes: 4 * 1024 * 1024 })),
      {},
    );
    for (const st of run.steps) info(`${st.kind.padEnd(16)} ${st.status.padEnd(8)} ${st.summary}`.trimEnd());
    const spool = new Spool({ dir: join(dir, 'spool') });
    const bundle = await spool.write({
      app: target.name,
      verdict: 'guest-kernel-hung',
      timeline,
      evidence: {
        reason: `kernel heartbeat ${k.status}: ${k.detail}`, kernelHeartbeat: { status: k.status, ageMs: k.ageMs ?? null, expectedPeriodMs: k.expectedPeriodMs ?? null }, vmStatus: verdict.report.vm.status ?? null },
      steps: run.steps,
    });
    info(`bundle ${bundle.id} in the spool (${bundle.dir})`);

    step(8, 'shipping it to a controller (SQLite in the temporary directory) and analyzing it');
    store = await openStore({ data: join(dir, 'controller') });
    controller = await createController({ store, worker: true, pollMs: 100 });
    const { url } = await controller.listen('127.0.0.1', 0);
    const nodeToken = newToken();
    const adminToken = newToken();
    await store.addToken(hashToken(nodeToken), 'node', (await store.nodeId('demo-node')) as number, 'demo node');
    await store.addToken(hashToken(adminToken), 'admin', null, 'demo admin');
    info(`controller on ${url}`);
    const shipper = new Shipper({ spool, client: new ControllerClient({ url, token: nodeToken }), log: (r) => info(`shipper: ${r.msg}`) });
    await shipper.runOnce();
    info(`delivered: ${(await spool.entries()).filter((e) => e.delivered).length} of 1 bundle, acknowledged with its hashes`);
    const [row] = await store.listReports({ limit: 1 });
    if (row === undefined) throw new Error('the controller has no report after delivery');
    const analyzedBy = performance.now() + 30_000;
    const pendingJobs = async () => {
      const n = await (store as Store).jobCounts();
      return (n['queued'] ?? 0) + (n['running'] ?? 0);
    };
    while ((await pendingJobs()) > 0 && performance.now() < analyzedBy) await sleep(100);
    const findings = await store.findings(row.key);
    console.log('');
    console.log(`findings of the analyzers (${findings.length}):`);
    for (const f of findings) {
      console.log(`  ${f.severity.toUpperCase().padEnd(8)} ${f.title}   [${f.analyzer}]`);
      const trace = /Call trace: [^\n]*/.exec(f.explanation)?.[0];
      if (trace !== undefined) console.log(`           ${trace.slice(0, 200)}`);
    }
    console.log('');
    console.log(`dashboard: ${url}/reports/${row.key}  (log in at ${url}/login with the admin token ${adminToken})`);
    if (keep) {
      await stopQemu(); // the VM is done with; the controller stays
      console.log(`--keep: QEMU ${qemu.pid ?? ''} stopped; the controller keeps running; Ctrl-C stops it.`);
      await new Promise(() => undefined); // until SIGINT/SIGTERM (onSignal cleans up)
    }
    return findings.some((f) => /^Kernel panic/.test(f.title)) ? 0 : 1;
  } finally {
    await session?.close().catch(() => undefined);
    await stopController();
    const pid = qemu?.pid;
    await stopQemu();
    await rm(dir, { recursive: true, force: true });
    console.log(`\n[done] QEMU ${pid ?? ''} stopped, temp files removed; ${since().trim()} in all.`);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`eve-diag demo: ${(e as Error).message}`);
    process.exit(1);
  },
);
