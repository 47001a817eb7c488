import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { fixKdumpPhysBase, MemoryDumpCollector } from '../../../monitor/diagnostics/memory-dump.js';
import { isExternalArtifact, writeBundle } from '../../../monitor/report/bundle.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { tempDirs } from '../../helpers/temp-dirs.js';

/** memory-dump against a fake QEMU that "dumps" by writing a small file where dump-guest-memory says. */

const temp = tempDirs('eve-diag-memdump-');

/** makedumpfile's flattened form, as QEMU 7.2 writes it: a 4 KiB flat header, then (offset, size, data) records, BE. */
function flattened(records: Array<[number, Buffer]>): Buffer {
  const head = Buffer.alloc(4096);
  head.write('makedumpfile', 0, 'latin1');
  head.writeBigInt64BE(1n, 16);
  head.writeBigInt64BE(1n, 24);
  const parts: Buffer[] = [head];
  for (const [offset, data] of records) {
    const rh = Buffer.alloc(16);
    rh.writeBigInt64BE(BigInt(offset), 0);
    rh.writeBigInt64BE(BigInt(data.length), 8);
    parts.push(rh, data);
  }
  const end = Buffer.alloc(16, 0xff); // (-1, -1)
  return Buffer.concat([...parts, end]);
}

/** A kdump's header block, sub-header block (phys_base as QEMU 7.2 stores it) and VMCOREINFO text. */
function kdumpPieces(physBaseText: string, stored: bigint): Array<[number, Buffer]> {
  const header = Buffer.alloc(4096);
  header.write('KDUMP   ', 0, 'latin1');
  header.writeUInt32LE(6, 8);
  header.writeUInt32LE(1, 424); // status
  header.writeUInt32LE(4096, 428); // block_size
  const sub = Buffer.alloc(4096);
  sub.writeBigUInt64LE(BigInt.asUintN(64, stored), 0);
  const note = Buffer.from(`OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nNUMBER(phys_base)=${physBaseText}\nKERNELOFFSET=b800000\n`, 'latin1');
  return [
    [0, header],
    [4096, sub],
    [8192, note],
    [16384, Buffer.alloc(8192, 0x5a)],
  ];
}
/** What QEMU 7.2 stores for NUMBER(phys_base)=-12582912: -0x12582912. */
const MISREAD = -0x12582912n;
const MiB = 1024 * 1024;
let server: FakeQmpServer;
let dumpStatus: 'none' | 'active' | 'completed' | 'failed';
let polls: number;
/** How many query-dump polls after the dump started say `active`. */
let activePolls: number;
let finalStatus: 'completed' | 'failed';
let content: Buffer;

beforeEach(async () => {
  server = await FakeQmpServer.start();
  dumpStatus = 'none';
  polls = 0;
  activePolls = 2;
  finalStatus = 'completed';
  content = flattened(kdumpPieces('-12582912', MISREAD));
  server.handle('query-memory-size-summary', { return: { 'base-memory': 256 * MiB, 'plugged-memory': 0 } });
  server.handle('query-dump-guest-memory-capability', { return: { formats: ['elf', 'kdump-zlib', 'win-dmp'] } });
  server.handle('dump-guest-memory', (cmd) => {
    const protocol = String(cmd.arguments?.['protocol']);
    writeFileSync(protocol.slice('file:'.length), content); // QEMU truncates and writes
    dumpStatus = 'active';
    return { return: {} };
  });
  server.handle('query-dump', () => {
    if (dumpStatus === 'active' && polls++ >= activePolls) dumpStatus = finalStatus;
    return { return: { status: dumpStatus, completed: dumpStatus === 'active' ? 100 : 256 * MiB, total: 256 * MiB } };
  });
});
afterEach(async () => {
  await server.close();
});
const opts = (timeoutMs = 5000) => ({ timeoutMs, signal: new AbortController().signal, maxBytes: 64 * 1024 });

describe('MemoryDumpCollector', () => {
  test('kdump-zlib when offered, detached, polled; the file is an external artifact the bundle takes in', async () => {
    const dir = temp();
    const r = await new MemoryDumpCollector({ dir, pollMs: 10 }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.ok).toBe(true);
    expect(r.summary).toMatch(
      /^memory-dump: kdump-zlib of 256\.0 MiB of RAM, \d+\.\d KiB in \d+\.\d s \(kept on the node, not shipped\); phys_base fixed to -12582912 \(QEMU read it as hex\)$/,
    );
    const dump = server.received.find((c) => c.execute === 'dump-guest-memory');
    expect(dump?.arguments).toMatchObject({ paging: false, detach: true, format: 'kdump-zlib' });
    const [file, json] = r.artifacts;
    expect(file !== undefined && isExternalArtifact(file)).toBe(true);
    expect(file).toMatchObject({ name: 'memory.kdump', mediaType: 'application/vnd.eve-diag.kdump' });
    const path = (file as unknown as { external: { path: string } }).external.path;
    expect(String(dump?.arguments?.['protocol'])).toBe(`file:${path}`);
    expect(path.startsWith(`${dir}/.tmp-memory-`)).toBe(true);
    expect(JSON.parse(json?.data as string)).toMatchObject({ format: 'kdump-zlib', ramBytes: 256 * MiB, bytes: content.length, shipped: false });

    const b = await writeBundle(dir, { app: 'vm', verdict: 'guest-panicked', steps: [{ kind: 'memory-dump', ok: true, summary: r.summary, artifacts: r.artifacts }] });
    expect(b.manifest.steps[0]?.external?.[0]).toMatchObject({ name: 'memory.kdump', bytes: content.length, uploaded: false });
    expect(b.manifest.steps[0]?.artifacts.map((a) => a.name)).toEqual(['memory-dump.json']);
    expect(existsSync(path)).toBe(false);
    const kept = readFileSync(`${b.dir}/00-memory.kdump`);
    expect(kept.length).toBe(content.length);
    expect(kept.readBigInt64LE(4096 + 16 + 4096 + 16)).toBe(-12582912n); // the phys_base fixed in place
  });

  test('fixKdumpPhysBase: rewrites exactly QEMU 7.2\'s misreading, flattened or plain, and nothing else', async () => {
    const dir = temp();
    const flat = `${dir}/flat.kdump`;
    writeFileSync(flat, flattened(kdumpPieces('-12582912', MISREAD)));
    const before = readFileSync(flat);
    expect(await fixKdumpPhysBase(flat)).toEqual({ physBase: BigInt.asUintN(64, -12582912n), patched: true });
    const after = readFileSync(flat);
    expect(after.length).toBe(before.length);
    // Only the 8 bytes of the sub-header's phys_base changed: the flat header, the 2 records before it, its record header.
    const at = 4096 + (16 + 4096) + 16;
    expect(after.readBigInt64LE(at)).toBe(-12582912n);
    expect(Buffer.compare(after.subarray(0, at), before.subarray(0, at))).toBe(0);
    expect(Buffer.compare(after.subarray(at + 8), before.subarray(at + 8))).toBe(0);
    expect(await fixKdumpPhysBase(flat)).toEqual({ physBase: BigInt.asUintN(64, -12582912n), patched: false }); // right already

    // A plain kdump file (the pieces at their offsets), a positive phys_base.
    const plain = Buffer.alloc(24576);
    for (const [offset, data] of kdumpPieces('16777216', 0x16777216n)) data.copy(plain, offset);
    writeFileSync(`${dir}/plain.kdump`, plain);
    expect(await fixKdumpPhysBase(`${dir}/plain.kdump`)).toEqual({ physBase: 16777216n, patched: true });
    expect(readFileSync(`${dir}/plain.kdump`).readBigUInt64LE(4096)).toBe(16777216n);

    // Something else stored: left alone. No VMCOREINFO: said so.
    writeFileSync(`${dir}/other.kdump`, flattened(kdumpPieces('-12582912', 42n)));
    expect(await fixKdumpPhysBase(`${dir}/other.kdump`)).toMatchObject({ patched: false, note: expect.stringMatching(/neither/) });
    const noInfo = kdumpPieces('0', 0n).filter(([o]) => o !== 8192);
    writeFileSync(`${dir}/noinfo.kdump`, flattened(noInfo));
    expect(await fixKdumpPhysBase(`${dir}/noinfo.kdump`)).toMatchObject({ patched: false, note: expect.stringMatching(/no NUMBER\(phys_base\)/) });
    writeFileSync(`${dir}/junk`, 'junk');
    expect(await fixKdumpPhysBase(`${dir}/junk`)).toEqual({ patched: false, note: 'not a kdump file' });
  });

  test('elf when QEMU offers no kdump format', async () => {
    server.handle('query-dump-guest-memory-capability', { return: { formats: ['elf'] } });
    content = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(100)]);
    const r = await new MemoryDumpCollector({ dir: temp(), pollMs: 10 }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.ok).toBe(true);
    expect(r.artifacts[0]).toMatchObject({ name: 'memory.elf', mediaType: 'application/vnd.eve-diag.elf-core' });
    expect(server.received.find((c) => c.execute === 'dump-guest-memory')?.arguments?.['format']).toBe('elf');
  });

  test('a VM with more RAM than the cap is refused before any dump', async () => {
    const dir = temp();
    const r = await new MemoryDumpCollector({ dir, maxRamBytes: 128 * MiB }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r).toMatchObject({ ok: false, artifacts: [] });
    expect(r.summary).toBe('memory-dump: refused, the VM has 256.0 MiB of RAM, more than the 128.0 MiB cap (maxRamBytes)');
    expect(server.received.some((c) => c.execute === 'dump-guest-memory')).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('a dump still running at the deadline: ok false, the partial file deleted', async () => {
    const dir = temp();
    activePolls = 1_000_000;
    const r = await new MemoryDumpCollector({ dir, pollMs: 20 }).collect({ name: 'vm', qmp: server.path }, opts(300));
    expect(r.ok).toBe(false);
    expect(r.summary).toMatch(/not finished within .* s \(0% done\); the partial file was deleted, QEMU 7\.2 cannot cancel: the VM stays paused/);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('QEMU says failed, or wrote something that is no dump: ok false, nothing left on disk', async () => {
    const dir = temp();
    finalStatus = 'failed';
    const r = await new MemoryDumpCollector({ dir, pollMs: 10 }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.summary).toMatch(/QEMU reports the dump failed/);
    finalStatus = 'completed';
    dumpStatus = 'none';
    polls = 0;
    content = Buffer.from('garbage');
    const r2 = await new MemoryDumpCollector({ dir, pollMs: 10 }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r2.summary).toMatch(/does not start like a kdump-zlib dump/);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('a dump already running, a QEMU error, no QMP: ok false with the reason', async () => {
    dumpStatus = 'active';
    activePolls = 1_000_000;
    expect((await new MemoryDumpCollector({ dir: temp() }).collect({ name: 'vm', qmp: server.path }, opts())).summary).toMatch(/already dumping/);
    dumpStatus = 'none';
    server.handle('dump-guest-memory', { error: { class: 'GenericError', desc: 'dump: failed to save memory: No space left on device' } });
    const dir = temp();
    const r = await new MemoryDumpCollector({ dir }).collect({ name: 'vm', qmp: server.path }, opts());
    expect(r.summary).toMatch(/No space left on device/);
    expect(readdirSync(dir)).toEqual([]);
    expect((await new MemoryDumpCollector().collect({ name: 'vm' }, opts())).summary).toBe('memory-dump: the app has no QMP socket');
  });

  test('bad options throw', () => {
    expect(() => new MemoryDumpCollector({ dir: 'relative' })).toThrow(RangeError);
    expect(() => new MemoryDumpCollector({ maxRamBytes: 0 })).toThrow(RangeError);
    expect(() => new MemoryDumpCollector({ format: 'lzo' as never })).toThrow(RangeError);
  });
});
