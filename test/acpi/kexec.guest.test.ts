import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { buildGuestImage, GUEST_READY_LINE } from '../../build/guest-image.js';
import { guestKernel } from '../../build/kernels.js';
import { PmemsaveMemory } from '../../host-reader/memory/pmemsave.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { RegionReader } from '../../host-reader/reader.js';
import { delta32 } from '../../host-reader/region/assess.js';
import { expectCleanDmesg } from '../helpers/dmesg.js';
import { launchGuest, stopAllGuests } from '../helpers/guest.js';
import { kexecTool } from '../helpers/kexec.js';

/**
 * Issue 14 §1, DESIGN fact 6: a guest that kexecs into a second kernel. The first kernel's AML has
 * written the region (beats, pads) for a while; the second kernel finds the same table in memory
 * (kexec keeps the firmware's ACPI tables), its checksum still valid (no "Incorrect checksum"
 * warning), loads it again (load count 2, the load marker's module-level code) and beats again.
 */
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-kexec-'));
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('kexec into a second kernel', () => {
  test('the table survives with a valid checksum, loads again with a clean log, and the kernel heartbeat beats again', async () => {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 1000 });
    const table = join(dir, 't.aml');
    await writeFile(table, aml);
    const kernel = await guestKernel('debian-6.1');
    const second = await buildGuestImage({ kernel }); // the plain test image, booted by kexec
    const guest = await launchGuest({
      kernel,
      acpiTables: [table],
      append: 'quiet',
      files: [
        { path: 'kexec/vmlinuz', data: await readFile(kernel.vmlinuz) },
        { path: 'kexec/initrd.img', data: await readFile(second.initrd) },
        { path: 'bin/kexec-file', data: await kexecTool(), mode: 0o755 },
      ],
    });
    const qmp = await QmpClient.connect({ path: guest.qmpPath });
    const memory = await PmemsaveMemory.open(qmp);
    try {
      const reader = new RegionReader(qmp, memory, layout);
      const first = await reader.read();
      expect(first.region.loadCount).toBe(1);
      await sleep(3000);
      const before = await reader.read();
      expect(delta32(first.region.kernel.beats, before.region.kernel.beats)).toBeGreaterThanOrEqual(2);
      expect(before.checksumOk).toBe(true);

      const since = guest.consoleText().length;
      guest.run('kexec-file /kexec/vmlinuz /kexec/initrd.img "console=ttyS0 quiet"', 5000).catch(() => undefined); // never answers: the kernel is replaced
      await guest.waitForConsole(new RegExp(`${GUEST_READY_LINE}\\r?$`, 'm'), 60_000, since);
      expect(await guest.run('cat /proc/cmdline')).toBe('console=ttyS0 quiet');

      // Inside the second kernel: the table loaded with no checksum complaint, both zones registered.
      const dmesg = await expectCleanDmesg(guest);
      expect(dmesg).toContain('Thermal Zone [EDGK] (25 C)');
      expect(dmesg).not.toMatch(/Incorrect checksum/);
      // Host: the same table, loaded a second time, still summing to zero, beating again.
      const after = await reader.read();
      expect(after.address).toBe(before.address);
      expect(after.region.loadCount).toBe(2);
      expect(after.checksumOk).toBe(true);
      await sleep(3000);
      const later = await reader.read();
      const beats = delta32(after.region.kernel.beats, later.region.kernel.beats);
      console.log(
        `[kexec] table at 0x${after.address.toString(16)}: before kexec load count ${before.region.loadCount}, ${before.region.kernel.beats} beats; ` +
          `after: load count ${after.region.loadCount}, checksum ${after.checksumOk ? 'valid' : 'INVALID'}, ${beats} beats in 3 s`,
      );
      expect(beats).toBeGreaterThanOrEqual(2);
      expect(later.checksumOk).toBe(true);
    } finally {
      await memory.close();
      await qmp.close();
      await guest.stop();
    }
  });
});
