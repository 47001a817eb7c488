import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { eveDomPaths } from '../../host-reader/eve.js';
import { GdbClient } from '../../host-reader/gdb/client.js';
import { runCli } from '../helpers/cli.js';
import { EveClient } from '../helpers/eve-node.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';
import { killMonitors, startMonitor, type LogLine, type MonitorProcess } from '../helpers/monitor-cli.js';

/**
 * Issue 14 §2: a host laid out like an EVE node. The VM runs from an EVE-shaped `-readconfig` ini
 * (machine pc-q35-3.1, `<dom>/qmp` and `<dom>/listener.qmp`, `<dom>/cons` mux=on logging to QEMU's
 * stdout, `-pidfile <dom>/pid`, started with -S and `cont`), our flags added from `eve-diag qemu-args
 * --format readconfig`; an "EVE" client holds `listener.qmp` and connects to `qmp` per command. The
 * monitor runs with EVE autodiscovery and no per-app config: it finds the VM, says a panic and then (in
 * a restarted VM, same domain) a hard lockup, and EVE's commands keep succeeding throughout.
 */
const DOM = '3f0c7d2e-9b1a-4c55-8d6e-0a1b2c3d4e5f.1.1';
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-eve-node-'));
});
afterAll(async () => {
  killMonitors();
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

const HANG = new Set(['guest-kernel-hung', 'guest-panicked']);
const verdictAfter = (m: MonitorProcess, from: number, ok: (v: string) => boolean, ms: number): Promise<LogLine> => {
  const start = m.lines.length > from ? from : m.lines.length;
  return m.waitFor((l) => m.lines.indexOf(l) >= start && l.msg === 'verdict' && l['app'] === DOM && ok(String(l['verdict'])), ms);
};

describe('an EVE-shaped node', () => {
  test('autodiscovered VM: panic, then a hard lockup after EVE restarts it, each a hang verdict; EVE\'s QMP commands all succeed', async () => {
    const root = join(dir, 'kvm');
    const paths = eveDomPaths(DOM, root);
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 1000 });
    await writeFile(join(dir, 't.aml'), aml);
    await writeFile(join(dir, 'layout.json'), JSON.stringify(layout));
    // What an EVE build adds to its ini: our fragment, and the options its comment lists on the command line.
    const gdbSock = join(dir, 'gdb.sock');
    const r = await runCli('qemu-args', '--format', 'readconfig', '--table', join(dir, 't.aml'), '--gdb', gdbSock);
    expect(r.code, r.err).toBe(0);
    await writeFile(join(dir, 'eve-diag.ini'), r.out);
    const listed = r.out
      .split('\n')
      .filter((l) => l.startsWith('#   -'))
      .map((l) => l.slice(1).trim().split(' '));
    expect(listed.map((w) => w[0])).toEqual(['-acpitable', '-gdb']);
    const launch = () => launchGuest({ eve: { root, dom: DOM }, extraArgs: ['-readconfig', join(dir, 'eve-diag.ini'), ...listed.flat()], append: 'quiet' });

    let guest: Guest = await launch();
    let eve = await EveClient.start(paths, 500);
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${join(dir, 'spool')} }
defaults: { periodSeconds: 1, timeoutSeconds: 1 }
# EVE connects to qmp per command: the monitor lets go of it after 200 ms idle.
qmp: { holdSeconds: 0.2 }
eve: { autodiscover: true, root: ${root}, layout: ${join(dir, 'layout.json')} }
`,
    );
    const m = startMonitor(config);
    const heartbeatAlive = (from: number) => m.waitFor((l) => m.lines.indexOf(l) >= from && l.msg === 'scenario result' && l['app'] === DOM && l['scenario'] === 'kernel-heartbeat' && l['result'] === 'success', 90_000);
    await heartbeatAlive(0);
    await verdictAfter(m, 0, (v) => v === 'running-healthy', 30_000);

    // 1. A panic (no pvpanic on EVE: the kernel heartbeat says it).
    let from = m.lines.length;
    let t0 = Date.now();
    guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined);
    const panicked = await verdictAfter(m, from, (v) => HANG.has(v), 30_000);
    const panicMs = Date.now() - t0;

    // EVE restarts the app: QEMU goes, a new one comes on the same paths.
    await eve.stop();
    const before = { ok: eve.ok, failed: [...eve.failed], events: [...eve.events] };
    await guest.stop();
    from = m.lines.length;
    guest = await launch();
    eve = await EveClient.start(paths, 500);
    await heartbeatAlive(from);
    await verdictAfter(m, from, (v) => v === 'running-healthy', 30_000);

    // 2. A hard lockup: the one vCPU spins in the kernel with interrupts off (`cli; jmp .` at
    // ksys_sync, written through the gdbstub, then `sync`); QEMU keeps saying running.
    const sym = await guest.run("grep ' ksys_sync$' /proc/kallsyms");
    const addr = BigInt(`0x${sym.split(' ')[0] ?? ''}`);
    expect(addr > 0xffff_ffff_8000_0000n, sym).toBe(true);
    const gdb = await GdbClient.connect({ path: gdbSock });
    try {
      await gdb.writeMemory(addr, Buffer.from([0xfa, 0xeb, 0xfe]));
      await gdb.detach();
    } finally {
      await gdb.close();
    }
    from = m.lines.length;
    t0 = Date.now();
    guest.run('sync', 5000).catch(() => undefined);
    const locked = await verdictAfter(m, from, (v) => v === 'guest-kernel-hung', 30_000);
    const lockupMs = Date.now() - t0;
    await eve.stop();

    console.log(
      `[eve node] panic: ${String(panicked['verdict'])} in ${panicMs} ms (${String(panicked['reason'])}); ` +
        `lockup: ${String(locked['verdict'])} in ${lockupMs} ms (${String(locked['reason'])}); ` +
        `EVE's client: ${before.ok + eve.ok} commands ok, ${before.failed.length + eve.failed.length} failed, listener events ${[...new Set([...before.events, ...eve.events])].join(',')}`,
    );
    expect(before.failed).toEqual([]);
    expect(eve.failed).toEqual([]);
    expect(before.ok).toBeGreaterThanOrEqual(3);
    expect(eve.ok).toBeGreaterThanOrEqual(3);
    // The panic wrote a report (the lockup came within the diagnostics cooldown); its evidence says
    // the pid came from EVE's pidfile.
    const reports = m.lines.filter((l) => l.msg === 'diagnostics done' && l['app'] === DOM).map((l) => String(l['report']));
    expect(reports.length).toBeGreaterThanOrEqual(1);
    for (const r of reports) expect(await readFile(join(r, 'manifest.json'), 'utf8')).toContain(`from pidfile ${paths.pidfile}`);

    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    await guest.stop();
  });
});
