import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { startController, type TestController } from '../helpers/controller.js';
import { ControllerClient } from '../../monitor/controller-client.js';
import { MonitorMetrics } from '../../monitor/metrics.js';
import { Spool } from '../../monitor/report/spool.js';
import { Shipper } from '../../monitor/shipper.js';
import type { LogRecord } from '../../monitor/manager.js';
import { reportInput } from './delivery-child.js';
import { deliveryScenarios, stopEverything } from './delivery-scenarios.js';
import { clean, formatScoreboard } from './scoreboard.js';

/**
 * The quick delivery faults (test/faults/delivery-scenarios.ts), one at a time, each row clean; and
 * the unit tests of the shipper fixes those scenarios led to.
 */

afterEach(async () => {
  expect(await stopEverything()).toEqual([]);
}, 30_000);

describe('delivery faults (quick)', () => {
  const quick = deliveryScenarios.filter((s) => s.quick && !s.guest);
  test('the quick ones are the expected set', () => {
    expect(quick.map((s) => s.name)).toEqual([
      'controller-down-long',
      'controller-500',
      'controller-429',
      'controller-slow',
      'connection-reset',
      'tls-cut',
      'shipper-killed-mid-put',
      'shipper-killed-after-commit',
      'writer-killed',
      'spool-full',
      'spool-read-only',
      'bundle-removed',
    ]);
  });
  for (const s of quick) {
    test(s.name, { timeout: 60_000 }, async () => {
      const row = await s.run();
      expect(clean(row), formatScoreboard([row])).toBe(true);
    });
  }
});

describe('shipper fixes', () => {
  let c: TestController | undefined;
  const dirs: string[] = [];
  afterAll(async () => {
    await c?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const temp = () => {
    const d = mkdtempSync(join(tmpdir(), 'eve-diag-shipfix-'));
    dirs.push(d);
    return d;
  };

  /** `spool` with some methods replaced (the others bound to it: they use its private fields). */
  const wrap = (spool: Spool, over: Partial<Record<keyof Spool, unknown>>): Spool =>
    new Proxy(spool, {
      get: (t, k) => {
        if (Object.hasOwn(over, k)) return over[k as keyof Spool];
        const v: unknown = Reflect.get(t, k);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });

  async function setup(node: string, spool: Spool) {
    c ??= await startController({ limits: { maxRequestsPerSecond: 1000 } });
    const logs: LogRecord[] = [];
    const metrics = new MonitorMetrics({ processMetrics: false });
    const shipper = new Shipper({ spool, client: new ControllerClient({ url: c.url, token: await c.nodeToken(node) }), log: (r) => logs.push(r), metrics, backoffMs: 10, maxBackoffMs: 20, idleMs: 20 });
    const reasons = async () => Object.fromEntries((await metrics.shipperFailures.get()).values.map((v) => [v.labels['reason'], v.value]));
    return { shipper, logs, reasons, controller: c };
  }

  test('a spool that cannot be written (its delivered mark fails) counts as reason "spool", not "network"', async () => {
    const dir = temp();
    const spool = new Spool({ dir });
    await spool.write(reportInput('fix-spool', 0));
    const failing = wrap(spool, {
      markDelivered: () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, open'), { code: 'ENOSPC' })),
    });
    const { shipper, logs, reasons } = await setup('fix-spool', failing);
    shipper.start();
    await expect.poll(() => logs.filter((l) => /ENOSPC/.test(String(l['error']))).length, { timeout: 5000 }).toBeGreaterThan(1);
    await shipper.stop();
    const r = await reasons();
    expect(r['spool']).toBeGreaterThan(1);
    expect(r['network']).toBeUndefined();
  });

  test('a bundle removed from under the shipper (not by the quota) goes in the ledger and is announced once', async () => {
    const dir = temp();
    const spool = new Spool({ dir });
    const b = await spool.write(reportInput('fix-removed', 0));
    // Gone between the spool's listing and the shipper reading the manifest.
    let calls = 0;
    const racing = wrap(spool, {
      entries: async () => {
        const all = await spool.entries();
        // The second listing of the pass is the one the bundles are delivered from.
        if (++calls === 2) rmSync(b.dir, { recursive: true, force: true });
        return all;
      },
    });
    const { shipper, logs, reasons, controller } = await setup('fix-removed', racing);
    await shipper.runOnce();
    expect((await spool.dropped()).map((d) => [d.id, d.reason])).toEqual([[b.id, 'removed from the spool before it was delivered']]);
    expect(logs.filter((l) => l.level === 'error' && l['report'] === b.id)).toHaveLength(1);
    expect(await reasons()).toEqual({ removed: 1 });
    await shipper.runOnce();
    await shipper.runOnce();
    const notices = (await controller.store.dropped()).filter((d) => d.reportId === b.id);
    expect(notices.map((d) => d.reason)).toEqual(['removed from the spool before it was delivered']);
    // Recorded once: the later passes found it in the ledger.
    expect(await spool.dropped()).toHaveLength(1);
  });

  test('a report the quota dropped is not recorded again by the shipper, and a ledger listing it twice announces it once', async () => {
    const dir = temp();
    const spool = new Spool({ dir });
    const b = await spool.write(reportInput('fix-twice', 0));
    await spool.recordDropped({ id: b.id, bytes: 10, droppedAt: new Date().toISOString(), reason: 'spool quota' });
    await spool.recordDropped({ id: b.id, bytes: 10, droppedAt: new Date().toISOString(), reason: 'spool quota' });
    rmSync(b.dir, { recursive: true, force: true });
    const { shipper, reasons, controller } = await setup('fix-twice', spool);
    await shipper.runOnce();
    expect(await reasons()).toEqual({});
    expect(await spool.dropped()).toHaveLength(2);
    expect((await controller.store.dropped()).filter((d) => d.reportId === b.id).map((d) => d.reason)).toEqual(['spool quota']);
  });
});
