import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { checkTable, MAX_TABLE_BYTES } from '../../acpi/table.js';
import { readTableFile } from '../../cli/table-file.js';
import { UsageError } from '../../cli/usage-error.js';

const dir = mkdtempSync(join(tmpdir(), 'eve-diag-table-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const aml = buildDiagSsdt({ nonce: 7n }).aml;

describe('checkTable', () => {
  it('takes one table, exact or as the start of a longer dump, and reports the checksum', () => {
    const ok = checkTable(aml, { exact: true });
    expect(ok.ok && ok.checksum).toEqual({ valid: true, sum: 0 });
    const dump = new Uint8Array([...aml, 1, 2, 3]);
    expect(checkTable(dump, { exact: true }).ok).toBe(false);
    const inDump = checkTable(dump);
    expect(inDump.ok && inDump.table.length).toBe(aml.length);
    const bad = Uint8Array.from(aml, (b, i) => (i === 50 ? b ^ 4 : b));
    const c = checkTable(bad);
    expect(c.ok && c.checksum.valid).toBe(false);
  });

  it('refuses what cannot be a table, naming why', () => {
    expect(checkTable(aml.subarray(0, 10))).toEqual({ ok: false, reason: '10 bytes, shorter than the 36-byte header' });
    const lying = Uint8Array.from(aml);
    new DataView(lying.buffer).setUint32(4, 0xffff_fff0, true);
    expect(checkTable(lying)).toMatchObject({ ok: false, reason: expect.stringMatching(/header length 4294967280, file 813 bytes/) });
    new DataView(lying.buffer).setUint32(4, 10, true);
    expect(checkTable(lying).ok).toBe(false);
    expect(checkTable(new Uint8Array(40).fill(0x20)).ok).toBe(false); // blank signature
  });
});

describe('readTableFile', () => {
  it('checks the size before it reads: a huge (sparse) file is refused at once', async () => {
    const f = join(dir, 'disk.img');
    writeFileSync(f, '');
    truncateSync(f, 8 * 1024 * 1024 * 1024); // 8 GiB of nothing: readFile would fail or allocate
    const err = await readTableFile('--table', f, f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toContain(`not an ACPI table: 8589934592 bytes, more than ${MAX_TABLE_BYTES}`);
  });

  it('refuses a FIFO at once: no waiting for a writer, no reading forever', async () => {
    const f = join(dir, 'fifo');
    execFileSync('mkfifo', [f]);
    const err = await readTableFile('--table', f, f).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/--table: cannot read the table: not a regular file/);
  }, 5000);

  it('reads a table file', async () => {
    const f = join(dir, 't.aml');
    writeFileSync(f, aml);
    const t = await readTableFile('FILE', f, f, { exact: true });
    expect(t.header.oemTableId).toBe('EVEDIAG');
  });
});
