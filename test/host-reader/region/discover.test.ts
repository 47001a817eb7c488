import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { FakeGuestMemory } from '../../../host-reader/memory/fake-memory.js';
import { decodeRegion } from '../../../host-reader/region/decode.js';
import {
  discoverTable,
  identityFromLayout,
  matchTableAt,
  parseMtreeLowRam,
  TableNotFoundError,
  verifyAt,
  type TableIdentity,
} from '../../../host-reader/region/discover.js';
import { MS, simulateBeat } from './sim.js';

const MiB = 1024 * 1024;
const TOP = 512n * BigInt(MiB); // a 512 MiB guest: low RAM ends at 0x20000000
const { aml, layout } = buildDiagSsdt({ nonce: 0x5eed_0000_1234_abcdn });
const identity = identityFromLayout(layout);

function guest(opts: { unmapped?: 'zeros' | 'throw' } = {}): FakeGuestMemory {
  return new FakeGuestMemory({ name: 'fake-512M', limit: TOP, ...opts });
}

function withTable(addr: bigint, table: Uint8Array = aml): FakeGuestMemory {
  return guest().map(addr, table);
}

describe('discoverTable on a sparse 512 MiB guest', () => {
  it('finds a SeaBIOS-like placement about 120 KiB below the top in one read', async () => {
    const addr = 0x1ffe_22e1n; // the address a Debian guest printed (ACPI: SSDT 0x000000001FFE22E1)
    const mem = withTable(addr);
    const d = await discoverTable(mem, layout, { lowRamTop: TOP });
    expect(d.address).toBe(addr);
    expect(d.reads).toBe(1);
    expect(d.scannedBytes).toBe(MiB);
    expect(mem.reads).toBe(1);
    expect(d.ms).toBeGreaterThanOrEqual(0);
  });

  it('finds an OVMF-like placement about 8.5 MiB below the top, unaligned', async () => {
    const addr = TOP - 8n * BigInt(MiB) - 512n * 1024n + 0x1a3n;
    const mem = withTable(addr);
    const d = await discoverTable(mem, identity, { lowRamTop: TOP });
    expect(d.address).toBe(addr);
    expect(d.reads).toBe(9);
    expect(d.scannedBytes).toBe(9 * MiB);
  });

  const boundary = TOP - 3n * BigInt(MiB);
  it.each([
    ['the header straddles a chunk boundary', boundary - 10n],
    ['the region magic straddles a chunk boundary', boundary - BigInt(layout.region.offset) - 4n],
    ['the nonce straddles a chunk boundary', boundary - BigInt(layout.region.offset) - 20n],
    ['the table ends exactly at a chunk boundary', boundary - BigInt(aml.length)],
    ['the table starts exactly at a chunk boundary', boundary],
    ['the last byte of the table crosses a chunk boundary', boundary - BigInt(aml.length) + 1n],
  ])('finds the table when %s', async (_, addr) => {
    const mem = withTable(addr);
    const d = await discoverTable(mem, layout, { lowRamTop: TOP });
    expect(d.address).toBe(addr);
  });

  it('finds a table that ends exactly at the top of low RAM', async () => {
    const addr = TOP - BigInt(aml.length);
    expect((await discoverTable(withTable(addr), layout, { lowRamTop: TOP })).address).toBe(addr);
  });

  it('finds a table in the lowest chunk, down to address 0', async () => {
    const mem = withTable(0n);
    const d = await discoverTable(mem, layout, { lowRamTop: 4n * BigInt(MiB) + 7n });
    expect(d.address).toBe(0n);
    expect(d.reads).toBe(5);
  });

  it('scans all of low RAM and throws TableNotFoundError with what it scanned', async () => {
    const mem = guest();
    const err = await discoverTable(mem, layout, { lowRamTop: TOP }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableNotFoundError);
    const e = err as TableNotFoundError;
    expect(e.scannedBytes).toBe(512 * MiB);
    expect(e.reads).toBe(512);
    expect(e.from).toBe(0n);
    expect(e.to).toBe(TOP);
    expect(e.memory).toBe('fake-512M');
    expect(e.message).toMatch(/0x0\.\.0x20000000/);
    // Every read is one chunk plus the bytes a candidate needs past it, never past the top.
    expect(Math.max(...mem.log.map((x) => x.size))).toBeLessThanOrEqual(MiB + aml.length - 1);
    expect(mem.log.every((x) => x.addr + BigInt(x.size) <= TOP)).toBe(true);
  });

  it('respects maxScanBytes', async () => {
    const mem = withTable(TOP - 8n * BigInt(MiB) - 512n * 1024n);
    const err = await discoverTable(mem, layout, { lowRamTop: TOP, maxScanBytes: 4 * MiB }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableNotFoundError);
    expect((err as TableNotFoundError).scannedBytes).toBe(4 * MiB);
    expect((err as TableNotFoundError).from).toBe(TOP - 4n * BigInt(MiB));
  });

  it('does not take a table that crosses the top of low RAM', async () => {
    const mem = withTable(TOP - BigInt(aml.length) + 1n - 0x100000n);
    const err = await discoverTable(mem, layout, { lowRamTop: TOP - 0x100000n, maxScanBytes: 2 * MiB }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableNotFoundError);
    expect((err as TableNotFoundError).rejected).toEqual([{ address: TOP - BigInt(aml.length) + 1n - 0x100000n, reason: 'crosses the end of the RAM range' }]);
  });

  it('skips look-alikes (another nonce, another length, a bare magic) and reports them', async () => {
    const real = TOP - 3n * BigInt(MiB) + 0x777n;
    const other = buildDiagSsdt({ nonce: 1n }); // same OEM IDs, another build
    const longer = buildDiagSsdt({ nonce: 0x5eed_0000_1234_abcdn, ringLength: 32 }); // same nonce, other length
    const bare = new TextEncoder().encode('const REGION_MAGIC = "EVEDIAGR";'); // the agent bundle's text
    const mem = guest()
      .map(TOP - 0x20000n, other.aml)
      .map(TOP - 0x40000n, longer.aml)
      .map(TOP - 2n * BigInt(MiB) + 5n, bare)
      .map(real, aml);
    const d = await discoverTable(mem, layout, { lowRamTop: TOP });
    expect(d.address).toBe(real);
    expect(d.rejected.map((x) => x.reason)).toEqual([
      expect.stringMatching(/^nonce 0000000000000001, expected 5eed00001234abcd$/),
      expect.stringMatching(/^table length \d+, expected \d+$/),
      'signature differs',
    ]);
  });

  it('returns the highest copy when several match (the scan goes downward)', async () => {
    const mem = withTable(TOP - 0x30000n).map(TOP - 0x10_0000n - 0x30000n, aml);
    expect((await discoverTable(mem, layout, { lowRamTop: TOP })).address).toBe(TOP - 0x30000n);
  });

  it('works from an identity without the table length', async () => {
    const addr = TOP - 0x1e0000n + 3n;
    const id: TableIdentity = { oemId: 'EVEDIA', oemTableId: 'EVEDIAG', nonce: layout.nonce, regionOffset: layout.region.offset };
    expect((await discoverTable(withTable(addr), id, { lowRamTop: TOP })).address).toBe(addr);
  });

  it('scans only the RAM ranges from info mtree, over memory that throws on holes', async () => {
    const ram = parseMtreeLowRam(readFileSync(new URL('./fixtures/pc-512.mtree-f.txt', import.meta.url), 'utf8'));
    const mem = guest({ unmapped: 'throw' });
    const [below1M, above1M] = ram.lowRanges;
    if (below1M === undefined || above1M === undefined) throw new Error('pc-512 has two low RAM ranges');
    mem.map(below1M.start, new Uint8Array(Number(below1M.end - below1M.start))).mapZeros(above1M.start, above1M.end - above1M.start);
    mem.write(0x90000n, aml); // a table below the legacy ROM hole, in the first range
    const d = await discoverTable(mem, layout, { lowRamTop: ram.lowRamTop, ranges: ram.lowRanges });
    expect(d.address).toBe(0x90000n);
    expect(d.scannedBytes).toBe(512 * MiB - 0x100000 + 0xc0000); // the legacy hole is skipped
  });

  it('stops when the signal aborts between reads', async () => {
    const ac = new AbortController();
    const mem = new FakeGuestMemory({
      limit: TOP,
      onRead: () => {
        if (mem.reads === 2) ac.abort(new Error('monitor stopping'));
      },
    });
    await expect(discoverTable(mem, layout, { lowRamTop: TOP, signal: ac.signal })).rejects.toThrow('monitor stopping');
    expect(mem.reads).toBe(2);
  });

  it('passes a read failure through', async () => {
    const mem = new FakeGuestMemory({ limit: TOP, unmapped: 'throw' });
    await expect(discoverTable(mem, layout, { lowRamTop: TOP })).rejects.toMatchObject({ name: 'UnmappedReadError' });
  });

  it('rejects bad arguments at once (programmer errors)', async () => {
    const mem = guest();
    await expect(discoverTable(mem, layout, { lowRamTop: -1 })).rejects.toThrow(RangeError);
    await expect(discoverTable(mem, layout, { lowRamTop: TOP, chunkSize: 100 })).rejects.toThrow(/chunkSize/);
    await expect(discoverTable(mem, { ...identity, nonce: 'nope' }, { lowRamTop: TOP })).rejects.toThrow(/nonce/);
    await expect(discoverTable(mem, { ...identity, oemId: 'TOOLONGID' }, { lowRamTop: TOP })).rejects.toThrow(/oemId/);
    expect(mem.reads).toBe(0);
  });
});

describe('verifyAt', () => {
  const addr = 0x1ffe_22e1n;

  it('re-checks the cached address with one read and returns the region to decode', async () => {
    const mem = withTable(addr);
    const v = await verifyAt(mem, addr, layout);
    expect(mem.reads).toBe(1);
    expect(mem.bytesRead).toBe(aml.length);
    if (!v.ok) throw new Error(v.reason);
    expect(v.checksumOk).toBe(true);
    const d = decodeRegion(v.region, { nonce: layout.nonce, ringLength: layout.ring.length });
    expect(d.ok && d.region.loadCount).toBe(0);
  });

  it('sees what the guest wrote since, with the checksum still valid', async () => {
    const table = aml.slice();
    const mem = withTable(addr);
    simulateBeat(table, layout, 'load', 1 * MS);
    simulateBeat(table, layout, 'kernel', 1001 * MS);
    simulateBeat(table, layout, 'kernel', 2001 * MS);
    mem.write(addr, table);
    const v = await verifyAt(mem, addr, layout);
    if (!v.ok) throw new Error(v.reason);
    expect(v.checksumOk).toBe(true);
    const d = decodeRegion(v.region, { nonce: layout.nonce });
    if (!d.ok) throw new Error(d.reason);
    expect(d.region.kernel.beats).toBe(2);
    expect(d.region.ring[2]).toBe(1000 * MS);
  });

  it('fails when the table moved or another build sits there', async () => {
    const mem = withTable(addr);
    expect(await verifyAt(mem, addr + 1n, layout)).toMatchObject({ ok: false, reason: 'signature differs' });
    mem.write(addr, buildDiagSsdt({ nonce: 7n }).aml.subarray(0, aml.length));
    const v = await verifyAt(mem, addr, layout);
    expect(v.ok).toBe(false);
  });

  it('reads through the region only when the identity has no length', async () => {
    const mem = withTable(addr);
    const id: TableIdentity = { oemId: 'EVEDIA', oemTableId: 'EVEDIAG', nonce: layout.nonce, regionOffset: layout.region.offset, regionSize: layout.region.size };
    const v = await verifyAt(mem, addr, id);
    expect(mem.bytesRead).toBe(layout.region.offset + layout.region.size);
    expect(v.ok && v.checksumOk).toBeUndefined();
    expect(v.ok && decodeRegion(v.region).ok).toBe(true);
  });
});

describe('matchTableAt', () => {
  it('never reads outside the bytes it is given', () => {
    for (let n = 0; n < aml.length; n++) {
      const m = matchTableAt(aml.subarray(0, n), 0, identity);
      expect(m.ok, `${n} bytes`).toBe(n >= layout.region.offset + 24); // header, magic and nonce
    }
    expect(matchTableAt(aml, 0, identity)).toEqual({ ok: true, length: aml.length });
    expect(matchTableAt(aml, -1, identity).ok).toBe(false);
    expect(matchTableAt(aml, 1.5, identity).ok).toBe(false);
  });
});
