import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { MemoryReadError, UnmappedReadError } from '../../../host-reader/memory/guest-memory.js';
import {
  Gpa2hvaParseError,
  parseGpa2hva,
  ProcMemory,
  ProcMemTranslateError,
  QemuProcessGoneError,
  readPtraceScope,
} from '../../../host-reader/memory/procmem.js';
import { QmpClient } from '../../../host-reader/qmp/index.js';
import { addBridgedSocket, removeBridgedSocket } from '../../../host-reader/libvirt/bridged-sockets.js';
import { XpMemory } from '../../../host-reader/memory/xp.js';
import { openGuestMemory, ProcmemUnavailableError } from '../../../host-reader/session.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';

/**
 * procmem without QEMU: the gpa2hva parser, the translation checks, and real preads of
 * /proc/<pid>/mem of this process or a child, with a fake QMP that "maps" guest RAM at the start of
 * the process's executable (its ELF header is known bytes: \x7fELF).
 */

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('parseGpa2hva', () => {
  test('the reply of QEMU 7.2 / 10.0 (CRLF or LF)', () => {
    expect(parseGpa2hva('Host virtual address for 0x100000 (pc.ram) is 0x7f2a5c100000\r\n', 0x100000n)).toEqual({
      gpa: 0x100000n,
      block: 'pc.ram',
      hva: 0x7f2a5c100000n,
    });
    expect(parseGpa2hva('Host virtual address for 0x0 (mem0) is 0x7f0000000000\n', 0n).block).toBe('mem0');
    expect(parseGpa2hva('Host virtual address for 0x1ffe0000 (ram-node0) is 0x7fffe0000000', 0x1ffe0000n).hva).toBe(0x7fffe0000000n);
  });

  test.each([
    ['an error line', 'No memory is mapped at address 0x100000\r\n', /not "Host virtual address/],
    ['not RAM', 'Memory at address 0x100000is not RAM\r\n', /not "Host virtual address/],
    ['another address', 'Host virtual address for 0x200000 (pc.ram) is 0x7f2a5c100000\r\n', /answers for 0x200000, asked 0x100000/],
    ['null', 'Host virtual address for 0x100000 (pc.ram) is (nil)\r\n', /not "Host virtual/],
    ['zero', 'Host virtual address for 0x100000 (pc.ram) is 0x0\r\n', /null host address/],
    ['above 2^57', 'Host virtual address for 0x100000 (pc.ram) is 0x200000000000000\r\n', /2\^57/],
    ['two lines', 'Host virtual address for 0x100000 (pc.ram) is 0x7f2a5c100000\r\nmore\r\n', /not "Host/],
    ['uppercase hex', 'Host virtual address for 0x100000 (pc.ram) is 0x7F2A5C100000\r\n', /not "Host/],
    ['empty', '', /not "Host/],
    ['long', 'x'.repeat(10_000), /longer than 512/],
  ])('%s is a Gpa2hvaParseError', (_what, reply, re) => {
    let err: unknown;
    try {
      parseGpa2hva(reply, 0x100000n);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Gpa2hvaParseError);
    expect((err as Error).message).toMatch(re);
    expect((err as Error).message.length).toBeLessThan(400); // the reply is quoted, cut at 200 characters
  });
});

test('readPtraceScope: the value, or undefined when absent or odd', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eve-diag-yama-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a'), '1\n');
  writeFileSync(join(dir, 'b'), 'banana\n');
  expect(await readPtraceScope(join(dir, 'a'))).toBe(1);
  expect(await readPtraceScope(join(dir, 'b'))).toBeUndefined();
  expect(await readPtraceScope(join(dir, 'missing'))).toBeUndefined();
});

/** Where `pid`'s executable's first mapping (offset 0: the ELF header) starts. */
function elfBase(pid: number | 'self'): bigint {
  const exe = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n');
  const line = exe.find((l) => / 00000000 /.test(l) && / \/\S+$/.test(l));
  if (line === undefined) throw new Error('no file mapping at offset 0');
  return BigInt(`0x${line.split('-')[0]}`);
}

// A small guest: 640 KiB at 0, then 1 MiB..2 MiB; both "pc.ram" (one block, @offset).
const MTREE = [
  'FlatView #0',
  ' AS "memory", root: system',
  ' Root memory region: system',
  '  0000000000000000-000000000009ffff (prio 0, ram): pc.ram',
  '  0000000000100000-00000000001fffff (prio 0, ram): pc.ram @0000000000100000',
  '',
].join('\n');

/** A fake QEMU whose guest RAM at 1 MiB is `hvaAt1M` (and pc.ram linear from there). */
async function fakeQemu(hvaAt1M: bigint, reply?: (gpa: bigint, hva: bigint) => string) {
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  const state = { hvaAt1M, reply, gpa2hva: 0 };
  server.handle('human-monitor-command', (c) => {
    const line = c.arguments?.['command-line'] as string;
    if (line === 'info mtree -f') return { return: MTREE };
    const m = /^gpa2hva 0x([0-9a-f]+)$/.exec(line);
    if (m === null) return { error: { class: 'GenericError', desc: `unexpected HMP ${line}` } };
    state.gpa2hva++;
    const gpa = BigInt(`0x${m[1]}`);
    const hva = state.hvaAt1M - 0x100000n + gpa;
    return { return: state.reply?.(gpa, hva) ?? `Host virtual address for 0x${gpa.toString(16)} (pc.ram) is 0x${hva.toString(16)}\r\n` };
  });
  const qmp = await QmpClient.connect(server.target);
  cleanups.push(() => qmp.close());
  return { server, qmp, state };
}

describe('ProcMemory', () => {
  test('translates each RAM range once and preads /proc/<pid>/mem at the host address', async () => {
    const base = elfBase('self');
    const { qmp, state } = await fakeQemu(base);
    const mem = await ProcMemory.open(qmp, { pid: process.pid, label: 'test' });
    cleanups.push(() => mem.close());
    expect(mem.name).toBe('procmem:test');
    expect(state.gpa2hva).toBe(2);
    expect(mem.ranges.map((r) => [r.start, r.hva, r.block])).toEqual([
      [0n, base - 0x100000n, 'pc.ram'],
      [0x100000n, base, 'pc.ram'],
    ]);
    expect(Buffer.from(await mem.read(0x100000n, 4)).toString('latin1')).toBe('\x7fELF');
    // Reads never go outside the guest ranges.
    await expect(mem.read(0xa0000n, 16)).rejects.toBeInstanceOf(UnmappedReadError);
    await expect(mem.read(0x200000n, 1)).rejects.toBeInstanceOf(UnmappedReadError);
    expect(state.gpa2hva).toBe(2); // no translation per read
  });

  test('an unmapped host address: translated again once, then a MemoryReadError', async () => {
    // 1 MiB above the ELF header is past the executable's small first mapping in no case we rely on:
    // pick a page-aligned address in the lower half that nothing maps.
    const { qmp, state } = await fakeQemu(0x1000_0000_0000n);
    const mem = await ProcMemory.open(qmp, { pid: process.pid });
    cleanups.push(() => mem.close());
    const err = await mem.read(0x100000n, 16).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MemoryReadError);
    expect((err as Error).message).toMatch(/EIO reading \/proc\/\d+\/mem \(after translating again\)/);
    expect(mem.translations).toBe(2);
    expect(state.gpa2hva).toBe(4);
  });

  test('gpa2hva replies are checked: an error text, misalignment, a non-linear block', async () => {
    const cases: [string, (gpa: bigint, hva: bigint) => string, RegExp][] = [
      ['error', (gpa) => `No memory is mapped at address 0x${gpa.toString(16)}\r\n`, /gpa2hva 0x0 \(pc\.ram\): gpa2hva: not "Host virtual address/],
      ['misaligned', (gpa, hva) => `Host virtual address for 0x${gpa.toString(16)} (pc.ram) is 0x${(hva + 8n).toString(16)}\r\n`, /not page aligned/],
      [
        'non-linear',
        (gpa, hva) => `Host virtual address for 0x${gpa.toString(16)} (pc.ram) is 0x${(gpa === 0n ? hva : hva + 0x200000n).toString(16)}\r\n`,
        /block pc\.ram is not linear/,
      ],
    ];
    for (const [what, reply, re] of cases) {
      const { qmp } = await fakeQemu(0x7f00_0000_0000n, reply);
      const err = await ProcMemory.open(qmp, { pid: process.pid }).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(ProcMemTranslateError);
      expect((err as Error).message, what).toMatch(re);
    }
    await expect(fakeQemu(0x7f00_0000_0000n).then(({ qmp }) => ProcMemory.open(qmp, { pid: 0 }))).rejects.toBeInstanceOf(RangeError);
  });

  test('the process gone: open and read reject with QemuProcessGoneError, no hang', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    const pid = child.pid as number;
    await new Promise((r) => setTimeout(r, 100)); // exec'd
    const { qmp } = await fakeQemu(elfBase(pid));
    const mem = await ProcMemory.open(qmp, { pid });
    cleanups.push(() => mem.close());
    expect(Buffer.from(await mem.read(0x100000n, 4)).toString('latin1')).toBe('\x7fELF');
    child.kill('SIGKILL');
    await exited;
    const t0 = performance.now();
    const err = await mem.read(0x100000n, 4).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuProcessGoneError);
    expect((err as Error).message).toMatch(new RegExp(`QEMU pid ${pid} is gone`));
    expect(performance.now() - t0).toBeLessThan(2000);
    await expect(ProcMemory.open(qmp, { pid })).rejects.toBeInstanceOf(QemuProcessGoneError);
  });
});

describe('openGuestMemory: auto and procmem', () => {
  test('auto takes procmem when the pid resolves and the test read works', async () => {
    // This process owns the fake's socket: the socket-owner lookup finds it, and "guest RAM" is its ELF header.
    const { server, qmp } = await fakeQemu(elfBase('self'));
    const { memory, choice } = await openGuestMemory(qmp, { qmpPath: server.path });
    cleanups.push(() => memory.close?.());
    expect(choice).toMatchObject({ path: 'procmem', pid: { pid: process.pid, source: 'socket-owner' } });
    expect(choice.note).toMatch(new RegExp(`^procmem: QEMU pid ${process.pid} from owner of `));
    expect(memory).toBeInstanceOf(ProcMemory);
  });

  test('auto falls back to pmemsave and says why; procmem forced fails clearly', async () => {
    const { server, qmp } = await fakeQemu(0x7f00_0000_0000n, () => 'unknown command: gpa2hva\r\n');
    const { memory, choice } = await openGuestMemory(qmp, { qmpPath: server.path, memory: 'auto' });
    cleanups.push(() => memory.close?.());
    expect(choice.path).toBe('pmemsave');
    expect(choice.note).toMatch(/^procmem unavailable: gpa2hva 0x0 \(pc\.ram\): gpa2hva: not "Host virtual address .*: using pmemsave$/);
    const forced = await openGuestMemory(qmp, { qmpPath: server.path, memory: 'procmem' }).catch((e: unknown) => e);
    expect(forced).toBeInstanceOf(ProcmemUnavailableError);
    expect((forced as Error).message).toMatch(/^--memory procmem: unavailable: gpa2hva 0x0/);
  });

  test("a libvirt bridge's socket falls back to xp: libvirt's QEMU cannot write pmemsave's file for us", async () => {
    const { server, qmp } = await fakeQemu(0x7f00_0000_0000n, () => 'unknown command: gpa2hva\r\n');
    addBridgedSocket(server.path);
    cleanups.push(() => removeBridgedSocket(server.path));
    const { memory, choice } = await openGuestMemory(qmp, { qmpPath: server.path, memory: 'auto', pidFile: '/nonexistent/vm1.pid' });
    cleanups.push(() => memory.close?.());
    expect(choice.path).toBe('xp');
    expect(choice.note).toMatch(/^procmem unavailable: .*: using xp \(a libvirt domain/);
    expect(memory).toBeInstanceOf(XpMemory);
  });

  test('a failing test read (nothing mapped at the address) falls back too', async () => {
    const { server, qmp } = await fakeQemu(0x1000_0000_0000n);
    const { memory, choice } = await openGuestMemory(qmp, { qmpPath: server.path });
    cleanups.push(() => memory.close?.());
    expect(choice.path).toBe('pmemsave');
    expect(choice.note).toMatch(/^procmem unavailable: test read: .*EIO reading \/proc\/\d+\/mem.*: using pmemsave$/);
  });

  test('no pid to be found: the reason names what was tried', async () => {
    const { qmp } = await fakeQemu(0x7f00_0000_0000n);
    const err = await openGuestMemory(qmp, { qmpPath: '/nonexistent/qmp.sock', memory: 'procmem' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProcmemUnavailableError);
    expect((err as Error).message).toMatch(/cannot tell the QEMU pid behind \/nonexistent\/qmp\.sock: no listening unix socket bound at/);
  });
});
