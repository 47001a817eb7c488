import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GUEST_KERNEL_SERIES, guestKernel, type GuestKernel } from '../../../build/kernels.js';
import { NmiCollector } from '../../../monitor/diagnostics/nmi.js';
import { pngSize, ScreendumpCollector } from '../../../monitor/diagnostics/screendump.js';
import type { AppTarget } from '../../../monitor/types.js';
import { launchGuest, stopAllGuests } from '../../helpers/guest.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

/**
 * What Debian's 6.1 kernel does with a QMP inject-nmi, and the screen of a VM with a VGA device, on one
 * boot (issue 12 §3): the screendump collector gets a PNG of the text console; an NMI on an idle guest is
 * an unknown NMI the kernel reports and survives ("Dazed and confused, but trying to continue"); with
 * kernel.unknown_nmi_panic=1 the same NMI panics it, and kernel.panic_print=64 makes the panic print every
 * CPU's backtrace (the last check: the guest is dead after it). Two vCPUs: the NMI reaches CPU 0 only.
 */

const temp = tempDirs('eve-diag-nmi-guest-');
let kernel: GuestKernel;
beforeAll(async () => {
  kernel = await guestKernel('debian-6.1');
  expect(kernel.release.startsWith(GUEST_KERNEL_SERIES['debian-6.1'])).toBe(true);
}, 600_000);
afterAll(stopAllGuests);

describe('nmi and screendump on a real guest (debian-6.1, QEMU 7.2)', () => {
  test('screendump of the VGA console; an unknown NMI survived; with unknown_nmi_panic=1 a panic', async () => {
    // The test guest has no display device (-nodefaults): give it a VGA card.
    const guest = await launchGuest({ kernel, memoryMiB: 256, cpus: 2, extraArgs: ['-device', 'VGA'], bootTimeoutMs: 180_000 });
    try {
      const target: AppTarget = { name: 'nmi-vm', qmp: guest.qmpPath, consoleLog: guest.consoleLogPath };
      const opts = () => ({ timeoutMs: 15_000, signal: new AbortController().signal, maxBytes: 256 * 1024 });

      const shot = await new ScreendumpCollector({ dir: temp() }).collect(target, opts());
      expect(shot.ok, shot.summary).toBe(true);
      const size = pngSize(shot.artifacts[0]?.data as Uint8Array);
      expect(size).toMatchObject({ width: expect.any(Number), height: expect.any(Number) });
      console.log(shot.summary);

      const nmi = new NmiCollector();
      const idle = await nmi.collect(target, opts());
      console.log(idle.summary);
      expect(idle.ok, idle.summary).toBe(true);
      expect(idle.summary).toMatch(/^nmi: injected; unknown NMI, the kernel carried on \(Dazed and confused\)/);
      expect(idle.artifacts[0]?.data).toMatch(/Uhhuh\. NMI received for unknown reason [0-9a-f]+ on CPU 0\./);
      expect(await guest.run('echo alive')).toBe('alive');
      // Only CPU 0 took it: QEMU raises LINT1 on every vCPU, and Linux leaves LINT1 unmasked on the boot CPU only.
      expect(await guest.run('grep -c ^processor /proc/cpuinfo')).toBe('2');
      expect(await guest.run('grep "^ *NMI:" /proc/interrupts')).toMatch(/^ *NMI: +1 +0 /);

      // panic_print bit 6: the panicking kernel asks every CPU for a backtrace (by NMI IPI, which reaches CPU 1).
      await guest.run('echo 1 > /proc/sys/kernel/unknown_nmi_panic; echo 64 > /proc/sys/kernel/panic_print');
      const panic = await nmi.collect(target, opts());
      console.log(panic.summary);
      expect(panic.ok, panic.summary).toBe(true);
      expect(panic.summary).toMatch(/^nmi: injected; the kernel panicked \(Kernel panic - not syncing: NMI: Not continuing\), with NMI backtraces; /);
      expect(panic.artifacts[0]?.data).toMatch(/NMI backtrace for cpu 1/);
    } finally {
      await guest.stop();
    }
  }, 240_000);
});
