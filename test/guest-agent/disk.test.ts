import { constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DISK_OPEN_FLAGS, DiskWriter, openDiskDevice, readUptimeMs, type DiskDevice, type DiskWriterOptions } from '../../guest-agent/disk.js';
import { Log } from '../../guest-agent/log.js';
import { Ticker } from '../../guest-agent/timing.js';
import { DiskHeartbeatProbe } from '../../monitor/probes/disk-heartbeat.js';
import { decodeDiskRecord, DISK_SECTOR, encodeDiskRecord, nextDiskSeq, scanDiskRing } from '../../protocol/heartbeat-disk.js';
import type { ProbeResult } from '../../monitor/types.js';
import { FakeClock } from './fake-clock.js';

/** The agent's heartbeat-disk writer against a temp file, read back with the host's decoder and probe. */

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-disk-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const FILLER = 0xa5;

/** A zeroed ring of `slots` sectors followed by `tail` sectors of filler (which must never change). */
async function image(slots: number, tail = 4): Promise<string> {
  const p = join(dir, 'hb.img');
  const b = Buffer.alloc((slots + tail) * DISK_SECTOR);
  b.fill(FILLER, slots * DISK_SECTOR);
  await writeFile(p, b);
  return p;
}

function writer(path: string, over: Partial<DiskWriterOptions> = {}, logs: string[] = []) {
  let uptime = 5000;
  const w = new DiskWriter(
    { path, slots: 8, periodMs: 1000, retryMs: 10_000, instance: 0x1234n, ...over },
    { log: new Log((l) => logs.push(l)), uptimeMs: async () => (uptime += 1000), wallMs: () => 1_764_000_000_000 },
  );
  return { w, logs };
}

const tailIntact = (img: Buffer, slots: number) => img.subarray(slots * DISK_SECTOR).every((x) => x === FILLER);

describe('DiskWriter', () => {
  it('opens read-write with O_DSYNC, never O_CREAT', () => {
    expect(DISK_OPEN_FLAGS & constants.O_RDWR).toBe(constants.O_RDWR);
    expect(DISK_OPEN_FLAGS & constants.O_DSYNC).toBe(constants.O_DSYNC);
    expect(DISK_OPEN_FLAGS & constants.O_CREAT).toBe(0);
  });

  it('writes records the host decodes (scanDiskRing), one per step, seq % slots, nothing outside the ring', async () => {
    const path = await image(8);
    const { w, logs } = writer(path);
    for (let t = 0; t < 3000; t += 1000) expect(await w.step(t)).toBe('ok');
    const img = await readFile(path);
    const scan = scanDiskRing(img, 8);
    expect(scan).toMatchObject({ valid: 3, empty: 5, invalid: 0, newestSlot: 3 });
    expect(scan.newest).toEqual({ seq: 3n, uptimeMs: 8000n, wallMs: 1_764_000_000_000n, instance: 0x1234n, periodMs: 1000, slots: 8 });
    for (const seq of [1, 2, 3]) {
      const d = decodeDiskRecord(img.subarray(seq * DISK_SECTOR, (seq + 1) * DISK_SECTOR));
      expect(d.ok && d.record.seq).toBe(BigInt(seq));
    }
    expect(img.length).toBe(12 * DISK_SECTOR);
    expect(tailIntact(img, 8)).toBe(true);
    expect(w.writes).toBe(3);
    expect(w.seq).toBe(3n);
    expect(logs).toEqual([`disk heartbeat: writing ${path} (8 slots, every 1 s) from seq 1`]);
    w.close();
  });

  it('seq goes on from what is on the disk across restarts (new instance), torn sectors ignored', async () => {
    const path = await image(8);
    const a = writer(path, { instance: 1n }).w;
    for (let t = 0; t < 5; t++) await a.step(t * 1000);
    a.close();
    // A torn sector (a crash mid-write) in slot 7: invalid, not the newest.
    const img = await readFile(path);
    img.set(encodeDiskRecord({ seq: 999n, uptimeMs: 0n, wallMs: 0n, instance: 9n, periodMs: 1000, slots: 8 }).subarray(0, 256), 7 * DISK_SECTOR);
    await writeFile(path, img);
    const { w: b, logs } = writer(path, { instance: 2n });
    await b.step(0);
    await b.step(1000);
    b.close();
    const scan = scanDiskRing(await readFile(path), 8);
    expect(scan.newest).toMatchObject({ seq: 7n, instance: 2n });
    expect(scan.invalid).toBe(0); // slot 7 was seq 7's: the torn sector got overwritten
    expect(logs[0]).toContain('from seq 6');
  });

  it('wraps around the ring: the oldest slot is overwritten, the file never grows', async () => {
    const path = await image(4);
    const { w } = writer(path, { slots: 4 });
    for (let t = 0; t < 10; t++) await w.step(t * 1000);
    w.close();
    const img = await readFile(path);
    const seqs = [0, 1, 2, 3].map((i) => {
      const d = decodeDiskRecord(img.subarray(i * DISK_SECTOR, (i + 1) * DISK_SECTOR));
      return d.ok ? d.record.seq : undefined;
    });
    expect(seqs).toEqual([8n, 9n, 10n, 7n]);
    expect(nextDiskSeq(img, 4)).toBe(11n);
    expect(img.length).toBe(8 * DISK_SECTOR);
    expect(tailIntact(img, 4)).toBe(true);
  });

  it('a reload (lastSeq) never goes back, even when the disk says less', async () => {
    const path = await image(8);
    const { w } = writer(path, { lastSeq: 41n });
    await w.step(0);
    w.close();
    expect(scanDiskRing(await readFile(path), 8).newest?.seq).toBe(42n);
  });

  it('a missing device is said once, tried again every retryMs, and written once it appears', async () => {
    const path = join(dir, 'vdb');
    const opens: number[] = [];
    const logs: string[] = [];
    const w = new DiskWriter(
      { path, slots: 8, periodMs: 1000, retryMs: 10_000 },
      {
        log: new Log((l) => logs.push(l)),
        open: (p) => {
          opens.push(t);
          return openDiskDevice(p);
        },
      },
    );
    let t = 0;
    for (; t < 25_000; t += 1000) expect(await w.step(t)).toBe('error');
    expect(opens).toEqual([0, 10_000, 20_000]);
    expect(logs).toEqual([`disk heartbeat paused: cannot open ${path}: ENOENT; trying again every 10 s`]);
    await expect(stat(path)).rejects.toThrow(/ENOENT/); // never created
    await writeFile(path, Buffer.alloc(8 * DISK_SECTOR));
    for (; t < 31_000; t += 1000) await w.step(t);
    expect(w.status).toBe('ok');
    expect(opens).toEqual([0, 10_000, 20_000, 30_000]);
    expect(logs[1]).toBe(`disk heartbeat resumed: writing ${path} (8 slots, every 1 s) from seq 1`);
    w.close();
  });

  it('an unwritable device (a directory) and one smaller than the ring: said once, nothing written', async () => {
    const d = join(dir, 'adir');
    await mkdir(d);
    const a = writer(d);
    await a.w.step(0);
    await a.w.step(10_000);
    expect(a.logs).toEqual([`disk heartbeat paused: cannot open ${d}: EISDIR; trying again every 10 s`]);

    const small = join(dir, 'small.img');
    await writeFile(small, Buffer.alloc(3 * DISK_SECTOR));
    const b = writer(small);
    for (let t = 0; t <= 20_000; t += 1000) await b.w.step(t);
    expect(b.logs).toEqual([`disk heartbeat paused: cannot open ${small}: smaller than 8 slots of 512 bytes (1536 bytes); trying again every 10 s`]);
    const img = await readFile(small);
    expect(img.length).toBe(3 * DISK_SECTOR);
    expect(img.every((x) => x === 0)).toBe(true);
  });

  it('a write error closes the device, is said once, and the device is reopened after retryMs', async () => {
    const path = await image(8);
    let failing = false;
    let opened = 0;
    let closed = 0;
    const logs: string[] = [];
    const w = new DiskWriter(
      { path, slots: 8, periodMs: 1000, retryMs: 5000 },
      {
        log: new Log((l) => logs.push(l)),
        open: async (p) => {
          opened++;
          const real = await openDiskDevice(p);
          const dev: DiskDevice = {
            read: (b, pos) => real.read(b, pos),
            write: (b, pos) => (failing ? Promise.reject(Object.assign(new Error('io'), { code: 'EIO' })) : real.write(b, pos)),
            close: () => {
              closed++;
              return real.close();
            },
          };
          return dev;
        },
      },
    );
    await w.step(0);
    failing = true;
    for (let t = 1000; t <= 12_000; t += 1000) await w.step(t);
    expect(logs.filter((l) => l.includes('EIO'))).toEqual([`disk heartbeat paused: cannot write ${path}: EIO; trying again every 5 s`]);
    expect(opened).toBe(3); // t=0; t=6000 (the write at 1000 failed: + 5000); t=11000
    expect(closed).toBe(3);
    failing = false;
    await w.step(18_000);
    expect(w.status).toBe('ok');
    expect(logs.at(-1)).toBe(`disk heartbeat resumed: writing ${path} (8 slots, every 1 s) from seq 2`);
    w.close();
    await new Promise((r) => setTimeout(r, 10));
    expect(closed).toBe(4);
    expect(scanDiskRing(await readFile(path), 8).newest?.seq).toBe(2n);
  });

  it('close() during a step closes the device when the step ends; later steps do nothing', async () => {
    const path = await image(8);
    let closes = 0;
    const w = new DiskWriter(
      { path, slots: 8, periodMs: 1000, retryMs: 5000 },
      {
        log: new Log(() => undefined),
        open: async (p) => {
          const real = await openDiskDevice(p);
          return { ...real, close: () => (closes++, real.close()) };
        },
      },
    );
    const step = w.step(0);
    w.close();
    await step;
    expect(closes).toBe(1);
    await w.step(1000);
    expect(w.writes).toBe(0);
    expect(closes).toBe(1);
  });

  it('readUptimeMs reads /proc/uptime under a root', async () => {
    await mkdir(join(dir, 'proc'));
    await writeFile(join(dir, 'proc', 'uptime'), '734.21 1234.56\n');
    expect(await readUptimeMs(dir)).toBe(734_210);
    expect(await readUptimeMs(join(dir, 'nothing'))).toBeGreaterThan(0); // os.uptime()
  });
});

describe('host DiskHeartbeatProbe against the writer (fake clocks)', () => {
  it('succeeds while the writer runs, fails once it stopped for longer than maxAgeMs', async () => {
    const path = await image(8);
    const clock = new FakeClock();
    const { w } = writer(path);
    const ticker = new Ticker(clock, 1000, (now) => w.step(now));
    const probe = new DiskHeartbeatProbe({ slots: 8, maxAgeMs: 3000 }, { periodMs: 1000, now: () => clock.now() });
    const target = { name: 'app', heartbeatDisk: path };
    const run = () => probe.run(target, { timeoutMs: 1000, signal: new AbortController().signal });
    /** One second of the fake clock: the writer's tick (waited for: real file I/O), then a probe run. */
    const second = async (): Promise<ProbeResult> => {
      await clock.advance(1000);
      while (w.busy) await new Promise((r) => setTimeout(r, 1));
      return run();
    };

    ticker.start();
    await clock.advance(0);
    while (w.busy || w.writes === 0) await new Promise((r) => setTimeout(r, 1));
    expect((await run()).outcome).toBe('unknown'); // baseline
    const running: ProbeResult[] = [];
    for (let i = 0; i < 5; i++) running.push(await second());
    expect(running.map((r) => r.outcome)).toEqual(['success', 'success', 'success', 'success', 'success']);
    expect(running.at(-1)?.detail).toBe('seq advanced to 6');
    expect(running.at(-1)?.evidence).toMatchObject({ seq: '6', writerPeriodMs: 1000, instance: '0000000000001234', validRecords: 6 });

    ticker.stop();
    w.close();
    const stopped: ProbeResult[] = [];
    for (let i = 0; i < 5; i++) stopped.push(await second());
    expect(stopped.map((r) => r.outcome)).toEqual(['success', 'success', 'success', 'failure', 'failure']);
    expect(stopped[3]?.detail).toBe('seq stuck at 6 for 4000 ms');

    // A probe (re)started long after the writer stopped fails at once (the image's mtime is old).
    const late = new DiskHeartbeatProbe({ slots: 8, maxAgeMs: 3000 }, { periodMs: 1000, now: () => clock.now(), wallNow: () => Date.now() + 60_000 });
    const r = await late.run(target, { timeoutMs: 1000, signal: new AbortController().signal });
    expect(r.outcome).toBe('failure');
    expect(r.detail).toMatch(/^heartbeat disk not written for (59|60) s$/);
  });
});
