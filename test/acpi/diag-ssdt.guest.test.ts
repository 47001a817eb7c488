import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { GUEST_KERNEL_SERIES, guestKernel, type GuestKernel, type GuestKernelName } from '../../build/kernels.js';
import { GUEST_QEMU_SERIES, guestQemu, qemuVersion, type GuestQemuName, type QemuBuild } from '../../build/qemus.js';
import { PmemsaveMemory } from '../../host-reader/memory/pmemsave.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { RegionReader } from '../../host-reader/reader.js';
import { delta32 } from '../../host-reader/region/assess.js';
import { intervalsNewestFirst } from '../../host-reader/region/decode.js';
import { expectCleanDmesg } from '../helpers/dmesg.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * The diagnostic SSDT in real guests, on a matrix of Debian kernels (bookworm's 6.1, bookworm-backports'
 * 6.12, whose thermal code differs: issue 8, and the cloud kernel), Debian QEMUs (bookworm's 7.2,
 * bookworm-backports' 10.0), firmware and machine (`pc-q35-3.1` is EVE's), under TCG with our table via
 * -acpitable and real QMP. Checked from inside (sysfs, dmesg) and from the host (pmemsave at the address
 * found by a scan); each cell ends with a panic after which the kernel heartbeat stops.
 *
 * `npm test` runs the CI cells; `bash bench/run.sh matrix` (EVE_DIAG_MATRIX=full) runs every cell of
 * the cross product (README: the matrix table).
 */
interface Cell {
  kernel: GuestKernelName;
  qemu: GuestQemuName;
  machine: 'q35' | 'pc' | 'pc-q35-3.1';
  firmware: 'seabios' | 'ovmf';
  periodMs: number;
  runMs: number;
}

const CI_CELLS: Cell[] = [
  // The long run: at least 60 s with no thermal action, and the period/jitter numbers we report (on
  // 6.12, whose thermal core changed; 6.1 gets 20 s: CI time).
  { kernel: 'debian-6.12', qemu: 'debian-7.2', machine: 'q35', firmware: 'seabios', periodMs: 1000, runMs: 62_000 },
  { kernel: 'debian-6.1', qemu: 'debian-7.2', machine: 'q35', firmware: 'seabios', periodMs: 1000, runMs: 20_000 },
  { kernel: 'debian-6.12', qemu: 'debian-7.2', machine: 'q35', firmware: 'ovmf', periodMs: 500, runMs: 8_000 },
  // 20 s: enough 2 s beats to see 6.12's rounding to whole seconds in the ring (6.1 on pc: the long
  // run and reader.guest.test.ts; CI time).
  { kernel: 'debian-6.12', qemu: 'debian-7.2', machine: 'pc', firmware: 'seabios', periodMs: 2000, runMs: 20_000 },
  // EVE's machine on the newer QEMU and kernel; the newer QEMU with OVMF (6.1 on OVMF is here); the cloud kernel.
  { kernel: 'debian-6.12', qemu: 'debian-10.0', machine: 'pc-q35-3.1', firmware: 'seabios', periodMs: 1000, runMs: 8_000 },
  { kernel: 'debian-6.1', qemu: 'debian-10.0', machine: 'q35', firmware: 'ovmf', periodMs: 500, runMs: 8_000 },
  { kernel: 'debian-cloud', qemu: 'debian-7.2', machine: 'q35', firmware: 'seabios', periodMs: 1000, runMs: 8_000 },
];

/** Every kernel x QEMU x machine x firmware, 10 s at a 1 s period (the long run). */
const FULL_CELLS: Cell[] = (['debian-6.1', 'debian-6.12', 'debian-cloud'] as const).flatMap((kernel) =>
  (['debian-7.2', 'debian-10.0'] as const).flatMap((qemu) =>
    (['pc', 'q35', 'pc-q35-3.1'] as const).flatMap((machine) => (['seabios', 'ovmf'] as const).map((firmware): Cell => ({ kernel, qemu, machine, firmware, periodMs: 1000, runMs: 10_000 }))),
  ),
);

const cells = process.env['EVE_DIAG_MATRIX'] === 'full' ? FULL_CELLS : CI_CELLS;

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

const kernels = new Map<GuestKernelName, Promise<GuestKernel>>();
const qemus = new Map<GuestQemuName, Promise<QemuBuild>>();
const once = <K, V>(m: Map<K, Promise<V>>, k: K, f: (k: K) => Promise<V>): Promise<V> => {
  let p = m.get(k);
  if (p === undefined) m.set(k, (p = f(k)));
  return p;
};

describe.each(cells)('$kernel, QEMU $qemu, $machine + $firmware, period $periodMs ms', (c) => {
  let kernel: GuestKernel;
  let qemu: QemuBuild;
  beforeAll(async () => {
    kernel = await once(kernels, c.kernel, guestKernel);
    expect(kernel.release.startsWith(GUEST_KERNEL_SERIES[c.kernel]), kernel.release).toBe(true);
    qemu = await once(qemus, c.qemu, guestQemu);
    const version = await qemuVersion(qemu);
    expect(version.startsWith(GUEST_QEMU_SERIES[c.qemu]), `${qemu.source}: ${version}`).toBe(true);
  }, 600_000);

  test('zones registered with one trip, kernel heartbeat at the period, agent beat per read, checksum valid, clean dmesg, no beat after a panic', async () => {
    const { aml, layout } = buildDiagSsdt({ nonce: 0x5eed_0000n + BigInt(c.periodMs), kernelPeriodMs: c.periodMs });
    const tableFile = join(dir, `${c.machine}-${c.firmware}.aml`);
    await writeFile(tableFile, aml);
    guest = await launchGuest({ kernel, qemu, machine: c.machine, firmware: c.firmware, acpiTables: [tableFile], append: 'quiet' });
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
      `[${kernel.release} QEMU ${c.qemu} ${c.machine}+${c.firmware}] table ${layout.table.length} B at 0x${end.address.toString(16)}; ` +
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
    const rounding = c.kernel === 'debian-6.12' && c.periodMs > 1000 ? 750 : 0;
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

    // A panic: the kernel heartbeat stops (what the monitor calls guest-kernel-hung) while QEMU runs.
    await guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined);
    await guest.waitForConsole(/Kernel panic - not syncing/, 20_000);
    const p0 = (await reader.read()).region.kernel.beats;
    await sleep(3.5 * c.periodMs + 1000);
    const p1 = await reader.read();
    expect(delta32(p0, p1.region.kernel.beats)).toBe(0);
    expect(p1.checksumOk).toBe(true);
    expect(['running', 'guest-panicked']).toContain((await qmp.queryStatus()).status);
  });
});
