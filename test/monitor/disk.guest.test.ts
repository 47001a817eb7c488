import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { buildGuestImage, GUEST_AGENT_PATH } from '../../build/guest-image.js';
import { DiskHeartbeatProbe } from '../../monitor/probes/disk-heartbeat.js';
import { DISK_SECTOR, scanDiskRing } from '../../protocol/heartbeat-disk.js';
import type { ProbeResult } from '../../monitor/types.js';
import { background, launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * Transport 2, the heartbeat disk, in a real guest (QEMU TCG, Debian kernel, the Node agent): a raw
 * image attached as a second virtio disk (virtio_blk and virtio_pci are modules in Debian's kernel:
 * the image carries them and /init loads them), the agent writes a record to it every second, the
 * host's DiskHeartbeatProbe reads the image file and sees the seq advance; after `kill -STOP` of the
 * agent it fails, after `kill -CONT` it succeeds again, and a restarted agent goes on from the disk's
 * seq. No SSDT: the disk is the agent's only duty here.
 */

const SLOTS = 8;
const MAX_AGE_MS = 4000;

let dir: string;
let img: string;
let guest: Guest;
let pid: number;
const probe = new DiskHeartbeatProbe({ slots: SLOTS, maxAgeMs: MAX_AGE_MS }, { periodMs: 1000 });
const run = (): Promise<ProbeResult> => probe.run({ name: 'app', heartbeatDisk: img }, { timeoutMs: 1000, signal: new AbortController().signal });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the probe about once a second until `outcome`; returns every result (the last one matched) and the time it took. */
async function probeUntil(outcome: ProbeResult['outcome'], timeoutMs: number): Promise<{ results: ProbeResult[]; ms: number }> {
  const t0 = performance.now();
  const results: ProbeResult[] = [];
  for (;;) {
    const r = await run();
    results.push(r);
    if (r.outcome === outcome) return { results, ms: performance.now() - t0 };
    if (performance.now() - t0 > timeoutMs) {
      const err = await guest.run('cat /tmp/agent.err').catch(() => '?');
      throw new Error(`probe not ${outcome} within ${timeoutMs} ms; last: ${r.outcome} (${r.detail}); agent stderr:\n${err}`);
    }
    await sleep(1000);
  }
}

/** In a session of its own (background()): a console shell that exits must not SIGHUP/SIGCONT a stopped agent. */
function startAgent(): Promise<number> {
  return background(guest, `/usr/bin/node ${GUEST_AGENT_PATH} --config /tmp/agent.json 2>>/tmp/agent.err`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-disk-guest-'));
  img = join(dir, 'heartbeat.img');
  await writeFile(img, Buffer.alloc(64 * 1024)); // 128 sectors; the ring is the first 8
  const bundle = (await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') })).code;
  const image = await buildGuestImage({ node: true, agent: { bundle }, modules: ['virtio_blk', 'virtio_pci'] });
  const t0 = performance.now();
  guest = await launchGuest({
    memoryMiB: 1024,
    append: 'quiet',
    bootTimeoutMs: 180_000,
    // The second -initrd wins (QEMU keeps the last one); -nodefaults: the image is the only disk, vda.
    extraArgs: ['-initrd', image.initrd, '-drive', `file=${img.replaceAll(',', ',,')},format=raw,if=virtio`],
  });
  console.log(`[disk] guest ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const config = { period: 0, markPeriod: 0, console: null, syslog: false, disk: { path: '/dev/vda', slots: SLOTS, periodSeconds: 1 } };
  await guest.run(`echo '${JSON.stringify(config)}' > /tmp/agent.json`);
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

describe('heartbeat disk: the Node agent in a real guest, the host probe on the image file', () => {
  test('/init loaded virtio_blk: the image is /dev/vda', async () => {
    const size = await guest.run('cat /sys/block/vda/size');
    expect(Number(size.trim())).toBe(128);
    expect(await guest.run('lsmod')).toMatch(/virtio_blk/);
  });

  test('the probe succeeds while the agent writes; fails after kill -STOP; succeeds after -CONT', async () => {
    const t0 = performance.now();
    pid = await startAgent();
    const first = await probeUntil('success', 60_000);
    // The first run is the baseline: a failure when the image was not written for longer than maxAgeMs (the boot).
    console.log(`[disk] first probe success ${(first.ms / 1000).toFixed(1)} s after the agent start (Node startup under TCG); first run: ${first.results[0]?.detail}`);

    // ~10 s of steady state: every run a success, about one record a second.
    const a = await run();
    const t1 = performance.now();
    const steady: ProbeResult[] = [];
    for (let i = 0; i < 10; i++) {
      await sleep(1000);
      steady.push(await run());
    }
    const seconds = (performance.now() - t1) / 1000;
    const records = Number(steady.at(-1)?.evidence?.seq) - Number(a.evidence?.seq);
    console.log(`[disk] ${records} records in ${seconds.toFixed(1)} s host time; outcomes ${steady.map((r) => r.outcome[0]).join('')}`);
    expect(steady.every((r) => r.outcome === 'success')).toBe(true);
    expect(records).toBeGreaterThanOrEqual(Math.floor(seconds * 0.7));
    expect(records).toBeLessThanOrEqual(Math.ceil(seconds * 1.3) + 1);
    const scan = scanDiskRing(await readFile(img), SLOTS);
    expect(scan).toMatchObject({ valid: SLOTS, invalid: 0 });
    expect(scan.newest).toMatchObject({ periodMs: 1000, slots: SLOTS });
    // Nothing outside the ring was written.
    expect((await readFile(img)).subarray(SLOTS * DISK_SECTOR).every((x) => x === 0)).toBe(true);

    await guest.run(`kill -STOP ${pid}`);
    const stopped = performance.now();
    try {
      const fail = await probeUntil('failure', 30_000);
      console.log(`[disk] kill -STOP: probe failure after ${(fail.ms / 1000).toFixed(1)} s (maxAgeMs ${MAX_AGE_MS}): ${fail.results.at(-1)?.detail}`);
      expect(fail.results.at(-1)?.detail).toMatch(/^seq stuck at \d+ for \d+ ms$/);
      expect(performance.now() - stopped).toBeGreaterThanOrEqual(MAX_AGE_MS - 1500);
    } finally {
      await guest.run(`kill -CONT ${pid}`);
    }
    const back = await probeUntil('success', 30_000);
    console.log(`[disk] kill -CONT: probe success after ${(back.ms / 1000).toFixed(1)} s; whole test ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(await guest.run('cat /tmp/agent.err')).toMatch(/disk heartbeat: writing \/dev\/vda \(8 slots, every 1 s\) from seq 1\n?/);
  });

  test('a restarted agent goes on from the seq on the disk (a new instance)', async () => {
    await guest.run(`kill -TERM ${pid}`);
    await sleep(1500);
    const before = scanDiskRing(await readFile(img), SLOTS).newest;
    pid = await startAgent();
    const from = /disk heartbeat: writing \/dev\/vda \(8 slots, every 1 s\) from seq (\d+)/g;
    const end = Date.now() + 60_000;
    let after = before;
    let starts: bigint[] = [];
    // The record reaches the disk just before the agent logs it: wait for both.
    while (Date.now() < end && (after?.instance === before?.instance || starts.length < 2)) {
      await sleep(1000);
      after = scanDiskRing(await readFile(img), SLOTS).newest;
      starts = [...(await guest.run('cat /tmp/agent.err')).matchAll(from)].map((m) => BigInt(m[1] as string));
    }
    expect(after?.instance).not.toBe(before?.instance);
    expect(after?.seq).toBeGreaterThan(before?.seq ?? 0n);
    expect(starts).toHaveLength(2);
    expect(starts[1]).toBe((before?.seq ?? 0n) + 1n);
    await guest.run(`kill -TERM ${pid}`);
  });
});
