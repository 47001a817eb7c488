import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { GdbClient } from '../../../host-reader/gdb/client.js';
import { FakeGdbStub } from '../../../host-reader/gdb/fake-stub.js';
import { REG } from '../../../host-reader/gdb/x86-64.js';
import { SymbolTable } from '../../../host-reader/symbols/system-map.js';
import { connectQmp } from '../../../monitor/diagnostics/common.js';
import { GdbStacksCollector, type GdbStacksOptions, type GdbStacksReport } from '../../../monitor/diagnostics/gdb-stacks.js';
import type { AppTarget, CollectorResult } from '../../../monitor/types.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { LINK_BANNER, SYNTHETIC_MAP } from '../../../host-reader/symbols/fake-system-map.js';

const OFF = 0x1e00000n;
const STACK = 0xffffc90000080000n;
const BANNER = 'Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3\n';

let stub: FakeGdbStub;
let addr: { host: string; port: number };
let dir: string;
let systemMap: string;

function setRegs(cpu: number, r: Record<string, bigint | number>): void {
  const block = stub.registers[cpu] as Buffer;
  for (const [name, v] of Object.entries(r)) {
    const def = REG[name];
    if (def === undefined) throw new Error(name);
    if (def.size === 8) block.writeBigUInt64LE(BigInt(v), def.offset);
    else block.writeUInt32LE(Number(v), def.offset);
  }
}

beforeEach(async () => {
  stub = new FakeGdbStub({ cpus: 2 });
  addr = await stub.listen();
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-gdb-stacks-'));
  systemMap = join(dir, 'System.map');
  await writeFile(systemMap, SYNTHETIC_MAP);
  // vCPU 0: spinning at ksys_sync+1 with interrupts off, called from __do_sys_sync < do_syscall_64.
  setRegs(0, { rip: 0xffffffff81001401n + OFF, rsp: STACK + 0x3f00n, rbp: 0n, eflags: 0x2, cs: 0x10 });
  const frames = Buffer.alloc(0x100);
  frames.writeBigUInt64LE(0xffffffff810014aan + OFF, 0x00); // __do_sys_sync+0xa
  frames.writeBigUInt64LE(0xffff888001234567n, 0x08); // data
  frames.writeBigUInt64LE(0xffffffff8100151dn + OFF, 0x10); // do_syscall_64+0x5d
  stub.map(STACK + 0x3f00n, frames);
  // vCPU 1: in user mode.
  setRegs(1, { rip: 0x401000n, rsp: 0x7ffc0000f000n, eflags: 0x202, cs: 0x33 });
  stub.map(LINK_BANNER + OFF, Buffer.from(BANNER, 'latin1'));
});
afterEach(async () => {
  await stub.close();
  await rm(dir, { recursive: true, force: true });
});

const connectGdb: GdbStacksOptions['connectGdb'] = (_path, o) => GdbClient.connect(addr, o);

async function collect(target: AppTarget, collector = new GdbStacksCollector({ connectGdb }), timeoutMs = 10_000): Promise<{ result: CollectorResult; report: GdbStacksReport; text: string }> {
  const result = await collector.collect(target, { timeoutMs, signal: new AbortController().signal, maxBytes: 256 * 1024 });
  const text = String(result.artifacts.find((a) => a.name === 'gdb-stacks.txt')?.data ?? '');
  const json = result.artifacts.find((a) => a.name === 'gdb-stacks.json');
  const report = JSON.parse(String(json?.data ?? '{}')) as GdbStacksReport;
  return { result, report, text };
}

describe('GdbStacksCollector against the fake stub', () => {
  test('every vCPU: registers, RIP symbolized after KASLR, the stack scanned; the VM resumed', async () => {
    const { result, report, text } = await collect({ name: 'vm', gdb: 'unused', systemMap });
    expect(result.ok).toBe(true);
    expect(result.summary).toMatch(/^gdb-stacks: 2\/2 vCPUs, VM paused [\d.]+ ms: vCPU 0 ksys_sync\+0x1\/0xa0 \(irqs off\), vCPU 1 user mode; KASLR offset 0x1e00000$/);
    expect(stub.detached).toBe(true);
    expect(stub.received.filter((p) => p === 'D;1')).toHaveLength(1);
    expect(report.symbols).toMatchObject({ symbolized: true, textSymbols: 18, kaslr: { offset: '0x1e00000', via: 'rip', probes: 2, banner: BANNER.trim() } });
    expect(report.vcpus[0]).toMatchObject({
      index: 0,
      thread: 'p01.01',
      info: 'CPU#0 [halted ]',
      mode: 'kernel',
      interrupts: 'off',
      rip: { addr: '0xffffffff82e01401', symbol: 'ksys_sync+0x1/0xa0' },
      stack: { start: '0xffffc90000083f00', end: '0xffffc90000084000', bytes: 0x100, framePointerFrames: 0, truncated: false },
      frames: [
        { addr: '0xffffffff82e014aa', sp: '0xffffc90000083f00', kind: 'scanned', symbol: '__do_sys_sync+0xa/0x20' },
        { addr: '0xffffffff82e0151d', sp: '0xffffc90000083f10', kind: 'scanned', symbol: 'do_syscall_64+0x5d/0x140' },
      ],
    });
    expect(report.vcpus[1]).toMatchObject({ mode: 'user', interrupts: 'on', rip: { addr: '0x0000000000401000' } });
    expect(report.vcpus[1]?.rip?.symbol).toBeUndefined();
    expect(report.vcpus[1]?.stack).toBeUndefined();
    expect(report.pauseMs).toBeGreaterThan(0);
    expect(Object.keys(report.phasesMs ?? {})).toEqual(['connected', 'vcpus', 'kaslr', 'detached']);
    expect(text).toContain('vCPU 0 (thread p01.01, CPU#0 [halted ]): kernel mode, interrupts off');
    expect(text).toContain('  RIP: 0x10:0xffffffff82e01401 ksys_sync+0x1/0xa0');
    expect(text).toContain('   ? __do_sys_sync+0xa/0x20  [0xffffc90000083f00]');
    expect(text).toContain('  (user mode: no kernel stack walked)');
    expect(text).toMatch(/^VM paused [\d.]+ ms by the gdbstub/);
  });

  test('the KASLR offset is remembered: the next collection confirms it with one read', async () => {
    const collector = new GdbStacksCollector({ connectGdb });
    await collect({ name: 'vm', gdb: 'unused', systemMap }, collector);
    const { report } = await collect({ name: 'vm', gdb: 'unused', systemMap }, collector);
    expect(report.symbols.kaslr).toMatchObject({ via: 'known', probes: 2 });
  });

  test('no System.map: raw addresses, words in the kernel image range listed; the summary says unsymbolized', async () => {
    const { result, report, text } = await collect({ name: 'vm', gdb: 'unused' });
    expect(result.ok).toBe(true);
    expect(result.summary).toMatch(/vCPU 0 0xffffffff82e01401 \(irqs off\).*unsymbolized \(no System\.map for this app/);
    expect(report.vcpus[0]?.frames?.map((f) => f.addr)).toEqual(['0xffffffff82e014aa', '0xffffffff82e0151d']);
    expect(text).toContain('Unsymbolized: no System.map');
    expect(stub.received.some((p) => p.startsWith(`m${(LINK_BANNER + OFF).toString(16)}`))).toBe(false);
  });

  test('a System.map of another kernel: no candidate matches (bounded reads), unsymbolized; a placeholder is named', async () => {
    stub.pages.clear();
    const { result: first, report } = await collect({ name: 'vm', gdb: 'unused', systemMap });
    let result = first;
    expect(result.ok).toBe(true);
    expect(result.summary).toMatch(/unsymbolized \(KASLR offset: linux_banner found at no candidate/);
    expect(report.symbols.symbolized).toBe(false);
    expect(stub.received.filter((p) => p.startsWith('m')).length).toBeLessThanOrEqual(520 + 4);
    await writeFile(systemMap, 'ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n');
    ({ result } = await collect({ name: 'vm', gdb: 'unused', systemMap }));
    expect(result.summary).toMatch(/unsymbolized \(.*a placeholder System\.map/);
  });

  test('the run state: a paused VM is stopped again right after the detach; a running one is left running', async () => {
    const qmp = await FakeQmpServer.start();
    try {
      let status = { running: false, status: 'paused' };
      qmp.handle('query-status', () => ({ return: status }));
      qmp.handle('stop', () => {
        // The stub resumed the VM on D: stop comes after it.
        expect(stub.detached).toBe(true);
        status = { running: false, status: 'paused' };
        return { return: {} };
      });
      const collector = new GdbStacksCollector({ connectGdb, qmpConnector: connectQmp, loadSymbols: () => Promise.resolve(SymbolTable.parse(SYNTHETIC_MAP)) });
      const target: AppTarget = { name: 'vm', gdb: 'unused', qmp: qmp.path, systemMap: 'given' };
      const first = await collect(target, collector);
      const { result, text } = first;
      let { report } = first;
      expect(report.runState).toEqual({ before: 'paused', after: 'paused', restored: true });
      expect(result.summary).toMatch(/run state paused -> paused$/);
      expect(text).toContain('Run state: before paused, after paused (QMP stop after the detach resumed it)');
      expect(qmp.received.map((c) => c.execute)).toEqual(['qmp_capabilities', 'query-status', 'stop', 'query-status']);
      status = { running: true, status: 'running' };
      ({ report } = await collect(target, collector));
      expect(report.runState).toEqual({ before: 'running', after: 'running' });
      expect(qmp.received.filter((c) => c.execute === 'stop')).toHaveLength(1);
    } finally {
      await qmp.close();
    }
  });

  test('QMP unreachable: the stacks anyway, the run-state error said', async () => {
    const { result, report } = await collect({ name: 'vm', gdb: 'unused', qmp: join(dir, 'no-qmp.sock'), systemMap });
    expect(result.ok).toBe(true);
    expect(report.runState?.error).toMatch(/^query-status before attaching: /);
  });

  test('no gdbstub socket, or nothing listening: ok false', async () => {
    expect(await new GdbStacksCollector().collect({ name: 'vm' }, { timeoutMs: 1000, signal: new AbortController().signal, maxBytes: 1024 })).toMatchObject({
      ok: false,
      summary: 'gdb-stacks: the app has no gdbstub socket (qemu-args --gdb)',
    });
    const { result } = await collect({ name: 'vm', gdb: join(dir, 'none.sock') }, new GdbStacksCollector());
    expect(result.ok).toBe(false);
    expect(result.summary).toMatch(/cannot connect to the gdbstub/);
    expect(result.summary).not.toMatch(/attach again/);
  });

  test('hostile stub: a short register block, a bad thread id, too many threads, silence', async () => {
    stub.override = (p) => (p === 'g' ? '00'.repeat(16) : undefined);
    let { result, report } = await collect({ name: 'vm', gdb: 'unused', systemMap });
    expect(result.ok).toBe(false);
    expect(report.vcpus[0]?.error).toMatch(/register block of 16 bytes/);

    stub.override = (p) => (p === 'qfThreadInfo' ? 'mp01.01,p01.02;x' : undefined);
    ({ result, report } = await collect({ name: 'vm', gdb: 'unused', systemMap }));
    expect(result.ok).toBe(true);
    expect(report.vcpus.map((v) => v.error)).toEqual([undefined, 'a thread id that is not one']);

    stub.override = (p) => (p === 'qfThreadInfo' ? `m${Array.from({ length: 70 }, (_, i) => `p01.${i + 1}`).join(',')}` : undefined);
    ({ result } = await collect({ name: 'vm', gdb: 'unused', systemMap }));
    expect(result.ok).toBe(false);
    expect(result.summary).toMatch(/more than 64 threads/);

    stub.override = (p) => (p.startsWith('m') ? { silent: true } : undefined);
    const t0 = Date.now();
    ({ result, report } = await collect({ name: 'vm', gdb: 'unused', systemMap }, undefined, 600));
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(result.summary).toMatch(/no reply within.*; the VM was resumed by attaching again and detaching$/);
    expect(stub.received.at(-1)).toBe('D;1');
    expect(stub.detached).toBe(true);
  });

  test('aborted while the stub is silent: the session is closed at once', async () => {
    stub.override = (p) => (p === 'g' ? { silent: true } : undefined);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const t0 = Date.now();
    const result = await new GdbStacksCollector({ connectGdb }).collect({ name: 'vm', gdb: 'unused', systemMap }, { timeoutMs: 10_000, signal: ac.signal, maxBytes: 64 * 1024 });
    expect(Date.now() - t0).toBeLessThan(3500);
    expect(result.ok).toBe(false);
    // The session died without D: a second attach detached (the VM runs again).
    expect(result.summary).toMatch(/the VM was resumed by attaching again and detaching/);
    expect(stub.detached).toBe(true);
  });

  test('every vCPU in user mode: no KASLR search (nothing to symbolize)', async () => {
    setRegs(0, { rip: 0x401000n, rsp: 0x7ffc0000f000n, eflags: 0x202, cs: 0x33 });
    const { result, report } = await collect({ name: 'vm', gdb: 'unused', systemMap });
    expect(result.ok).toBe(true);
    expect(result.summary).toMatch(/vCPU 0 user mode, vCPU 1 user mode; unsymbolized \(no vCPU in kernel mode: nothing to symbolize\)/);
    expect(report.symbols.kaslr).toBeUndefined();
    expect(stub.received.some((p) => p.startsWith('m'))).toBe(false);
  });

  test('a stack read that fails stops the walk and keeps what was read', async () => {
    setRegs(0, { rsp: STACK + 0x3ff0n - 0x1000n });
    const { report } = await collect({ name: 'vm', gdb: 'unused', systemMap });
    expect(report.vcpus[0]?.stack?.bytes).toBe(0);
    expect(report.vcpus[0]?.stack?.stoppedBy).toMatch(/E14/);
    expect(report.vcpus[0]?.rip?.symbol).toBe('ksys_sync+0x1/0xa0');
  });
});
