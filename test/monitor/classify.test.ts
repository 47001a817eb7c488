import { describe, expect, test } from 'vitest';
import { classify, type HostPressure, type ScenarioObservation } from '../../monitor/classify.js';
import type { ProbeOutcome, Verdict } from '../../monitor/types.js';
import type { WorkerResult } from '../../monitor/worker.js';

/** An observation: scenario named after its probe unless given. */
function o(probe: string, result: WorkerResult, evidence: Record<string, unknown> = {}, at = 100, name = probe): ScenarioObservation {
  const outcome: ProbeOutcome = result;
  return { scenario: name, probe, result, last: { outcome, detail: `${probe} ${result}`, evidence, at } };
}

const RUNNING = o('qmp-status', 'success', { status: 'running', running: true, events: [] });
const jitter = (maxMs: number, stddevMs: number) => ({ count: 16, meanMs: 1024, stddevMs, minMs: 1000, maxMs, p95Ms: maxMs, resolutionMs: 4 });
const kernel = (result: WorkerResult, status: string, extra: Record<string, unknown> = {}) =>
  o('kernel-heartbeat', result, { signal: 'kernel', status, expectedPeriodMs: 1000, vm: { running: status !== 'paused', status: status === 'paused' ? 'paused' : 'running' }, jitter: jitter(1024, 0), ...extra });
const PRESSURE: HostPressure = { cpuSomeAvg10: 85 };

describe('classify: each verdict', () => {
  test.each<[string, ScenarioObservation[], HostPressure | undefined, Verdict, string?]>([
    ['all passing', [RUNNING, kernel('success', 'alive'), o('tcp', 'success')], undefined, 'running-healthy'],
    ['run state paused', [o('qmp-status', 'failure', { status: 'paused', running: false, events: [{ event: 'STOP', data: {} }] })], undefined, 'vm-not-running', 'paused'],
    ['run state inmigrate', [o('qmp-status', 'failure', { status: 'inmigrate', running: false, events: [] })], undefined, 'vm-not-running', 'inmigrate'],
    ['run state shutdown', [o('qmp-status', 'failure', { status: 'shutdown', running: false, events: [] })], undefined, 'vm-not-running', 'shutdown'],
    ['no QEMU on the socket', [o('qmp-status', 'failure', { qmp: '/x', errno: 'ECONNREFUSED' })], undefined, 'vm-not-running', 'no-qemu'],
    ['GUEST_PANICKED event', [o('qmp-status', 'failure', { status: 'guest-panicked', running: false, events: [{ event: 'GUEST_PANICKED', data: { action: 'pause' } }] })], undefined, 'guest-panicked', 'guest-panicked'],
    ['run state guest-panicked', [o('qmp-status', 'failure', { status: 'guest-panicked', running: false, events: [] })], undefined, 'guest-panicked'],
    ['sticky panic after QEMU shut down', [o('qmp-status', 'failure', { status: 'shutdown', running: false, events: [], panic: { event: 'GUEST_PANICKED', data: {} } })], undefined, 'guest-panicked', 'shutdown'],
    [
      'Kernel panic on the console, kernel heartbeat stalled',
      [RUNNING, kernel('failure', 'stalled'), o('console-passive', 'failure', { panic: { line: 'Kernel panic - not syncing: sysrq triggered crash', ageMs: 2000 } })],
      undefined,
      'guest-panicked',
    ],
    ['kernel heartbeat stalled while running', [RUNNING, kernel('failure', 'stalled'), o('agent-heartbeat', 'failure')], undefined, 'guest-kernel-hung', 'running'],
    ['kernel heartbeat late as a failure (failOn late) while running', [RUNNING, kernel('failure', 'late')], undefined, 'guest-kernel-hung', 'running'],
    // The probe timed out (QEMU or the monitor too slow): no reading of the table, so no hang.
    ['kernel heartbeat failing with no reading (timed out)', [RUNNING, o('kernel-heartbeat', 'failure', { timedOut: true })], undefined, 'unknown', 'running'],
    ['kernel alive, agent heartbeat stalled', [RUNNING, kernel('success', 'alive'), o('agent-heartbeat', 'failure', { status: 'stalled' })], undefined, 'guest-userspace-hung'],
    ['kernel alive, console command failing', [RUNNING, kernel('success', 'alive'), o('console-active', 'failure')], undefined, 'guest-userspace-hung'],
    ['kernel alive, marks missing', [kernel('success', 'alive'), o('console-passive', 'failure')], undefined, 'guest-userspace-hung'],
    ['kernel alive, marks in the app log missing', [RUNNING, kernel('success', 'alive'), o('log-marks', 'failure', { source: 'log-entries' })], undefined, 'guest-userspace-hung', 'running'],
    [
      'Kernel panic in the app log, kernel heartbeat stalled',
      [RUNNING, kernel('failure', 'stalled'), o('log-marks', 'failure', { panic: { line: 'Kernel panic - not syncing: Fatal exception', ageMs: 1000 }, kernelEvents: [{ kind: 'panic', line: 'Kernel panic - not syncing: Fatal exception', ageMs: 1000 }] })],
      undefined,
      'guest-panicked',
    ],
    ['log marks arriving, http failing', [RUNNING, o('log-marks', 'success'), o('http', 'failure')], undefined, 'app-unhealthy'],
    ['log marks failing without a kernel heartbeat cannot be placed', [RUNNING, o('log-marks', 'failure')], undefined, 'unknown'],
    ['kernel alive, heartbeat disk stuck', [kernel('success', 'alive'), o('disk-heartbeat', 'failure')], undefined, 'guest-userspace-hung'],
    ['kernel alive, guest agent silent', [kernel('success', 'alive'), o('guest-ping', 'failure')], undefined, 'guest-userspace-hung'],
    ['guest alive, http failing', [RUNNING, kernel('success', 'alive'), o('agent-heartbeat', 'success'), o('http', 'failure')], undefined, 'app-unhealthy'],
    ['userspace alive (no kernel probe), tcp failing', [RUNNING, o('console-passive', 'success'), o('tcp', 'failure')], undefined, 'app-unhealthy'],
    ['stalled with large jitter and high PSI', [RUNNING, kernel('failure', 'stalled', { jitter: jitter(5000, 900) })], PRESSURE, 'guest-starved'],
    ['late (not yet failing) with large jitter and a starved vCPU', [RUNNING, kernel('success', 'late', { jitter: jitter(3000, 500) })], { vcpuWaitRatio: 0.8 }, 'guest-starved'],
    // A starved vCPU records no beat, so no interval: its own run delay is enough, PSI or not.
    ['stalled, no jitter recorded, the VM\'s vCPU thread waited 90% of the time', [RUNNING, kernel('failure', 'stalled')], { cpuSomeAvg10: 3, vcpuWaitRatio: 0.9 }, 'guest-starved'],
    ['stalled, vCPU threads got no CPU, no jitter recorded', [RUNNING, kernel('failure', 'stalled')], { vcpuStarved: true }, 'guest-starved'],
    ['nothing known yet', [o('qmp-status', 'unknown'), o('kernel-heartbeat', 'unknown')], undefined, 'unknown'],
    ['no scenarios at all', [], undefined, 'unknown'],
    ['userspace failing without a kernel heartbeat cannot be placed', [RUNNING, o('console-active', 'failure')], undefined, 'unknown'],
    ['app failing with no sign of guest life', [RUNNING, o('http', 'failure')], undefined, 'unknown'],
  ])('%s', (_name, scenarios, host, verdict, runState) => {
    const c = classify({ app: 'vm1', scenarios, ...(host ? { host } : {}) });
    expect(c.verdict).toBe(verdict);
    expect(c.app).toBe('vm1');
    expect(c.reason.length).toBeGreaterThan(0);
    if (runState !== undefined) expect(c.runState).toBe(runState);
    if (verdict !== 'unknown') expect(c.evidence.length).toBeGreaterThan(0);
    for (const e of c.evidence) expect(scenarios).toContain(e);
  });
});

describe('classify: precedence', () => {
  test.each<[string, ScenarioObservation[], HostPressure | undefined, Verdict]>([
    // A paused VM never yields a hang verdict, even with every heartbeat failing.
    [
      'paused beats a stalled kernel',
      [o('qmp-status', 'failure', { status: 'paused', running: false, events: [] }, 200), kernel('failure', 'stalled'), o('console-active', 'failure')],
      undefined,
      'vm-not-running',
    ],
    ['the heartbeat says paused (no qmp-status scenario)', [kernel('unknown', 'paused'), o('agent-heartbeat', 'failure')], undefined, 'vm-not-running'],
    ['postmigrate beats a failing app', [o('qmp-status', 'failure', { status: 'postmigrate', running: false, events: [] }), o('http', 'failure')], undefined, 'vm-not-running'],
    ['panic beats not-running', [o('qmp-status', 'failure', { status: 'paused', running: false, events: [{ event: 'GUEST_PANICKED', data: {} }] })], undefined, 'guest-panicked'],
    ['panic beats a stalled kernel', [kernel('failure', 'stalled'), o('qmp-status', 'failure', { status: 'guest-panicked', running: false, events: [] }, 200)], undefined, 'guest-panicked'],
    [
      'an old console panic line is history',
      [RUNNING, kernel('failure', 'stalled'), o('console-passive', 'failure', { panic: { line: 'Kernel panic - not syncing', ageMs: 3_600_000 } })],
      undefined,
      'guest-kernel-hung',
    ],
    [
      'a console panic line with an alive kernel heartbeat (rebooted since) is not a panic',
      [RUNNING, kernel('success', 'alive'), o('console-passive', 'failure', { panic: { line: 'Kernel panic - not syncing', ageMs: 5000 } })],
      undefined,
      'guest-userspace-hung',
    ],
    ['the newest run state wins: running after a pause', [kernel('success', 'alive', { vm: { running: false, status: 'paused' } }), { ...RUNNING, last: { ...RUNNING.last!, at: 500 } }], undefined, 'running-healthy'],
    ['the newest run state wins: paused after running', [kernel('unknown', 'paused'), { ...RUNNING, last: { ...RUNNING.last!, at: 50 } }], undefined, 'vm-not-running'],
    ['starved beats kernel-hung', [RUNNING, kernel('failure', 'stalled', { jitter: jitter(4000, 800) })], PRESSURE, 'guest-starved'],
    ['pressure without jitter is still a kernel hang', [RUNNING, kernel('failure', 'stalled')], PRESSURE, 'guest-kernel-hung'],
    ['spread from short extra beats (boot-time 4 ms intervals) under pressure is not starvation', [RUNNING, kernel('failure', 'stalled', { jitter: { count: 16, meanMs: 890, stddevMs: 350, minMs: 4, maxMs: 1024, p95Ms: 1024, resolutionMs: 4 } })], PRESSURE, 'guest-kernel-hung'],
    ['jitter without pressure is a kernel hang', [RUNNING, kernel('failure', 'stalled', { jitter: jitter(4000, 800) })], { cpuSomeAvg10: 5, vcpuWaitRatio: 0.1 }, 'guest-kernel-hung'],
    ['kernel hung beats userspace and app failures', [RUNNING, kernel('failure', 'stalled'), o('agent-heartbeat', 'failure'), o('http', 'failure')], undefined, 'guest-kernel-hung'],
    ['userspace hung beats app failures', [RUNNING, kernel('success', 'alive'), o('agent-heartbeat', 'failure'), o('http', 'failure')], undefined, 'guest-userspace-hung'],
    ['a late kernel without pressure is not a verdict by itself', [RUNNING, kernel('success', 'late')], undefined, 'running-healthy'],
    ['unknown results are ignored for health', [RUNNING, kernel('success', 'alive'), o('disk-heartbeat', 'unknown')], undefined, 'running-healthy'],
    ['QEMU gone after it ran', [{ ...RUNNING, last: { ...RUNNING.last!, at: 50 } }, o('qmp-status', 'failure', { errno: 'ENOENT' }, 60, 'qmp2')], undefined, 'vm-not-running'],
  ])('%s', (_name, scenarios, host, verdict) => {
    expect(classify({ app: 'a', scenarios, ...(host ? { host } : {}) }).verdict).toBe(verdict);
  });

  test('the evidence names the observations that decided', () => {
    const k = kernel('failure', 'stalled');
    const agent = o('agent-heartbeat', 'failure');
    const c = classify({ app: 'a', scenarios: [RUNNING, k, agent, o('tcp', 'success')] });
    expect(c.verdict).toBe('guest-kernel-hung');
    expect(c.evidence).toEqual([k]);
    expect(c.reason).toBe('kernel heartbeat stalled while the VM runs');
  });

  test('guest-starved carries the host pressure and says why', () => {
    const c = classify({ app: 'a', scenarios: [RUNNING, kernel('failure', 'stalled', { jitter: jitter(5000, 900) })], host: { cpuSomeAvg10: 90 } });
    expect(c.host).toEqual({ cpuSomeAvg10: 90 });
    expect(c.reason).toContain('PSI cpu some avg10 90%');
    expect(c.reason).toContain('large jitter');
  });

  test('thresholds are options', () => {
    const s = [RUNNING, kernel('failure', 'stalled', { jitter: jitter(5000, 900) })];
    expect(classify({ app: 'a', scenarios: s, host: { cpuSomeAvg10: 30 } }).verdict).toBe('guest-kernel-hung');
    expect(classify({ app: 'a', scenarios: s, host: { cpuSomeAvg10: 30 } }, { psiHighAvg10: 20 }).verdict).toBe('guest-starved');
  });
});
