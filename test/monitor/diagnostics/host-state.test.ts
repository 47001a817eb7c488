import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  HostStateCollector,
  parseLoadavg,
  parsePressure,
  parseStat,
} from '../../../monitor/diagnostics/host-state.js';
import type { HostState } from '../../../protocol/host-state.js';
import type { QmpConnector } from '../../../monitor/diagnostics/common.js';
import { QmpClient } from '../../../host-reader/qmp/index.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'fake-proc-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function put(rel: string, text: string): void {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), text);
}

/** proc(5) stat line: pid (comm) state ... utime(14) stime(15) ... num_threads(20) ... processor(39). */
function statLine(pid: number, comm: string, state: string, utime: number, stime: number, threads = 1, cpu = 0): string {
  const f = Array.from({ length: 52 }, () => '0');
  f[0] = String(pid);
  f[1] = `(${comm})`;
  f[2] = state;
  f[13] = String(utime);
  f[14] = String(stime);
  f[19] = String(threads);
  f[38] = String(cpu);
  return `${f.join(' ')}\n`;
}

const QMP = '/run/hypervisor/kvm/vm1/qmp';

function fakeHost(): void {
  put('loadavg', '1.50 0.75 0.25 3/412 9999\n');
  put('pressure/cpu', 'some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n');
  put('pressure/memory', 'some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n');
  // no pressure/io: a kernel without it
  put('meminfo', 'MemTotal:        4000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\nHugePages_Total:       0\nSwapTotal:             0 kB\n');
  put('1/cmdline', '/sbin/init\0');
  put('1/stat', statLine(1, 'init', 'S', 10, 10));
  put('net/unix', 'Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/hypervisor/kvm/vm1/qmp\n0000000000000000: 00000002 00000000 00000000 0001 03 777\n');
}

/** A QEMU process 500 with a main thread, two vCPU threads and an I/O thread. */
function fakeQemu(cmdline: string[]): void {
  put('500/cmdline', `${cmdline.join('\0')}\0`);
  put('500/comm', 'qemu-system-x86\n');
  put('500/stat', statLine(500, 'qemu-system-x86', 'S', 1000, 200, 4));
  put('500/status', 'Name:\tqemu-system-x86\nVmRSS:\t  524288 kB\nThreads:\t4\n');
  const threads: [number, string, string, number][] = [
    [500, 'qemu-system-x86', 'S', 5],
    [501, 'CPU 0/KVM', 'R', 600],
    [502, 'CPU 1/KVM', 'S', 30],
    [503, 'IO mon_iothread', 'S', 1],
  ];
  for (const [tid, comm, state, utime] of threads) {
    put(`500/task/${tid}/comm`, `${comm}\n`);
    put(`500/task/${tid}/stat`, statLine(tid, comm, state, utime, 10, 4, tid - 500));
  }
  mkdirSync(join(root, '500/fd'), { recursive: true });
  symlinkSync('/dev/null', join(root, '500/fd/0'));
  symlinkSync('socket:[4242]', join(root, '500/fd/7'));
}

const opts = (maxBytes = 64 * 1024) => ({ timeoutMs: 2000, signal: new AbortController().signal, maxBytes });
const collect = async (target: Parameters<HostStateCollector['collect']>[0], sampleMs = 0) => {
  const r = await new HostStateCollector({ procRoot: root, sampleMs, useQmp: false }).collect(target, opts());
  return { r, state: JSON.parse(r.artifacts[0]?.data as string) as HostState };
};

describe('HostStateCollector', () => {
  test('host load, PSI, memory, and QEMU found by the QMP path on its command line', async () => {
    fakeHost();
    fakeQemu(['/usr/bin/qemu-system-x86_64', '-name', 'vm1', '-qmp', `unix:${QMP},server=on,wait=off`]);
    const { r, state } = await collect({ name: 'vm1', qmp: QMP });
    expect(r.ok).toBe(true);
    expect(r.artifacts[0]).toMatchObject({ name: 'host-state.json', mediaType: 'application/json' });
    expect(state.loadavg).toEqual({ load1: 1.5, load5: 0.75, load15: 0.25, runnable: 3, entities: 412 });
    expect(state.pressure.cpu?.some).toEqual({ avg10: 12.5, avg60: 3, avg300: 1, total: 123456 });
    expect(state.pressure.io).toBeNull();
    expect(state.meminfo).toEqual({ MemTotal: 4000000, MemFree: 100000, MemAvailable: 2000000, SwapTotal: 0 });
    expect(state.qemu).toMatchObject({ pid: 500, foundBy: 'cmdline', comm: 'qemu-system-x86', threads: 4, rssKiB: 524288, utimeMs: 10000, stimeMs: 2000, threadsRead: 4, vcpuSource: 'comm' });
    expect(state.qemu?.vcpus).toEqual([
      { tid: 501, comm: 'CPU 0/KVM', state: 'R', lastCpu: 1, utimeMs: 6000, stimeMs: 100 },
      { tid: 502, comm: 'CPU 1/KVM', state: 'S', lastCpu: 2, utimeMs: 300, stimeMs: 100 },
    ]);
    expect(r.summary).toMatch(/load 1.5 0.75 0.25, cpu pressure 12.5%.*qemu pid 500 \(cmdline\) S, 2 vCPU threads: CPU 0\/KVM R, CPU 1\/KVM S/);
  });

  test('without debug-threads the vCPU threads are told apart by the thread ids QMP query-cpus-fast gives', async () => {
    fakeHost();
    fakeQemu(['qemu-system-x86_64', '-qmp', `unix:${QMP},server=on`]);
    // QEMU without `-name debug-threads=on`: every thread has the process's name.
    for (const tid of [500, 501, 502, 503]) put(`500/task/${tid}/comm`, 'qemu-system-x86\n');
    const server = await FakeQmpServer.start();
    try {
      server.handle('query-cpus-fast', { return: [{ 'cpu-index': 0, 'thread-id': 502 }] });
      const connector: QmpConnector = async (_path, o) => {
        const qmp = await QmpClient.connect(server.target, { timeoutMs: o.timeoutMs, signal: o.signal });
        return { qmp, release: () => qmp.close() };
      };
      const r = await new HostStateCollector({ procRoot: root, sampleMs: 0, qmpConnector: connector }).collect({ name: 'vm1', qmp: QMP }, opts());
      const state = JSON.parse(r.artifacts[0]?.data as string) as HostState;
      expect(state.qemu?.vcpuSource).toBe('qmp');
      expect(state.qemu?.vcpus.map((t) => [t.tid, t.comm])).toEqual([[502, 'qemu-system-x86']]);
      expect(state.errors).toEqual([]);
      // QMP down: back to thread names (none match here), and the error is recorded.
      const down = await new HostStateCollector({ procRoot: root, sampleMs: 0 }).collect({ name: 'vm1', qmp: QMP }, opts());
      const downState = JSON.parse(down.artifacts[0]?.data as string) as HostState;
      expect(downState.qemu?.vcpuSource).toBe('comm');
      expect(downState.errors[0]).toMatch(/^query-cpus-fast: /);
    } finally {
      await server.close();
    }
  });

  test('QEMU started with -readconfig (no path on the command line): found by the socket it holds', async () => {
    fakeHost();
    fakeQemu(['/usr/lib/xen/bin/qemu-system-x86_64', '-readconfig', '/run/hypervisor/kvm/vm1/qemu.cfg']);
    const { r, state } = await collect({ name: 'vm1', qmp: QMP });
    expect(r.ok).toBe(true);
    expect(state.qemu).toMatchObject({ pid: 500, foundBy: 'socket' });
  });

  test('a path that only starts with the QMP path does not match', async () => {
    fakeHost();
    fakeQemu(['qemu-system-x86_64', '-qmp', `unix:${QMP}2,server=on`]);
    put('net/unix', 'Num RefCount Protocol Flags Type St Inode Path\n');
    const { r, state } = await collect({ name: 'vm1', qmp: QMP });
    expect(r.ok).toBe(false);
    expect(state.qemu).toBeNull();
    expect(r.summary).toMatch(/qemu not found/);
  });

  test('the pid given by the target wins', async () => {
    fakeHost();
    fakeQemu(['qemu-system-x86_64']);
    const { state } = await collect({ name: 'vm1', pid: 500 });
    expect(state.qemu).toMatchObject({ pid: 500, foundBy: 'target' });
    const dead = await collect({ name: 'vm1', pid: 4000 });
    expect(dead.r.ok).toBe(false);
    expect(dead.state.errors).toEqual(['QEMU pid 4000 is not running']);
  });

  test('two samples give each vCPU thread its CPU use', async () => {
    fakeHost();
    fakeQemu(['qemu-system-x86_64', '-qmp', `unix:${QMP},server=on`]);
    const collector = new HostStateCollector({ procRoot: root, sampleMs: 200, useQmp: false });
    const running = collector.collect({ name: 'vm1', qmp: QMP }, opts());
    // CPU 0 spins (+20 ticks = 200 ms in 200 ms), CPU 1 idles.
    setTimeout(() => put('500/task/501/stat', statLine(501, 'CPU 0/KVM', 'R', 620, 10, 4, 1)), 50);
    const state = JSON.parse((await running).artifacts[0]?.data as string) as HostState;
    const [cpu0, cpu1] = state.qemu?.vcpus ?? [];
    expect(state.qemu?.sampleMs).toBe(200);
    expect(cpu0?.cpuPercent).toBeGreaterThan(80);
    expect(cpu0?.cpuPercent).toBeLessThanOrEqual(100);
    expect(cpu1?.cpuPercent).toBe(0);
  });

  test('no QEMU to look for: host state only', async () => {
    fakeHost();
    const { r, state } = await collect({ name: 'vm1' });
    expect(r.ok).toBe(true);
    expect(state.qemu).toBeNull();
  });

  test('an unreadable proc root: ok false, never a throw', async () => {
    const r = await new HostStateCollector({ procRoot: join(root, 'nope'), sampleMs: 0 }).collect({ name: 'vm1', qmp: QMP }, opts());
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/loadavg/);
  });

  test('bounded by maxBytes', async () => {
    fakeHost();
    fakeQemu(['qemu-system-x86_64', '-qmp', `unix:${QMP},server=on`]);
    const r = await new HostStateCollector({ procRoot: root, sampleMs: 0, useQmp: false }).collect({ name: 'vm1', qmp: QMP }, opts(300));
    expect(Buffer.byteLength(r.artifacts[0]?.data as string)).toBeLessThanOrEqual(300);
    expect(r.artifacts[0]?.truncated).toBe(true);
  });

  test('the real /proc: finds this test process by pid', async () => {
    const r = await new HostStateCollector({ sampleMs: 0 }).collect({ name: 'self', pid: process.pid }, opts());
    const state = JSON.parse(r.artifacts[0]?.data as string) as HostState;
    expect(r.ok).toBe(true);
    expect(state.loadavg).not.toBeNull();
    expect(state.qemu?.pid).toBe(process.pid);
    expect(state.qemu?.threadsRead).toBeGreaterThan(0);
  });
});

describe('parsers', () => {
  test('stat with a comm holding spaces and parentheses', () => {
    const s = parseStat(statLine(7, 'a) (b c', 'D', 250, 50, 3, 5));
    expect(s).toEqual({ comm: 'a) (b c', state: 'D', utimeMs: 2500, stimeMs: 500, threads: 3, processor: 5 });
    expect(() => parseStat('garbage')).toThrow();
  });
  test('loadavg and pressure', () => {
    expect(() => parseLoadavg('')).toThrow();
    expect(parsePressure('some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n')).toEqual({ some: { avg10: 1, avg60: 2, avg300: 3, total: 4 } });
    expect(parsePressure('junk')).toBeNull();
  });
});
