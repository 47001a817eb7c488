import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatSymbol, loadSystemMap, SYSTEM_MAP_MAX_BYTES, SymbolTable, SystemMapError } from '../../../host-reader/symbols/system-map.js';
import { SYNTHETIC_MAP } from '../../../host-reader/symbols/fake-system-map.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-sysmap-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('SymbolTable', () => {
  const t = SymbolTable.parse(SYNTHETIC_MAP);

  test('text symbols kept, data left out, markers by name', () => {
    expect(t.stats).toEqual({ lines: 21, textSymbols: 18, skipped: 0 });
    expect(t.address('linux_banner')).toBe(0xffffffff81200100n);
    expect(t.address('some_data')).toBeUndefined();
    expect(t.address('ksys_sync')).toBe(0xffffffff81001400n);
    expect(t.linkTextRange).toEqual({ start: 0xffffffff81001000n, end: 0xffffffff81001700n });
  });

  test('symbolize: name+0xoff/0xsize like the kernel, by binary search', () => {
    expect(t.format(0xffffffff81001400n)).toBe('ksys_sync+0x0/0xa0');
    expect(t.format(0xffffffff81001401n)).toBe('ksys_sync+0x1/0xa0');
    expect(t.format(0xffffffff8100149fn)).toBe('ksys_sync+0x9f/0xa0');
    expect(t.format(0xffffffff810014a0n)).toBe('__do_sys_sync+0x0/0x20');
    expect(t.format(0xffffffff8100120bn)).toBe('native_safe_halt+0xb/0x10');
    expect(t.symbolize(0xffffffff81001250n)).toEqual({ name: 'do_idle', start: 0xffffffff81001240n, offset: 0x10n, size: 0x1c0n });
    // The last symbol of .text ends at _etext.
    expect(t.format(0xffffffff810016ffn)).toBe('last_fn+0xff/0x100');
    expect(t.format(0xffffffff81000fffn)).toBe('startup_64+0xfff/0x1000');
    expect(t.symbolize(0xffffffff80ffffffn)).toBeUndefined();
    expect(t.symbolize(0n)).toBeUndefined();
    // After _einittext: nothing ends init text's last marker but _end.
    expect(t.format(0xffffffff81002010n)).toBe('init_fn+0x10/0x100');
  });

  test('aliases: a strong symbol over a weak one, fewer leading underscores first', () => {
    expect(t.format(0xffffffff81001000n)).toBe('do_one+0x0/0x100');
    expect(t.format(0xffffffff81001100n)).toBe('do_two_strong+0x0/0x100');
  });

  test('isKernelText: _stext .. _etext, after relocation', () => {
    expect(t.isKernelText(0xffffffff81001000n)).toBe(true);
    expect(t.isKernelText(0xffffffff810016ffn)).toBe(true);
    expect(t.isKernelText(0xffffffff81001700n)).toBe(false);
    expect(t.isKernelText(0xffffffff81000000n)).toBe(false);
    expect(t.isKernelText(0xffffffff81002010n)).toBe(false); // init text
    const r = t.relocated(0x1e00000n);
    expect(r.offset).toBe(0x1e00000n);
    expect(r.isKernelText(0xffffffff81001400n)).toBe(false);
    expect(r.isKernelText(0xffffffff82e01400n)).toBe(true);
    expect(r.format(0xffffffff82e01401n)).toBe('ksys_sync+0x1/0xa0');
    expect(r.symbolize(0xffffffff82e01401n)?.start).toBe(0xffffffff82e01400n);
    expect(r.address('linux_banner')).toBe(0xffffffff83000100n);
    expect(t.format(0xffffffff81001401n)).toBe('ksys_sync+0x1/0xa0'); // the original is unchanged
  });

  test('formatSymbol without a size', () => {
    expect(formatSymbol({ name: 'x', start: 0n, offset: 0x12n })).toBe('x+0x12');
  });

  test('malformed, long and module lines are skipped; CRLF and blank lines are fine', () => {
    const text = [
      'ffffffff81000000 T _stext\r',
      '',
      'ffffffff81000100 T good\r',
      'zzzz T bad_address',
      'ffffffff81000200 TT bad_type',
      'ffffffff81000300 T',
      'ffffffff81000400 T two words',
      '1ffffffff81000500 T seventeen_digits',
      `ffffffff81000600 T ${'x'.repeat(600)}`,
      'ffffffffc0a00000 t mod_fn\t[virtio_blk]',
      'ffffffff81000700 T after\x01control',
      'ffffffff81000800 T _etext',
    ].join('\n');
    const t2 = SymbolTable.parse(text);
    expect(t2.stats).toEqual({ lines: 11, textSymbols: 3, skipped: 8 });
    expect(t2.format(0xffffffff81000150n)).toBe('good+0x50/0x700');
    expect(t2.symbolize(0xffffffffc0a00000n)).toBeUndefined();
  });

  test('no text symbol: an error; Debian’s placeholder is named', () => {
    expect(() => SymbolTable.parse('ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n')).toThrow(/placeholder/);
    expect(() => SymbolTable.parse('ffffffff81200100 R linux_banner\n')).toThrow(SystemMapError);
    expect(() => SymbolTable.parse('')).toThrow(/no text symbols in 0 lines/);
  });

  test('the last symbol with nothing after it covers at most 64 KiB, size unknown', () => {
    const t3 = SymbolTable.parse('ffffffff81000000 T only\n');
    expect(t3.format(0xffffffff81000010n)).toBe('only+0x10');
    expect(t3.symbolize(0xffffffff81010000n)).toBeUndefined();
  });
});

describe('loadSystemMap', () => {
  test('reads a file', async () => {
    const p = join(dir, 'System.map');
    await writeFile(p, SYNTHETIC_MAP);
    const t = await loadSystemMap(p);
    expect(t.format(0xffffffff81001400n)).toBe('ksys_sync+0x0/0xa0');
  });

  test('refuses a file over 64 MiB, a directory, the placeholder (with the path)', async () => {
    const big = join(dir, 'big.map');
    await writeFile(big, '');
    await truncate(big, SYSTEM_MAP_MAX_BYTES + 1); // sparse
    await expect(loadSystemMap(big)).rejects.toThrow(/more than 67108864/);
    await expect(loadSystemMap(dir)).rejects.toThrow(/not a regular file/);
    const ph = join(dir, 'System.map-6.1.0-57-amd64');
    await writeFile(ph, 'ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n');
    await expect(loadSystemMap(ph)).rejects.toThrow(new RegExp(`${ph}: a placeholder`));
    await expect(loadSystemMap(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
