import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { ConfigError, parseConfig } from '../../../monitor/config.js';
import { HeartbeatProbe } from '../../../monitor/probes/heartbeat.js';
import { QmpLinks } from '../../../monitor/probes/qmp-link.js';
import { FakeQmpServer, servePmemsave } from '../../helpers/fake-qmp-server.js';

/**
 * The heartbeat probes' memory path: `auto` (the default) and `procmem`, and their config params
 * (`memory`, `pid`, `pidFile`). The fake QEMU lives in this process: the QMP socket's owner is this
 * test, and its gpa2hva fails, so procmem cannot work and auto falls back to pmemsave.
 */

const MTREE = readFileSync(new URL('../../host-reader/region/fixtures/q35-512.mtree-f.txt', import.meta.url), 'utf8');
const { aml, layout } = buildDiagSsdt({ nonce: 0x1234_5678_9abc_def1n, kernelPeriodMs: 1000 });
const TABLE_AT = 0x1ffe_2270;

let dir: string;
let layoutFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-hb-mem-'));
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

async function fakeVm() {
  const server = await FakeQmpServer.start();
  cleanups.push(() => server.close());
  server.handle('query-status', () => ({ return: { running: true, status: 'running' } }));
  server.handle('human-monitor-command', (c) =>
    c.arguments?.['command-line'] === 'info mtree -f' ? { return: MTREE } : { return: 'unknown command: gpa2hva\r\n' },
  );
  servePmemsave(server, TABLE_AT, () => aml);
  const links = new QmpLinks({ connectTimeoutMs: 1000 });
  cleanups.push(() => links.closeAll());
  return { server, links };
}

describe('heartbeat probe memory', () => {
  test('auto (the default) falls back to pmemsave and the evidence says why', async () => {
    const { server, links } = await fakeVm();
    const probe = new HeartbeatProbe('kernel', links, {});
    cleanups.push(() => probe.close());
    const r = await probe.run({ name: 'vm', qmp: server.path, layout: layoutFile }, { timeoutMs: 5000, signal: new AbortController().signal });
    expect(r.evidence).toMatchObject({ memory: 'pmemsave', tableAddress: '0x1ffe2270' });
    expect(r.evidence?.memoryNote).toMatch(/^procmem unavailable: gpa2hva 0x0 .*: using pmemsave$/);
  });

  test('procmem forced and impossible is unknown (a configuration problem), not a failure', async () => {
    const { server, links } = await fakeVm();
    const probe = new HeartbeatProbe('kernel', links, { memory: 'procmem' });
    cleanups.push(() => probe.close());
    const r = await probe.run({ name: 'vm', qmp: server.path, layout: layoutFile }, { timeoutMs: 5000, signal: new AbortController().signal });
    expect(r.outcome).toBe('unknown');
    expect(r.detail).toMatch(/^kernel heartbeat: --memory procmem: unavailable: gpa2hva 0x0/);
  });
});

describe('config: memory, pid, pidFile', () => {
  const yaml = (params: string) => `apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: kernel-heartbeat, params: ${params} }\n`;
  const problems = (text: string): string[] => {
    try {
      parseConfig(text, 'monitor.yaml', { baseDir: '/etc/eve-diag' });
      return [];
    } catch (e) {
      return (e as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
    }
  };

  test('pid and pidFile are passed to the probe, pidFile made absolute', () => {
    const c = parseConfig(yaml('{ memory: procmem, pidFile: run/qemu.pid }'), 'monitor.yaml', { baseDir: '/etc/eve-diag' });
    expect(c.apps[0]?.scenarios[0]?.probe).toEqual({ type: 'kernel-heartbeat', params: { memory: 'procmem', pidFile: '/etc/eve-diag/run/qemu.pid' } });
    const d = parseConfig(yaml('{ pid: 4242 }'), 'monitor.yaml');
    expect(d.apps[0]?.scenarios[0]?.probe.params).toEqual({ pid: 4242 });
  });

  test('pid with another memory path, both pid and pidFile, a bad pid: errors', () => {
    expect(problems(yaml('{ memory: pmemsave, pid: 12 }'))).toEqual(['apps[0].scenarios[0].probe.params.pid: only read with memory "procmem" or "auto" (memory is "pmemsave")']);
    expect(problems(yaml('{ pid: 12, pidFile: /x }'))).toEqual(['apps[0].scenarios[0].probe.params.pidFile: give pid or pidFile, not both']);
    expect(problems(yaml('{ pid: 0 }'))[0]).toMatch(/params\.pid: must be >= 1/);
  });
});
