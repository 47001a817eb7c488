import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { classify, type ScenarioObservation } from '../../monitor/classify.js';
import {
  ConsoleActiveProbe,
  ConsolePassiveProbe,
  HeartbeatProbe,
  QmpLinks,
  QmpStatusProbe,
  type QmpStatusEvidence,
} from '../../monitor/probes/index.js';
import type { AppTarget, Probe, ProbeResult } from '../../monitor/types.js';
import { diagTableFiles } from '../helpers/diag-table.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

/**
 * The probes against a real guest (Debian's kernel in QEMU TCG, our SSDT, an EVE-style mux console with
 * a logfile): `console-active` types `uptime` on the console socket, `kernel-heartbeat` reads the
 * region through QMP pmemsave, `qmp-status` follows QMP `stop`, and the `panic` scenario stops the
 * kernel heartbeat while QEMU still says `running`.
 *
 * The launcher connects to the console socket only for its own `run()` (lazily, then keeps it): these
 * tests never call `run()`, so the socket, which serves one client at a time, is the probe's.
 */

const PERIOD_MS = 500;
const files = diagTableFiles('eve-diag-probes-guest-', { nonce: 0x9b0b_e500_0000_0001n, kernelPeriodMs: PERIOD_MS });
afterAll(stopAllGuests);
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve().then(c).catch(() => undefined);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function boot(append: string): Promise<{ guest: Guest; target: AppTarget; links: QmpLinks }> {
  const guest = await launchGuest({ acpiTables: [files.tableFile], append: `quiet ${append}`.trim() });
  cleanups.push(() => guest.stop());
  const links = new QmpLinks();
  cleanups.push(() => links.closeAll());
  const target: AppTarget = {
    name: 'guest',
    qmp: guest.qmpPath,
    console: guest.consolePath,
    consoleLog: guest.consoleLogPath,
    consoleMux: true,
    layout: files.layoutFile,
  };
  return { guest, target, links };
}

function runner(probe: Probe, target: AppTarget, timeoutMs: number): () => Promise<ProbeResult> {
  cleanups.push(() => probe.close?.());
  return () => probe.run(target, { timeoutMs, signal: new AbortController().signal });
}

/** Runs `probe` every `everyMs` until `until` holds for a result, or `maxMs` passes. */
async function poll(run: () => Promise<ProbeResult>, until: (r: ProbeResult) => boolean, everyMs: number, maxMs: number): Promise<ProbeResult[]> {
  const log: ProbeResult[] = [];
  const t0 = performance.now();
  for (;;) {
    const r = await run();
    log.push(r);
    if (until(r) || performance.now() - t0 > maxMs) return log;
    await sleep(everyMs);
  }
}

const outline = (log: readonly ProbeResult[]) => log.map((r) => `${r.outcome}/${String(r.evidence?.status ?? '-')}`).join(' ');

describe('probes on a real guest', () => {
  test('console-active uptime, kernel heartbeat and qmp-status succeed; after QMP stop qmp-status fails with status paused', async () => {
    const { target, links } = await boot('');

    const uptime = runner(new ConsoleActiveProbe(), target, 10_000);
    const u1 = await uptime();
    expect(u1.outcome, JSON.stringify(u1)).toBe('success');
    // The probe answers at its first "load average" (a TCG console may send the numbers a moment later).
    expect(u1.evidence?.received).toMatch(/up .*load average/);
    // It let go of the socket: the next connection gets the console again.
    expect((await uptime()).outcome).toBe('success');

    const kernel = runner(new HeartbeatProbe('kernel', links), target, 5000);
    const klog = await poll(kernel, (r) => r.outcome === 'success', 1.5 * PERIOD_MS, 20_000);
    const k = klog.at(-1) as ProbeResult;
    expect(k.outcome, outline(klog)).toBe('success');
    expect(k.evidence).toMatchObject({ status: 'alive', vm: { running: true, status: 'running' }, expectedPeriodMs: PERIOD_MS });
    expect(k.evidence?.tableAddress).toMatch(/^0x[0-9a-f]+$/);

    const status = runner(new QmpStatusProbe(links), target, 5000);
    const s1 = await status();
    expect(s1.outcome).toBe('success');
    expect((s1.evidence as unknown as QmpStatusEvidence).status).toBe('running');

    // The probes hold the VM's one QMP connection: commands go through the same link.
    const qmp = await (links.get(target.qmp as string) as NonNullable<ReturnType<QmpLinks['get']>>).client();
    const stopped = qmp.waitEvent('STOP', { timeoutMs: 5000 });
    await qmp.stop();
    await stopped;
    const s2 = await status();
    expect(s2.outcome).toBe('failure');
    const e2 = s2.evidence as unknown as QmpStatusEvidence;
    expect(e2.status).toBe('paused');
    expect(e2.events.map((e) => e.event)).toContain('STOP');

    // Paused is never a hang: the heartbeat is unknown, and the verdict says the VM is not running.
    await sleep(4 * PERIOD_MS);
    const k2 = await kernel();
    expect(k2.outcome).toBe('unknown');
    expect(k2.evidence?.status).toBe('paused');
    const obs: ScenarioObservation[] = [
      { scenario: 'run-state', probe: 'qmp-status', result: 'failure', last: { ...s2, at: 2 } },
      { scenario: 'kernel', probe: 'kernel-heartbeat', result: 'success', last: { ...k2, at: 3 } },
    ];
    expect(classify({ app: 'guest', scenarios: obs })).toMatchObject({ verdict: 'vm-not-running', runState: 'paused' });

    await qmp.cont();
    expect((await status()).outcome).toBe('success');
  });

  test('after the panic scenario the kernel heartbeat probe fails while QEMU still runs the VM', async () => {
    const { target, links } = await boot('eve_diag.scenario=panic eve_diag.delay=5');
    const kernel = runner(new HeartbeatProbe('kernel', links), target, 5000);
    const status = runner(new QmpStatusProbe(links), target, 5000);
    const marks = runner(new ConsolePassiveProbe({ maxAgeMs: 60_000 }, { periodMs: 60_000 }), target, 1000);
    await marks(); // baseline of the console log

    const log = await poll(kernel, (r) => r.outcome === 'failure', PERIOD_MS, 40_000);
    expect(log.some((r) => r.outcome === 'success'), outline(log)).toBe(true);
    const last = log.at(-1) as ProbeResult;
    expect(last.outcome, outline(log)).toBe('failure');
    expect(last.evidence).toMatchObject({ status: 'stalled', vm: { running: true, status: 'running' } });
    // Stalled at the ring's bound: a steady ring gives its interval + 8 ms + a period of slack.
    expect(last.evidence?.stallAfterMs).toBeGreaterThanOrEqual(2 * PERIOD_MS);
    expect(last.evidence?.ageMs).toBeGreaterThanOrEqual(last.evidence?.stallAfterMs as number);

    const s = await status();
    expect(s.outcome).toBe('success'); // no pvpanic: QEMU does not know
    const m = await marks();
    expect((m.evidence?.panic as { line: string } | undefined)?.line).toMatch(/Kernel panic - not syncing/);

    const obs = (withConsole: boolean): ScenarioObservation[] => [
      { scenario: 'run-state', probe: 'qmp-status', result: 'success', last: { ...s, at: 1 } },
      { scenario: 'kernel', probe: 'kernel-heartbeat', result: 'failure', last: { ...last, at: 1 } },
      ...(withConsole ? [{ scenario: 'marks', probe: 'console-passive', result: 'unknown' as const, last: { ...m, at: 1 } }] : []),
    ];
    expect(classify({ app: 'guest', scenarios: obs(false) }).verdict).toBe('guest-kernel-hung');
    expect(classify({ app: 'guest', scenarios: obs(true) }).verdict).toBe('guest-panicked');
  });
});
