import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { parseHeader, byteSum } from '../../acpi/table.js';
import { runCli } from '../helpers/cli.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag ssdt build', () => {
  test('writes .aml, .asl and .json; a fixed nonce makes the build reproducible', async () => {
    const a = await runCli('ssdt', 'build', '-o', join(dir, 'a'), '--nonce', '00c0ffee', '--period', '0.5', '--ring', '32');
    const b = await runCli('ssdt', 'build', '-o', join(dir, 'b'), '--nonce', '00c0ffee', '--period', '0.5', '--ring', '32');
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect((await readdir(join(dir, 'a'))).sort()).toEqual(['eve-diag-ssdt.aml', 'eve-diag-ssdt.asl', 'eve-diag-ssdt.json']);
    const amlA = await readFile(join(dir, 'a', 'eve-diag-ssdt.aml'));
    expect(amlA.equals(await readFile(join(dir, 'b', 'eve-diag-ssdt.aml')))).toBe(true);
    expect(byteSum(amlA)).toBe(0);
    const layout = JSON.parse(await readFile(join(dir, 'a', 'eve-diag-ssdt.json'), 'utf8'));
    expect(layout).toMatchObject({ nonce: '0000000000c0ffee', kernel: { periodMs: 500, periodDs: 5 }, ring: { length: 32 } });
    expect(layout.table.length).toBe(amlA.length);
    expect(parseHeader(amlA)).toMatchObject({ signature: 'SSDT', oemId: 'EVEDIA', oemTableId: 'EVEDIAG' });
    expect(a.out).toContain('-acpitable file=');
  });

  test('random nonce by default; --json prints one object', async () => {
    const a = await runCli('ssdt', 'build', '-o', dir, '--name', 'one', '--json');
    const b = await runCli('ssdt', 'build', '-o', dir, '--name', 'two', '--json');
    const ja = JSON.parse(a.out);
    const jb = JSON.parse(b.out);
    expect(ja.nonce).toMatch(/^[0-9a-f]{16}$/);
    expect(ja.nonce).not.toBe(jb.nonce);
    expect(ja.aml).toBe(join(dir, 'one.aml'));
  });

  test.each([
    [['--kernel-zone', '9ABC'], '--kernel-zone', '"9ABC"'],
    [['--agent-zone', 'EDGK'], '--agent-zone', 'differ'],
    [['--period', '0.05'], '--period', '"0.05"'],
    [['--period', '7200'], '--period', 'between'],
    [['--ring', '12'], '--ring', '12'],
    [['--ring', 'many'], '--ring', '"many"'],
    [['--nonce', 'xyz'], '--nonce', '"xyz"'],
    [['--oem-id', 'lower'], '--oem-id', '"lower"'],
    [['--oem-table-id', 'TOOLONGID'], '--oem-table-id', 'TOOLONGID'],
    [['--scope', '_TZ'], '--scope', 'absolute'],
    [['--name', '../evil'], '--name', '../evil'],
  ])('bad input %j: exit 2, names %s, writes nothing', async (args, field, detail) => {
    const r = await runCli('ssdt', 'build', '-o', join(dir, 'out'), ...args);
    expect(r.code).toBe(2);
    expect(r.err).toContain(field);
    expect(r.err).toContain(detail);
    expect(await readdir(dir)).toEqual([]);
  });

  test('unwritable output: exit 2 naming --out, no partial files', async () => {
    const file = join(dir, 'plain-file');
    await writeFile(file, 'x');
    for (const out of [file, join(file, 'sub'), '/proc/eve-diag-no-such-dir']) {
      const r = await runCli('ssdt', 'build', '-o', out);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/--out: cannot write there/);
    }
    expect(await readdir(dir)).toEqual(['plain-file']);
  });

  test('missing -o and unknown flags are usage errors (exit 2)', async () => {
    expect((await runCli('ssdt', 'build')).code).toBe(2);
    expect((await runCli('ssdt', 'build', '-o', dir, '--bogus')).code).toBe(2);
    expect((await runCli('nonsense')).code).toBe(2);
  });

  test('--help explains the command and exits 0', async () => {
    const r = await runCli('ssdt', 'build', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('--period <seconds>');
    expect(r.out).toContain('-acpitable');
  });
});
