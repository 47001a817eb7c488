import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { FileBackedMemory } from '../../host-reader/memory/file-backed.js';
import { GuestMemoryError, MemoryReadError, type GuestMemory, type ReadOptions } from '../../host-reader/memory/guest-memory.js';
import { PmemsaveMemory } from '../../host-reader/memory/pmemsave.js';
import { XpMemory } from '../../host-reader/memory/xp.js';
import { QmpClient, QmpError } from '../../host-reader/qmp/index.js';
import { HeartbeatPoller, RegionReader, type Poll, type Snapshot } from '../../host-reader/reader.js';
import { delta32, type HeartbeatStatus } from '../../host-reader/region/assess.js';
import { parseMtreeLowRam, type MtreeRam } from '../../host-reader/region/discover.js';
import { launchGuest, stopAllGuests, type Guest, type LaunchOptions } from '../helpers/guest.js';

/**
 * The host reader against real guests (issue "Reading the region"): Debian's kernel in QEMU TCG with
 * our table, read through every memory path (QMP pmemsave, HMP xp, a memory-backend-file), on both
 * firmwares and machine types, small and split RAM, and through the events the reader must survive:
 * a kernel panic, a paused VM, a reset, QEMU killed under it.
 */

const PERIOD_MS = 500; // fast kernel heartbeat (_TZP 5) keeps every scenario short
const POLL_MS = 250;
const MiB = 1024n * 1024n;
const GiB = 1024n * MiB;

const { aml, layout } = buildDiagSsdt({ nonce: 0x4ead_e700_0000_0001n, kernelPeriodMs: PERIOD_MS });

let dir: string;
let tableFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-reader-guest-'));
  tableFile = join(dir, 'eve-diag-ssdt.aml');
  await writeFile(tableFile, aml);
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

// Everything a test opened, undone in reverse order after it, whatever happened.
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve().then(c).catch(() => undefined);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (a: bigint | undefined) => (a === undefined ? 'none' : `0x${a.toString(16)}`);

async function boot(opts: LaunchOptions = {}): Promise<{ guest: Guest; qmp: QmpClient }> {
  const guest = await launchGuest({ ...opts, acpiTables: [tableFile], append: `quiet ${opts.append ?? ''}`.trim() });
  cleanups.push(() => guest.stop());
  const qmp = await QmpClient.connect({ path: guest.qmpPath });
  cleanups.push(() => qmp.close());
  return { guest, qmp };
}

async function pmemsave(qmp: QmpClient): Promise<PmemsaveMemory> {
  const m = await PmemsaveMemory.open(qmp);
  cleanups.push(() => m.close());
  return m;
}

function poller(qmp: QmpClient, memory: GuestMemory): HeartbeatPoller {
  const p = new HeartbeatPoller(qmp, new RegionReader(qmp, memory, layout));
  cleanups.push(() => p.close());
  return p;
}

/** A unique file in /dev/shm for a memory-backend-file, removed after the test. */
function shmFile(tag: string): string {
  const path = `/dev/shm/eve-diag-reader-${tag}-${process.pid}-${Date.now().toString(36)}`;
  cleanups.push(() => rm(path, { force: true }));
  return path;
}

/** QEMU args for guest RAM in a shared file: the host reads it with FileBackedMemory. */
function fileBackedRam(path: string, mib: number): string[] {
  return ['-M', 'q35,memory-backend=mem0', '-object', `memory-backend-file,id=mem0,size=${mib}M,mem-path=${path},share=on`];
}

/** Wraps a GuestMemory and records every read, to show where a scan went. */
class RecordingMemory implements GuestMemory {
  readonly name: string;
  reads: { addr: bigint; size: number }[] = [];
  constructor(private readonly inner: GuestMemory) {
    this.name = `recording:${inner.name}`;
  }
  read(addr: bigint, size: number, opts?: ReadOptions): Promise<Uint8Array> {
    this.reads.push({ addr, size });
    return this.inner.read(addr, size, opts);
  }
}

/** Wraps a GuestMemory; while `failing`, every read fails like a real one can. */
class FlakyMemory implements GuestMemory {
  readonly name: string;
  failing = false;
  constructor(private readonly inner: GuestMemory) {
    this.name = inner.name;
  }
  read(addr: bigint, size: number, opts?: ReadOptions): Promise<Uint8Array> {
    if (this.failing) return Promise.reject(new MemoryReadError(this.name, addr, size, 'injected failure'));
    return this.inner.read(addr, size, opts);
  }
}

interface Sample {
  /** Host monotonic ms when the poll started and ended. */
  start: number;
  end: number;
  poll: Poll;
}

const kernelStatus = (s: Sample): HeartbeatStatus => s.poll.report.kernel.status;
const summary = (log: readonly Sample[], t0 = log[0]?.start ?? 0) =>
  log
    .map((s) => `${((s.start - t0) / 1000).toFixed(2)}s ${kernelStatus(s)}/${s.poll.snapshot?.region.kernel.beats ?? '-'}${s.poll.report.restarted ? '/R' : ''}`)
    .join(', ');

/**
 * Polls every POLL_MS (fixed cadence from the first poll), appending to `log`, until `done(sample)` holds;
 * resolves with that sample. Fails with the statuses seen when `timeoutMs` passes first.
 */
async function pollUntil(p: HeartbeatPoller, log: Sample[], done: (s: Sample) => boolean, timeoutMs: number, what: string): Promise<Sample> {
  const t0 = performance.now();
  for (let k = 1; ; k++) {
    const start = performance.now();
    const poll = await p.poll();
    const s: Sample = { start, end: performance.now(), poll };
    log.push(s);
    if (done(s)) return s;
    if (s.end - t0 > timeoutMs) {
      throw new Error(`${what}: not reached in ${timeoutMs} ms; polls: ${summary(log.slice(-40))}; last error: ${poll.error?.message ?? 'none'}`);
    }
    await sleep(Math.max(0, t0 + k * POLL_MS - performance.now()));
  }
}

/** Polls for `ms`, appending to `log`. */
async function pollFor(p: HeartbeatPoller, log: Sample[], ms: number): Promise<void> {
  const until = performance.now() + ms;
  await pollUntil(p, log, (s) => s.end >= until, ms + 30_000, `polling for ${ms} ms`);
}

/** Rejects (does not hang) when `promise` has not settled within `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} neither resolved nor rejected within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** The table bytes the AML never writes: header, region header up to the counters, and the AML after the region. */
function staticBytes(table: Uint8Array): Uint8Array {
  const countersFrom = layout.fields.loadCount;
  const regionEnd = layout.region.offset + layout.region.size;
  return Uint8Array.from([...table.subarray(0, countersFrom), ...table.subarray(regionEnd)]);
}

function stableFields(s: Snapshot) {
  const { version, headerSize, regionSize, nonce, kernelPeriodDs, ringLength, loadCount, loadTimer } = s.region;
  return { version, headerSize, regionSize, nonce, kernelPeriodDs, ringLength, loadCount, loadTimer };
}

describe('discovery through every memory path (q35 + SeaBIOS, 512 MiB in a shared file)', () => {
  test('pmemsave, xp and the file-backed RAM find the same address and decode the same region', async () => {
    const shm = shmFile('paths');
    const { qmp } = await boot({ memoryMiB: 512, extraArgs: fileBackedRam(shm, 512) });
    const mtree = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
    // The whole guest RAM is the backend: every RAM range of `memory` is `mem0`, its `@offset` the file offset.
    expect(new Set(mtree.ranges.map((r) => r.name))).toEqual(new Set(['mem0']));
    expect(mtree.lowRamTop).toBe(512n * MiB);
    const file = await FileBackedMemory.open(
      shm,
      mtree.ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
    );
    cleanups.push(() => file.close());
    const paths = [
      { path: 'pmemsave', reader: new RegionReader(qmp, await pmemsave(qmp), layout) },
      { path: 'xp', reader: new RegionReader(qmp, new XpMemory(qmp), layout) },
      { path: 'file-backed', reader: new RegionReader(qmp, file, layout) },
    ];

    // A first read scans; the cached address is then re-checked on every read. In time order.
    const first: Snapshot[] = [];
    for (const { reader } of paths) first.push(await reader.read());
    const again = await (paths[0] as (typeof paths)[0]).reader.read();
    console.log(
      `[paths] table at ${hex(first[0]?.address)}, ${((512n * MiB - (first[0]?.address ?? 0n)) / 1024n).toString()} KiB below the top; ` +
        paths.map(({ path }, i) => `${path}: ${first[i]?.discovery?.ms.toFixed(0)} ms, ${first[i]?.discovery?.reads} reads`).join('; '),
    );
    expect(again.discovery).toBeUndefined();
    const ref = first[0] as Snapshot;
    expect(ref.address).toBeLessThan(mtree.lowRamTop);
    for (const [i, s] of first.entries()) {
      const what = paths[i]?.path;
      expect(s.discovery, what).toBeDefined();
      expect(s.address, what).toBe(ref.address);
      expect(paths[i]?.reader.address, what).toBe(ref.address);
      // Same scan plan, whatever the path: the same chunks down to the same table.
      expect(s.discovery?.scannedBytes, what).toBe(ref.discovery?.scannedBytes);
      expect(s.discovery?.reads, what).toBe(ref.discovery?.reads);
      expect(s.checksumOk, what).toBe(true);
      expect(s.table.length, what).toBe(layout.table.length);
      expect(stableFields(s), what).toEqual(stableFields(ref));
      expect(staticBytes(s.table), what).toEqual(staticBytes(ref.table));
    }
    expect(ref.region.loadCount).toBe(1);
    expect(ref.region.nonce).toBe(layout.nonce);
    // Counters are consistent: in read order they never go back, and advance at about the period.
    const seq = [...first, again];
    for (let i = 1; i < seq.length; i++) {
      const [a, b] = [seq[i - 1] as Snapshot, seq[i] as Snapshot];
      const beats = delta32(a.region.kernel.beats, b.region.kernel.beats);
      expect(beats, `kernel beats from read ${i - 1} to ${i}`).toBeLessThanOrEqual(Math.ceil((b.at - a.at) / PERIOD_MS) + 2);
      expect(b.region.agent.beats).toBe(a.region.agent.beats); // no agent in this guest
    }
    expect(delta32(ref.region.kernel.beats, again.region.kernel.beats)).toBeGreaterThan(0);

    // The file is the guest's live RAM (share=on): the kernel beats advance in it as they do through QMP.
    const f0 = await (paths[2] as (typeof paths)[2]).reader.read();
    await sleep(3 * PERIOD_MS);
    const f1 = await (paths[2] as (typeof paths)[2]).reader.read();
    expect(delta32(f0.region.kernel.beats, f1.region.kernel.beats)).toBeGreaterThanOrEqual(2);

    // With the vCPUs stopped nothing moves: the three paths return the very same bytes.
    await qmp.stop();
    try {
      const frozen: Snapshot[] = [];
      for (const { reader } of paths) frozen.push(await reader.read());
      for (const s of frozen) {
        expect(s.discovery).toBeUndefined();
        expect(s.address).toBe(ref.address);
        expect(Buffer.from(s.table).equals(Buffer.from((frozen[0] as Snapshot).table))).toBe(true);
      }
    } finally {
      await qmp.cont();
    }
  });
});

const firmwares = [
  { machine: 'q35', firmware: 'seabios' },
  { machine: 'q35', firmware: 'ovmf' },
  { machine: 'pc', firmware: 'seabios' },
] as const;

describe.each(firmwares)('$machine + $firmware', (c) => {
  test('the table is found below the top of low RAM and the kernel heartbeat is alive', async () => {
    const { qmp } = await boot({ machine: c.machine, firmware: c.firmware, memoryMiB: 512 });
    const mtree = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
    const p = poller(qmp, await pmemsave(qmp));
    const log: Sample[] = [];
    const alive = await pollUntil(p, log, (s) => kernelStatus(s) === 'alive', 30_000, 'kernel alive');
    const found = log.find((s) => s.poll.snapshot?.discovery !== undefined)?.poll.snapshot;
    expect(found?.discovery).toBeDefined();
    const address = p.reader.address;
    console.log(
      `[${c.machine}+${c.firmware}] low RAM top ${hex(mtree.lowRamTop)}, table at ${hex(address)} ` +
        `(${((mtree.lowRamTop - (address ?? 0n)) / 1024n).toString()} KiB below), discovery ${found?.discovery?.ms.toFixed(0)} ms ` +
        `in ${found?.discovery?.reads} reads of ${found?.discovery?.scannedBytes} bytes`,
    );
    expect(address).toBeDefined();
    expect(address).toBe(found?.address);
    expect(address as bigint).toBeLessThan(mtree.lowRamTop);
    // DESIGN fact 7: SeaBIOS about 120 KiB, OVMF about 8.5 MiB below the top (512 MiB guest).
    expect(mtree.lowRamTop - (address as bigint)).toBeLessThan(c.firmware === 'ovmf' ? 32n * MiB : 1n * MiB);
    expect(alive.poll.snapshot?.region.loadCount).toBe(1);
    expect(alive.poll.snapshot?.checksumOk).toBe(true);
    expect(alive.poll.report.vm.running).toBe(true);
  });
});

const sizes = [
  { memoryMiB: 256, high: false },
  // q35 keeps 2 GiB below 4 GiB when the guest has 2.75 GiB or more: 2 GiB low, 1 GiB at 4 GiB.
  { memoryMiB: 3072, high: true },
] as const;

describe.each(sizes)('q35 + SeaBIOS with $memoryMiB MiB', (c) => {
  test('the scan starts at the top of low RAM and stays in low RAM', async () => {
    const { qmp } = await boot({ memoryMiB: c.memoryMiB });
    const mtree: MtreeRam = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
    const total = mtree.ranges.reduce((s, r) => s + (r.end - r.start), 0n);
    const high = mtree.ranges.filter((r) => r.start >= 4n * GiB);
    expect(mtree.lowRamTop).toBeLessThanOrEqual(4n * GiB);
    if (c.high) {
      expect(high.length).toBeGreaterThan(0);
      expect(mtree.lowRamTop + high.reduce((s, r) => s + (r.end - r.start), 0n)).toBe(BigInt(c.memoryMiB) * MiB);
    } else {
      expect(high).toEqual([]);
      expect(mtree.lowRamTop).toBe(BigInt(c.memoryMiB) * MiB);
    }
    // Shadowed BIOS areas are RAM too (as rom): everything adds up to the guest's RAM.
    expect(total).toBe(BigInt(c.memoryMiB) * MiB);

    const memory = new RecordingMemory(await pmemsave(qmp));
    const reader = new RegionReader(qmp, memory, layout);
    const s = await reader.read();
    const top = memory.reads.reduce((m, r) => (r.addr + BigInt(r.size) > m ? r.addr + BigInt(r.size) : m), 0n);
    console.log(
      `[${c.memoryMiB} MiB] low RAM top ${hex(mtree.lowRamTop)}${c.high ? `, high RAM ${high.map((r) => `${hex(r.start)}-${hex(r.end)}`).join(' ')}` : ''}; ` +
        `table at ${hex(s.address)}; ${memory.reads.length} reads, highest byte read ${hex(top - 1n)}`,
    );
    expect(s.discovery).toBeDefined();
    expect(s.address).toBeLessThan(mtree.lowRamTop);
    expect(mtree.lowRamTop - s.address).toBeLessThan(1n * MiB);
    // The first chunk below the top held it: nothing above low RAM was ever read.
    expect(top).toBeLessThanOrEqual(mtree.lowRamTop);
    expect(memory.reads[0]?.addr).toBe(mtree.lowRamTop - MiB);
    expect(s.region.loadCount).toBe(1);
    expect(s.checksumOk).toBe(true);
  });
});

describe('guest events under the poller (q35 + SeaBIOS, 256 MiB)', () => {
  test('kernel panic: the kernel heartbeat becomes stalled at the bound its ring gives, plus polling, after the panic', async () => {
    const delayS = 8; // from the ready line: time to connect, scan and see the heartbeat alive first
    // panic=0: the kernel never reboots after the panic (Debian's default too); QEMU keeps running it.
    const { guest, qmp } = await boot({ memoryMiB: 256, append: `panic=0 eve_diag.scenario=panic eve_diag.delay=${delayS}` });
    const p = poller(qmp, await pmemsave(qmp));
    const log: Sample[] = [];
    let panicSeenAt: number | undefined;
    const panicLine = guest.waitForConsole(/Kernel panic - not syncing/, 90_000).then(() => {
      panicSeenAt = performance.now();
    });
    panicLine.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
    const alive = await pollUntil(p, log, (s) => kernelStatus(s) === 'alive', 30_000, 'kernel alive before the panic');
    expect(panicSeenAt, 'the guest panicked before the heartbeat was seen alive: raise delayS').toBeUndefined();
    const stalled = await pollUntil(p, log, (s) => panicSeenAt !== undefined && kernelStatus(s) === 'stalled', 60_000, 'kernel stalled');
    await panicLine;
    const panicAt = panicSeenAt as number;

    const t0 = log[0]?.start ?? 0;
    const afterPanic = log.filter((s) => s.start >= panicAt);
    // The sample that last saw the counter change (the assessment counts the age from it).
    const lastChange = [...log].reverse().find((s, i, r) => {
      const older = r[i + 1];
      return older !== undefined && s.poll.snapshot?.region.kernel.beats !== older.poll.snapshot?.region.kernel.beats;
    });
    console.log(
      `[panic] panic line seen at ${((panicAt - t0) / 1000).toFixed(2)} s, stalled at ${((stalled.start - t0) / 1000).toFixed(2)} s ` +
        `(${(stalled.start - panicAt).toFixed(0)} ms after the line, ${((stalled.start - (lastChange?.start ?? 0)) / PERIOD_MS).toFixed(2)} periods ` +
        `after the last counter change); polls: ${summary(log.filter((s) => s.start >= alive.start - 1000), t0)}`,
    );
    // QEMU still runs the panicked guest (no pvpanic here): only the heartbeat can tell.
    for (const s of log) expect(s.poll.report.vm.running).toBe(true);
    expect(log.some((s) => s.poll.error !== undefined)).toBe(false);
    // After the panic the counter never moves again.
    expect(new Set(afterPanic.map((s) => s.poll.snapshot?.region.kernel.beats)).size).toBe(1);
    // Between alive and stalled: only alive or late, never paused, unknown or restarted.
    for (const s of log.slice(log.indexOf(alive), log.indexOf(stalled))) expect(['alive', 'late']).toContain(kernelStatus(s));
    // The last beat came at most one period before the panic and was seen by the next poll; stalled is
    // declared at the first poll the ring's bound after that sample: a steady 1024 ms ring gives
    // E = 1024 ms, + 8 ms + stallSlack (1) x the period. The poller reads its clock inside each poll,
    // between a sample's start and end: the lower bound holds from the change's start to the stall's end.
    // Scheduling slack for TCG on a busy host: 1 s.
    const bound = stalled.poll.report.kernel.stallAfterMs as number;
    expect(bound).toBeGreaterThanOrEqual(PERIOD_MS + 8 + PERIOD_MS);
    expect(bound).toBeLessThanOrEqual(3 * PERIOD_MS + 8 + PERIOD_MS);
    expect(stalled.end - (lastChange?.start ?? 0)).toBeGreaterThanOrEqual(bound);
    expect(stalled.start - (lastChange?.start ?? 0)).toBeLessThan(bound + POLL_MS + 1000);
    expect(stalled.start - panicAt).toBeLessThan(bound + 2 * POLL_MS + 1000);
  });

  test('thermal.off=1: the table loads, the kernel never polls its zone: waiting, then unavailable, and after a panic still never stalled', async () => {
    const { guest, qmp } = await boot({ memoryMiB: 256, append: 'panic=0 thermal.off=1' });
    expect(await guest.run('ls /sys/class/thermal | grep -c thermal_zone || true')).toBe('0');
    const graceMs = 4000;
    const p = new HeartbeatPoller(qmp, new RegionReader(qmp, await pmemsave(qmp), layout), { graceMs });
    cleanups.push(() => p.close());
    const log: Sample[] = [];
    const unavailable = await pollUntil(p, log, (s) => kernelStatus(s) === 'unavailable', 30_000, 'kernel heartbeat unavailable');
    console.log(`[thermal.off=1] ${unavailable.poll.report.kernel.detail}; polls: ${summary(log)}`);
    expect(unavailable.poll.snapshot?.region.loadCount).toBe(1);
    expect(unavailable.poll.snapshot?.region.kernel.beats).toBe(0);
    expect(unavailable.poll.report.kernel.detail).toMatch(/thermal\.off=1/);
    // The agent's zone is not there either: userspace cannot beat it.
    expect(await guest.run('cat /sys/class/thermal/thermal_zone1/temp 2>&1 || true')).toMatch(/No such file/);
    await guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined);
    await guest.waitForConsole(/Kernel panic - not syncing/, 20_000);
    const after: Sample[] = [];
    const t0 = performance.now();
    while (performance.now() - t0 < 4 * PERIOD_MS + 1000) {
      await pollUntil(p, after, () => true, 5000, 'poll');
      await sleep(POLL_MS);
    }
    for (const s of [...log, ...after]) expect(['waiting', 'unavailable']).toContain(kernelStatus(s));
  });

  test('QMP stop: paused (never late or stalled) for more than 3 periods; cont: alive again', async () => {
    const { qmp } = await boot({ memoryMiB: 256 });
    const p = poller(qmp, await pmemsave(qmp));
    const log: Sample[] = [];
    await pollUntil(p, log, (s) => kernelStatus(s) === 'alive', 30_000, 'kernel alive');

    await qmp.stop();
    const pausedFrom = log.length;
    const pausedMs = 4 * PERIOD_MS + 500;
    await pollFor(p, log, pausedMs);
    const paused = log.slice(pausedFrom);
    expect(paused.length).toBeGreaterThanOrEqual(Math.floor(pausedMs / POLL_MS) - 2);
    expect((paused.at(-1) as Sample).start - (paused[0] as Sample).start).toBeGreaterThan(3 * PERIOD_MS);
    for (const s of paused) {
      expect(s.poll.report.vm).toMatchObject({ running: false, status: 'paused' });
      expect(s.poll.report.kernel.status).toBe('paused');
      expect(s.poll.report.agent.status).toBe('paused');
      expect(s.poll.error).toBeUndefined();
    }
    // The guest's clocks stood still: no beat while paused (the region is still readable).
    expect(new Set(paused.map((s) => s.poll.snapshot?.region.kernel.beats)).size).toBe(1);

    await qmp.cont();
    const resumedFrom = log.length;
    await pollUntil(p, log, (s) => kernelStatus(s) === 'alive', 15_000, 'kernel alive after cont');
    const resumed = log.slice(resumedFrom);
    console.log(`[stop/cont] paused: ${summary(paused)}; after cont: ${summary(resumed)}`);
    // After the resume the ages restart: no stale verdict from the paused time.
    for (const s of resumed) expect(s.poll.report.kernel.status).not.toBe('stalled');
    for (const s of resumed) expect(s.poll.report.vm.running).toBe(true);
  });

  test('system_reset: restarted is reported, the table rediscovered, its load count back at 1, then alive', async () => {
    const { guest, qmp } = await boot({ memoryMiB: 256, reboot: true });
    const memory = new FlakyMemory(await pmemsave(qmp));
    const p = poller(qmp, memory);
    const log: Sample[] = [];
    // Enough beats before each reset that the new boot's count is visibly lower.
    const minBeats = 16;

    const resetAndRecover = async (round: number, failReadsAfterReset: boolean) => {
      const before = await pollUntil(
        p,
        log,
        (s) => kernelStatus(s) === 'alive' && (s.poll.snapshot?.region.kernel.beats ?? 0) >= minBeats,
        60_000,
        `kernel alive with ${minBeats} beats`,
      );
      const beatsBefore = before.poll.snapshot?.region.kernel.beats as number;
      const addressBefore = p.reader.address;
      const consoleBefore = guest.consoleText().length;

      const resetEvent = qmp.waitEvent('RESET', { timeoutMs: 10_000 });
      resetEvent.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
      await qmp.systemReset();
      const resetFrom = log.length;
      if (failReadsAfterReset) {
        // The first reads after the RESET fail (the scan finding nothing while the firmware rewrites
        // memory looks the same): the reset must not be forgotten with them.
        memory.failing = true;
        await resetEvent;
        await sleep(50); // let the poller's own RESET listener run
        const failed = await pollUntil(p, log, () => true, 10_000, 'one poll');
        memory.failing = false;
        expect(failed.poll.error).toBeInstanceOf(GuestMemoryError);
        expect(failed.poll.report.restarted).toBe(false);
        expect(kernelStatus(failed)).toBe('unknown');
      }
      let restarted = false;
      let newLoad: Sample | undefined; // the first sample of the table as the new boot loaded it
      const back = await pollUntil(
        p,
        log,
        (s) => {
          restarted ||= s.poll.report.restarted;
          const r = s.poll.snapshot?.region;
          if (newLoad === undefined && r !== undefined && r.loadCount === 1 && r.kernel.beats < beatsBefore) newLoad = s;
          return restarted && newLoad !== undefined && kernelStatus(s) === 'alive';
        },
        90_000,
        'restarted, then alive with the new load',
      );
      await resetEvent;
      const after = log.slice(resetFrom);
      console.log(
        `[reset ${round}${failReadsAfterReset ? ', first reads failing' : ''}] before: ${beatsBefore} beats at ${hex(addressBefore)}; ` +
          `after: table at ${hex(p.reader.address)}, rediscoveries ${after.filter((s) => s.poll.snapshot?.discovery !== undefined).length}, ` +
          `read errors ${after.filter((s) => s.poll.error !== undefined).length}; polls: ${summary(after, log[resetFrom]?.start)}`,
      );
      // The guest really rebooted.
      await guest.waitForConsole(/EVE-DIAG-GUEST-READY/, 60_000, consoleBefore);
      // The first decoded sample after the reset says so, and why (not only when the region shows it).
      const firstDecoded = after.find((s) => s.poll.snapshot !== undefined);
      expect(firstDecoded?.poll.report).toMatchObject({ restarted: true, restartReason: 'the VM was reset (QMP RESET)' });
      expect(firstDecoded && kernelStatus(firstDecoded)).toBe('restarted');
      expect(after.some((s) => s.poll.snapshot?.discovery !== undefined)).toBe(true);
      expect(p.reader.address).toBeDefined();
      expect(back.poll.snapshot?.address).toBe(p.reader.address);
      expect(back.poll.snapshot?.region.loadCount).toBe(1);
      expect(back.poll.snapshot?.checksumOk).toBe(true);
      expect(newLoad?.poll.snapshot?.region.kernel.beats).toBeLessThan(beatsBefore);
      // No verdict from the old boot's baseline: nothing late or stalled after the reset.
      for (const s of after) expect(['late', 'stalled']).not.toContain(kernelStatus(s));
    };
    await resetAndRecover(1, false);
    await resetAndRecover(2, true);
  });

  test('QEMU killed under the reader: poll() and read() reject with typed errors, no hang', async () => {
    const shm = shmFile('kill');
    const { guest, qmp } = await boot({ memoryMiB: 256, extraArgs: fileBackedRam(shm, 256) });
    const mtree = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
    const file = await FileBackedMemory.open(
      shm,
      mtree.ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
    );
    cleanups.push(() => file.close());
    const viaPmemsave = poller(qmp, await pmemsave(qmp));
    const viaXp = poller(qmp, new XpMemory(qmp));
    const viaFile = poller(qmp, file);
    const log: Sample[] = [];
    await pollUntil(viaPmemsave, log, (s) => kernelStatus(s) === 'alive', 30_000, 'kernel alive');
    await viaXp.reader.read();
    await viaFile.reader.read();

    // Kill QEMU while a poll and a read are in flight.
    const inFlight = [viaPmemsave.poll(), viaXp.reader.read()].map((pr) =>
      pr.then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    const killedAt = performance.now();
    process.kill(guest.pid, 'SIGKILL');
    const bound = 5000;
    for (const e of await within(bound, 'an in-flight poll or read', Promise.all(inFlight))) {
      // Either it finished before the kill, or it failed with a typed error.
      if (e !== undefined) expect(e instanceof QmpError || e instanceof GuestMemoryError, String(e)).toBe(true);
    }

    const failures: { what: string; error: unknown; ms: number }[] = [];
    const attempt = async (what: string, op: () => Promise<unknown>) => {
      const t = performance.now();
      const error = await within(bound, what, op()).then(
        () => undefined,
        (e: unknown) => e ?? new Error('rejected with nothing'),
      );
      failures.push({ what, error, ms: performance.now() - t });
    };
    await attempt('poll via pmemsave', () => viaPmemsave.poll());
    await attempt('poll via xp', () => viaXp.poll());
    await attempt('poll via file', () => viaFile.poll());
    await attempt('read via pmemsave', () => viaPmemsave.reader.read());
    await attempt('read via xp', () => viaXp.reader.read());
    console.log(
      `[kill] ${failures.map((f) => `${f.what}: ${(f.error as Error | undefined)?.name} in ${f.ms.toFixed(0)} ms`).join('; ')}; ` +
        `all settled ${(performance.now() - killedAt).toFixed(0)} ms after SIGKILL`,
    );
    for (const f of failures) {
      expect(f.error, `${f.what} resolved after QEMU was killed`).toBeDefined();
      expect(f.error instanceof QmpError || f.error instanceof GuestMemoryError, `${f.what}: ${String(f.error)}`).toBe(true);
    }
    expect(await within(bound, 'qmp.closed', qmp.closed)).toBeInstanceOf(QmpError);
    // The shared file outlives QEMU: a file-backed read still returns the last RAM contents; only QMP
    // (query-status in poll) tells that the VM is gone.
    const stale = await viaFile.reader.read();
    expect(stale.address).toBe(viaFile.reader.address);
  });
});
