import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { FakeGuestMemory } from '../../host-reader/memory/fake-memory.js';
import { MemoryReadError } from '../../host-reader/memory/guest-memory.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { HeartbeatPoller, RegionReader } from '../../host-reader/reader.js';
import { FakeQmpServer } from '../helpers/fake-qmp-server.js';
import { MS, simulateBeat } from './region/sim.js';

/**
 * RegionReader and HeartbeatPoller over a fake QMP server and a fake guest RAM: the reader's own
 * logic (discover, cache, verify, rescan, RESET handling) without QEMU.
 */
const fixture = (name: string) => readFile(join(import.meta.dirname, 'region', 'fixtures', name), 'utf8');

let server: FakeQmpServer | undefined;
let qmp: QmpClient | undefined;
afterEach(async () => {
  await qmp?.close();
  await server?.close();
  qmp = server = undefined;
});

async function setup(status: { running: boolean; status: string } = { running: true, status: 'running' }, onRead?: () => void) {
  const mtree = await fixture('q35-512-seabios-booted.mtree-f.txt');
  server = await FakeQmpServer.start();
  const state = { status };
  server.handle('query-status', () => ({ return: state.status }));
  server.handle('human-monitor-command', (c) => ({ return: c.arguments?.['command-line'] === 'info mtree -f' ? mtree : '' }));
  qmp = await QmpClient.connect(server.target);
  const { aml, layout } = buildDiagSsdt({ nonce: 0xabcn, kernelPeriodMs: 1000 });
  const table = aml.slice();
  const memory = new FakeGuestMemory({ unmapped: 'zeros', limit: 0x2000_0000n, ...(onRead ? { onRead } : {}) });
  const addr = 0x1ffe_2270n;
  memory.map(addr, table);
  return { state, layout, table, memory, addr };
}

describe('RegionReader', () => {
  test('finds the table by a scan, then re-reads the cached address without scanning', async () => {
    const { layout, memory, addr } = await setup();
    const reader = new RegionReader(qmp!, memory, layout);
    const first = await reader.read();
    expect(first.address).toBe(addr);
    expect(first.discovery).toBeDefined();
    memory.resetCounters();
    const second = await reader.read();
    expect(second.discovery).toBeUndefined();
    expect(memory.reads).toBe(1);
    expect(second.checksumOk).toBe(true);
  });

  test('a torn read (a beat stored, its pad not yet) is read once more before the checksum is called invalid', async () => {
    let tear: (() => void) | undefined;
    const { layout, memory, addr } = await setup(undefined, () => {
      const t = tear;
      tear = undefined;
      t?.();
    });
    const reader = new RegionReader(qmp!, memory, layout);
    await reader.read();
    const beats = addr + BigInt(layout.region.offset + 40); // kernel beats (acpi/diag/layout.ts)
    const [b] = await memory.read(beats, 1);
    tear = () => memory.write(beats, Uint8Array.of((b as number) + 1)); // the guest between its two stores
    memory.resetCounters();
    const torn = await reader.read();
    expect(memory.reads).toBe(2);
    expect(torn.checksumOk).toBe(false); // the tear stays: no pad store followed it
    memory.write(beats, Uint8Array.of(b as number));
    // Torn once, then the pad store lands before the second read.
    const pad = addr + 9n; // the header's checksum byte stands in for the region's pad
    const [c] = await memory.read(pad, 1);
    tear = () => {
      memory.write(beats, Uint8Array.of((b as number) + 1));
      tear = () => memory.write(pad, Uint8Array.of(((c as number) - 1) & 0xff));
    };
    memory.resetCounters();
    const healed = await reader.read();
    expect(memory.reads).toBe(2);
    expect(healed.checksumOk).toBe(true);
    expect(healed.region.kernel.beats).toBe(b! + 1);
    memory.resetCounters();
    expect((await reader.read()).checksumOk).toBe(true);
    expect(memory.reads).toBe(1);
  });

  test('a table that moved is rediscovered; a table that is gone is a typed error', async () => {
    const { layout, memory, table } = await setup();
    const reader = new RegionReader(qmp!, memory, layout);
    await reader.read();
    memory.write(0x1ffe_2270n, new Uint8Array(table.length)); // wiped
    const moved = 0x1fe0_0001n;
    memory.map(moved, table);
    expect((await reader.read()).address).toBe(moved);
    memory.write(moved, new Uint8Array(table.length));
    await expect(reader.read()).rejects.toThrow(/no table/);
  });
});

describe('HeartbeatPoller', () => {
  test('a paused VM is paused, never late or stalled', async () => {
    const { state, layout, memory } = await setup();
    let t = 0;
    const poller = new HeartbeatPoller(qmp!, new RegionReader(qmp!, memory, layout), {}, () => t);
    await poller.poll();
    state.status = { running: false, status: 'paused' };
    // The poller follows QMP events: QEMU sends STOP when it pauses (waitEvent: delivered to the poller too).
    const stopped = qmp!.waitEvent('STOP');
    server!.emitEvent('STOP');
    await stopped;
    for (t = 1000; t <= 20_000; t += 1000) {
      const p = await poller.poll();
      expect(p.report.kernel.status).toBe('paused');
    }
    poller.close();
  });

  test('a RESET seen while reads fail is kept for the next decoded sample', async () => {
    const { layout, memory, table, addr } = await setup();
    let t = 0;
    const reader = new RegionReader(qmp!, memory, layout);
    const poller = new HeartbeatPoller(qmp!, reader, {}, () => t);
    for (let i = 1; i <= 3; i++) {
      simulateBeat(table, layout, 'kernel', i * 1000 * MS);
      memory.write(addr, table);
      t = i * 1000;
      expect((await poller.poll()).report.restarted).toBe(false);
    }
    server!.emitEvent('RESET', { guest: true, reason: 'guest-reset' });
    await new Promise((r) => setTimeout(r, 50));
    // The next read fails: nothing decoded, so the RESET must not be consumed.
    const realRead = memory.read.bind(memory);
    memory.read = () => Promise.reject(new MemoryReadError(memory.name, addr, 1, 'injected'));
    t = 4000;
    const failed = await poller.poll();
    expect(failed.error).toBeDefined();
    memory.read = realRead;
    // The old table is still in RAM, unchanged: only the RESET says the guest restarted.
    t = 5000;
    expect((await poller.poll()).report.restarted).toBe(true);
    poller.close();
  });
});
