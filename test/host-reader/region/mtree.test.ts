import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MtreeParseError, parseMtreeLowRam, type RamRange } from '../../../host-reader/region/discover.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

const r = (start: number, endInclusive: number, name: string, offset = 0, readonly = false): RamRange => ({
  start: BigInt(start),
  end: BigInt(endInclusive) + 1n,
  name,
  offset: BigInt(offset),
  readonly,
});

// Below 1 MiB on SeaBIOS machines: pc.ram up to the legacy ROM area, then pc.ram again from 1 MiB.
const low512 = [r(0, 0xbffff, 'pc.ram'), r(0x100000, 0x1fffffff, 'pc.ram', 0x100000)];

const cases: { file: string; top: number; ranges: RamRange[]; low?: RamRange[]; view?: 'flat' | 'tree' }[] = [
  { file: 'q35-512.mtree-f.txt', top: 0x2000_0000, ranges: low512 },
  { file: 'pc-512.mtree-f.txt', top: 0x2000_0000, ranges: low512 },
  { file: 'q35-512-ovmf.mtree-f.txt', top: 0x2000_0000, ranges: low512 },
  {
    file: 'q35-512-seabios-booted.mtree-f.txt',
    top: 0x2000_0000,
    ranges: [
      r(0, 0xc2fff, 'pc.ram'),
      r(0xc3000, 0xe7fff, 'pc.ram', 0xc3000, true),
      r(0xe8000, 0xeffff, 'pc.ram', 0xe8000),
      r(0xf0000, 0xfffff, 'pc.ram', 0xf0000, true),
      r(0x100000, 0x1fffffff, 'pc.ram', 0x100000),
    ],
  },
  { file: 'pc-3072.mtree-f.txt', top: 0xc000_0000, ranges: [r(0, 0xbffff, 'pc.ram'), r(0x100000, 0xbfffffff, 'pc.ram', 0x100000)] },
  {
    file: 'pc-4096.mtree-f.txt',
    top: 0xc000_0000,
    ranges: [r(0, 0xbffff, 'pc.ram'), r(0x100000, 0xbfffffff, 'pc.ram', 0x100000), r(0x1_0000_0000, 0x1_3fff_ffff, 'pc.ram', 0xc000_0000)],
    low: [r(0, 0xbffff, 'pc.ram'), r(0x100000, 0xbfffffff, 'pc.ram', 0x100000)],
  },
  {
    file: 'q35-3072.mtree-f.txt',
    top: 0x8000_0000,
    ranges: [r(0, 0x7fffffff, 'pc.ram'), r(0x1_0000_0000, 0x1_3fff_ffff, 'pc.ram', 0x8000_0000)],
    low: [r(0, 0x7fffffff, 'pc.ram')],
  },
  { file: 'q35-512-memory-backend.mtree-f.txt', top: 0x2000_0000, ranges: [r(0, 0x1fffffff, 'mem0')] },
  { file: 'q35-512-memory-backend.mtree.txt', top: 0x2000_0000, ranges: [r(0, 0x1fffffff, 'ram-below-4g')], view: 'tree' },
];

describe('parseMtreeLowRam on QEMU 7.2 output', () => {
  it.each(cases)('$file', ({ file, top, ranges, low, view }) => {
    const m = parseMtreeLowRam(fixture(file));
    expect(m.lowRamTop).toBe(BigInt(top));
    expect(m.ranges).toEqual(ranges);
    expect(m.lowRanges).toEqual(low ?? ranges);
    expect(m.view).toBe(view ?? 'flat');
  });

  it('reads QMP human-monitor-command text (CRLF line ends)', () => {
    const m = parseMtreeLowRam(fixture('pc-4096.mtree-f.txt').replace(/\n/g, '\r\n'));
    expect(m.lowRamTop).toBe(0xc000_0000n);
    expect(m.ranges).toHaveLength(3);
  });

  it('ignores the accelerator suffix of KVM guests', () => {
    const text = fixture('q35-512.mtree-f.txt')
      .replace('(prio 0, ram): pc.ram\n', '(prio 0, ram): pc.ram KVM\n')
      .replace('(prio 0, ram): pc.ram @0000000000100000\n', '(prio 0, ram): pc.ram @0000000000100000 KVM\n');
    expect(text.match(/ KVM$/gm)?.length).toBeGreaterThanOrEqual(2);
    const m = parseMtreeLowRam(text);
    expect(m.ranges).toEqual(low512);
  });

  it('follows adjacent RAM of other backends (NUMA) and stops at an i/o range (TSEG)', () => {
    const text = [
      'FlatView #0',
      ' AS "memory", root: system',
      ' AS "cpu-memory-0", root: system',
      ' Root memory region: system',
      '  0000000000000000-000000000009ffff (prio 0, ram): m0 KVM',
      '  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem',
      '  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom KVM',
      '  00000000000e0000-00000000000fffff (prio 1, rom): isa-bios KVM',
      '  0000000000100000-000000000fffffff (prio 0, ram): m0 @0000000000100000 KVM',
      '  0000000010000000-000000001effffff (prio 0, ram): m1 KVM',
      '  000000001f000000-000000001fffffff (prio 1, i/o): tseg-blackhole',
      '  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram KVM',
      '',
    ].join('\n');
    const m = parseMtreeLowRam(text);
    expect(m.lowRamTop).toBe(0x1f00_0000n);
    expect(m.ranges.map((x) => x.name)).toEqual(['m0', 'm0', 'm1']);
  });

  it('throws MtreeParseError for text without a memory view', () => {
    expect(() => parseMtreeLowRam('')).toThrow(MtreeParseError);
    expect(() => parseMtreeLowRam('unknown command: info mtre\n')).toThrow(/info mtree/);
    const noRam = ['FlatView #0', ' AS "memory", root: system', ' Root memory region: system', '  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic'].join('\n');
    expect(() => parseMtreeLowRam(noRam)).toThrow(/no RAM at 1 MiB/);
  });

  it('does not take the RAM of another address space', () => {
    const text = ['FlatView #0', ' AS "cpu-smm-0", root: memory', ' Root memory region: memory', '  0000000000000000-000000001fffffff (prio 0, ram): pc.ram'].join('\n');
    expect(() => parseMtreeLowRam(text)).toThrow(MtreeParseError);
  });
});
