import { afterEach, describe, expect, test } from 'vitest';
import { QmpClient } from '../../../host-reader/qmp/index.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';
import { QmpStatusProbe, type QmpStatusEvidence } from '../../../monitor/probes/qmp-status.js';
import type { AppTarget } from '../../../monitor/types.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(status = 'running') {
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  let state = status;
  server.handle('query-status', () => ({ return: { running: state === 'running', status: state } }));
  const links = new QmpLinks({ connectTimeoutMs: 1000 });
  cleanups.push(() => links.closeAll());
  const probe = new QmpStatusProbe(links, { maxEvents: 3 });
  cleanups.push(() => probe.close());
  const target: AppTarget = { name: 'vm', qmp: server.path };
  const run = (timeoutMs = 500) => probe.run(target, { timeoutMs, signal: new AbortController().signal });
  return { server, links, probe, target, run, setState: (s: string) => (state = s) };
}

const evidence = (r: { evidence?: Record<string, unknown> }) => r.evidence as unknown as QmpStatusEvidence;
const tick = () => new Promise((r) => setTimeout(r, 30));

describe('qmp-status', () => {
  test('running is a success; any other run state a failure with evidence.status', async () => {
    const { run, setState } = await setup();
    const ok = await run();
    expect(ok.outcome).toBe('success');
    expect(evidence(ok)).toMatchObject({ status: 'running', running: true, events: [] });
    for (const s of ['paused', 'inmigrate', 'postmigrate', 'shutdown', 'guest-panicked', 'prelaunch']) {
      setState(s);
      const r = await run();
      expect(r.outcome).toBe('failure');
      expect(evidence(r).status).toBe(s);
      expect(r.detail).toBe(`VM is ${s}`);
    }
  });

  test('events seen since the previous run, bounded; GUEST_PANICKED stays until a RESET', async () => {
    const { server, run, setState } = await setup();
    await run(); // connects and subscribes
    server.emitEvent('STOP');
    server.emitEvent('BLOCK_JOB_COMPLETED', { device: 'x' }); // not asked for
    setState('paused');
    await tick();
    const r1 = await run();
    expect(evidence(r1).events.map((e) => e.event)).toEqual(['STOP']);
    expect(evidence(r1).events[0]?.wallMs).toBeGreaterThan(1.6e12);
    expect(r1.detail).toBe('VM is paused; events: STOP');
    // Consumed: the next run starts empty.
    expect(evidence(await run()).events).toEqual([]);

    for (let i = 0; i < 5; i++) server.emitEvent('WATCHDOG', { action: 'none', n: i });
    server.emitEvent('GUEST_PANICKED', { action: 'pause' });
    setState('guest-panicked');
    await tick();
    const r2 = await run();
    expect(evidence(r2).events.map((e) => e.event)).toEqual(['WATCHDOG', 'WATCHDOG', 'GUEST_PANICKED']);
    expect(evidence(r2).droppedEvents).toBe(3);
    expect(evidence(r2).panic?.data).toEqual({ action: 'pause' });
    setState('shutdown');
    server.emitEvent('SHUTDOWN', { guest: true, reason: 'guest-panic' });
    await tick();
    const r3 = await run();
    expect(evidence(r3).panic?.event).toBe('GUEST_PANICKED'); // sticky: still the cause
    expect(evidence(r3).droppedEvents).toBe(0);
    expect(evidence(r3).events.map((e) => e.event)).toEqual(['SHUTDOWN']);
    server.emitEvent('RESET', { guest: false, reason: 'host-qmp-system-reset' });
    setState('running');
    await tick();
    const r4 = await run();
    expect(r4.outcome).toBe('success');
    expect(evidence(r4).panic).toBeUndefined();
    expect(evidence(r4).events.map((e) => e.event)).toEqual(['RESET']);
  });

  test('no QMP configured is unknown; no QEMU is a failure naming errno', async () => {
    const { probe } = await setup();
    const signal = new AbortController().signal;
    expect((await probe.run({ name: 'x' }, { timeoutMs: 100, signal })).outcome).toBe('unknown');
    const gone = await probe.run({ name: 'x', qmp: '/nonexistent/qmp' }, { timeoutMs: 500, signal });
    expect(gone.outcome).toBe('failure');
    expect(gone.evidence).toMatchObject({ errno: 'ENOENT', qmp: '/nonexistent/qmp' });
  });

  test('a QEMU that does not answer is a failure at the timeout', async () => {
    const { server, run } = await setup();
    server.handle('query-status', { noReply: true });
    const t0 = performance.now();
    const r = await run(200);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('query-status: timed out after 200 ms');
  });

  test('a caller abort is unknown, not a failure', async () => {
    const { server, probe, target } = await setup();
    server.handle('query-status', { noReply: true });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('shutting down')), 50);
    const r = await probe.run(target, { timeoutMs: 5000, signal: ac.signal });
    expect(r.outcome).toBe('unknown');
  });

  test('the connection is kept between runs and re-made lazily after it broke', async () => {
    const { server, run } = await setup();
    await run();
    await run();
    expect(server.acceptedCount).toBe(1);
    server.dropClient();
    await tick();
    expect((await run()).outcome).toBe('success');
    expect(server.acceptedCount).toBe(2);
  });
});

describe('QmpLinks: one QMP connection per VM', () => {
  test('probes of one VM share a connection; the last release closes it', async () => {
    const { server, links, probe, run, target } = await setup();
    const other = new QmpStatusProbe(links);
    await run();
    await other.run(target, { timeoutMs: 500, signal: new AbortController().signal });
    expect(server.acceptedCount).toBe(1);
    expect(server.connectionCount).toBe(1);
    const link = links.get(target.qmp as string);
    expect(link?.current).toBeDefined();
    await other.close();
    expect(link?.current).toBeDefined();
    await probe.close();
    expect(links.get(target.qmp as string)).toBeUndefined();
    await tick();
    expect(server.connectionCount).toBe(0);
  });

  test('concurrent callers share one connect; holdMs drops an idle connection', async () => {
    const server = await FakeQmpServer.start();
    cleanups.push(() => server.close());
    const links = new QmpLinks({ holdMs: 50 });
    cleanups.push(() => links.closeAll());
    const link = links.acquire(server.path);
    const [a, b] = await Promise.all([link.client(), link.client()]);
    expect(a).toBe(b);
    expect(server.acceptedCount).toBe(1);
    const gen = link.generation;
    await new Promise((r) => setTimeout(r, 120));
    expect(link.current).toBeUndefined();
    await link.client();
    expect(link.generation).toBe(gen + 1);
    expect(server.acceptedCount).toBe(2);
  });

  test('onConnect hooks run for each connection and clean up', async () => {
    const server = await FakeQmpServer.start();
    cleanups.push(() => server.close());
    const links = new QmpLinks();
    cleanups.push(() => links.closeAll());
    const link = links.acquire(server.path);
    const log: string[] = [];
    const remove = link.onConnect((_c, g) => {
      log.push(`up ${g}`);
      return () => log.push(`down ${g}`);
    });
    await link.client();
    await link.reset();
    await link.client();
    remove();
    expect(log).toEqual(['up 1', 'down 1', 'up 2', 'down 2']);
  });

  test('moving to another QMP path releases the old link; a failure closing it is no unhandled rejection', async () => {
    const a = await FakeQmpServer.start();
    const b = await FakeQmpServer.start();
    cleanups.push(() => a.close(), () => b.close());
    for (const srv of [a, b]) srv.handle('query-status', () => ({ return: { running: true, status: 'running' } }));
    const links = new QmpLinks({
      connect: async (path, o) => {
        const c = await QmpClient.connect({ path }, { timeoutMs: o.timeoutMs });
        const close = c.close.bind(c);
        c.close = async () => {
          await close();
          throw new Error('close failed');
        };
        return c;
      },
    });
    const probe = new QmpStatusProbe(links);
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const signal = new AbortController().signal;
      expect((await probe.run({ name: 'vm', qmp: a.path }, { timeoutMs: 500, signal })).outcome).toBe('success');
      expect((await probe.run({ name: 'vm', qmp: b.path }, { timeoutMs: 500, signal })).outcome).toBe('success');
      await new Promise((r) => setTimeout(r, 50));
      expect(links.get(a.path)).toBeUndefined();
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await probe.close().catch(() => undefined);
      await links.closeAll().catch(() => undefined);
    }
  });
});

