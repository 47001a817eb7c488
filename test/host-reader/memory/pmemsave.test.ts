import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { FakeGuestMemory } from '../../../host-reader/memory/fake-memory.js';
import { PmemsaveMemory, removeStaleDirs } from '../../../host-reader/memory/pmemsave.js';
import { QmpClient } from '../../../host-reader/qmp/index.js';
import { sessionOf } from '../../../host-reader/session.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A pid that ran and is gone. */
function deadPid(): number {
  return Number(spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim());
}

async function qmpWithRam(ram: Uint8Array) {
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  server.handle('pmemsave', (c) => {
    const { val, size, filename } = c.arguments as { val: number; size: number; filename: string };
    writeFileSync(filename, ram.subarray(val, val + size));
    return { return: {} };
  });
  const qmp = await QmpClient.connect(server.target);
  cleanups.push(() => qmp.close());
  return qmp;
}

describe('PmemsaveMemory', () => {
  test('reads through QEMU writing a file into its private directory, and removes it on close', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'eve-diag-pmem-test-'));
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const ram = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
    const mem = await PmemsaveMemory.open(await qmpWithRam(ram), { tmpDir: tmp });
    expect([...(await mem.read(10n, 4))]).toEqual([10, 11, 12, 13]);
    const dirs = readdirSync(tmp);
    expect(dirs).toHaveLength(1);
    expect(dirs[0]).toMatch(new RegExp(`^eve-diag-pmem-${process.pid}-`));
    expect(readdirSync(join(tmp, dirs[0] as string))).toEqual([]); // each read's file is gone
    await mem.close();
    expect(readdirSync(tmp)).toEqual([]);
  });

  test('opening removes the directories a crashed eve-diag left, and nothing else', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'eve-diag-pmem-test-'));
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const dead = deadPid();
    const stale = join(tmp, `eve-diag-pmem-${dead}-abcDEF`);
    mkdirSync(stale);
    writeFileSync(join(stale, 'r7.bin'), 'x'); // a read the crash interrupted
    const live = join(tmp, 'eve-diag-pmem-1-ghiJKL'); // pid 1 runs
    mkdirSync(live);
    const target = mkdtempSync(join(tmpdir(), 'eve-diag-pmem-target-'));
    cleanups.push(() => rmSync(target, { recursive: true, force: true }));
    writeFileSync(join(target, 'keep'), 'k');
    symlinkSync(target, join(tmp, `eve-diag-pmem-${dead}-linkXX`)); // never followed
    const other = join(tmp, 'eve-diag-pmem-notapid');
    mkdirSync(other);

    const mem = await PmemsaveMemory.open(await qmpWithRam(new Uint8Array(16)), { tmpDir: tmp });
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(existsSync(join(target, 'keep'))).toBe(true);
    expect(existsSync(other)).toBe(true);
    await mem.close();
    expect(await removeStaleDirs(join(tmp, 'missing'))).toEqual([]);
  });
});

describe('Session.close', () => {
  test('closes QMP even when closing the memory throws', async () => {
    const qmp = await qmpWithRam(new Uint8Array(16));
    const memory = new FakeGuestMemory();
    memory.close = () => Promise.reject(new Error('cannot close'));
    const s = sessionOf(qmp, memory, buildDiagSsdt({ nonce: 1n }).layout);
    await expect(s.close()).rejects.toThrow('cannot close');
    expect(qmp.state).toBe('closed');
  });
});
