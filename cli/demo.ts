#!/usr/bin/env node
/**
 * `npm run demo`: the main job on an embedded demo VM. Builds the diagnostic SSDT and the demo VM
 * (Debian's kernel + a busybox initramfs), boots it under QEMU (TCG) with the injected flags, shows
 * the live heartbeat view, makes the guest kernel panic, shows the kernel heartbeat going stalled
 * and the verdict, and stops QEMU (by pid) whatever happens.
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
import { buildGuestImage, GUEST_READY_LINE } from './guest-image.js';
import { bzImageVersion } from './kernels.js';
import { executeSetup, machineState, planSetup } from './setup.js';
import { repoRoot } from '../util/repo-root.js';

const PERIOD_MS = 1000;
const t0 = performance.now();
const since = () => `${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s`;
const step = (n: number, text: string) => console.log(`\n[${n}/6] ${text}`);
const info = (text: string) => console.log(`      ${text}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

async function main(): Promise<number> {
  let qemu: ChildProcess | undefined;
  let session: Session | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-demo-'));
  const stopQemu = async () => {
    if (!qemu || qemu.exitCode !== null || qemu.signalCode !== null) return;
    const exited = new Promise((r) => qemu!.once('exit', r));
    qemu.kill('SIGTERM');
    const t = setTimeout(() => qemu?.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  const onSignal = () => {
    stopQemu().finally(() => process.exit(130)).catch(() => undefined);
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
    for (let i = 0; i < 14; i++) {
      const p = await session.poller.poll();
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
    return 0;
  } finally {
    await session?.close().catch(() => undefined);
    const pid = qemu?.pid;
    await stopQemu();
    await rm(dir, { recursive: true, force: true });
    console.log(`\n[done] QEMU ${pid ?? ''} stopped, temp files removed; ${since().trim()} in all.`);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`eve-diag demo: ${(e as Error).message}`);
    process.exit(1);
  },
);
