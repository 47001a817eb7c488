import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUEST_KERNEL_SERIES, GUEST_KERNELS, guestKernel, type GuestKernel, type GuestKernelName } from '../../../build/kernels.js';
import { analyze, analyzeKernelText } from '../../../controller/analyzers/index.js';
import { readErst } from '../../../host-reader/erst/index.js';
import { qemuArgv } from '../../../host-reader/qemu-args/index.js';
import { ErstLogCollector } from '../../../monitor/diagnostics/erst-log.js';
import { runDiagnostics } from '../../../monitor/diagnostics/index.js';
import { Spool } from '../../../monitor/report/spool.js';
import type { AppTarget } from '../../../monitor/types.js';
import { bundleInput } from '../../helpers/fixtures.js';
import { launchGuest, stopAllGuests } from '../../helpers/guest.js';

/**
 * The panic log without the console (issue 12 §2): Debian's 6.1 kernel boots in QEMU (TCG) with the ERST
 * flags `qemu-args --erst FILE` prints; its pstore registers the ERST as its backend (built in, no module or
 * command line parameter needed); SysRq c panics it, pstore writes the compressed kernel log to the store,
 * and the erst-log collector reads it from FILE alone (the target has no console logfile), before and
 * after. The report bundle it makes is analyzed like the controller does: the panic is found in it.
 * One boot, of debian-6.1 (the kernel this was first verified on); EVE_DIAG_ERST_KERNEL=debian-6.12 boots
 * that one instead.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const kernelName = (process.env['EVE_DIAG_ERST_KERNEL'] ?? 'debian-6.1') as GuestKernelName;
if (!(kernelName in GUEST_KERNELS)) throw new Error(`EVE_DIAG_ERST_KERNEL: unknown kernel ${kernelName} (known: ${Object.keys(GUEST_KERNELS).join(', ')})`);

let work: string;
let kernel: GuestKernel;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'eve-diag-erst-guest-'));
  kernel = await guestKernel(kernelName);
  expect(kernel.release.startsWith(GUEST_KERNEL_SERIES[kernelName])).toBe(true);
}, 600_000);
afterAll(async () => {
  await stopAllGuests();
  await rm(work, { recursive: true, force: true });
});

/** The store's dump texts once they hold a panic and the file stopped changing (polled, bounded). */
async function waitForPanicInStore(file: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let previous: Buffer | undefined;
  for (;;) {
    const bytes = await readFile(file);
    const r = readErst(bytes);
    const panicked = r.errors.length === 0 && r.dumps.some((d) => d.text.includes('Kernel panic - not syncing'));
    if (panicked && previous?.equals(bytes) === true) return;
    previous = panicked ? bytes : undefined;
    if (Date.now() > deadline) throw new Error(`no panic in ${file} within ${timeoutMs} ms: ${JSON.stringify({ records: r.records.length, errors: r.errors.map((e) => e.message) })}`);
    await sleep(500);
  }
}

describe(`erst-log on a real guest (${kernelName}, QEMU acpi-erst)`, () => {
  test('SysRq c: pstore writes the panic to the ERST file, the collector and the kernel-log analyzer read it', async () => {
    const file = join(work, 'erst.bin');
    // Our own flags, less the -acpitable the spec requires (this guest needs no table).
    const argv = qemuArgv({ acpiTable: join(work, 'unused.aml'), erst: { path: file } });
    expect(argv.slice(0, 2)).toEqual(['-acpitable', `file=${join(work, 'unused.aml')}`]);
    const extraArgs = argv.slice(2);
    expect(extraArgs.join(' ')).toContain('acpi-erst');

    const guest = await launchGuest({ kernel, extraArgs, bootTimeoutMs: 180_000 });
    try {
      expect(await guest.run('dmesg | grep -c "pstore: Registered erst as persistent store backend"')).toBe('1');
      expect(await guest.run('cat /sys/module/pstore/parameters/backend')).toBe('erst');

      const target: AppTarget = { name: 'erst-vm', erst: file };
      const collector = new ErstLogCollector();
      const options = () => ({ timeoutMs: 10_000, signal: new AbortController().signal, maxBytes: 1024 * 1024 });
      const before = await collector.collect(target, options());
      expect(before).toMatchObject({ ok: true, summary: 'erst-log: no record in the ERST store (64.0 KiB)' });

      await guest.run('(sleep 1; echo c > /proc/sysrq-trigger) &');
      const t0 = Date.now();
      await waitForPanicInStore(file, 60_000);
      console.log(`[erst-log] panic in the ERST file ${Date.now() - t0} ms after SysRq c was sent`);

      const after = await collector.collect(target, options());
      console.log(`[erst-log] ${after.summary}`);
      expect(after.ok).toBe(true);
      expect(after.summary).toMatch(/^erst-log: \d+ record\(s\): Panic#1 \(\d+ part\(s\)/);
      const dmesg = after.artifacts.find((a) => a.name === 'pstore-dmesg.txt');
      expect(dmesg?.mediaType).toBe('text/plain');
      expect(String(dmesg?.data)).toContain('Kernel panic - not syncing: sysrq triggered crash');
      expect(String(dmesg?.data)).toContain(`Linux version ${kernel.release}`);
      const titles = analyzeKernelText(String(dmesg?.data), { file: 'pstore-dmesg.txt' }).map((f) => f.title);
      expect(titles).toContain('Kernel panic: sysrq triggered crash');
      const json = JSON.parse(String(after.artifacts.find((a) => a.name === 'erst-records.json')?.data)) as { records: { creator: string; compressed: boolean; compression: string; part: number }[] };
      console.log(`[erst-log] records: ${JSON.stringify(json.records.map((r) => [r.part, r.compression]))}`);
      expect(json.records.length).toBeGreaterThanOrEqual(1);
      expect(json.records.every((r) => r.creator === 'pstore' && r.compressed)).toBe(true);
      expect(json.records.map((r) => r.part)).toEqual(json.records.map((_, i) => i + 1));

      // The bundle as the monitor writes it, analyzed as the controller does: step kind erst-log is kernel text.
      const run = await runDiagnostics(target, [{ collector, timeoutMs: 10_000, maxBytes: 1024 * 1024 }], {});
      const bundle = await new Spool({ dir: join(work, 'spool') }).write({ app: target.name, verdict: 'guest-panicked', evidence: {}, steps: run.steps });
      const input = await bundleInput(bundle.dir);
      expect(input.artifacts.map((a) => [a.kind, a.name, a.mediaType])).toEqual([
        ['erst-log', 'pstore-dmesg.txt', 'text/plain'],
        ['erst-log', 'erst-records.json', 'application/json'],
      ]);
      const findings = await analyze(input);
      const panic = findings.find((f) => f.title === 'Kernel panic: sysrq triggered crash');
      expect(panic?.analyzer).toBe('kernel-log');
      expect(panic?.evidence[0]?.artifact).toMatch(/pstore-dmesg\.txt$/);
    } finally {
      await guest.stop();
    }
  }, 240_000);
});
