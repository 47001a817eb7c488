import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import type { AppConfig } from '../../monitor/config.js';
import { VcpuPressureSampler } from '../../monitor/vcpu-pressure.js';
import { FakeClock } from '../../util/clock.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const app = (pid: number): AppConfig => ({
  name: 'vm1',
  target: { name: 'vm1', qmp: '/nonexistent/qmp' },
  origin: 'config',
  diagnostics: { cooldownMs: 60_000, collectors: [] },
  scenarios: [
    { name: 'kernel', probe: { type: 'kernel-heartbeat', params: { pid } }, timing: { periodMs: 1000, timeoutMs: 500, initialDelayMs: 0, failureThreshold: 1, successThreshold: 1 } },
  ],
});

test('two readings a window apart the first time, then from the previous reading; a QEMU that is gone is undefined', async () => {
  dir = await mkdtemp(join(tmpdir(), 'vcpu-pressure-'));
  const root = dir;
  const wait = async (ns: number) => {
    await mkdir(join(root, '42', 'task', '43'), { recursive: true });
    await writeFile(join(root, '42', 'stat'), '42 (qemu-system-x86) S 1 42 42 0 -1\n');
    await writeFile(join(root, '42', 'task', '43', 'schedstat'), `1000 ${ns} 5\n`);
  };
  await wait(0);
  const clock = new FakeClock();
  const s = new VcpuPressureSampler({ clock, procRoot: root, windowMs: 500 });
  const a = app(42);
  const first = s.sample(a);
  while (clock.pending === 0) await new Promise((r) => setTimeout(r, 5)); // the first reading is taken
  await wait(450_000_000); // the thread waits 450 ms of the 500 ms window
  await clock.advance(500);
  expect(await first).toEqual({ vcpuWaitRatio: 0.9, vcpuDetail: 'QEMU pid 42 thread 43 waited for a CPU 90% of 500 ms' });

  // Less than a window later: the same answer, nothing read.
  await clock.advance(200);
  await wait(999_000_000);
  expect((await s.sample(a))?.vcpuWaitRatio).toBe(0.9);
  // Fresh: measured from that reading, no sleep.
  await clock.advance(800);
  await wait(550_000_000);
  expect((await s.sample(a))?.vcpuWaitRatio).toBeCloseTo(0.1);
  expect(clock.pending).toBe(0);

  // Primed (the heartbeat turned late) after the reading went stale: the sample needs no window of its own.
  await clock.advance(20_000);
  s.prime(a);
  await new Promise((r) => setTimeout(r, 50));
  await clock.advance(1000);
  await wait(1_050_000_000);
  expect((await s.sample(a))?.vcpuWaitRatio).toBeCloseTo(0.5);
  expect(clock.pending).toBe(0);

  // Primed again later: the old answer is not given for the new window; the sample waits it out.
  await clock.advance(20_000);
  s.prime(a);
  await new Promise((r) => setTimeout(r, 50));
  const next = s.sample(a);
  while (clock.pending === 0) await new Promise((r) => setTimeout(r, 5));
  await wait(1_050_000_000); // no wait at all in this window
  await clock.advance(500);
  expect((await next)?.vcpuWaitRatio).toBe(0);

  await clock.advance(1000);
  await rm(join(root, '42'), { recursive: true });
  expect(await s.sample(a)).toBeUndefined();
  // No QMP path and no pid: nothing to read.
  expect(await s.sample({ ...a, target: { name: 'vm1' } })).toBeUndefined();
});
