import { describe, expect, test } from 'vitest';
import { FakeClock } from '../../util/clock.js';
import type { AppConfig } from '../../monitor/config.js';
import { Manager, steadyHeartbeat, type DiagnosticsRun, type LogRecord } from '../../monitor/manager.js';
import { MonitorMetrics } from '../../monitor/metrics.js';
import { QmpLinks } from '../../monitor/probes/qmp-link.js';
import type { Probe, ProbeResult } from '../../monitor/types.js';

/** A probe whose next result the test sets. */
class Scripted implements Probe {
  constructor(
    readonly kind: string,
    public next: ProbeResult,
  ) {}
  run(): Promise<ProbeResult> {
    return Promise.resolve(this.next);
  }
}

const timing = { periodMs: 1000, timeoutMs: 500, initialDelayMs: 0, failureThreshold: 2, successThreshold: 1 };
function app(name: string, cooldownMs = 60_000): AppConfig {
  return {
    name,
    target: { name },
    origin: 'config',
    diagnostics: { cooldownMs, collectors: [] },
    scenarios: [
      { name: 'qmp', probe: { type: 'qmp-status', params: {} } as AppConfig['scenarios'][number]['probe'], timing },
      { name: 'kernel', probe: { type: 'kernel-heartbeat', params: {} } as AppConfig['scenarios'][number]['probe'], timing },
    ],
  };
}

const ok = (kind: string): ProbeResult =>
  kind === 'qmp-status'
    ? { outcome: 'success', detail: 'running', evidence: { status: 'running' } }
    : { outcome: 'success', detail: 'alive', evidence: { status: 'alive', ageMs: 100 } };

function setup() {
  const clock = new FakeClock();
  const logs: LogRecord[] = [];
  const runs: DiagnosticsRun[] = [];
  const probes = new Map<string, Scripted>();
  const metrics = new MonitorMetrics({ processMetrics: false });
  const m = new Manager({
    clock,
    links: new QmpLinks(),
    log: (r) => logs.push(r),
    metrics,
    random: () => 0,
    diagnose: async (r) => {
      runs.push(r);
      return `/spool/${r.app.name}-${runs.length}`;
    },
    probeFor: (a, sc) => {
      const p = new Scripted(sc.probe.type, ok(sc.probe.type));
      probes.set(`${a.name}/${sc.name}`, p);
      return p;
    },
  });
  return { clock, logs, runs, probes, m, metrics };
}

describe('Manager', () => {
  test('a probe that turns unknown (a console held by another client) is logged once, when it starts, and the verdict stays', async () => {
    const { clock, logs, probes, m } = setup();
    await m.sync([app('vm1')]);
    await clock.advance(2000);
    probes.get('vm1/kernel')!.next = { outcome: 'unknown', detail: 'cannot tell' };
    await clock.advance(5000);
    const said = logs.filter((l) => l.msg === 'scenario result unknown');
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ app: 'vm1', scenario: 'kernel', result: 'success', detail: 'cannot tell' });
    expect(m.status()[0]?.verdict).toBe('running-healthy');
    probes.get('vm1/kernel')!.next = ok('kernel-heartbeat');
    await clock.advance(2000);
    probes.get('vm1/kernel')!.next = { outcome: 'unknown', detail: 'again' };
    await clock.advance(2000);
    expect(logs.filter((l) => l.msg === 'scenario result unknown').map((l) => l['detail'])).toEqual(['cannot tell', 'again']);
  });

  test('a probe whose very first result is unknown is logged too (the console held from the start)', async () => {
    const { clock, logs, probes, m } = setup();
    await m.sync([app('vm1')]);
    probes.get('vm1/kernel')!.next = { outcome: 'unknown', detail: 'held from the start' };
    await clock.advance(5000);
    expect(logs.filter((l) => l.msg === 'scenario result unknown').map((l) => [l['scenario'], l['detail']])).toEqual([['kernel', 'held from the start']]);
  });

  test('healthy, then kernel stalls: guest-kernel-hung, one diagnostic run, cooldown holds the next', async () => {
    const { clock, logs, runs, probes, m, metrics } = setup();
    await m.sync([app('vm1', 60_000)]);
    await clock.advance(2000);
    expect(m.status()[0]?.verdict).toBe('running-healthy');
    probes.get('vm1/kernel')!.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled', ageMs: 3100 } };
    await clock.advance(3000);
    expect(m.status()[0]?.verdict).toBe('guest-kernel-hung');
    expect(runs).toHaveLength(1);
    expect(runs[0]?.classification.verdict).toBe('guest-kernel-hung');
    expect(runs[0]?.trigger.scenario).toBe('kernel');
    // The report's timeline: each heartbeat and run-state result up to the verdict, oldest first.
    const kernel = runs[0]?.timeline.filter((t) => t.probe === 'kernel-heartbeat') ?? [];
    expect(kernel.map((t) => t.status)).toEqual(['alive', 'alive', 'alive', 'stalled', 'stalled']);
    expect(kernel.at(-1)).toMatchObject({ scenario: 'kernel', outcome: 'failure', ageMs: 3100 });
    expect(runs[0]?.timeline.filter((t) => t.probe === 'qmp-status').every((t) => t.runState === 'running')).toBe(true);
    // Recover, fail again within the cooldown: no second run.
    probes.get('vm1/kernel')!.next = ok('kernel-heartbeat');
    await clock.advance(2000);
    expect(m.status()[0]?.verdict).toBe('running-healthy');
    probes.get('vm1/kernel')!.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled' } };
    await clock.advance(3000);
    expect(runs).toHaveLength(1);
    expect(logs.some((l) => l.msg === 'diagnostics skipped: cooldown')).toBe(true);
    // After the cooldown, a new failure runs diagnostics again.
    probes.get('vm1/kernel')!.next = ok('kernel-heartbeat');
    await clock.advance(60_000);
    probes.get('vm1/kernel')!.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled' } };
    await clock.advance(3000);
    expect(runs).toHaveLength(2);
    const text = await metrics.registry.metrics();
    expect(text).toContain('eve_diag_verdict{app="vm1",verdict="guest-kernel-hung"} 1');
    expect(text).toContain('eve_diag_diagnostics_total{app="vm1",verdict="guest-kernel-hung"} 2');
    await m.stop();
  });

  test('a paused VM is vm-not-running and runs no diagnostics', async () => {
    const { clock, runs, probes, m } = setup();
    await m.sync([app('vm1')]);
    await clock.advance(2000);
    probes.get('vm1/qmp')!.next = { outcome: 'failure', detail: 'paused', evidence: { status: 'paused' } };
    probes.get('vm1/kernel')!.next = { outcome: 'unknown', detail: 'paused', evidence: { status: 'paused', vm: { status: 'paused' } } };
    await clock.advance(5000);
    expect(m.status()[0]?.verdict).toBe('vm-not-running');
    expect(runs).toHaveLength(0);
    await m.stop();
  });

  test('sync follows apps appearing and going away; stop ends every worker', async () => {
    const { clock, logs, probes, m, metrics } = setup();
    await m.sync([app('a'), app('b')]);
    await clock.advance(1500);
    expect(m.status().map((s) => s.app).sort()).toEqual(['a', 'b']);
    await m.sync([app('b'), app('c')]);
    expect(m.status().map((s) => s.app).sort()).toEqual(['b', 'c']);
    expect(logs.filter((l) => l.msg === 'app removed').map((l) => l.app)).toEqual(['a']);
    expect(await metrics.registry.metrics()).not.toContain('app="a"');
    await m.stop();
    const before = [...probes.values()].length;
    await clock.advance(10_000);
    expect(m.status()).toEqual([]);
    expect([...probes.values()].length).toBe(before);
  });

  test('a throw while classifying (here: the metrics) is logged, never an unhandled rejection; the next update classifies again', async () => {
    const { clock, logs, probes, m, metrics } = setup();
    let failures = 1;
    const setVerdict = metrics.setVerdict.bind(metrics);
    metrics.setVerdict = (a, v) => {
      if (failures-- > 0) throw new Error('registry full');
      setVerdict(a, v);
    };
    await m.sync([app('vm1')]);
    await clock.advance(1500);
    expect(logs.find((l) => l.msg === 'classification failed')).toMatchObject({ level: 'error', app: 'vm1', error: 'registry full' });
    probes.get('vm1/kernel')!.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled', ageMs: 3100 } };
    await clock.advance(3000);
    expect(m.status()[0]?.verdict).toBe('guest-kernel-hung');
    await m.stop();
  });

  test('a slow host-pressure read never runs twice at once for an app; the verdict follows the newest observations', async () => {
    const clock = new FakeClock();
    const logs: LogRecord[] = [];
    let inFlight = 0;
    let most = 0;
    let calls = 0;
    const probe = new Scripted('kernel-heartbeat', ok('kernel-heartbeat'));
    const m = new Manager({
      clock,
      links: new QmpLinks(),
      log: (r) => logs.push(r),
      random: () => 0,
      hostPressure: async () => {
        calls++;
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 30));
        inFlight--;
        return undefined;
      },
      diagnose: () => Promise.resolve('/spool/x'),
      probeFor: () => probe,
    });
    const one = app('vm1');
    one.scenarios = [one.scenarios[1]!];
    await m.sync([one]);
    await clock.advance(1000);
    probe.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled', ageMs: 3100 } };
    for (let i = 0; i < 20; i++) await clock.advance(1000); // 20 updates while the first read is still slow
    await new Promise((r) => setTimeout(r, 300));
    expect(most).toBe(1);
    expect(calls).toBeLessThan(6);
    expect(m.status()[0]?.verdict).toBe('guest-kernel-hung');
    expect(logs.filter((l) => l.msg === 'diagnostics started')).toHaveLength(1);
    await m.stop();
  });
});

describe('the vCPU wait, asked only before a guest-kernel-hung', () => {
  test('a stalled kernel whose vCPU thread waited for a CPU is guest-starved; asked never while healthy', async () => {
    const clock = new FakeClock();
    const asked: string[] = [];
    const primed: string[] = [];
    let wait = 0.9;
    const probe = new Scripted('kernel-heartbeat', ok('kernel-heartbeat'));
    const m = new Manager({
      clock,
      links: new QmpLinks(),
      log: () => undefined,
      random: () => 0,
      vcpuPressure: {
        sample: async (a) => (asked.push(a.name), { vcpuWaitRatio: wait, vcpuDetail: 'thread 7 waited' }),
        prime: (a) => primed.push(a.name),
      },
      probeFor: () => probe,
    });
    const one = app('vm1');
    one.scenarios = [one.scenarios[1]!];
    await m.sync([one]);
    await clock.advance(3000);
    expect(m.status()[0]?.verdict).toBe('running-healthy');
    expect(asked).toEqual([]);
    probe.next = { outcome: 'unknown', detail: 'late', evidence: { status: 'late', ageMs: 1500 } };
    await clock.advance(1000);
    expect(primed).toEqual(['vm1']);
    expect(asked).toEqual([]);
    probe.next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled', ageMs: 3100 } };
    await clock.advance(2000);
    expect(m.status()[0]?.verdict).toBe('guest-starved');
    expect(asked.length).toBeGreaterThan(0);
    wait = 0.05; // the host lets it run, and still no beat: hung
    await clock.advance(1000);
    expect(m.status()[0]?.verdict).toBe('guest-kernel-hung');
    await m.stop();
  });
});

describe('a steady heartbeat is not classified again', () => {
  const alive = (status = 'running'): ProbeResult => ({ outcome: 'success', detail: 'alive', evidence: { status: 'alive', ageMs: 10, vm: { running: status === 'running', status } } });

  test('healthy, alive, same run state: classified once; a late beat, a paused VM or a failure are classified', async () => {
    const clock = new FakeClock();
    let pressureAsks = 0;
    let probe: Scripted | undefined;
    const m = new Manager({
      clock,
      links: new QmpLinks(),
      log: () => undefined,
      random: () => 0,
      hostPressure: async () => (pressureAsks++, undefined),
      probeFor: () => (probe = new Scripted('kernel-heartbeat', alive())),
    });
    const one: AppConfig = { ...app('vm1'), scenarios: [{ name: 'kernel', probe: { type: 'kernel-heartbeat', params: {} } as AppConfig['scenarios'][number]['probe'], timing }] };
    await m.sync([one]);
    await clock.advance(1);
    await clock.advance(1000); // the second success: steady from here
    expect(m.status()[0]?.verdict).toBe('running-healthy');
    const asked = pressureAsks;
    await clock.advance(10_000);
    expect(pressureAsks).toBe(asked); // ten polls, no classification

    (probe as Scripted).next = { outcome: 'unknown', detail: 'late', evidence: { status: 'late', ageMs: 1100, vm: { running: true, status: 'running' } } };
    await clock.advance(1000);
    expect(pressureAsks).toBe(asked + 1);
    (probe as Scripted).next = alive('paused');
    await clock.advance(1000);
    expect(m.status()[0]?.verdict).toBe('vm-not-running');
    (probe as Scripted).next = { outcome: 'failure', detail: 'stalled', evidence: { status: 'stalled', ageMs: 3000, vm: { running: true, status: 'running' } } };
    await clock.advance(2000);
    expect(m.status()[0]?.verdict).toBe('guest-kernel-hung');
    await m.stop();
  });

  test('steadyHeartbeat: only a success after a success, alive, with the verdict run state, while healthy', () => {
    const o = (outcome: 'success' | 'failure', status: string, vm = 'running', probe = 'kernel-heartbeat') => ({
      scenario: 'k',
      probe,
      result: outcome,
      last: { outcome, detail: '', evidence: { status, vm: { status: vm } } },
    });
    const healthy = { app: 'a', verdict: 'running-healthy' as const, reason: '', runState: 'running', evidence: [] };
    expect(steadyHeartbeat(healthy, o('success', 'alive'), o('success', 'alive'))).toBe(true);
    expect(steadyHeartbeat({ ...healthy, verdict: 'unknown' }, o('success', 'alive'), o('success', 'alive'))).toBe(false);
    expect(steadyHeartbeat(undefined, o('success', 'alive'), o('success', 'alive'))).toBe(false);
    expect(steadyHeartbeat(healthy, undefined, o('success', 'alive'))).toBe(false);
    expect(steadyHeartbeat(healthy, o('failure', 'stalled'), o('success', 'alive'))).toBe(false);
    expect(steadyHeartbeat(healthy, o('success', 'restarted'), o('success', 'alive'))).toBe(false);
    expect(steadyHeartbeat(healthy, o('success', 'alive'), o('success', 'restarted'))).toBe(false);
    expect(steadyHeartbeat(healthy, o('success', 'alive'), o('success', 'alive', 'paused'))).toBe(false);
    expect(steadyHeartbeat(healthy, o('success', 'alive', 'running', 'tcp'), o('success', 'alive', 'running', 'tcp'))).toBe(false);
  });
});
