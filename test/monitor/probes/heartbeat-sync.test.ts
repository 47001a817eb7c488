import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { HeartbeatProbe } from '../../../monitor/probes/heartbeat.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';
import { FakeClock } from '../../../util/clock.js';
import { Worker, type WorkerUpdate } from '../../../monitor/worker.js';
import type { AppTarget, ProbeResult } from '../../../monitor/types.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { ownRam } from '../../helpers/own-ram.js';
import { MS, simulateBeat } from '../../host-reader/region/sim.js';

/**
 * The heartbeat probe's steady poll answered at once (Probe.runSync) over the real procmem path: the
 * fake QEMU's "RAM" is a buffer in this process, HMP `gpa2hva` answers its address, and the probe
 * reads it through /proc/<this pid>/mem as it reads QEMU's. Once the table is found, a poll makes no
 * QMP round trip and no promise; anything the poll cannot tell at once (an event, a changed table)
 * goes back to the awaited run.
 */

const PERIOD = 1000;
const { aml, layout } = buildDiagSsdt({ nonce: 0x5eed_0000_0000_0001n, kernelPeriodMs: PERIOD });
const TOP = 2 * 1024 * 1024;
const TABLE_AT = TOP - 4096;

let dir: string;
let layoutFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-hb-sync-'));
  layoutFile = join(dir, 'layout.json');
  await writeFile(layoutFile, JSON.stringify(layout));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(holdMs?: number) {
  const ram = ownRam(TOP);
  const table = ram.bytes.subarray(TABLE_AT, TABLE_AT + aml.length);
  table.set(aml);
  let timer = 1000 * MS;
  simulateBeat(table, layout, 'load', timer);
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  const vm = { running: true, status: 'running' };
  server.handle('query-status', () => ({ return: { ...vm } }));
  server.handle('human-monitor-command', (c) => {
    const line = String(c.arguments?.['command-line'] ?? '');
    if (line === 'info mtree -f') {
      return { return: `FlatView #0\n AS "memory", root: system\n Root memory region: system\n  0000000000000000-${(TOP - 1).toString(16).padStart(16, '0')} (prio 0, ram): pc.ram KVM\n\n` };
    }
    if (/^gpa2hva 0x0+$/.test(line)) return { return: `Host virtual address for 0x0 (pc.ram) is 0x${ram.hva.toString(16)}\r\n` };
    return { return: `No memory is mapped at address ${line.slice(8)}\r\n` };
  });
  const links = new QmpLinks({ connectTimeoutMs: 1000, ...(holdMs !== undefined ? { holdMs } : {}) });
  cleanups.push(() => links.closeAll());
  let now = 0;
  const discoveries: string[] = [];
  const probe = new HeartbeatProbe('kernel', links, { memory: 'procmem', pid: process.pid }, () => now, (fn) => (discoveries.push('scan'), fn()));
  cleanups.push(() => probe.close());
  const target: AppTarget = { name: 'vm', qmp: server.path, layout: layoutFile };
  const run = (): Promise<ProbeResult> => probe.run(target, { timeoutMs: 2000, signal: new AbortController().signal });
  const beat = () => simulateBeat(table, layout, 'kernel', (timer += PERIOD * MS));
  const commands = () => server.received.filter((c) => c.execute !== 'qmp_capabilities').length;
  const connections = () => server.received.filter((c) => c.execute === 'qmp_capabilities').length;
  return { server, vm, table, probe, target, run, beat, commands, connections, discoveries, advance: (ms: number) => (now += ms) };
}

describe('kernel-heartbeat over procmem with a QMP link that lets go when idle (EVE: holdMs)', () => {
  test('each run reconnects; the same QEMU keeps its memory, table and beat history: alive, then stalled, one discovery', async () => {
    const { run, beat, connections, discoveries, advance } = await setup(20);
    beat();
    expect((await run()).outcome).toBe('unknown'); // the baseline
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 60)); // the link lets go
      advance(PERIOD);
      beat();
      const r = await run();
      expect(r.outcome, r.detail).toBe('success');
      expect(r.evidence).toMatchObject({ status: 'alive', delta: 1 });
    }
    expect(connections()).toBe(4);
    expect(discoveries).toEqual(['scan']);
    await new Promise((r) => setTimeout(r, 60));
    advance(2.1 * PERIOD);
    expect(await run()).toMatchObject({ outcome: 'failure', evidence: { status: 'stalled' } });
  });
});

describe('kernel-heartbeat runSync over procmem', () => {
  test('nothing at once before the first run; then each poll is answered at once with no QMP command, as run() would', async () => {
    const { probe, target, run, beat, commands, discoveries, advance } = await setup();
    expect(probe.runSync(target)).toBeUndefined(); // no session yet
    beat();
    const first = await run();
    expect(first.outcome).toBe('unknown'); // the baseline
    expect(first.evidence).toMatchObject({ memory: 'procmem', tableAddress: `0x${TABLE_AT.toString(16)}` });
    const sent = commands();
    for (let i = 0; i < 5; i++) {
      advance(PERIOD);
      beat();
      const r = probe.runSync(target);
      expect(r?.outcome).toBe('success');
      expect(r?.evidence).toMatchObject({ signal: 'kernel', memory: 'procmem', status: 'alive', beats: 2 + i, delta: 1, tableAddress: `0x${TABLE_AT.toString(16)}`, vm: { running: true } });
    }
    expect(commands()).toBe(sent);
    expect(discoveries).toEqual(['scan']); // the one discovery went through the monitor's limiter
    // A hang: the same stall rule as run(), told only with a fresh run state (CONFIRM_MS): runSync
    // leaves it to run(), which asks QEMU first.
    advance(2.1 * PERIOD);
    expect(probe.runSync(target)).toBeUndefined();
    expect(commands()).toBe(sent);
    const stalled = await run();
    expect(stalled).toMatchObject({ outcome: 'failure', evidence: { status: 'stalled', stallAfterMs: 2008 } });
    expect(commands()).toBe(sent + 1); // query-status
    // Confirmed less than CONFIRM_MS ago: at once again.
    advance(PERIOD / 2);
    expect(probe.runSync(target)).toMatchObject({ outcome: 'failure', evidence: { status: 'stalled' } });
    expect(commands()).toBe(sent + 1);
  });

  test('a run-state event, another target, or a table that no longer matches: undefined, and run() does the work', async () => {
    const { server, vm, table, probe, target, run, beat, commands, advance } = await setup();
    beat();
    await run();
    advance(PERIOD);
    beat();
    expect(probe.runSync(target)?.outcome).toBe('success');
    expect(probe.runSync({ ...target, layout: join(dir, 'other.json') })).toBeUndefined();

    vm.running = false;
    vm.status = 'paused';
    const before = server.received.filter((c) => c.execute === 'query-status').length;
    server.emitEvent('STOP');
    await new Promise((r) => setTimeout(r, 50));
    expect(probe.runSync(target)).toBeUndefined(); // the event says the state changed: ask QEMU
    const paused = await run();
    expect(paused).toMatchObject({ outcome: 'unknown', evidence: { status: 'paused' } });
    expect(server.received.filter((c) => c.execute === 'query-status').length).toBe(before + 1);
    expect(probe.runSync(target)?.evidence).toMatchObject({ status: 'paused' }); // known now: at once again

    // The guest overwrote its table (a reboot's firmware, a hostile guest): not read at once.
    const sent = commands();
    table.fill(0);
    expect(probe.runSync(target)).toBeUndefined();
    expect(commands()).toBe(sent);
    expect((await run()).outcome).toBe('unknown'); // run() rescans: not found
  });

  test('a Worker takes the probe at once when it can: no timer per poll beyond its period', async () => {
    const { probe, target, run, beat, advance } = await setup();
    beat();
    await run();
    const clock = new FakeClock();
    const updates: WorkerUpdate[] = [];
    let runs = 0;
    const counted = { kind: probe.kind, run: (t: AppTarget, o: { timeoutMs: number; signal: AbortSignal }) => (runs++, probe.run(t, o)), runSync: (t: AppTarget) => probe.runSync(t) };
    const w = new Worker(target, 'kernel', counted, { periodMs: 1000, timeoutMs: 1000, initialDelayMs: 0, failureThreshold: 1, successThreshold: 1 }, clock, (u) => updates.push(u), () => 0);
    for (let i = 0; i < 3; i++) {
      advance(PERIOD);
      beat();
      await w.probeOnce(new AbortController().signal);
    }
    expect(runs).toBe(0);
    expect(updates.map((u) => u.state.last?.outcome)).toEqual(['success', 'success', 'success']);
  });
});
