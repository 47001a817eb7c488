import { describe, expect, it } from 'vitest';
import { FakeGuestMemory } from '../../../host-reader/memory/fake-memory.js';
import { GuestMemoryError, MemoryClosedError, UnmappedReadError } from '../../../host-reader/memory/guest-memory.js';

const bytes = (...b: number[]) => Uint8Array.from(b);

describe('FakeGuestMemory', () => {
  it('reads mapped bytes, zeros around them, across two mappings', async () => {
    const m = new FakeGuestMemory().map(0x1000n, bytes(1, 2, 3)).map(0x1003n, bytes(4));
    expect(await m.read(0xffen, 8)).toEqual(bytes(0, 0, 1, 2, 3, 4, 0, 0));
    expect(await m.read(0x1001n, 2)).toEqual(bytes(2, 3));
    expect(await m.read(0n, 0)).toEqual(new Uint8Array(0));
  });

  it('copies what it maps and what it returns', async () => {
    const src = bytes(9, 9);
    const m = new FakeGuestMemory().map(0n, src);
    src[0] = 1;
    const out = await m.read(0n, 2);
    out[1] = 7;
    expect(await m.read(0n, 2)).toEqual(bytes(9, 9));
  });

  it('counts reads and bytes, and logs them', async () => {
    const m = new FakeGuestMemory();
    await m.read(0x10n, 4);
    await m.read(0x20n, 6);
    expect(m.reads).toBe(2);
    expect(m.bytesRead).toBe(10);
    expect(m.log).toEqual([
      { addr: 0x10n, size: 4 },
      { addr: 0x20n, size: 6 },
    ]);
    m.resetCounters();
    expect([m.reads, m.bytesRead, m.log.length]).toEqual([0, 0, 0]);
  });

  it("with unmapped: 'throw', fails on the first unmapped byte", async () => {
    const m = new FakeGuestMemory({ unmapped: 'throw', name: 'strict' }).map(0x100n, bytes(1, 2)).mapZeros(0x102n, 2);
    expect(await m.read(0x100n, 4)).toEqual(bytes(1, 2, 0, 0));
    const e = await m.read(0x101n, 4).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnmappedReadError);
    expect(e).toBeInstanceOf(GuestMemoryError);
    expect(e).toMatchObject({ memory: 'strict', addr: 0x101n, size: 4, unmappedAt: 0x104n });
    await expect(m.read(0xffn, 2)).rejects.toMatchObject({ unmappedAt: 0xffn });
    expect(m.reads).toBe(1);
  });

  it('throws past the limit even when unmapped bytes read as zeros', async () => {
    const m = new FakeGuestMemory({ limit: 0x1000n });
    expect(await m.read(0xff0n, 0x10)).toHaveLength(0x10);
    await expect(m.read(0xff0n, 0x11)).rejects.toMatchObject({ name: 'UnmappedReadError', unmappedAt: 0x1000n });
  });

  it('writes in place like the guest', async () => {
    const m = new FakeGuestMemory().map(0x10n, new Uint8Array(4));
    m.write(0x11n, bytes(5, 6));
    expect(await m.read(0x10n, 4)).toEqual(bytes(0, 5, 6, 0));
    expect(() => m.write(0x13n, bytes(1, 2))).toThrow(RangeError);
  });

  it('rejects overlapping maps and bad reads (programmer errors)', async () => {
    const m = new FakeGuestMemory().map(0x10n, new Uint8Array(4));
    expect(() => m.map(0x13n, bytes(1))).toThrow(/overlaps/);
    expect(() => m.mapZeros(0n, 0)).toThrow(RangeError);
    await expect(m.read(-1n, 1)).rejects.toThrow(RangeError);
    await expect(m.read(0n, -1)).rejects.toThrow(RangeError);
    await expect(m.read(0n, 1.5)).rejects.toThrow(RangeError);
    await expect(m.read((1n << 64n) - 1n, 2)).rejects.toThrow(/2\^64/);
  });

  it('honours the signal and the onRead hook', async () => {
    const ac = new AbortController();
    ac.abort();
    const m = new FakeGuestMemory({
      onRead: (addr) => {
        if (addr === 0x666n) throw new Error('injected');
      },
    });
    await expect(m.read(0n, 1, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    await expect(m.read(0x666n, 1)).rejects.toThrow('injected');
    expect(m.reads).toBe(0);
  });

  it('fails reads after close', async () => {
    const m = new FakeGuestMemory();
    await m.close();
    await expect(m.read(0n, 1)).rejects.toBeInstanceOf(MemoryClosedError);
  });
});
