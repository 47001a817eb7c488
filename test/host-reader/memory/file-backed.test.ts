import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { FileBackedMemory, normalizeMappings } from '../../../host-reader/memory/file-backed.js';
import { MemoryClosedError, MemoryReadError, UnmappedReadError } from '../../../host-reader/memory/guest-memory.js';
import { decodeRegion } from '../../../host-reader/region/decode.js';
import { discoverTable, parseMtreeLowRam, verifyAt } from '../../../host-reader/region/discover.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-file-mem-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A file whose byte i is i mod 251 (a prime, so offsets are visible in the data). */
function patterned(size: number): string {
  const path = join(dir, 'ram');
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = i % 251;
  writeFileSync(path, b);
  return path;
}
const at = (fileOffset: number, n: number) => Uint8Array.from({ length: n }, (_, i) => (fileOffset + i) % 251);

describe('FileBackedMemory', () => {
  // Like pc.ram in `info mtree -f`: [0, 0xc0000) @0 and [0x100000, top) @0x100000, plus high RAM.
  const mappings = [
    { guestAddr: 0n, size: 0xc0000, fileOffset: 0 },
    { guestAddr: 0x100000n, size: 0x100000, fileOffset: 0x100000 },
    { guestAddr: 0x1_0000_0000n, size: 0x1000n, fileOffset: 0x200000n },
  ];

  it('reads guest addresses at their file offsets', async () => {
    const mem = await FileBackedMemory.open(patterned(0x201000), mappings);
    try {
      expect(mem.name).toMatch(/^file:/);
      expect(await mem.read(0x10n, 8)).toEqual(at(0x10, 8));
      expect(await mem.read(0x1ffff0n, 16)).toEqual(at(0x1ffff0, 16));
      expect(await mem.read(0x1_0000_0ff0n, 16)).toEqual(at(0x200ff0, 16));
    } finally {
      await mem.close();
    }
  });

  it('reads across adjacent mappings (SeaBIOS PAM splits of pc.ram)', async () => {
    const mem = await FileBackedMemory.open(patterned(0x2000), [
      { guestAddr: 0x1000n, size: 0x800, fileOffset: 0x1000 },
      { guestAddr: 0x1800n, size: 0x800, fileOffset: 0x0 }, // adjacent in the guest, not in the file
    ]);
    try {
      const out = await mem.read(0x17fcn, 8);
      expect(out).toEqual(Uint8Array.from([...at(0x17fc, 4), ...at(0, 4)]));
    } finally {
      await mem.close();
    }
  });

  it('throws UnmappedReadError for reads outside or partly outside the mappings, before any I/O', async () => {
    const mem = await FileBackedMemory.open(patterned(0x201000), mappings);
    try {
      await expect(mem.read(0xc0000n, 1)).rejects.toMatchObject({ name: 'UnmappedReadError', unmappedAt: 0xc0000n });
      await expect(mem.read(0xbfff0n, 0x20)).rejects.toMatchObject({ unmappedAt: 0xc0000n });
      await expect(mem.read(0xffff0n, 0x20)).rejects.toMatchObject({ unmappedAt: 0xffff0n });
      await expect(mem.read(0x1_0000_1000n, 1)).rejects.toBeInstanceOf(UnmappedReadError);
      await expect(mem.read(0x200000n, 1)).rejects.toBeInstanceOf(UnmappedReadError);
    } finally {
      await mem.close();
    }
  });

  it('throws MemoryReadError when the file is shorter than a mapping', async () => {
    const mem = await FileBackedMemory.open(patterned(0x180000), mappings);
    try {
      expect(await mem.read(0x17fff0n, 16)).toEqual(at(0x17fff0, 16));
      const e = await mem.read(0x17fff0n, 32).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(MemoryReadError);
      expect((e as Error).message).toMatch(/ends at offset 0x180000/);
    } finally {
      await mem.close();
    }
  });

  it('fails after close, and close is idempotent', async () => {
    const mem = await FileBackedMemory.open(patterned(0x1000), [{ guestAddr: 0n, size: 0x1000, fileOffset: 0 }]);
    await mem.close();
    await mem.close();
    await expect(mem.read(0n, 1)).rejects.toBeInstanceOf(MemoryClosedError);
  });

  it('honours an aborted signal', async () => {
    const mem = await FileBackedMemory.open(patterned(0x1000), [{ guestAddr: 0n, size: 0x1000, fileOffset: 0 }]);
    try {
      await expect(mem.read(0n, 1, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      await mem.close();
    }
  });

  it('rejects bad mappings at once (programmer errors)', async () => {
    expect(() => normalizeMappings([{ guestAddr: 0n, size: 0, fileOffset: 0 }])).toThrow(/size/);
    expect(() => normalizeMappings([{ guestAddr: -1n, size: 1, fileOffset: 0 }])).toThrow(/guestAddr/);
    expect(() => normalizeMappings([{ guestAddr: 0n, size: 1, fileOffset: -1 }])).toThrow(/fileOffset/);
    expect(() => normalizeMappings([{ guestAddr: 0n, size: 1.5, fileOffset: 0 }])).toThrow(/size/);
    expect(() =>
      normalizeMappings([
        { guestAddr: 0x1000n, size: 0x1000, fileOffset: 0 },
        { guestAddr: 0x1fffn, size: 1, fileOffset: 0 },
      ]),
    ).toThrow(/overlap/);
    await expect(FileBackedMemory.open(join(dir, 'missing'), [])).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('finds and decodes the table in a sparse 512 MiB mem-path file laid out by info mtree -f', async () => {
    const { aml, layout } = buildDiagSsdt({ nonce: 0xfeedn });
    const ram = parseMtreeLowRam(readFileSync(new URL('../region/fixtures/pc-512.mtree-f.txt', import.meta.url), 'utf8'));
    const path = join(dir, 'pc.ram');
    writeFileSync(path, '');
    truncateSync(path, 512 * 1024 * 1024); // sparse: no disk used
    const addr = 0x1ffe_22e1n;
    const fh = await open(path, 'r+');
    await fh.write(aml, 0, aml.length, Number(addr)); // pc.ram @offset == guest address below the top
    await fh.close();
    const mem = await FileBackedMemory.open(
      path,
      ram.lowRanges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
    );
    try {
      const d = await discoverTable(mem, layout, { lowRamTop: ram.lowRamTop, ranges: ram.lowRanges });
      expect(d.address).toBe(addr);
      const v = await verifyAt(mem, d.address, layout);
      if (!v.ok) throw new Error(v.reason);
      expect(decodeRegion(v.region, { nonce: layout.nonce }).ok).toBe(true);
    } finally {
      await mem.close();
    }
  });
});
