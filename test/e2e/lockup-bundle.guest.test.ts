import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { guestKernel } from '../../build/kernels.js';
import { GdbClient } from '../../host-reader/gdb/client.js';
import type { GdbStacksReport } from '../../monitor/diagnostics/gdb-stacks.js';
import { launchGuest, stopAllGuests } from '../helpers/guest.js';
import { killMonitors, startMonitor } from '../helpers/monitor-cli.js';
import { kallsymsDiskArgs, makeKallsymsDisk, systemMapFromGuest } from '../helpers/system-map.js';

/**
 * Issue 12's "done when": the bundle of a hard lockup holds symbolized stacks of every vCPU. A Debian
 * 6.1 guest with our table, its gdbstub and its ERST; `eve-diag monitor` (the compiled CLI) with the
 * kernel heartbeat and a diagnostic chain of console-capture, gdb-stacks and erst-log; the guest's one
 * vCPU spins in the kernel with interrupts off (`cli; jmp .` written at ksys_sync, then `sync`: QEMU
 * keeps saying `running`). The monitor says guest-kernel-hung, and the bundle in its spool holds the
 * vCPU at ksys_sync by symbol, the pause the attach cost, and the VM running again.
 */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-e2e-lockup-'));
});
afterAll(async () => {
  killMonitors();
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

describe('hard lockup -> monitor -> bundle with symbolized stacks', () => {
  test('gdb-stacks in the bundle: the vCPU at ksys_sync, interrupts off; the VM running after', async () => {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
    await writeFile(join(dir, 't.aml'), aml);
    await writeFile(join(dir, 't.json'), JSON.stringify(layout));
    const disk = join(dir, 'kallsyms.img');
    await makeKallsymsDisk(disk);
    const gdbSock = join(dir, 'gdb.sock');
    const erst = join(dir, 'erst.img');
    const guest = await launchGuest({
      kernel: await guestKernel('debian-6.1'),
      acpiTables: [join(dir, 't.aml')],
      append: 'quiet',
      modules: ['virtio_blk', 'virtio_pci'],
      extraArgs: [
        '-chardev', `socket,id=evediag-gdb,path=${gdbSock},server=on,wait=off`, '-gdb', 'chardev:evediag-gdb',
        '-object', `memory-backend-file,id=erstnvram,mem-path=${erst},size=0x10000,share=on`, '-device', 'acpi-erst,memdev=erstnvram',
        ...kallsymsDiskArgs(disk),
      ],
      bootTimeoutMs: 180_000,
    });
    const { runtime, systemMap } = await systemMapFromGuest(guest, disk, join(dir, 'System.map'));
    const spool = join(dir, 'spool');
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${spool} }
apps:
  - name: vm1
    transports: { qmp: ${guest.qmpPath}, consoleLog: ${guest.consoleLogPath}, layout: ${join(dir, 't.json')}, gdb: ${gdbSock}, systemMap: ${systemMap}, erst: ${erst} }
    scenarios:
      - { name: kernel, probe: { type: kernel-heartbeat }, periodSeconds: 1, timeoutSeconds: 1 }
    diagnostics:
      collectors:
        - { type: console-capture, timeoutSeconds: 5 }
        - { type: gdb-stacks, timeoutSeconds: 20 }
        - { type: erst-log, timeoutSeconds: 5 }
`,
    );
    const m = startMonitor(config);
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'running-healthy', 90_000);

    const gdb = await GdbClient.connect({ path: gdbSock });
    try {
      await gdb.writeMemory(runtime.address('ksys_sync') as bigint, Buffer.from([0xfa, 0xeb, 0xfe])); // cli; jmp .
      await gdb.detach();
    } finally {
      await gdb.close();
    }
    guest.run('sync', 5000).catch(() => undefined); // never answers: the only vCPU spins
    await m.waitFor((l) => l.msg === 'verdict' && l['verdict'] === 'guest-kernel-hung', 30_000);
    const done = await m.waitFor((l) => l.msg === 'diagnostics done', 60_000);
    const bundle = String(done['report']);
    expect(bundle.startsWith(spool)).toBe(true);

    const manifest = JSON.parse(await readFile(join(bundle, 'manifest.json'), 'utf8')) as { verdict: string; steps: { kind: string; ok: boolean; summary: string; artifacts: { name: string; file: string }[] }[] };
    expect(manifest.verdict).toBe('guest-kernel-hung');
    const step = manifest.steps.find((s) => s.kind === 'gdb-stacks');
    expect(step, JSON.stringify(manifest.steps)).toMatchObject({ ok: true });
    const file = (name: string) => join(bundle, step?.artifacts.find((a) => a.name === name)?.file ?? `(no ${name})`);
    const report = JSON.parse(await readFile(file('gdb-stacks.json'), 'utf8')) as GdbStacksReport;
    const text = await readFile(file('gdb-stacks.txt'), 'utf8');
    console.log(`[e2e lockup] ${step?.summary}\n${text}`);
    expect(report.vcpus).toHaveLength(1);
    for (const v of report.vcpus) expect(v.rip?.symbol, text).toBeDefined();
    expect(report.vcpus[0]).toMatchObject({ mode: 'kernel', interrupts: 'off' });
    expect(report.vcpus[0]?.rip?.symbol).toMatch(/^ksys_sync\+0x1\//);
    expect(report.vcpus[0]?.frames?.some((f) => /^(__x64_sys_sync|__do_sys_sync|do_syscall_64)\+/.test(f.symbol ?? ''))).toBe(true);
    expect(report.pauseMs).toBeLessThan(1000); // measured; the target is 200 ms, a loaded CI host gets slack
    expect(report.runState).toMatchObject({ before: 'running', after: 'running' });
    // The ERST store is empty (no panic): the step says so, and is no failure.
    expect(manifest.steps.find((s) => s.kind === 'erst-log')).toMatchObject({ ok: true });

    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    await guest.stop();
  });
});
