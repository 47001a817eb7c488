import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DiskHeartbeatProbe } from '../../../monitor/probes/disk-heartbeat.js';
import { ring } from '../../helpers/heartbeat-disk.js';
import type { ProbeResult } from '../../../monitor/types.js';

describe('disk-heartbeat probe', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eve-diag-disk-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let n = 0;

  async function setup(seqs: bigint[]) {
    const file = join(dir, `hb-${++n}.img`);
    await writeFile(file, ring(seqs));
    let now = 0;
    const probe = new DiskHeartbeatProbe({}, { periodMs: 10_000, now: () => now });
    const run = (): Promise<ProbeResult> => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 1000, signal: new AbortController().signal });
    return { file, run, advance: (ms: number) => (now += ms), write: (s: bigint[]) => writeFile(file, ring(s)) };
  }

  test('baseline, advancing seq is a success, a seq standing still beyond maxAge a failure', async () => {
    const { run, advance, write } = await setup([1n, 2n, 3n]);
    const base = await run();
    expect(base.outcome).toBe('unknown');
    expect(base.evidence).toMatchObject({ seq: '3', validRecords: 3, invalidRecords: 0, instance: '000000000000feed', writerPeriodMs: 1000 });
    advance(5000);
    await write([1n, 2n, 3n, 4n, 5n]);
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(ok.detail).toBe('seq advanced to 5');
    advance(9000);
    expect((await run()).outcome).toBe('success');
    advance(2000);
    const stuck = await run();
    expect(stuck.outcome).toBe('failure');
    expect(stuck.detail).toBe('seq stuck at 5 for 11000 ms');
  });

  test('an image not written for longer than maxAge fails at once; a missing one is unknown', async () => {
    const { file, run } = await setup([1n]);
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    expect((await run()).outcome).toBe('failure');
    const probe = new DiskHeartbeatProbe({}, { periodMs: 1000 });
    const missing = await probe.run({ name: 'x', heartbeatDisk: join(dir, 'nope.img') }, { timeoutMs: 100, signal: new AbortController().signal });
    expect(missing.outcome).toBe('unknown');
    expect((await probe.run({ name: 'x' }, { timeoutMs: 100, signal: new AbortController().signal })).outcome).toBe('unknown');
  });

  test('reads the ring size the agent wrote: a 16-slot ring is seen whole (the newest record in sector 12)', async () => {
    const file = join(dir, 'hb16.img');
    const seqs = (upto: bigint) => Array.from({ length: Number(upto) }, (_, i) => BigInt(i + 1));
    await writeFile(file, ring(seqs(20n), 16)); // seq 17..20 overwrote sectors 1..4; 12 holds seq 12
    let now = 0;
    const probe = new DiskHeartbeatProbe({}, { periodMs: 1000, now: () => now });
    const run = () => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 100, signal: new AbortController().signal });
    expect((await run()).evidence).toMatchObject({ seq: '20', slots: 16, slotsFrom: 'records', validRecords: 16 });
    // The agent goes on in sectors beyond the first 8: seq 28 lands in sector 12.
    await writeFile(file, ring(seqs(28n), 16));
    now += 500;
    const r = await run();
    expect(r.outcome).toBe('success');
    expect(r.detail).toBe('seq advanced to 28');
    // An explicit slots param still wins.
    const fixed = new DiskHeartbeatProbe({ slots: 8 }, { periodMs: 1000, now: () => now });
    const f = await fixed.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 100, signal: new AbortController().signal });
    expect(f.evidence).toMatchObject({ slots: 8, slotsFrom: 'config', seq: '23' }); // sectors 0..7 only
  });

  test('garbage and no valid record: baseline unknown, then a failure after maxAge', async () => {
    const file = join(dir, 'garbage.img');
    await writeFile(file, Buffer.alloc(4096, 0xa5));
    let now = 0;
    const probe = new DiskHeartbeatProbe({ maxAgeMs: 1000 }, { periodMs: 1000, now: () => now });
    const run = () => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 100, signal: new AbortController().signal });
    const first = await run();
    expect(first.outcome).toBe('unknown');
    expect(first.evidence).toMatchObject({ validRecords: 0, invalidRecords: 8, slots: 8, slotsFrom: 'default' });
    now += 1500;
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('no valid record in 1500 ms');
  });
});
