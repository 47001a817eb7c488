import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseConfig, type MonitorConfig } from '../../monitor/config.js';
import { discoverEveApps, globMatch, listEveDomains, planDiscovery, type DomainEntry } from '../../monitor/discovery.js';

const config = (yaml: string): MonitorConfig => parseConfig(yaml, 'monitor.yaml', { baseDir: '/etc/eve-diag' });

describe('planDiscovery (pure)', () => {
  const listing: DomainEntry[] = [
    { name: 'b-vm.1.1', hasQmp: true, hasCons: true },
    { name: 'a-vm.1.1', hasQmp: true, hasCons: false },
    { name: 'named.1.1', hasQmp: true, hasCons: true },
    { name: 'by-dom.1.1', hasQmp: true, hasCons: true },
    { name: 'scratch-test', hasQmp: true, hasCons: true },
    { name: 'not-a-vm', hasQmp: false, hasCons: false },
  ];
  const c = config(`
eve:
  autodiscover: true
  root: /run/hypervisor/kvm
  exclude: ["*-test"]
  layouts: { b-vm.1.1: /l/b.json }
defaults:
  periodSeconds: 20
apps:
  - name: named.1.1
  - name: other
    eveDom: by-dom.1.1
`);

  test('binds every VM that is neither named nor excluded, in name order', () => {
    const plan = planDiscovery(listing, c);
    expect(plan.apps.map((a) => a.name)).toEqual(['a-vm.1.1', 'b-vm.1.1']);
    expect(plan.skipped).toEqual([
      { dom: 'by-dom.1.1', reason: 'configured' },
      { dom: 'named.1.1', reason: 'configured' },
      { dom: 'not-a-vm', reason: 'no-qmp' },
      { dom: 'scratch-test', reason: 'excluded' },
    ]);
  });

  test('default binding: run state, kernel heartbeat with a layout, console marks with a console', () => {
    const [a, b] = planDiscovery(listing, c).apps;
    expect(a).toMatchObject({ name: 'a-vm.1.1', eveDom: 'a-vm.1.1', origin: 'eve', target: { name: 'a-vm.1.1', qmp: '/run/hypervisor/kvm/a-vm.1.1/qmp' } });
    expect(a?.target.console).toBeUndefined();
    expect(a?.scenarios.map((s) => s.probe.type)).toEqual(['qmp-status']);
    expect(b?.target).toEqual({
      name: 'b-vm.1.1',
      qmp: '/run/hypervisor/kvm/b-vm.1.1/qmp',
      console: '/run/hypervisor/kvm/b-vm.1.1/cons',
      consoleLog: '/run/hypervisor/kvm/b-vm.1.1/cons.log',
      consoleMux: true,
      layout: '/l/b.json',
    });
    expect(b?.scenarios.map((s) => [s.name, s.probe.type])).toEqual([
      ['qmp-status', 'qmp-status'],
      ['kernel-heartbeat', 'kernel-heartbeat'],
      ['console-marks', 'console-passive'],
    ]);
    // The kernel heartbeat reads QEMU's pid from EVE's -pidfile.
    expect(b?.scenarios[1]?.probe.params).toEqual({ pidFile: '/run/hypervisor/kvm/b-vm.1.1/pid' });
    expect(b?.scenarios[0]?.timing.periodMs).toBe(20_000);
    expect(b?.diagnostics).toEqual(c.eve.diagnostics);
  });

  test('eve.layout is the layout of every discovered VM without its own', () => {
    const c2 = config('eve: { autodiscover: true, layout: /l/all.json }\n');
    const plan = planDiscovery([{ name: 'x', hasQmp: true, hasCons: false }], c2);
    expect(plan.apps[0]?.target.layout).toBe('/l/all.json');
    expect(plan.apps[0]?.scenarios.map((s) => s.probe.type)).toEqual(['qmp-status', 'kernel-heartbeat']);
  });

  test.each([
    ['*-test', 'scratch-test', true],
    ['*-test', 'test-x', false],
    ['vm.*.1', 'vm.2.1', true],
    ['vm.1', 'vmx1', false],
    ['exact', 'exact', true],
    ['(x)', '(x)', true],
  ])('globMatch(%s, %s) = %s', (pattern, name, expected) => {
    expect(globMatch(pattern, name)).toBe(expected);
  });
});

describe('listEveDomains and discoverEveApps on a directory tree', () => {
  let root: string;
  let server: Server;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'eve-diag-kvm-'));
    // vm1: qmp is a real unix socket, cons a file; vm2: qmp only; junk: no qmp; a stray file.
    await mkdir(join(root, 'vm1'));
    await mkdir(join(root, 'vm2'));
    await mkdir(join(root, 'junk'));
    await writeFile(join(root, 'stray-file'), '');
    server = createServer();
    await new Promise<void>((r) => server.listen(join(root, 'vm1', 'qmp'), r));
    await writeFile(join(root, 'vm1', 'cons'), '');
    await writeFile(join(root, 'vm2', 'qmp'), '');
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(root, { recursive: true, force: true });
  });

  test('lists directories with what they hold', async () => {
    const l = (await listEveDomains(root)).sort((a, b) => a.name.localeCompare(b.name));
    expect(l).toEqual([
      { name: 'junk', hasQmp: false, hasCons: false },
      { name: 'vm1', hasQmp: true, hasCons: true },
      { name: 'vm2', hasQmp: true, hasCons: false },
    ]);
  });

  test('a missing root is an empty listing', async () => {
    expect(await listEveDomains(join(root, 'nope'))).toEqual([]);
  });

  test('discoverEveApps follows eve.autodiscover', async () => {
    const on = config(`eve: { autodiscover: true, root: ${root} }\n`);
    const plan = await discoverEveApps(on);
    expect(plan.apps.map((a) => a.name)).toEqual(['vm1', 'vm2']);
    expect(plan.apps[0]?.target.qmp).toBe(join(root, 'vm1', 'qmp'));
    expect(plan.apps[0]?.target.consoleLog).toBe(join(root, 'vm1', 'cons.log'));
    const off = config(`eve: { autodiscover: false, root: ${root} }\n`);
    expect(await discoverEveApps(off)).toEqual({ apps: [], skipped: [] });
  });
});
