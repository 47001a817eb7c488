import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { HeartbeatProbe, outcomeOf } from '../../../monitor/probes/heartbeat.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';
import { QmpStatusProbe } from '../../../monitor/probes/qmp-status.js';
import { STATUS_REFRESH_MS } from '../../../host-reader/reader.js';
import type { AppTarget, ProbeResult } from '../../../monitor/types.js';
import { FakeQmpServer, servePmemsave } from '../../helpers/fake-qmp-server.js';
import { MS, simulateBeat } from '../../host-reader/region/sim.js';

/**
 * The heartbeat probes against a fake QEMU: QMP `query-status`, HMP `info mtree -f` (a captured q35
 * 512 MiB guest) and `pmemsave` answered from a simulated guest RAM holding our table, whose beats
 * the test makes with the same byte updates the AML does (region/sim.ts).
 */

const MTREE = readFileSync(new URL('../../host-reader/region/fixtures/q35-512.mtree-f.txt', import.meta.url), 'utf8');
const PERIOD = 1000;
const { aml, layout } = buildDiagSsdt({ nonce: 0x1234_5678_9abc_def0n, kernelPeriodMs: PERIOD });
const TABLE_AT = 0x1ffe_2270; // where SeaBIOS put it in a 512 MiB guest

let dir: string;
let layoutFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-hb-'));
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

class FakeVm {
  table = Uint8Array.from(aml);
  status = 'running';
  timer = 1_000 * MS;
  constructor(readonly server: FakeQmpServer) {
    server.handle('query-status', () => ({ return: { running: this.status === 'running', status: this.status } }));
    server.handle('human-monitor-command', (c) =>
      c.arguments?.['command-line'] === 'info mtree -f' ? { return: MTREE } : { error: { class: 'GenericError', desc: 'unexpected HMP' } },
    );
    servePmemsave(server, TABLE_AT, () => this.table);
    simulateBeat(this.table, layout, 'load', this.timer);
  }
  beat(which: 'kernel' | 'agent' = 'kernel'): void {
    this.timer += PERIOD * MS;
    simulateBeat(this.table, layout, which, this.timer);
  }
}

async function setup(which: 'kernel' | 'agent' = 'kernel') {
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  const vm = new FakeVm(server);
  const links = new QmpLinks({ connectTimeoutMs: 1000 });
  cleanups.push(() => links.closeAll());
  let now = 0;
  // The fake answers pmemsave (`auto` would first try procmem: this test process owns the socket, and gpa2hva fails).
  const probe = new HeartbeatProbe(which, links, { memory: 'pmemsave' }, () => now);
  cleanups.push(() => probe.close());
  const target: AppTarget = { name: 'vm', qmp: server.path, layout: layoutFile };
  const run = (t: AppTarget = target): Promise<ProbeResult> => probe.run(t, { timeoutMs: 2000, signal: new AbortController().signal });
  return { server, vm, links, probe, target, run, advance: (ms: number) => (now += ms) };
}

describe('kernel-heartbeat', () => {
  test('baseline, alive, stalled; the evidence carries the heartbeat report', async () => {
    const { vm, run, advance } = await setup();
    vm.beat();
    const first = await run();
    expect(first.outcome).toBe('unknown'); // one sample: no change seen yet
    expect(first.evidence).toMatchObject({ signal: 'kernel', status: 'unknown', tableAddress: '0x1ffe2270', vm: { running: true, status: 'running' } });

    advance(PERIOD);
    vm.beat();
    const alive = await run();
    expect(alive.outcome).toBe('success');
    expect(alive.detail).toMatch(/^kernel alive: /);
    expect(alive.evidence).toMatchObject({ status: 'alive', ageMs: 0, beats: 2, delta: 1, expectedPeriodMs: PERIOD, agent: { status: 'no-agent' } });
    expect(alive.evidence?.jitter).toMatchObject({ count: 1, meanMs: PERIOD });

    advance(1.1 * PERIOD);
    const late = await run();
    expect(late.outcome).toBe('unknown'); // late is not a failure unless failOn: late
    expect(late.evidence?.status).toBe('late');

    // The bound from the ring (one interval of a period): 1000 + 8 + 1000 ms.
    advance(PERIOD);
    const stalled = await run();
    expect(stalled.outcome).toBe('failure');
    expect(stalled.evidence).toMatchObject({ status: 'stalled', ageMs: 2100, stallAfterMs: 2008 });
    expect(stalled.detail).toMatch(/stalled at 2\.0 s: the period 1\.0 s \+ margin/);
  });

  test('asks to be polled at a quarter of the layout period (at least 100 ms), or at params.pollMs', async () => {
    const { vm, run, probe } = await setup();
    expect(probe.intervalMs()).toBeUndefined(); // no layout read yet: the scenario's period
    vm.beat();
    await run();
    expect(probe.intervalMs()).toBe(PERIOD / 4);
    const links = new QmpLinks({ connectTimeoutMs: 1000 });
    cleanups.push(() => links.closeAll());
    expect(new HeartbeatProbe('kernel', links, { pollMs: 700 }).intervalMs()).toBe(700);
    expect(new HeartbeatProbe('agent', links, { assess: { agentPeriodMs: 200 } }).intervalMs()).toBe(100);
  });

  test('a paused VM is unknown with evidence, never a failure', async () => {
    const { vm, run, advance } = await setup();
    await run();
    advance(PERIOD);
    vm.beat();
    expect((await run()).outcome).toBe('success');
    vm.status = 'paused';
    advance(60 * PERIOD);
    const paused = await run();
    expect(paused.outcome).toBe('unknown');
    expect(paused.evidence).toMatchObject({ status: 'paused', vm: { running: false, status: 'paused' } });
  });

  test('the session is kept between runs and rebuilt after QEMU dropped the connection', async () => {
    const { server, vm, run, advance } = await setup();
    await run();
    advance(PERIOD);
    vm.beat();
    await run();
    expect(server.acceptedCount).toBe(1);
    // Discovery ran once: later runs only re-check the cached address (a few small reads).
    const mtrees = server.received.filter((c) => c.execute === 'human-monitor-command').length;
    expect(mtrees).toBe(1);
    server.dropClient();
    await new Promise((r) => setTimeout(r, 30));
    advance(PERIOD);
    vm.beat();
    const again = await run();
    expect(server.acceptedCount).toBe(2);
    expect(again.outcome).toBe('unknown'); // a new session starts a new baseline
    advance(PERIOD);
    vm.beat();
    expect((await run()).outcome).toBe('success');
  });

  test('shares the VM QMP connection with qmp-status', async () => {
    const { server, links, target, run } = await setup();
    const status = new QmpStatusProbe(links);
    cleanups.push(() => status.close());
    await run();
    expect((await status.run(target, { timeoutMs: 500, signal: new AbortController().signal })).outcome).toBe('success');
    expect(server.acceptedCount).toBe(1);
  });

  test('missing transports are unknown; an unreadable layout is unknown; no QEMU is a failure', async () => {
    const { run, target } = await setup();
    expect((await run({ name: 'x', layout: layoutFile })).outcome).toBe('unknown');
    expect((await run({ name: 'x', qmp: target.qmp as string })).outcome).toBe('unknown');
    const badLayout = await run({ ...target, layout: join(dir, 'missing.json') });
    expect(badLayout.outcome).toBe('unknown');
    expect(badLayout.detail).toContain('missing.json');
    const gone = await run({ ...target, qmp: join(dir, 'no-qemu.sock') });
    expect(gone.outcome).toBe('failure');
    expect(gone.evidence).toMatchObject({ errno: 'ENOENT' });
  });

  test('while the table is being located, and when it is not in RAM, the probe is unknown, not a failure', async () => {
    const { vm, probe, target } = await setup();
    vm.table.fill(0);
    const quick = () => probe.run(target, { timeoutMs: 200, signal: new AbortController().signal });
    const first = await quick();
    expect(first.outcome).toBe('unknown');
    expect(first.evidence?.locating).toBe(true);
    const t0 = performance.now();
    let r = first;
    while (r.evidence?.locating === true && performance.now() - t0 < 60_000) r = await quick();
    expect(r.outcome).toBe('unknown');
    expect(r.detail).toMatch(/table not found in guest RAM/);
    expect(r.evidence?.readError).toBeDefined();
  }, 90_000);

  test('a QEMU that stops answering is a failure at the timeout', async () => {
    const { server, probe, target, run, advance } = await setup();
    await run();
    server.handle('query-status', { noReply: true });
    // The run state follows QMP events; with none, query-status is asked again after STATUS_REFRESH_MS.
    advance(STATUS_REFRESH_MS);
    const r = await probe.run(target, { timeoutMs: 150, signal: new AbortController().signal });
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('kernel heartbeat: timed out after 150 ms');
  });
});

describe('agent-heartbeat', () => {
  test('no agent beat is a failure; agent beats are a success', async () => {
    const { vm, run, advance } = await setup('agent');
    vm.beat();
    await run();
    advance(PERIOD);
    vm.beat();
    const none = await run();
    expect(none.outcome).toBe('failure');
    expect(none.evidence).toMatchObject({ signal: 'agent', status: 'no-agent', kernel: { status: 'alive' } });
    vm.beat('agent');
    advance(PERIOD);
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(ok.evidence?.status).toBe('alive');
  });
});

test('outcomeOf: the status table', () => {
  expect(outcomeOf('alive', 'kernel', 'stalled')).toBe('success');
  expect(outcomeOf('restarted', 'kernel', 'stalled')).toBe('success');
  expect(outcomeOf('stalled', 'kernel', 'stalled')).toBe('failure');
  expect(outcomeOf('late', 'kernel', 'stalled')).toBe('unknown');
  expect(outcomeOf('late', 'kernel', 'late')).toBe('failure');
  expect(outcomeOf('paused', 'kernel', 'late')).toBe('unknown');
  expect(outcomeOf('waiting', 'kernel', 'stalled')).toBe('unknown');
  expect(outcomeOf('not-loaded', 'kernel', 'stalled')).toBe('unknown');
  expect(outcomeOf('no-agent', 'agent', 'stalled')).toBe('failure');
  expect(outcomeOf('no-agent', 'kernel', 'stalled')).toBe('unknown');
});
