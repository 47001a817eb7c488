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

  test('garbage and no valid record: baseline unknown, then a failure after maxAge', async () => {
    const file = join(dir, 'garbage.img');
    await writeFile(file, Buffer.alloc(4096, 0xa5));
    let now = 0;
    const probe = new DiskHeartbeatProbe({ maxAgeMs: 1000 }, { periodMs: 1000, now: () => now });
    const run = () => probe.run({ name: 'vm', heartbeatDisk: file }, { timeoutMs: 100, signal: new AbortController().signal });
    const first = await run();
    expect(first.outcome).toBe('unknown');
    expect(first.evidence).toMatchObject({ validRecords: 0, invalidRecords: 8 });
    now += 1500;
    const r = await run();
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('no valid record in 1500 ms');
  });
});
