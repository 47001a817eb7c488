import { createServer } from 'node:net';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { GdbClient, GdbError, GdbReplyError, GdbTimeoutError, parseStopReply } from '../../../host-reader/gdb/client.js';
import { FakeGdbStub } from '../../../host-reader/gdb/fake-stub.js';
import { encodePacket } from '../../../host-reader/gdb/packet.js';
import { cpl, decodeRegisters, encodeRegister, interruptsOn, REG, X86_64_G_BYTES } from '../../../host-reader/gdb/x86-64.js';

let stub: FakeGdbStub;
let addr: { host: string; port: number };
beforeEach(async () => {
  stub = new FakeGdbStub({ cpus: 2 });
  addr = await stub.listen();
});
afterEach(async () => stub.close());

describe('GdbClient against a fake of QEMU 7.2’s stub', () => {
  test('connect: the unasked stop reply is not taken for an answer; qSupported, target.xml, ? in order', async () => {
    const c = await GdbClient.connect(addr);
    expect(c.multiprocess).toBe(true);
    expect(c.packetSize).toBe(0x1000);
    expect(c.targetXml).toMatch(/i386:x86-64/);
    expect(stub.received.slice(0, 3)).toEqual([expect.stringMatching(/^qSupported:multiprocess\+/), expect.stringMatching(/^qXfer:features:read:target.xml:0,/), '?']);
    expect(c.lastStop?.thread).toBe('p01.01');
    expect(await c.threads()).toEqual(['p01.01', 'p01.02']);
    expect(await c.threadInfo('p01.02')).toBe('CPU#1 [halted ]');
    await c.close();
    expect(stub.detached).toBe(true);
    expect(stub.received.at(-1)).toBe('D;1');
  });

  test('registers: g decoded by the x86-64 layout; P writes one; p works after target.xml', async () => {
    const regs = stub.registers[1] as Buffer;
    regs.writeBigUInt64LE(0xffffffff81234567n, REG['rip']!.offset);
    regs.writeUInt32LE(0x246, REG['eflags']!.offset);
    regs.writeUInt32LE(0x10, REG['cs']!.offset);
    regs.writeBigUInt64LE(0xffff88801f400000n, REG['gs_base']!.offset);
    const c = await GdbClient.connect(addr);
    await c.selectThread('p01.02');
    const r = decodeRegisters(await c.readRegisters());
    expect(r.rip).toBe(0xffffffff81234567n);
    expect(interruptsOn(r)).toBe(true);
    expect(cpl(r)).toBe(0);
    expect(r.gs_base).toBe(0xffff88801f400000n);
    await c.writeRegister(REG['rip']!.num, encodeRegister(REG['rip']!, 0xffffffff81000000n));
    expect((await c.readRegister(16)).readBigUInt64LE()).toBe(0xffffffff81000000n);
    await expect(c.selectThread('p01.09')).rejects.toBeInstanceOf(GdbReplyError);
    await c.close();
  });

  test('memory: read in chunks of at most 0x800, an unmapped page is E14, writes go through', async () => {
    const base = 0xffffffff81000000n;
    const data = Buffer.from(Array.from({ length: 10000 }, (_, i) => i & 0xff));
    stub.map(base, data);
    const c = await GdbClient.connect(addr);
    expect(await c.readMemory(base, 10000)).toEqual(data);
    expect(stub.received.filter((p) => p.startsWith('m')).every((p) => Number.parseInt(p.split(',')[1] as string, 16) <= 0x800)).toBe(true);
    await expect(c.readMemory(0xdead0000n, 8)).rejects.toMatchObject({ code: 0x14 });
    await c.writeMemory(base + 5n, Buffer.from([0xeb, 0xfe]));
    expect((await c.readMemory(base + 4n, 4)).toString('hex')).toBe('04ebfe07');
    await c.close();
  });

  test('a breakpoint: continue resolves with the stop that hit it', async () => {
    const c = await GdbClient.connect(addr);
    await c.insertBreakpoint(0xffffffff81001000n);
    expect(stub.breakpoints.has(0xffffffff81001000n)).toBe(true);
    const stopped = c.continueUntilStop(2000);
    await new Promise((r) => setTimeout(r, 50));
    stub.hit(1);
    expect(await stopped).toMatchObject({ signal: 5, thread: 'p01.02' });
    await c.removeBreakpoint(0xffffffff81001000n);
    expect(stub.breakpoints.size).toBe(0);
    await c.close();
  });

  test('qRcmd output packets are collected before the final OK', async () => {
    const c = await GdbClient.connect(addr);
    expect(await c.monitor('info registers')).toBe('you said info registers\n');
    await c.close();
  });

  test('k and vKill are never sent', async () => {
    const c = await GdbClient.connect(addr);
    await expect(c.request('k')).rejects.toThrow(/would end QEMU/);
    await expect(c.request('vKill;1')).rejects.toThrow(/would end QEMU/);
    expect(stub.received.some((p) => p.startsWith('k') || p.startsWith('vKill'))).toBe(false);
    await c.close();
  });

  test('a stub that never answers: a timeout error, and the connection is closed', async () => {
    const c = await GdbClient.connect(addr, { timeoutMs: 200 });
    stub.override = (p) => (p === 'g' ? { silent: true } : undefined);
    await expect(c.readRegisters()).rejects.toBeInstanceOf(GdbTimeoutError);
    expect(c.closed).toBe(true);
    await expect(c.threads()).rejects.toBeInstanceOf(GdbError);
    const mute = createServer((s) => s.on('data', () => undefined));
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    const port = (mute.address() as { port: number }).port;
    await expect(GdbClient.connect({ host: '127.0.0.1', port }, { timeoutMs: 200 })).rejects.toBeInstanceOf(GdbTimeoutError);
    await new Promise((r) => mute.close(r));
  });

  test('hostile replies: an oversize reply, a bad checksum resent, a reply that is not hex', async () => {
    const c = await GdbClient.connect(addr, { maxPacketBytes: 4096 });
    // Not hex where registers are expected.
    stub.override = (p) => (p === 'g' ? 'zz' : undefined);
    await expect(c.readRegisters()).rejects.toThrow(/not hex/);
    // A packet with a bad checksum is nacked ('-') and not delivered; the good one after it is.
    stub.override = (p) => {
      if (p !== 'qThreadExtraInfo,p01.01') return undefined;
      stub.raw('+$4142#00');
      return '4344';
    };
    expect(await c.threadInfo('p01.01')).toBe('CD');
    // More than maxPacketBytes: the client gives up on the connection.
    stub.override = (p) => (p === 'g' ? 'a'.repeat(10000) : undefined);
    await expect(c.readRegisters()).rejects.toBeInstanceOf(GdbError);
    expect(c.closed).toBe(true);
  });

  test('a reply to a read may not be longer than asked', async () => {
    const c = await GdbClient.connect(addr);
    stub.override = (p) => (p.startsWith('m') ? '00'.repeat(32) : undefined);
    await expect(c.readMemory(0x1000n, 16)).rejects.toThrow(/a reply of 64 characters/);
    await c.close();
  });

  test('stop replies parse', () => {
    expect(parseStopReply('T05thread:p01.02;')).toEqual({ text: 'T05thread:p01.02;', signal: 5, thread: 'p01.02' });
    expect(parseStopReply('S02')).toEqual({ text: 'S02', signal: 2 });
    expect(parseStopReply('OK')).toBeUndefined();
    expect(X86_64_G_BYTES).toBe(608);
    expect(encodePacket('x').length).toBe(5);
  });
});
