import { describe, expect, it } from 'vitest';
import { FakeLibvirtLink } from '../../host-reader/libvirt/fake-link.js';
import { openLibvirtTarget } from '../../host-reader/libvirt/index.js';
import { ConfigError, formatProblem, parseConfig } from '../../monitor/config.js';
import { bindLibvirtApps } from '../../monitor/libvirt-apps.js';
import type { LogRecord } from '../../monitor/manager.js';

const parse = (apps: string) => parseConfig(`apps:\n${apps}`, 'monitor.yaml', { baseDir: '/etc/eve-diag' });
const problems = (apps: string): string[] => {
  try {
    parse(apps);
  } catch (e) {
    return (e as ConfigError).problems.map(formatProblem);
  }
  throw new Error('expected a ConfigError');
};

const XML = `<domain type='qemu'><name>vm1</name><devices><serial type='pty'><log file='/var/log/libvirt/qemu/vm1-serial0.log'/></serial></devices></domain>`;

describe('libvirt apps in the config', () => {
  it('takes a domain, the URI defaulting to the system daemon; scenarios wait for the binding', () => {
    const c = parse('  - name: vm1\n    libvirt: { domain: vm1 }\n    transports: { layout: l.json }\n');
    expect(c.apps[0]?.libvirt).toEqual({ ref: { domain: 'vm1', uri: 'qemu:///system' }, defaultScenarios: true });
    expect(c.apps[0]?.scenarios).toEqual([]);
  });

  it('refuses a remote URI, a bad name, a qmp transport and eveDom beside it, naming the field', () => {
    expect(problems('  - name: a\n    libvirt: { domain: vm1, uri: "qemu+ssh://h/system" }\n').join('\n')).toMatch(/apps\[0\]\.libvirt\.uri: .*must run on this host.*"qemu\+ssh:\/\/h\/system"/);
    expect(problems('  - name: a\n    libvirt: { domain: "-x" }\n').join('\n')).toMatch(/apps\[0\]\.libvirt\.domain: must not start with "-"/);
    expect(problems('  - name: a\n    libvirt: { domain: vm1 }\n    transports: { qmp: /q }\n').join('\n')).toMatch(/apps\[0\]\.transports\.qmp: a libvirt app is reached through libvirt/);
    expect(problems('  - name: a\n    eveDom: d\n    libvirt: { domain: vm1 }\n').join('\n')).toMatch(/apps\[0\]\.libvirt: give eveDom or libvirt, not both/);
    expect(problems('  - name: a\n    libvirt: { uri: "qemu:///system" }\n').join('\n')).toMatch(/apps\[0\]\.libvirt/);
  });
});

describe('bindLibvirtApps', () => {
  const logs: LogRecord[] = [];
  const log = (r: LogRecord) => void logs.push(r);

  it("binds the bridge, libvirt's pidfile and the XML's console log; default scenarios follow", async () => {
    const c = parse('  - name: vm1\n    libvirt: { domain: vm1 }\n    transports: { layout: l.json }\n  - name: plain\n    transports: { qmp: /run/q }\n');
    const link = new FakeLibvirtLink({ ref: { domain: 'vm1', uri: 'qemu:///system' }, xml: XML });
    const b = await bindLibvirtApps(c.apps, { timing: c.defaults.timing, log, open: (ref, o) => openLibvirtTarget(ref, { ...o, link }) });
    try {
      const [vm1, plain] = b.apps;
      expect(plain).toBe(c.apps[1]);
      expect(vm1?.target.qmp).toMatch(/eve-diag-libvirt-.*\/qmp$/);
      expect(vm1?.target.consoleLog).toBe('/var/log/libvirt/qemu/vm1-serial0.log');
      expect(vm1?.scenarios.map((s) => s.name)).toEqual(['qmp-status', 'kernel-heartbeat', 'console-marks']);
      expect(vm1?.scenarios.find((s) => s.name === 'kernel-heartbeat')?.probe.params).toMatchObject({ pidFile: '/run/libvirt/qemu/vm1.pid' });
      expect(logs.find((l) => l.msg === 'libvirt: domain bound')).toMatchObject({ app: 'vm1', pidFile: '/run/libvirt/qemu/vm1.pid' });
    } finally {
      await b.close();
    }
    expect(link.watching).toBe(0);
  });

  it('keeps named scenarios (a pidfile added to heartbeats) and a given console log; an unreadable XML is logged', async () => {
    const c = parse(
      '  - name: vm1\n    libvirt: { domain: vm1 }\n    transports: { layout: l.json, consoleLog: /mine.log }\n    scenarios:\n      - { name: k, probe: { type: kernel-heartbeat } }\n',
    );
    const link = new FakeLibvirtLink({ ref: { domain: 'vm1', uri: 'qemu:///system' }, xml: 'not xml' });
    const b = await bindLibvirtApps(c.apps, { timing: c.defaults.timing, log, open: (ref, o) => openLibvirtTarget(ref, { ...o, link }) });
    try {
      expect(b.apps[0]?.target.consoleLog).toBe('/mine.log');
      expect(b.apps[0]?.scenarios.map((s) => [s.name, s.probe.params])).toEqual([['k', expect.objectContaining({ pidFile: '/run/libvirt/qemu/vm1.pid' })]]);
      expect(logs.find((l) => l.msg.startsWith('libvirt: cannot read the domain XML'))).toBeDefined();
    } finally {
      await b.close();
    }
  });

  it('leaves out, and logs, an app whose bridge cannot open', async () => {
    const c = parse('  - name: vm1\n    libvirt: { domain: vm1 }\n');
    const b = await bindLibvirtApps(c.apps, { timing: c.defaults.timing, log, open: () => Promise.reject(new Error('EACCES')) });
    expect(b.apps).toEqual([]);
    expect(logs.find((l) => l.level === 'error' && l.msg.startsWith('libvirt: cannot open'))).toMatchObject({ error: 'EACCES' });
  });
});
