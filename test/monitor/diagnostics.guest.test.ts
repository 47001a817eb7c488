import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ConsoleCaptureCollector,
  HmpRegistersCollector,
  HostStateCollector,
  QmpStateCollector,
  runDiagnostics,
  SysrqCollector,
  type HostAppTarget,
  type HostState,
} from '../../monitor/diagnostics/index.js';
import { buildGuestImage, GUEST_READY_LINE } from '../../build/guest-image.js';
import { findConsoleChardev } from '../../host-reader/console/index.js';
import { listSpool, readManifest, writeBundle } from '../../monitor/report/index.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import type { Artifact, CollectorResult } from '../../monitor/types.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * The diagnostic scenario against a real guest (issue "Monitor", part 4): Debian's kernel in QEMU TCG whose
 * userspace was stopped (`kill -STOP -1`: the console shell is frozen, only the kernel answers). SysRq
 * reaches it through the console BREAK (EVE's mux console, Ctrl-A b) and through QMP send-key; QEMU's and
 * the host's view of the VM are collected; the bundle is written and validated.
 *
 * The launcher's run() would hold the console socket (QEMU serves one client at a time): it is not used
 * here, so the socket is free for the sender, except in the test that holds it on purpose.
 */

let spoolRoot: string;
beforeAll(async () => {
  spoolRoot = await mkdtemp(join(tmpdir(), 'eve-diag-diagnostics-guest-'));
});
afterAll(async () => {
  await stopAllGuests();
  await rm(spoolRoot, { recursive: true, force: true });
});

const opts = (maxBytes = 1024 * 1024, timeoutMs = 60_000) => ({ timeoutMs, signal: new AbortController().signal, maxBytes });
const text = (r: CollectorResult, name: string): string => {
  const a: Artifact | undefined = r.artifacts.find((x) => x.name === name);
  if (a === undefined) throw new Error(`no artifact ${name} in ${r.artifacts.map((x) => x.name).join(', ')}: ${r.summary}`);
  return typeof a.data === 'string' ? a.data : Buffer.from(a.data).toString('utf8');
};

describe('diagnostics on a guest whose userspace is stopped', () => {
  let guest: Guest;
  let target: HostAppTarget;
  beforeAll(async () => {
    guest = await launchGuest({ append: 'eve_diag.scenario=stop-userspace eve_diag.delay=2' });
    target = {
      name: 'diag-guest',
      qmp: guest.qmpPath,
      console: guest.consolePath,
      consoleLog: guest.consoleLogPath,
      consoleMux: true,
    };
    // The scenario stops userspace 2 s after the ready line.
    await new Promise((r) => setTimeout(r, 3500));
  });
  afterAll(async () => {
    await guest?.stop();
  });

  test('SysRq w t through the console BREAK (mux Ctrl-A b), read back from the logfile', async () => {
    const r = await new SysrqCollector({ keys: 'wt', method: 'break' }).collect(target, opts());
    console.log(`break: ${r.summary}`);
    expect(r.ok, r.summary).toBe(true);
    expect(r.summary).toMatch(/via break \(mux Ctrl-A b\)/);
    expect(text(r, 'sysrq-w.txt')).toMatch(/sysrq: Show Blocked State/);
    const t = text(r, 'sysrq-t.txt');
    expect(t).toMatch(/sysrq: Show State/);
    // The frozen userspace shows in the task dump: the shell and init's children are stopped (state T).
    expect(t).toMatch(/task:sh\s+state:T/);
    expect(t.includes('\r') || t.includes('\x1b')).toBe(false);
  });

  test('SysRq w t through QMP send-key', async () => {
    const r = await new SysrqCollector({ keys: 'wt', method: 'send-key' }).collect(target, opts());
    console.log(`send-key: ${r.summary}`);
    expect(r.ok, r.summary).toBe(true);
    expect(text(r, 'sysrq-w.txt')).toMatch(/sysrq: Show Blocked State/);
    expect(text(r, 'sysrq-t.txt')).toMatch(/sysrq: Show State/);
  });

  test('a console held by another client (an open `eve app console`): QMP sees it, send-key is used instead', async () => {
    const holder: Socket = connect(guest.consolePath);
    await new Promise<void>((resolve, reject) => holder.once('connect', resolve).once('error', reject));
    holder.resume(); // a well-behaved console client keeps reading
    try {
      // QEMU accepts the client from its main loop: wait until query-chardev shows it connected.
      const qmp = await QmpClient.connect({ path: guest.qmpPath });
      try {
        for (let i = 0; (await findConsoleChardev(qmp, guest.consolePath))?.connected !== true; i++) {
          if (i > 50) throw new Error('QEMU never reported the console client');
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await qmp.close();
      }
      const r = await new SysrqCollector({ keys: 'w' }).collect(target, opts());
      console.log(`held console: ${r.summary}`);
      expect(r.ok, r.summary).toBe(true);
      expect(r.summary).toMatch(/via send-key.*held by another client/);
      const strict = await new SysrqCollector({ keys: 'w', method: 'break', fallbackToSendKey: false }).collect(target, opts());
      expect(strict.ok).toBe(false);
      expect(strict.summary).toMatch(/already has a client/);
    } finally {
      holder.destroy();
    }
  });

  test('the whole scenario: console, SysRq, QMP state, registers, host state; then the bundle', async () => {
    const run = await runDiagnostics(
      target,
      [
        { collector: new ConsoleCaptureCollector(), timeoutMs: 5000, maxBytes: 256 * 1024 },
        { collector: new SysrqCollector({ keys: 'wm' }), timeoutMs: 30_000, maxBytes: 512 * 1024 },
        { collector: new QmpStateCollector(), timeoutMs: 5000, maxBytes: 64 * 1024 },
        { collector: new HmpRegistersCollector(), timeoutMs: 5000, maxBytes: 64 * 1024 },
        { collector: new HostStateCollector(), timeoutMs: 5000, maxBytes: 64 * 1024 },
      ],
      { totalBudgetMs: 60_000 },
    );
    for (const s of run.steps) console.log(`${s.kind} ${s.status} ${s.ok ? 'ok' : 'FAILED'} ${Math.round(s.durationMs)} ms: ${s.summary}`);
    expect(run.steps.map((s) => [s.kind, s.ok])).toEqual([
      ['console-capture', true],
      ['sysrq', true],
      ['qmp-state', true],
      ['hmp-registers', true],
      ['host-state', true],
    ]);
    const [consoleStep, sysrqStep, qmpStep, regsStep, hostStep] = run.steps as unknown as [CollectorResult, CollectorResult, CollectorResult, CollectorResult, CollectorResult];
    expect(text(consoleStep, 'console.txt')).toMatch(/EVE-DIAG-GUEST-READY/);
    expect(text(sysrqStep, 'sysrq-m.txt')).toMatch(/sysrq: Show Memory/);

    const status = JSON.parse(text(qmpStep, 'qmp-query-status.json')) as { return: { status: string; running: boolean } };
    expect(status.return).toMatchObject({ status: 'running', running: true }); // QEMU sees nothing wrong: only the guest knows
    const cpus = JSON.parse(text(qmpStep, 'qmp-query-cpus-fast.json')) as { return: { 'thread-id': number }[] };
    expect(cpus.return).toHaveLength(1);
    expect(JSON.parse(text(qmpStep, 'qmp-query-blockstats.json'))).toMatchObject({ command: 'query-blockstats' });

    const regs = text(regsStep, 'registers.txt');
    expect(regs).toMatch(/^CPU#0$/m);
    expect(regs).toMatch(/RIP=[0-9a-f]{16}/);

    const host = JSON.parse(text(hostStep, 'host-state.json')) as HostState;
    expect(host.qemu).toMatchObject({ pid: guest.pid, foundBy: 'cmdline', vcpuSource: 'qmp' });
    // The launcher does not pass `-name debug-threads=on`, so the vCPU thread is known by its id only.
    expect(host.qemu?.vcpus.map((t) => t.tid)).toEqual([cpus.return[0]?.['thread-id']]);
    expect(host.qemu?.vcpus[0]?.cpuPercent).toBeGreaterThanOrEqual(0);

    const spool = join(spoolRoot, 'spool');
    const bundle = await writeBundle(spool, {
      app: target.name,
      verdict: 'guest-userspace-hung',
      evidence: { scenario: 'stop-userspace', qemuStatus: status.return.status },
      timeline: [{ at: Date.now() - 1000, kernel: 'alive', agent: 'stalled' }],
      steps: run.steps,
    });
    const manifest = await readManifest(bundle.dir); // validates the schema, sizes and hashes
    expect(manifest.steps.map((s) => s.artifacts.map((a) => a.file))).toEqual([
      ['00-console.txt'],
      ['01-sysrq-w.txt', '01-sysrq-m.txt'],
      ['02-qmp-query-status.json', '02-qmp-query-cpus-fast.json', '02-qmp-query-blockstats.json'],
      ['03-registers.txt'],
      ['04-host-state.json'],
    ]);
    expect(await readFile(join(bundle.dir, '01-sysrq-w.txt'), 'utf8')).toMatch(/sysrq: Show Blocked State/);
    expect((await listSpool(spool)).map((e) => e.id)).toEqual([bundle.id]);
    console.log(`bundle ${bundle.id}: ${manifest.totalBytes} bytes in ${manifest.steps.reduce((n, s) => n + s.artifacts.length, 0)} files`);
  });
});

describe('a plain (non-mux) console chardev', () => {
  // The launcher's console is a mux chardev, and the 8250 console can be one port only (console=ttyS0
  // console=ttyS1 enabled only ttyS0 here), so this QEMU is started here, with ttyS0 on a plain socket.
  let qemu: ChildProcess | undefined;
  let target: HostAppTarget;
  beforeAll(async () => {
    const image = await buildGuestImage();
    const dir = join(spoolRoot, 'plain');
    await mkdir(dir, { mode: 0o700 });
    target = {
      name: 'plain-console',
      qmp: join(dir, 'qmp.sock'),
      console: join(dir, 'cons.sock'),
      consoleLog: join(dir, 'console.log'),
      consoleMux: false,
    };
    qemu = spawn(
      'qemu-system-x86_64',
      [
        ...['-accel', 'tcg', '-M', 'q35', '-m', '512', '-smp', '1', '-display', 'none', '-no-user-config', '-nodefaults', '-no-reboot'],
        ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', 'console=ttyS0'],
        ...['-qmp', `unix:${target.qmp as string},server=on,wait=off`],
        ...['-chardev', `socket,id=plain,path=${target.console as string},server=on,wait=off,logfile=${target.consoleLog as string}`],
        ...['-serial', 'chardev:plain'],
      ],
      { stdio: 'ignore' },
    );
    const child = qemu;
    process.once('exit', () => child.kill('SIGKILL')); // backstop if this worker dies before afterAll
    const deadline = Date.now() + 60_000;
    while (!(await readFile(target.consoleLog as string, 'utf8').catch(() => '')).includes(GUEST_READY_LINE)) {
      if (qemu.exitCode !== null || qemu.signalCode !== null || Date.now() > deadline) throw new Error(`the plain-console guest did not boot (exit ${String(qemu.exitCode)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  afterAll(async () => {
    if (qemu !== undefined && qemu.exitCode === null && qemu.signalCode === null) {
      const exited = new Promise((r) => qemu?.once('exit', r));
      qemu.kill('SIGKILL');
      await exited;
    }
  });

  test('QMP chardev-send-break on the chardev found by its socket path, then the key on the socket', async () => {
    const r = await new SysrqCollector({ keys: 'w', method: 'break' }).collect(target, opts());
    console.log(`plain: ${r.summary}`);
    expect(r.ok, r.summary).toBe(true);
    expect(r.summary).toMatch(/via break \(chardev-send-break\)/);
    expect(text(r, 'sysrq-w.txt')).toMatch(/sysrq: Show Blocked State/);
  });
});
