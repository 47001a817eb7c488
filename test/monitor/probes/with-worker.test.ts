import { afterEach, describe, expect, test } from 'vitest';
import { realClock } from '../../../util/clock.js';
import { ConsoleActiveProbe } from '../../../monitor/probes/console-active.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';
import { QmpStatusProbe } from '../../../monitor/probes/qmp-status.js';
import { runProbe, Worker, type WorkerUpdate } from '../../../monitor/worker.js';
import { FakeQmpServer } from '../../helpers/fake-qmp-server.js';
import { FakeConsole } from './fake-console.js';

/** The probes under the worker's own timeout (worker.ts runProbe): their evidence survives it. */

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('probes run by the worker', () => {
  test('a probe at its timeout finishes just before the worker deadline, so its evidence is kept', async () => {
    const cons = await FakeConsole.start({ banner: 'booting...\r\n' });
    cleanups.push(() => cons.close());
    const r = await runProbe(new ConsoleActiveProbe(), { name: 'vm', console: cons.path }, 300, realClock, new AbortController().signal);
    expect(r.outcome).toBe('failure');
    expect(r.detail).toBe('console command: timed out after 300 ms: no match for /load average/');
    expect(r.evidence).toMatchObject({ step: 'command', received: 'booting...\r\n' });
  });

  test('a Worker probing qmp-status reports the change to failure after the threshold', async () => {
    const server = await FakeQmpServer.start();
    cleanups.push(() => server.close());
    let status = 'running';
    server.handle('query-status', () => ({ return: { running: status === 'running', status } }));
    const links = new QmpLinks();
    cleanups.push(() => links.closeAll());
    const probe = new QmpStatusProbe(links);
    cleanups.push(() => probe.close());
    const updates: WorkerUpdate[] = [];
    const w = new Worker(
      { name: 'vm', qmp: server.path },
      'run-state',
      probe,
      { periodMs: 1000, timeoutMs: 500, initialDelayMs: 0, failureThreshold: 2, successThreshold: 1 },
      realClock,
      (u) => updates.push(u),
    );
    const signal = new AbortController().signal;
    expect((await w.probeOnce(signal)).state.result).toBe('success');
    status = 'paused';
    expect((await w.probeOnce(signal)).state.result).toBe('success');
    const u = await w.probeOnce(signal);
    expect(u.changed).toBe(true);
    expect(u.state.result).toBe('failure');
    expect(u.state.last?.evidence).toMatchObject({ status: 'paused' });
  });
});
