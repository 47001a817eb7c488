import { chown, copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { buildGuestImage, GUEST_READY_LINE } from '../../build/guest-image.js';
import { parseDomainXml } from '../../host-reader/libvirt/domain-xml.js';
import { runCli } from '../helpers/cli.js';
import { startLibvirtd, stopAllLibvirtd, type Libvirtd } from '../helpers/libvirtd.js';
import { killMonitors, startMonitor, type LogLine } from '../helpers/monitor-cli.js';

/**
 * Issue 14 §3: a libvirt domain. A real libvirtd (Debian's, session mode as nobody, on temporary
 * paths) runs a TCG domain whose XML carries `eve-diag qemu-args --format libvirt` (accepted by
 * `virsh define`); `eve-diag read --libvirt-domain` reads the table through libvirt's QMP and
 * procmem with libvirt's pidfile; the monitor, given only the domain, binds its console log from the
 * XML, says running-healthy, then a hang when libvirt injects an NMI into a guest booted with
 * unknown_nmi_panic (its report's QMP and HMP collectors through libvirt, as `eve-diag diagnose`'s),
 * then vm-not-running when the domain is destroyed. Between the two libvirtd restarts: the bridge
 * follows the new daemon and no verdict changes.
 */
const DOM = 'eve-diag-lv1';
let lv: Libvirtd;
beforeAll(async () => {
  lv = await startLibvirtd();
}, 90_000);
afterAll(async () => {
  killMonitors();
  await stopAllLibvirtd();
});

const HANG = new Set(['guest-kernel-hung', 'guest-panicked']);

async function waitFile(path: string, re: RegExp, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (re.test(await readFile(path, 'utf8').catch(() => ''))) return;
    if (Date.now() > end) throw new Error(`${path}: no ${re} within ${ms} ms:\n${(await readFile(path, 'utf8').catch(() => '')).slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** virsh processes following this daemon's events (`... --loop` with its socket in the URI). */
async function virshFollowers(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const cmd = (await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '')).split('\0').join(' ');
    if (cmd.includes('virsh') && cmd.includes('--loop') && cmd.includes(dir)) out.push(`${e}: ${cmd}`);
  }
  return out;
}

describe('a libvirt domain', () => {
  test('virsh define takes our fragment; read and the monitor reach the domain through libvirt; NMI panic → hang; destroy → not running', async () => {
    const dir = lv.dir;
    const image = await buildGuestImage({});
    // The domain's QEMU runs as nobody: its files go in the daemon's directory, owned by nobody.
    const files = { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd'), table: join(dir, 'ssdt.aml'), layout: join(dir, 'layout.json'), console: join(dir, 'console.log') };
    await copyFile(image.kernel, files.kernel);
    await copyFile(image.initrd, files.initrd);
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 1000 });
    await writeFile(files.table, aml);
    await writeFile(files.layout, JSON.stringify(layout));
    for (const f of [files.kernel, files.initrd, files.table]) await chown(f, 65534, 65534);

    const frag = await runCli('qemu-args', '--table', files.table, '--format', 'libvirt');
    expect(frag.code, frag.err).toBe(0);
    const xml = `<domain type="qemu" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
  <name>${DOM}</name>
  <memory unit="MiB">256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <kernel>${files.kernel}</kernel>
    <initrd>${files.initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=0 unknown_nmi_panic</cmdline>
  </os>
  <features><acpi/></features>
  <on_crash>preserve</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type="pty"><log file="${files.console}" append="on"/></serial>
    <console type="pty"/>
  </devices>
${frag.out}
</domain>
`;
    await writeFile(join(dir, 'domain.xml'), xml);
    await lv.virsh('define', '--file', join(dir, 'domain.xml'));
    const defined = await lv.virsh('dumpxml', '--domain', DOM);
    // Kept as given: libvirt drops a qemu:commandline it does not accept (a missing namespace) silently.
    expect(parseDomainXml(defined).qemuArgs).toEqual(['-acpitable', `file=${files.table}`]);
    await lv.virsh('start', '--domain', DOM);
    await waitFile(files.console, new RegExp(GUEST_READY_LINE), 120_000);
    const pidFile = join(dir, 'run', 'libvirt', 'qemu', 'run', `${DOM}.pid`);
    const qemuPid = Number((await readFile(pidFile, 'utf8')).trim());

    // read: the table through libvirt's QMP (discovery's HMP too) and QEMU's memory through /proc.
    const read = await runCli('read', '--libvirt-domain', DOM, '--libvirt-uri', lv.uri, '--layout', files.layout, '--json');
    expect(read.code, read.err).toBe(0);
    const r = JSON.parse(read.out) as { table: { checksumOk: boolean }; kernel: { status: string }; memory: { path: string; pid: number; note: string }; vm: { status: string } };
    expect(r.table.checksumOk).toBe(true);
    expect(r.kernel.status).toBe('alive');
    expect(r.vm.status).toBe('running');
    expect(r.memory).toMatchObject({ path: 'procmem', pid: qemuPid });
    expect(r.memory.note).toContain(pidFile);
    const watched = await runCli('watch', '--libvirt-domain', DOM, '--libvirt-uri', lv.uri, '--layout', files.layout, '--json', '--count', '4', '--interval', '700');
    expect(watched.code, watched.err).toBe(0);
    const polls = watched.out.trim().split('\n').map((l) => JSON.parse(l) as { kernel: { status: string }; memory: string });
    expect(polls.map((p) => p.memory)).toEqual(['procmem', 'procmem', 'procmem', 'procmem']);
    // Liveness needs a beat seen changing: within 2.1 s of polls at a 1 s period.
    expect(polls.map((p) => p.kernel.status)).toContain('alive');

    // The monitor: the domain named, nothing else; the console log comes from the XML.
    const config = join(dir, 'monitor.yaml');
    await writeFile(
      config,
      `spool: { dir: ${join(dir, 'spool')} }
defaults: { periodSeconds: 1, timeoutSeconds: 1 }
apps:
  - name: lv
    libvirt: { domain: ${DOM}, uri: "${lv.uri}" }
    transports: { layout: ${files.layout} }
    scenarios:
      - { name: run-state, probe: { type: qmp-status } }
      - { name: kernel, probe: { type: kernel-heartbeat } }
    diagnostics:
      collectors: [{ type: qmp-state }, { type: hmp-registers }]
`,
    );
    // The one-shot diagnose opens its own bridge: QMP and HMP through libvirt.
    const once = await runCli('diagnose', '--config', config, '--app', 'lv', '--json');
    expect(once.code, once.err).toBe(0);
    const onceSteps = (JSON.parse(once.out) as { manifest: { steps: { kind: string; ok: boolean; summary: string }[] } }).manifest.steps;
    expect(onceSteps.map((x) => [x.kind, x.ok]), JSON.stringify(onceSteps)).toEqual([
      ['qmp-state', true],
      ['hmp-registers', true],
    ]);
    const m = startMonitor(config);
    const verdict = (from: number, ok: (v: string) => boolean, ms: number): Promise<LogLine> =>
      m.waitFor((l) => m.lines.indexOf(l) >= from && l.msg === 'verdict' && l['app'] === 'lv' && ok(String(l['verdict'])), ms);
    const bound = await m.waitFor((l) => l.msg === 'libvirt: domain bound', 30_000);
    expect(bound).toMatchObject({ pidFile, consoleLog: files.console, scenarios: ['run-state', 'kernel'] });
    await m.waitFor((l) => l.msg === 'scenario result' && l['scenario'] === 'kernel' && l['result'] === 'success', 60_000);
    await verdict(0, (v) => v === 'running-healthy', 30_000);

    // libvirtd restarts (its domains run on): the bridge's virsh streams end and are started again;
    // the heartbeat (procmem, no libvirt) goes on, and no verdict changes.
    let from = m.lines.length;
    await lv.restart();
    const streamEnded = await m.waitFor((l) => m.lines.indexOf(l) >= from && typeof l.msg === 'string' && /stream: .*restarting in/.test(l.msg), 15_000);
    await new Promise((r) => setTimeout(r, 3000));
    expect(m.lines.slice(from).filter((l) => l.msg === 'verdict' && l['app'] === 'lv').map((l) => l['verdict'])).toEqual([]);
    expect((await lv.virsh('domstate', '--domain', DOM)).trim()).toBe('running');

    // A panic, by libvirt's own NMI (the guest booted with unknown_nmi_panic), through the new libvirtd.
    from = m.lines.length;
    const t0 = Date.now();
    await lv.virsh('inject-nmi', '--domain', DOM);
    const hung = await verdict(from, (v) => HANG.has(v), 30_000);
    const hangMs = Date.now() - t0;
    await waitFile(files.console, /Kernel panic - not syncing: NMI/, 10_000);
    // The report of the hang, its collectors through libvirt.
    const done = await m.waitFor((l) => m.lines.indexOf(l) >= from && l.msg === 'diagnostics done' && l['app'] === 'lv', 30_000);
    const manifest = JSON.parse(await readFile(join(String(done['report']), 'manifest.json'), 'utf8')) as { steps: { kind: string; ok: boolean; summary: string }[] };
    expect(manifest.steps.map((x) => [x.kind, x.ok]), JSON.stringify(manifest.steps)).toEqual([
      ['qmp-state', true],
      ['hmp-registers', true],
    ]);

    // Destroyed: libvirt's lifecycle event closes the bridge's connections; QEMU is gone.
    from = m.lines.length;
    const t1 = Date.now();
    await lv.virsh('destroy', '--domain', DOM);
    const gone = await verdict(from, (v) => v === 'vm-not-running', 30_000);
    const goneMs = Date.now() - t1;
    console.log(`[libvirt] read: ${r.memory.note}; libvirtd restarted: "${streamEnded.msg}", no verdict change; NMI panic → ${String(hung['verdict'])} in ${hangMs} ms (${String(hung['reason'])}); destroy → ${String(gone['verdict'])} in ${goneMs} ms`);

    m.child.kill('SIGTERM');
    expect(await m.exited).toBe(0);
    // The monitor's virsh event followers ended with it.
    expect(await virshFollowers(lv.dir)).toEqual([]);
  }, 240_000);
});
