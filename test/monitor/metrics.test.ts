import { afterEach, describe, expect, test } from 'vitest';
import type { Server } from 'node:http';
import { MonitorMetrics } from '../../monitor/metrics.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

describe('MonitorMetrics', () => {
  test('serves probe results, durations, verdicts and heartbeat ages on /metrics', async () => {
    const m = new MonitorMetrics({ processMetrics: false });
    m.probe('vm1', 'kernel', 'success', 12);
    m.probe('vm1', 'kernel', 'failure', 1000);
    m.setVerdict('vm1', 'guest-kernel-hung');
    m.setHeartbeatAge('vm1', 'kernel', 4.5);
    const l = await m.listen('127.0.0.1', 0);
    server = l.server;
    const res = await fetch(`http://127.0.0.1:${l.port}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('eve_diag_probe_results_total{app="vm1",scenario="kernel",outcome="failure"} 1');
    expect(text).toContain('eve_diag_verdict{app="vm1",verdict="guest-kernel-hung"} 1');
    expect(text).toContain('eve_diag_verdict{app="vm1",verdict="running-healthy"} 0');
    expect(text).toContain('eve_diag_heartbeat_age_seconds{app="vm1",signal="kernel"} 4.5');
    expect(text).toMatch(/eve_diag_probe_duration_seconds_count\{app="vm1",scenario="kernel"\} 2/);
    expect((await fetch(`http://127.0.0.1:${l.port}/other`)).status).toBe(404);
  });

  test('removeApp drops every series of an app that went away', async () => {
    const m = new MonitorMetrics({ processMetrics: false });
    m.probe('gone', 'qmp', 'success', 1);
    m.setVerdict('gone', 'running-healthy');
    m.setHeartbeatAge('gone', 'agent', 1);
    m.setHeartbeatAge('stays', 'kernel', 2);
    m.probe('stays', 'qmp', 'success', 1);
    m.removeApp('gone');
    const text = await m.registry.metrics();
    expect(text).not.toContain('app="gone"');
    expect(text).toContain('app="stays"');
    expect(text).toContain('eve_diag_heartbeat_age_seconds{app="stays",signal="kernel"} 2');
  });

  test('a verdict sets its series once: the same verdict again changes nothing, a new one moves the 1', async () => {
    const m = new MonitorMetrics({ processMetrics: false });
    m.setVerdict('vm1', 'running-healthy');
    m.verdict.set({ app: 'vm1', verdict: 'running-healthy' }, 7); // a marker: not rewritten by the same verdict
    m.setVerdict('vm1', 'running-healthy');
    expect(await m.registry.metrics()).toContain('eve_diag_verdict{app="vm1",verdict="running-healthy"} 7');
    m.setVerdict('vm1', 'guest-kernel-hung');
    const text = await m.registry.metrics();
    expect(text).toContain('eve_diag_verdict{app="vm1",verdict="running-healthy"} 0');
    expect(text).toContain('eve_diag_verdict{app="vm1",verdict="guest-kernel-hung"} 1');
  });
});
