import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { GUEST_KERNEL_SERIES, guestKernel, type GuestKernel, type GuestKernelName } from '../../build/kernels.js';
import { PmemsaveMemory } from '../../host-reader/memory/pmemsave.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { RegionReader } from '../../host-reader/reader.js';
import { delta32 } from '../../host-reader/region/assess.js';
import { intervalsNewestFirst } from '../../host-reader/region/decode.js';
import { expectCleanDmesg } from '../helpers/dmesg.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * The diagnostic SSDT in real guests: Debian's kernels (bookworm's 6.1 and bookworm-backports' 6.12, whose
 * thermal code differs: issue 8), QEMU TCG, our table via -acpitable, real QMP. Checked from inside
 * (sysfs, dmesg) and from the host (pmemsave at the address found by a scan).
 */
const kernels: GuestKernelName[] = ['debian-6.1', 'debian-6.12'];

const configs = [
  // The long run: at least 60 s with no thermal action, and the period/jitter numbers we report.
  { machine: 'q35', firmware: 'seabios', periodMs: 1000, runMs: 62_000 },
  { machine: 'q35', firmware: 'ovmf', periodMs: 500, runMs: 8_000 },
  // 20 s: enough 2 s beats to see 6.12's rounding to whole seconds in the ring.
  { machine: 'pc', firmware: 'seabios', periodMs: 2000, runMs: 20_000 },
] as const;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-ssdt-guest-'));
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

let guest: Guest | undefined;
let qmp: QmpClient | undefined;
let memory: PmemsaveMemory | undefined;
afterEach(async () => {
  await qmp?.close().catch(() => undefined);
  await memory?.close();
  await guest?.stop();
  qmp = memory = guest = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(kernels)('kernel %s', (kernelName) => {
  let kernel: GuestKernel;
  beforeAll(async () => {
    kernel = await guestKernel(kernelName);
    expect(kernel.release.startsWith(GUEST_KERNEL_SERIES[kernelName]), kernel.release).toBe(true);
  }, 600_000);

  describe.each(configs)('diagnostic SSDT on $machine + $firmware, period $periodMs ms', (c) => {
    test('zones registered with one trip, kernel heartbeat at the period, agent beat per read, checksum valid, clean dmesg', async () => {
      const { aml, layout } = buildDiagSsdt({ nonce: 0x5eed_0000n + BigInt(c.periodMs), kernelPeriodMs: c.periodMs });
      const tableFile = join(dir, `${c.machine}-${c.firmware}.aml`);
      await writeFile(tableFile, aml);
      guest = await launchGuest({ kernel, machine: c.machine, firmware: c.firmware, acpiTables: [tableFile], append: 'quiet' });
      expect(await guest.run('uname -r')).toBe(kernel.release);
      qmp = await QmpClient.connect({ path: guest.qmpPath });
      memory = await PmemsaveMemory.open(qmp);
      const reader = new RegionReader(qmp, memory, layout);

      // Inside: both zones registered, found by their ACPI path; _TMP reads 25 C.
      const zones = await guest.run('for z in /sys/class/thermal/thermal_zone*; do echo "$z $(cat $z/device/path) $(cat $z/type)"; done');
      const byPath = new Map(zones.split('\n').map((l) => l.trim().split(' ')).map(([z, p]) => [p, z]));
      const kernelZone = byPath.get(layout.kernel.zone);
      const agentZone = byPath.get(layout.agent.zone);
      expect(kernelZone, zones).toBeDefined();
      expect(agentZone, zones).toBeDefined();
      // Each zone has exactly one trip, the _HOT the kernel accepted (a rejected one reads as no trip at all
      // on 6.12: issue 8).
      for (const z of [kernelZone, agentZone]) {
        const trips = await guest.run(`for t in ${z}/trip_point_*_type; do echo "$t $(cat $t) $(cat \${t%_type}_temp)"; done`);
        expect(trips.split('\n').map((l) => l.split(' ').slice(1).join(' ')), trips).toEqual([`hot ${(layout.temperature.hotDk - 2732) * 100}`]);
      }

      // Host: the table is found by a scan of low RAM, and the load marker is set.
      const first = await reader.read();
      expect(first.discovery).toBeDefined();
      expect(first.region.loadCount).toBe(1);
      expect(first.checksumOk).toBe(true);

      // Agent: exactly one beat per read of its zone.
      const before = (await reader.read()).region.agent.beats;
      const reads = 7;
      const temps = await guest.run(`for i in $(seq ${reads}); do cat ${agentZone}/temp; done`);
      expect(temps.split('\n')).toEqual(Array(reads).fill('25000'));
      const after = await reader.read();
      expect(delta32(before, after.region.agent.beats)).toBe(reads);

      // Kernel: beats keep coming at the period with the guest's userspace idle.
      const k0 = after.region.kernel;
      await sleep(c.runMs);
      const end = await reader.read();
      const k1 = end.region.kernel;
      const beats = delta32(k0.beats, k1.beats);
      const guestMsPerBeat = (delta32(k0.last, k1.last) / beats) * 1e-4;
      const hostExpected = c.runMs / c.periodMs;
      // The ring: the intervals recorded during the run (boot-time registration reads are older).
      const ring = intervalsNewestFirst(end.region)
        .slice(0, Math.min(layout.ring.length, beats - 1))
        .map((u) => u / 1e4);
      const mean = ring.reduce((a, b) => a + b, 0) / ring.length;
      const stddev = Math.sqrt(ring.reduce((a, b) => a + (b - mean) ** 2, 0) / ring.length);
      console.log(
        `[${kernel.release} ${c.machine}+${c.firmware}] table ${layout.table.length} B at 0x${end.address.toString(16)}; ` +
          `period ${c.periodMs} ms: ${beats} beats in ${c.runMs} ms host time (expected ~${hostExpected.toFixed(1)}), ` +
          `guest Timer ${guestMsPerBeat.toFixed(1)} ms/beat; ring of ${ring.length}: mean ${mean.toFixed(1)} ms, ` +
          `stddev ${stddev.toFixed(2)} ms, min ${Math.min(...ring)} max ${Math.max(...ring)}; ` +
          `discovery ${first.discovery?.ms.toFixed(0)} ms, ${first.discovery?.reads} reads`,
      );
      // TCG timing is loose: within 25 % of the configured period, by guest clock and by host clock.
      // Linux 6.12 also rounds a poll delay longer than one second to a whole second of jiffies
      // (thermal_core.c, thermal_zone_device_set_polling: round_jiffies_relative rounds the expiry down
      // when it is less than 250 ms past a second, else up): a 2 s period beats every 1.75..2.75 s.
      // 6.1 does not round (2016 ms); one second or less is never rounded (1024 ms on both).
      const rounding = kernelName === 'debian-6.12' && c.periodMs > 1000 ? 750 : 0;
      const [lo, hi] = [c.periodMs * 0.75, c.periodMs * 1.25 + rounding];
      expect(guestMsPerBeat).toBeGreaterThan(lo);
      expect(guestMsPerBeat).toBeLessThan(hi);
      expect(beats).toBeGreaterThanOrEqual(Math.floor((c.runMs / hi) * 0.9));
      expect(beats).toBeLessThanOrEqual(Math.ceil(hostExpected * 1.25) + 1);
      expect(ring.length).toBeGreaterThanOrEqual(Math.min(layout.ring.length, 3));
      for (const ms of ring) {
        expect(ms).toBeGreaterThan(lo);
        expect(ms).toBeLessThan(hi);
      }

      // The table in guest memory still sums to zero after all those writes; loaded once.
      expect(end.checksumOk).toBe(true);
      expect(end.region.loadCount).toBe(1);
      expect(end.region.armed & 1).toBe(1);

      // Inside again: no firmware complaint of any kind, no thermal action, still running.
      const dmesg = await expectCleanDmesg(guest);
      expect(dmesg).toContain('Thermal Zone [EDGK] (25 C)');
      expect(dmesg).toContain('Thermal Zone [EDGA] (25 C)');
      // A userspace read of the kernel zone works too (it adds an off-period beat, so it comes last).
      expect(await guest.run(`cat ${kernelZone}/temp`)).toBe('25000');
      expect((await qmp.queryStatus()).status).toBe('running');
      expect(await guest.run('echo alive')).toBe('alive');
    });
  });
});
