import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { FakeGuestMemory } from '../../host-reader/memory/fake-memory.js';
import { QmpClient, QmpError } from '../../host-reader/qmp/index.js';
import { CONFIRM_MS, HeartbeatPoller, RegionReader, STATUS_REFRESH_MS } from '../../host-reader/reader.js';
import { MS, simulateBeat } from './region/sim.js';
import { FakeQmpServer } from '../helpers/fake-qmp-server.js';

/**
 * HeartbeatPoller's run state follows QMP events: query-status at the first poll, after a run-state
 * event, and when the events were silent for STATUS_REFRESH_MS; no QMP round trip otherwise.
 */

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { sync?: boolean } = {}) {
  const mtree = await readFile(join(import.meta.dirname, 'region', 'fixtures', 'q35-512-seabios-booted.mtree-f.txt'), 'utf8');
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  const vm = { running: true, status: 'running' };
  server.handle('query-status', () => ({ return: { ...vm } }));
  server.handle('human-monitor-command', () => ({ return: mtree }));
  const qmp = await QmpClient.connect(server.target);
  cleanups.push(() => qmp.close());
  const { aml, layout } = buildDiagSsdt({ nonce: 0xabcn, kernelPeriodMs: 1000 });
  const memory = new FakeGuestMemory({ unmapped: 'zeros', limit: 0x2000_0000n, sync: opts.sync ?? false });
  const table = aml.slice();
  memory.map(0x1ffe_2270n, table);
  let t = 0;
  const poller = new HeartbeatPoller(qmp, new RegionReader(qmp, memory, layout), {}, () => t);
  cleanups.push(() => poller.close());
  const statusCalls = () => server.received.filter((c) => c.execute === 'query-status').length;
  return { server, qmp, vm, poller, memory, table, layout, statusCalls, at: (ms: number) => (t = ms) };
}

test('after the first poll, polls make no QMP round trip until an event or the refresh', async () => {
  const { server, qmp, vm, poller, statusCalls, at } = await setup();
  await poller.poll();
  expect(statusCalls()).toBe(1);
  const before = server.received.length;
  for (let i = 1; i <= 5; i++) {
    at(i * 1000);
    await poller.poll();
  }
  expect(server.received.length).toBe(before); // nothing at all: the table is cached, the state too
  expect(poller.statusQueries).toBe(1);

  vm.running = false;
  vm.status = 'paused';
  const stopped = qmp.waitEvent('STOP');
  server.emitEvent('STOP');
  await stopped;
  at(6000);
  expect((await poller.poll()).report.vm).toEqual({ running: false, status: 'paused' });
  expect(statusCalls()).toBe(2);
  at(7000);
  await poller.poll();
  expect(statusCalls()).toBe(2);

  // No event for STATUS_REFRESH_MS: asked again (a lost event is noticed).
  vm.running = true;
  vm.status = 'running';
  at(6000 + STATUS_REFRESH_MS);
  expect((await poller.poll()).report.vm.running).toBe(true);
  expect(statusCalls()).toBe(3);
});

test('a lost QMP connection makes the next poll ask, and fail with a QmpError', async () => {
  const { server, qmp, poller } = await setup();
  await poller.poll();
  server.dropClient();
  await qmp.closed.catch(() => undefined);
  await expect(poller.poll()).rejects.toBeInstanceOf(QmpError);
});

test('pollSync: at once only when the run state is current and the memory reads at once; else undefined and poll() asks', async () => {
  const { server, qmp, vm, poller, memory, statusCalls, at } = await setup({ sync: true });
  expect(poller.pollSync()).toBeUndefined(); // no run state yet
  const first = await poller.poll();
  const sent = server.received.length;
  at(1000);
  const p = poller.pollSync();
  expect(p?.snapshot?.address).toBe(first.snapshot?.address);
  expect(p?.snapshot?.checksumOk).toBe(true); // summed when asked
  expect(first.snapshot?.checksumOk).toBe(true);
  expect(p?.report.vm).toEqual({ running: true, status: 'running' });
  expect(memory.syncReads).toBe(1);
  expect(server.received.length).toBe(sent);

  vm.running = false;
  vm.status = 'paused';
  const stopped = qmp.waitEvent('STOP');
  server.emitEvent('STOP');
  await stopped;
  expect(poller.pollSync()).toBeUndefined(); // an event queued: poll() asks what changed
  expect((await poller.poll()).report.kernel.status).toBe('paused');
  expect(statusCalls()).toBe(2);
  at(2000);
  expect(poller.pollSync()?.report.kernel.status).toBe('paused');
  // The refresh is due: asked in the background, the poll answered at once with the state known.
  vm.running = true;
  vm.status = 'running';
  at(2000 + STATUS_REFRESH_MS);
  expect(poller.pollSync()?.report.kernel.status).toBe('paused');
  await new Promise((r) => setTimeout(r, 50));
  expect(statusCalls()).toBe(3);
  at(3000 + STATUS_REFRESH_MS);
  expect(poller.pollSync()?.report.vm).toEqual({ running: true, status: 'running' });
  expect(statusCalls()).toBe(3);
});

test('pollSync: a background refresh that fails, or that QEMU does not answer, sends the poll back to poll()', async () => {
  const { server, poller, at } = await setup({ sync: true });
  await poller.poll();
  server.handle('query-status', { error: { class: 'GenericError', desc: 'broken' } });
  at(STATUS_REFRESH_MS);
  expect(poller.pollSync()).toBeDefined(); // the refresh goes out; this poll knows the state
  await new Promise((r) => setTimeout(r, 50));
  expect(poller.pollSync()).toBeUndefined();
  await expect(poller.poll()).rejects.toThrow(/broken/);
  server.handle('query-status', () => ({ return: { running: true, status: 'running' } }));
  await poller.poll();
  expect(poller.pollSync()).toBeDefined(); // answered again: at once again

  server.handle('query-status', { noReply: true });
  at(2 * STATUS_REFRESH_MS);
  expect(poller.pollSync()).toBeDefined();
  at(2 * STATUS_REFRESH_MS + 1001);
  expect(poller.pollSync()).toBeUndefined(); // out for more than REFRESH_WAIT_MS
});

test('pollSync after a RESET: undefined (the address is forgotten), and poll() rescans', async () => {
  const { server, qmp, poller } = await setup({ sync: true });
  await poller.poll();
  expect(poller.pollSync()).toBeDefined();
  const reset = qmp.waitEvent('RESET');
  server.emitEvent('RESET');
  await reset;
  expect(poller.pollSync()).toBeUndefined();
  expect((await poller.poll()).report.restarted).toBe(true);
});

test('pollSync: a late or stalled heartbeat is told only with a run state at most CONFIRM_MS old: a pause whose STOP was lost is paused, not hung', async () => {
  const { server, qmp, vm, poller, memory, table, layout, statusCalls, at } = await setup({ sync: true });
  let t = 0;
  const beatAt = (ms: number) => {
    at(ms);
    simulateBeat(table, layout, 'kernel', ms * MS);
    memory.write(0x1ffe_2270n, table);
  };
  beatAt(0);
  await poller.poll();
  for (t = 1000; t <= 5000; t += 1000) {
    beatAt(t);
    expect(poller.pollSync()?.report.kernel.status).toMatch(/unknown|alive/);
  }
  expect(statusCalls()).toBe(1);
  // QEMU pauses the VM and the STOP event is lost: the beats stop.
  vm.running = false;
  vm.status = 'paused';
  at(7500);
  expect(poller.pollSync()).toBeUndefined(); // late, and the run state is 7.5 s old: ask
  expect((await poller.poll()).report.kernel.status).toBe('paused');
  expect(statusCalls()).toBe(2);
  // Resumed (its event arrives), and the kernel does not beat: stalled, with a run state asked for it.
  vm.running = true;
  vm.status = 'running';
  const resumed = qmp.waitEvent('RESUME');
  server.emitEvent('RESUME');
  await resumed;
  at(7600);
  expect((await poller.poll()).report.vm.running).toBe(true);
  expect(statusCalls()).toBe(3);
  at(7600 + CONFIRM_MS + 3000);
  expect(poller.pollSync()).toBeUndefined();
  expect((await poller.poll()).report.kernel.status).toBe('stalled');
  expect(statusCalls()).toBe(4);
});
