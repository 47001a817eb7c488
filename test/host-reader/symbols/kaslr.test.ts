import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { GdbClient, GdbReplyError } from '../../../host-reader/gdb/client.js';
import { FakeGdbStub } from '../../../host-reader/gdb/fake-stub.js';
import { findKaslrOffset, KASLR_ALIGN, KASLR_RANGE, KaslrError, kaslrCandidates } from '../../../host-reader/symbols/kaslr.js';
import { SymbolTable } from '../../../host-reader/symbols/system-map.js';
import { LINK_BANNER, SYNTHETIC_MAP } from '../../../host-reader/symbols/fake-system-map.js';

const table = SymbolTable.parse(SYNTHETIC_MAP);
const BANNER = 'Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3\n\0';

/** A sparse memory: `readMemory` of an unmapped byte throws. */
class Memory {
  readonly bytes = new Map<bigint, number>();
  reads: { addr: bigint; len: number }[] = [];
  map(addr: bigint, data: Buffer): void {
    for (let i = 0; i < data.length; i++) this.bytes.set(addr + BigInt(i), data[i] as number);
  }
  readMemory(addr: bigint, len: number): Promise<Buffer> {
    this.reads.push({ addr, len });
    const out = Buffer.alloc(len);
    for (let i = 0; i < len; i++) {
      const b = this.bytes.get(addr + BigInt(i));
      if (b === undefined) return Promise.reject(new GdbReplyError(`m${addr.toString(16)}`, 0x14));
      out[i] = b;
    }
    return Promise.resolve(out);
  }
}

describe('kaslrCandidates', () => {
  test('every multiple of 2 MiB in [0, 1 GiB) once; known first, then the RIP-consistent ones', () => {
    const all = kaslrCandidates(table);
    expect(all).toHaveLength(Number(KASLR_RANGE / KASLR_ALIGN));
    expect(new Set(all.map((c) => c.offset)).size).toBe(512);
    expect(all[0]).toEqual({ offset: 0n, via: 'scan' });
    // A RIP in ksys_sync moved by 0x1e00000: text is 0x700 long, so only that candidate fits.
    const c = kaslrCandidates(table, { known: 0x400000n, hints: [0xffffffff82e01401n, 0x1234n, 0xffffffff81000000n] });
    expect(c.slice(0, 2)).toEqual([
      { offset: 0x400000n, via: 'known' },
      { offset: 0x1e00000n, via: 'rip' },
    ]);
    expect(c).toHaveLength(512);
    // Not aligned, negative, out of range: ignored.
    expect(kaslrCandidates(table, { known: 0x1000n })[0]?.via).toBe('scan');
    expect(kaslrCandidates(table, { known: KASLR_RANGE })[0]?.via).toBe('scan');
  });
});

describe('findKaslrOffset', () => {
  test('a RIP hint finds it in one read (plus the banner read whole)', async () => {
    const m = new Memory();
    m.map(LINK_BANNER + 0x1e00000n, Buffer.from(BANNER.padEnd(256, '\0'), 'latin1'));
    const r = await findKaslrOffset(m, table, { hints: [0xffffffff82e01401n] });
    expect(r).toEqual({
      offset: 0x1e00000n,
      method: 'linux_banner',
      bannerAddress: LINK_BANNER + 0x1e00000n,
      banner: 'Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3',
      probes: 2,
      via: 'rip',
    });
  });

  test('no hint: a scan of the candidates; a banner cut by an unmapped page is kept short', async () => {
    const m = new Memory();
    m.map(LINK_BANNER + 0x30800000n, Buffer.from('Linux version 6', 'latin1'));
    const r = await findKaslrOffset(m, table);
    expect(r?.offset).toBe(0x30800000n);
    expect(r?.via).toBe('scan');
    expect(r?.probes).toBe(0x30800000 / 0x200000 + 2);
    expect(r?.banner).toBe('Linux version ');
  });

  test('no KASLR (nokaslr): offset 0', async () => {
    const m = new Memory();
    m.map(LINK_BANNER, Buffer.from(BANNER, 'latin1'));
    expect((await findKaslrOffset(m, table))?.offset).toBe(0n);
  });

  test('other bytes at the banner address are not a match; none found within maxProbes: undefined', async () => {
    const m = new Memory();
    m.map(LINK_BANNER, Buffer.from('Linux versio\0\0\0\0', 'latin1'));
    expect(await findKaslrOffset(m, table)).toBeUndefined();
    expect(m.reads).toHaveLength(512);
    m.reads = [];
    expect(await findKaslrOffset(m, table, { maxProbes: 10 })).toBeUndefined();
    expect(m.reads).toHaveLength(10);
  });

  test('a System.map without linux_banner: KaslrError; a read error that is not "unmapped": rethrown', async () => {
    const noBanner = SymbolTable.parse('ffffffff81001000 T _stext\nffffffff81002000 T _etext\n');
    await expect(findKaslrOffset(new Memory(), noBanner)).rejects.toBeInstanceOf(KaslrError);
    const dead = { readMemory: () => Promise.reject(new Error('connection closed')) };
    await expect(findKaslrOffset(dead, table, { isUnmapped: (e) => e instanceof GdbReplyError })).rejects.toThrow(/connection closed/);
    const ac = new AbortController();
    ac.abort();
    await expect(findKaslrOffset(new Memory(), table, { signal: ac.signal })).rejects.toThrow(/aborted/);
  });

  describe('through GdbClient and the fake stub', () => {
    let stub: FakeGdbStub;
    beforeEach(() => {
      stub = new FakeGdbStub({ cpus: 1 });
    });
    afterEach(async () => stub.close());

    test('E14 for every wrong candidate, the banner at the right one', async () => {
      stub.map(LINK_BANNER + 0x10000000n, Buffer.from(BANNER, 'latin1'));
      const c = await GdbClient.connect(await stub.listen());
      try {
        const r = await findKaslrOffset(c, table, { isUnmapped: (e) => e instanceof GdbReplyError });
        expect(r?.offset).toBe(0x10000000n);
        expect(r?.probes).toBe(0x10000000 / 0x200000 + 2);
      } finally {
        await c.close();
      }
    });
  });
});
