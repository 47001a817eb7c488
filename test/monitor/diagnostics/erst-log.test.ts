import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { analyzeKernelText } from '../../../controller/analyzers/index.js';
import { ERST_STORE_MAGIC } from '../../../host-reader/erst/index.js';
import { ErstLogCollector } from '../../../monitor/diagnostics/erst-log.js';
import type { CollectorResult } from '../../../monitor/types.js';

/**
 * The erst-log collector (monitor/diagnostics/erst-log.ts) on backing files: the real store of a
 * Debian 6.1 panic (test/host-reader/erst/fixtures/), an empty one, a corrupt one, and files it must refuse.
 * (It lives here, beside the decoder's tests and fixture; test/monitor/diagnostics/ is its natural home.)
 */

let dir: string;
let real: Buffer;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-erst-'));
  real = gunzipSync(await readFile(join(import.meta.dirname, '..', '..', 'host-reader', 'erst', 'fixtures', 'debian-6.1-panic.erst.gz')));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const opts = (maxBytes = 1024 * 1024) => ({ timeoutMs: 5000, signal: new AbortController().signal, maxBytes });

async function collectFile(name: string, data: Uint8Array | undefined, maxBytes?: number): Promise<CollectorResult> {
  const path = join(dir, name);
  if (data !== undefined) await writeFile(path, data);
  return new ErstLogCollector().collect({ name: 'vm', erst: path }, opts(maxBytes));
}

const artifact = (r: CollectorResult, name: string) => r.artifacts.find((a) => a.name === name);
const text = (r: CollectorResult, name: string) => String(artifact(r, name)?.data ?? '');

describe('ErstLogCollector', () => {
  test('kind erst-log; no target.erst is ok:false', async () => {
    const c = new ErstLogCollector();
    expect(c.kind).toBe('erst-log');
    expect(await c.collect({ name: 'vm' }, opts())).toEqual({ ok: false, summary: 'erst-log: no ERST file configured', artifacts: [] });
  });

  test('a real panic: pstore-dmesg.txt has the panic, erst-records.json one summary per record', async () => {
    const r = await collectFile('real.erst', real);
    expect(r.ok).toBe(true);
    expect(r.summary).toBe('erst-log: 2 record(s): Panic#1 (2 part(s), 25.1 KiB of log, 2026-12-03T05:52:55.000Z)');
    expect(r.artifacts.map((a) => [a.name, a.mediaType])).toEqual([
      ['pstore-dmesg.txt', 'text/plain'],
      ['erst-records.json', 'application/json'],
    ]);
    const dmesg = text(r, 'pstore-dmesg.txt');
    expect(dmesg.startsWith('=== pstore Panic#1: 2 part(s), record(s) 6b1103b700000001,6b1103b700000002, 2026-12-03T05:52:55.000Z ===\n<5>[    0.000000] Linux version')).toBe(true);
    expect(dmesg).toContain('Kernel panic - not syncing: sysrq triggered crash');
    expect(analyzeKernelText(dmesg, { file: 'pstore-dmesg.txt' }).map((f) => f.title)).toContain('Kernel panic: sysrq triggered crash');
    const json = JSON.parse(text(r, 'erst-records.json')) as { records: Record<string, unknown>[]; errors: unknown[]; header: Record<string, number> };
    expect(json.errors).toEqual([]);
    expect(json.header.recordCount).toBe(2);
    expect(json.records.map((x) => [x['id'], x['timestamp'], x['type'], x['part'], x['compressed'], x['bytes']])).toEqual([
      ['6b1103b700000001', 1_796_277_175, 'dmesg', 1, true, 6992],
      ['6b1103b700000002', 1_796_277_175, 'dmesg', 2, true, 2612],
    ]);
  });

  test('a small budget keeps the tail of the log (the panic) and the JSON whole', async () => {
    const r = await collectFile('real-small.erst', real, 8192);
    const a = artifact(r, 'pstore-dmesg.txt');
    expect(a?.truncated).toBe(true);
    expect(text(r, 'pstore-dmesg.txt')).toContain('Kernel panic - not syncing');
    expect(() => JSON.parse(text(r, 'erst-records.json')) as unknown).not.toThrow();
    const total = r.artifacts.reduce((n, x) => n + Buffer.byteLength(String(x.data)), 0);
    expect(total).toBeLessThanOrEqual(8192);
  });

  test('an empty store, and a file QEMU never initialized: ok, no record, no dmesg artifact', async () => {
    const empty = Buffer.alloc(0x10000);
    empty.writeBigUInt64LE(ERST_STORE_MAGIC, 0);
    empty.writeUInt32LE(8192, 8);
    empty.writeUInt32LE(8192, 12);
    empty.writeUInt16LE(0x0100, 16);
    const r = await collectFile('empty.erst', empty);
    expect(r).toMatchObject({ ok: true, summary: 'erst-log: no record in the ERST store (64.0 KiB)' });
    expect(r.artifacts.map((a) => a.name)).toEqual(['erst-records.json']);
    const zero = await collectFile('zero.erst', Buffer.alloc(0x10000));
    expect(zero).toMatchObject({ ok: true, summary: 'erst-log: no record (QEMU has not initialized the ERST store yet)' });
  });

  test('a corrupt record: ok:false with the error, and what could be read', async () => {
    const bad = Buffer.from(real);
    bad.write('XXXX', 2 * 8192, 'latin1'); // slot 2's CPER signature
    const r = await collectFile('bad.erst', bad);
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/^erst-log: corrupt ERST store: slot\[2\]\.cper\.signature: not CPER \("XXXX"\) \(at byte 16384\); read 1 record\(s\): Panic#1 \(1 part\(s\)/);
    const json = JSON.parse(text(r, 'erst-records.json')) as { records: unknown[]; errors: { field: string }[] };
    expect(json.records).toHaveLength(1);
    expect(json.errors.map((e) => e.field)).toEqual(['slot[2].cper.signature']);
    expect(text(r, 'pstore-dmesg.txt')).toContain('Kernel panic - not syncing');
  });

  test('a corrupt header: ok:false, the JSON says nothing decoded', async () => {
    const r = await collectFile('garbage.erst', Buffer.from('garbage '.repeat(1000)));
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/^erst-log: corrupt ERST store: header\.magic: not ERSTSTOR/);
    expect(r.artifacts.map((a) => a.name)).toEqual(['erst-records.json']);
  });

  test('refused: a missing file, a symbolic link, a directory, a FIFO, a file over the cap', async () => {
    expect((await collectFile('missing.erst', undefined)).summary).toMatch(/does not exist/);
    await writeFile(join(dir, 'target.erst'), real);
    await symlink(join(dir, 'target.erst'), join(dir, 'link.erst'));
    const link = await collectFile('link.erst', undefined);
    expect(link).toMatchObject({ ok: false, artifacts: [] });
    expect(link.summary).toMatch(/is a symbolic link/);
    expect((await new ErstLogCollector().collect({ name: 'vm', erst: dir }, opts())).summary).toMatch(/not a regular file/);
    execFileSync('mkfifo', [join(dir, 'fifo.erst')]);
    expect((await collectFile('fifo.erst', undefined)).summary).toMatch(/not a regular file/);
    const big = await new ErstLogCollector({ maxFileBytes: 0x8000 }).collect({ name: 'vm', erst: join(dir, 'target.erst') }, opts());
    expect(big.ok).toBe(false);
    expect(big.summary).toMatch(/65536 bytes, more than the 32768 read/);
    expect(() => new ErstLogCollector({ maxFileBytes: 0 })).toThrow(RangeError);
  });

  test('an aborted signal', async () => {
    const ac = new AbortController();
    ac.abort();
    expect((await new ErstLogCollector().collect({ name: 'vm', erst: '/nonexistent' }, { timeoutMs: 1, signal: ac.signal, maxBytes: 1 })).ok).toBe(false);
  });
});
