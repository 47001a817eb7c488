import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ConfigError,
  configSchema,
  defaultScenarios,
  formatPath,
  formatProblem,
  loadConfig,
  parseConfig,
  type ConfigProblem,
} from '../../monitor/config.js';
import { DEFAULT_TIMING } from '../../monitor/types.js';

const FILE = 'monitor.yaml';

/** The problems of an invalid text, formatted like the CLI prints them. */
function problems(text: string, opts: Parameters<typeof parseConfig>[2] = {}): string[] {
  try {
    parseConfig(text, FILE, { baseDir: '/etc/eve-diag', ...opts });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.map((p: ConfigProblem) => formatProblem(p));
  }
  throw new Error('expected a ConfigError');
}

const VALID = `# a full configuration
version: 1
defaults:
  periodSeconds: 15
  timeoutSeconds: 2
  diagnostics:
    cooldownSeconds: 600
    collectors:
      - type: qmp-state
      - type: sysrq
        timeoutSeconds: 20
        maxBytes: 65536
        params: { keys: [t, w] }
eve:
  autodiscover: true
  exclude: ["*-test"]
  layout: ssdt/eve-diag-ssdt.json
  layouts: { special: /opt/special.json }
qmp: { holdSeconds: 30 }
spool: { dir: spool }
controller: { url: "https://ctrl.example:8443/", tokenFile: node.token, caFile: /etc/eve-diag/ca.pem }
metrics: { listen: "127.0.0.1:9464" }
apps:
  - name: web
    transports:
      qmp: /run/web/qmp
      console: /run/web/cons
      consoleLog: /run/web/cons.log
      consoleMux: true
      layout: web.json
      heartbeatDisk: /var/lib/web/hb.img
      address: 10.1.0.5
      qga: /run/web/qga
      agentPort: agent.sock
      erst: /var/lib/web/erst.img
      gdb: /run/web/gdb
      systemMap: maps/System.map-6.1
    scenarios:
      - name: kernel
        probe: { type: kernel-heartbeat, params: { failOn: late, graceSeconds: 30 } }
        periodSeconds: 5
      - name: run-state
        probe: { type: qmp-status }
      - name: uptime
        probe:
          type: console-active
          params: { command: uptime, expect: "load average", login: [{ send: "\\n" }] }
        timeoutSeconds: 5
        failureThreshold: 2
      - name: marks
        probe: { type: console-passive, params: { maxAgeSeconds: 120 } }
        periodSeconds: 60
        timeoutSeconds: 1
      - name: disk
        probe: { type: disk-heartbeat }
        initialDelaySeconds: 30
      - name: port
        probe: { type: tcp, params: { port: 443 } }
        successThreshold: 2
      - name: health
        probe: { type: http, params: { scheme: https, port: 8443, path: /healthz, insecure: true, bodyRegex: "ok" } }
      - name: qga
        probe: { type: guest-ping }
      - name: pong
        probe: { type: agent-ping, params: { maxBytes: 4096 } }
  - name: tcp-agent
    transports: { agentPort: "tcp:10.1.0.5:4000" }
  - name: db
    eveDom: 0b6c3a4e-1111-2222-3333-444455556666.1.1
`;

describe('parseConfig: a valid file', () => {
  const c = parseConfig(VALID, FILE, { baseDir: '/etc/eve-diag' });

  test('timing is normalized to ms with kubelet defaults and file defaults', () => {
    const web = c.apps[0];
    expect(web?.name).toBe('web');
    const byName = Object.fromEntries((web?.scenarios ?? []).map((s) => [s.name, s]));
    // A heartbeat scenario decides once (its stall rule waits for the ring's bound) unless it sets failureThreshold.
    expect(byName.kernel?.timing).toEqual({ periodMs: 5000, timeoutMs: 2000, initialDelayMs: 0, failureThreshold: 1, successThreshold: 1 });
    expect(byName['run-state']?.timing).toEqual({ periodMs: 15000, timeoutMs: 2000, initialDelayMs: 0, failureThreshold: 3, successThreshold: 1 });
    expect(byName.uptime?.timing.failureThreshold).toBe(2);
    expect(byName.uptime?.timing.timeoutMs).toBe(5000);
    expect(byName.disk?.timing.initialDelayMs).toBe(30000);
    expect(byName.port?.timing.successThreshold).toBe(2);
    expect(c.defaults.timing).toEqual({ ...DEFAULT_TIMING, periodMs: 15000, timeoutMs: 2000 });
  });

  test('probe params are typed and in ms', () => {
    const s = Object.fromEntries((c.apps[0]?.scenarios ?? []).map((x) => [x.name, x.probe]));
    expect(s.kernel).toEqual({ type: 'kernel-heartbeat', params: { failOn: 'late', assess: { graceMs: 30000 } } });
    expect(s['run-state']).toEqual({ type: 'qmp-status', params: {} });
    expect(s.uptime).toEqual({ type: 'console-active', params: { command: 'uptime', expect: 'load average', login: [{ send: '\n' }] } });
    expect(s.marks).toEqual({ type: 'console-passive', params: { maxAgeMs: 120000 } });
    // Freshness defaults to the scenario's period.
    expect(s.disk).toEqual({ type: 'disk-heartbeat', params: { maxAgeMs: 15000 } });
    expect(s.port).toEqual({ type: 'tcp', params: { port: 443 } });
    expect(s.health).toEqual({ type: 'http', params: { scheme: 'https', port: 8443, path: '/healthz', insecure: true, bodyRegex: 'ok' } });
    expect(s.pong).toEqual({ type: 'agent-ping', params: { maxBytes: 4096 } });
  });

  test('transports: relative paths resolve against the base directory; eveDom fills EVE paths', () => {
    expect(c.apps[0]?.target).toEqual({
      name: 'web',
      qmp: '/run/web/qmp',
      console: '/run/web/cons',
      consoleLog: '/run/web/cons.log',
      consoleMux: true,
      layout: '/etc/eve-diag/web.json',
      heartbeatDisk: '/var/lib/web/hb.img',
      address: '10.1.0.5',
      qga: '/run/web/qga',
      agentPort: '/etc/eve-diag/agent.sock',
      erst: '/var/lib/web/erst.img',
      gdb: '/run/web/gdb',
      systemMap: '/etc/eve-diag/maps/System.map-6.1',
    });
    // A TCP chardev is not a path.
    expect(c.apps[1]?.target).toEqual({ name: 'tcp-agent', agentPort: 'tcp:10.1.0.5:4000' });
    const dom = '0b6c3a4e-1111-2222-3333-444455556666.1.1';
    expect(c.apps[2]?.target).toEqual({
      name: 'db',
      qmp: `/run/hypervisor/kvm/${dom}/qmp`,
      console: `/run/hypervisor/kvm/${dom}/cons`,
      consoleLog: `/run/hypervisor/kvm/${dom}/cons.log`,
      consoleMux: true,
      layout: '/etc/eve-diag/ssdt/eve-diag-ssdt.json',
    });
    // An app without scenarios gets the default bindings.
    expect(c.apps[2]?.scenarios.map((s) => s.probe.type)).toEqual(['qmp-status', 'kernel-heartbeat', 'console-passive']);
    expect(c.apps[1]?.scenarios.map((s) => s.probe.type)).toEqual(['agent-ping']);
  });

  test('diagnostics, eve, spool, controller, metrics, qmp', () => {
    expect(c.defaults.diagnostics).toEqual({
      cooldownMs: 600000,
      collectors: [
        { type: 'qmp-state', timeoutMs: 10000, maxBytes: 1048576, params: {} },
        { type: 'sysrq', timeoutMs: 20000, maxBytes: 65536, params: { keys: ['t', 'w'] } },
      ],
    });
    expect(c.apps[0]?.diagnostics).toBe(c.defaults.diagnostics);
    expect(c.eve).toEqual({
      autodiscover: true,
      root: '/run/hypervisor/kvm',
      exclude: ['*-test'],
      layout: '/etc/eve-diag/ssdt/eve-diag-ssdt.json',
      layouts: { special: '/opt/special.json' },
      diagnostics: c.defaults.diagnostics,
    });
    expect(c.spool).toEqual({ dir: '/etc/eve-diag/spool', quotaBytes: 512 * 1024 * 1024, maxBundleBytes: 16 * 1024 * 1024 });
    expect(c.controller).toEqual({ url: 'https://ctrl.example:8443', tokenFile: '/etc/eve-diag/node.token', caFile: '/etc/eve-diag/ca.pem', timeoutMs: 30000 });
    expect(c.metrics).toEqual({ listen: '127.0.0.1:9464', host: '127.0.0.1', port: 9464 });
    expect(c.qmp).toEqual({ connectTimeoutMs: 5000, holdMs: 30000 });
  });
});

describe('parseConfig: heartbeat timing', () => {
  test('stallSlack and pollSeconds reach the probe; an explicit failureThreshold is kept; the default kernel scenario decides once', () => {
    const text = [
      'apps:',
      '  - name: a',
      '    transports: { qmp: /q, layout: /l }',
      '    scenarios:',
      '      - { name: k, failureThreshold: 2, probe: { type: kernel-heartbeat, params: { stallSlack: 0.5, pollSeconds: 0.2 } } }',
      '  - name: b',
      '    transports: { qmp: /q2, layout: /l2 }',
      '',
    ].join('\n');
    const c = parseConfig(text, FILE, { baseDir: '/x' });
    const k = c.apps[0]?.scenarios[0];
    expect(k?.timing.failureThreshold).toBe(2);
    expect(k?.probe).toEqual({ type: 'kernel-heartbeat', params: { pollMs: 200, assess: { stallSlack: 0.5 } } });
    const b = Object.fromEntries((c.apps[1]?.scenarios ?? []).map((s) => [s.name, s.timing.failureThreshold]));
    expect(b).toEqual({ 'qmp-status': 3, 'kernel-heartbeat': 1 });
    expect(problems(text.replace('stallSlack: 0.5', 'stallSlack: -1'))).toEqual([expect.stringMatching(/stallSlack: .*0/)]);
    expect(problems(text.replace('pollSeconds: 0.2', 'pollSeconds: 0.01'))).toEqual([expect.stringMatching(/pollSeconds: .*0\.05/)]);
  });
});

describe('parseConfig: defaults', () => {
  test('an empty file is a valid configuration with every default', () => {
    for (const text of ['', '# nothing\n', '{}']) {
      const c = parseConfig(text, FILE, { baseDir: '/x' });
      expect(c.apps).toEqual([]);
      expect(c.defaults.timing).toEqual({ periodMs: 10000, timeoutMs: 1000, initialDelayMs: 0, failureThreshold: 3, successThreshold: 1 });
      expect(c.defaults.diagnostics).toEqual({ cooldownMs: 300000, collectors: [] });
      expect(c.eve).toMatchObject({ autodiscover: false, root: '/run/hypervisor/kvm', exclude: [], layouts: {} });
      expect(c.spool).toEqual({ dir: '/var/lib/eve-diag/spool', quotaBytes: 512 * 1024 * 1024, maxBundleBytes: 16 * 1024 * 1024 });
      expect(c.controller).toBeUndefined();
      expect(c.metrics).toBeUndefined();
    }
  });

  test('defaultScenarios binds what the transports allow', () => {
    const t = DEFAULT_TIMING;
    expect(defaultScenarios({ name: 'a' }, t)).toEqual([]);
    expect(defaultScenarios({ name: 'a', qmp: '/q' }, t).map((s) => s.name)).toEqual(['qmp-status']);
    expect(defaultScenarios({ name: 'a', qmp: '/q', layout: '/l', consoleLog: '/c' }, t).map((s) => s.name)).toEqual([
      'qmp-status',
      'kernel-heartbeat',
      'console-marks',
    ]);
  });

  test('JSON input is read too, with line numbers', () => {
    const json = JSON.stringify({ apps: [{ name: 'a', scenarios: [{ name: 's', probe: { type: 'tcp', params: { port: 22 } } }] }] }, null, 2);
    const c = parseConfig(json, 'monitor.json', { baseDir: '/x' });
    expect(c.apps[0]?.scenarios[0]?.probe).toEqual({ type: 'tcp', params: { port: 22 } });
    const bad = json.replace('"port": 22', '"port": "ssh"');
    expect(problems(bad)).toEqual(['monitor.yaml:11: apps[0].scenarios[0].probe.params.port: must be an integer (got "ssh")']);
  });
});

describe('parseConfig: errors name the file, the line and the field', () => {
  test.each<[string, string, string[]]>([
    [
      'a value below its minimum (the issue example)',
      `apps:
  - name: a
    scenarios:
      - name: one
        probe: { type: qmp-status }
      - name: two
        probe: { type: qmp-status }
        periodSeconds: 0
`,
      ['monitor.yaml:8: apps[0].scenarios[1].periodSeconds: must be >= 1 (got 0)'],
    ],
    ['a wrong type', 'defaults:\n  failureThreshold: 2.5\n', ['monitor.yaml:2: defaults.failureThreshold: must be an integer (got 2.5)']],
    ['a string for a number', 'defaults:\n  timeoutSeconds: "1"\n', ['monitor.yaml:2: defaults.timeoutSeconds: must be a number (got "1")']],
    [
      'an unknown field',
      'eve:\n  autodiscover: true\n  rooot: /x\n',
      ['monitor.yaml:3: eve.rooot: unknown field (expected one of: autodiscover, root, exclude, layout, layouts, diagnostics)'],
    ],
    ['a missing field', 'apps:\n  - transports: {}\n', ['monitor.yaml:2: apps[0].name: is required']],
    [
      'a missing probe',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        periodSeconds: 5\n',
      ['monitor.yaml:4: apps[0].scenarios[0].probe: is required'],
    ],
    [
      'an unknown probe type',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe:\n          type: ping\n',
      [
        'monitor.yaml:6: apps[0].scenarios[0].probe.type: must be one of kernel-heartbeat, agent-heartbeat, qmp-status, console-active, console-passive, log-marks, disk-heartbeat, tcp, http, guest-ping, agent-ping (got "ping")',
      ],
    ],
    [
      'a probe param of another probe',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe:\n          type: tcp\n          params:\n            port: 80\n            path: /\n',
      ['monitor.yaml:9: apps[0].scenarios[0].probe.params.path: unknown field (expected one of: host, port)'],
    ],
    [
      'a required probe param',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: tcp }\n',
      ['monitor.yaml:5: apps[0].scenarios[0].probe.params: is required'],
    ],
    ['an enum', 'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: kernel-heartbeat, params: { memory: dma } }\n', [
      'monitor.yaml:5: apps[0].scenarios[0].probe.params.memory: must be one of "auto", "procmem", "pmemsave", "xp", "file" (got "dma")',
    ]],
    ['a bad name', 'apps:\n  - name: "my app"\n', [`monitor.yaml:2: apps[0].name: must be letters, digits, '.', '_', ':', '-' (at most 128) (got "my app")`]],
    ['a bad listen address', 'metrics:\n  listen: 9464\n', ['monitor.yaml:2: metrics.listen: must be a string (got 9464)']],
    ['a bad URL scheme', 'controller:\n  url: ftp://x\n  tokenFile: t\n', ['monitor.yaml:2: controller.url: must be an http:// or https:// URL (got "ftp://x")']],
    ['a controller without its token', 'controller:\n  url: https://c\n', ['monitor.yaml:1: controller.tokenFile: is required']],
    [
      'several problems at once, in file order',
      'defaults:\n  periodSeconds: 0\napps:\n  - name: a\n    bogus: 1\n  - {}\n',
      [
        'monitor.yaml:2: defaults.periodSeconds: must be >= 1 (got 0)',
        'monitor.yaml:5: apps[0].bogus: unknown field (expected one of: name, eveDom, libvirt, transports, scenarios, diagnostics)',
        'monitor.yaml:6: apps[1].name: is required',
      ],
    ],
    ['a top-level list', '- a\n- b\n', ['monitor.yaml:1: must be a map (got a list)']],
  ])('%s', (_name, text, expected) => {
    expect(problems(text)).toEqual(expected);
  });

  test('YAML syntax errors and duplicate keys are located too', () => {
    const syntax = problems('apps:\n  - name: a\n    scenarios: [\n');
    expect(syntax.length).toBeGreaterThan(0);
    expect(syntax[0]).toMatch(/^monitor\.yaml:4: /);
    expect(problems('defaults:\n  periodSeconds: 5\n  periodSeconds: 6\n')).toEqual(['monitor.yaml:3: Map keys must be unique']);
  });

  test.each<[string, string, string[]]>([
    [
      'timeout longer than the period',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: qmp-status }\n        periodSeconds: 5\n        timeoutSeconds: 6\n',
      ['monitor.yaml:7: apps[0].scenarios[0].timeoutSeconds: timeoutSeconds (6) must not exceed periodSeconds (5)'],
    ],
    [
      'a bundle cap above the spool quota',
      'spool:\n  maxBytes: 1048576\n  maxBundleBytes: 2097152\n',
      ['monitor.yaml:3: spool.maxBundleBytes: must not exceed spool.maxBytes (1048576) (got 2097152)'],
    ],
    [
      'duplicate names',
      'apps:\n  - name: a\n    scenarios:\n      - { name: s, probe: { type: qmp-status } }\n      - { name: s, probe: { type: qmp-status } }\n  - name: a\n',
      [
        'monitor.yaml:5: apps[0].scenarios[1].name: duplicate scenario name "s" (also scenarios[0])',
        'monitor.yaml:6: apps[1].name: duplicate app name "a" (also apps[0])',
      ],
    ],
    [
      'a bad regex',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe:\n          type: console-active\n          params: { expect: "(unclosed" }\n',
      ['monitor.yaml:7: apps[0].scenarios[0].probe.params.expect: not a valid regular expression: Invalid regular expression: /(unclosed/: Unterminated group'],
    ],
    [
      'memory file without memPath',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: kernel-heartbeat, params: { memory: file } }\n',
      ['monitor.yaml:5: apps[0].scenarios[0].probe.params.memory: memory "file" needs params.memPath (the memory-backend-file mem-path)'],
    ],
    [
      'late after stall',
      'apps:\n  - name: a\n    scenarios:\n      - name: s\n        probe:\n          type: kernel-heartbeat\n          params:\n            lateAfterPeriods: 4\n',
      ['monitor.yaml:8: apps[0].scenarios[0].probe.params.lateAfterPeriods: stallAfterPeriods (3) must exceed lateAfterPeriods (4)'],
    ],
    ['a metrics port out of range', 'metrics:\n  listen: "127.0.0.1:70000"\n', ['monitor.yaml:2: metrics.listen: port must be 1..65535 (got "127.0.0.1:70000")']],
  ])('semantic: %s', (_name, text, expected) => {
    expect(problems(text)).toEqual(expected);
  });

  test('unknown collector kinds, when the runner says which it knows', () => {
    const text = 'defaults:\n  diagnostics:\n    collectors:\n      - type: qmp-state\n      - type: screenshot\n';
    expect(() => parseConfig(text, FILE, { baseDir: '/x' })).not.toThrow();
    expect(problems(text, { collectorKinds: ['qmp-state', 'sysrq'] })).toEqual([
      'monitor.yaml:5: defaults.diagnostics.collectors[1].type: unknown collector (known: qmp-state, sysrq) (got "screenshot")',
    ]);
  });

  test('the error message lists every problem', () => {
    try {
      parseConfig('defaults:\n  periodSeconds: 0\n  successThreshold: 0\n', FILE);
      expect.unreachable();
    } catch (e) {
      const err = e as ConfigError;
      expect(err.name).toBe('ConfigError');
      expect(err.file).toBe(FILE);
      expect(err.message).toBe(
        'monitor.yaml: 2 problems:\n  monitor.yaml:2: defaults.periodSeconds: must be >= 1 (got 0)\n  monitor.yaml:3: defaults.successThreshold: must be >= 1 (got 0)',
      );
    }
  });
});

describe('loadConfig', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eve-diag-config-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('reads a file; relative paths resolve against its directory', async () => {
    const f = join(dir, 'monitor.yaml');
    await writeFile(f, 'apps:\n  - name: a\n    transports: { qmp: run/qmp }\n');
    const c = await loadConfig(f);
    expect(c.file).toBe(f);
    expect(c.apps[0]?.target.qmp).toBe(join(dir, 'run/qmp'));
  });

  test('an unreadable file is a ConfigError naming it', async () => {
    const f = join(dir, 'missing.yaml');
    await expect(loadConfig(f)).rejects.toThrow(ConfigError);
    await expect(loadConfig(f)).rejects.toThrow(`${f}: cannot read: ENOENT`);
  });

  test('errors carry the path as given', async () => {
    const f = join(dir, 'bad.yaml');
    await writeFile(f, '\n\napps:\n  - name: a\n    scenarios:\n      - name: s\n        probe: { type: qmp-status }\n        timeoutSeconds: 0\n');
    await expect(loadConfig(f)).rejects.toThrow(`${f}:8: apps[0].scenarios[0].timeoutSeconds: must be > 0 (got 0)`);
  });
});

describe('the published schema', () => {
  test('is a valid draft-07 schema that ajv compiles in strict mode', () => {
    const schema = configSchema();
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    const ajv = new Ajv({ strict: true, discriminator: true });
    expect(() => ajv.compile(schema)).not.toThrow();
  });

  test('formatPath', () => {
    expect(formatPath(['apps', 0, 'scenarios', 1, 'periodSeconds'])).toBe('apps[0].scenarios[1].periodSeconds');
    expect(formatPath(['eve', 'layouts', 'a.b'])).toBe('eve.layouts["a.b"]');
    expect(formatPath([])).toBe('');
  });
});

describe('log-marks params', () => {
  const app = (params: string, extra = '') => `apps:\n  - name: a\n${extra}    scenarios:\n      - name: marks\n        periodSeconds: 10\n        probe:\n          type: log-marks\n          params: ${params}\n`;

  test('normalized: seconds to ms, withinPeriods defaulted, paths absolute; an eveDom gives the newlogd app log', () => {
    const probe = (text: string) => parseConfig(text, FILE, { baseDir: '/etc/eve-diag' }).apps[0]?.scenarios[0]?.probe;
    expect(probe(app('{}'))).toEqual({ type: 'log-marks', params: { withinPeriods: 2 } });
    expect(probe(app('{ source: log-entries, path: "logs/app.*.log", pattern: "alive n=(\\\\d+)", withinPeriods: 3, graceSeconds: 90, maxReadBytes: 65536, maxLineBytes: 4096 }'))).toEqual({
      type: 'log-marks',
      params: { source: 'log-entries', path: '/etc/eve-diag/logs/app.*.log', pattern: 'alive n=(\\d+)', withinPeriods: 3, graceMs: 90000, maxReadBytes: 65536, maxLineBytes: 4096 },
    });
    expect(probe(app('{ source: log-entries }', '    eveDom: 0b6c3a4e-1111-2222-3333-444455556666.1.1\n'))).toEqual({
      type: 'log-marks',
      params: { source: 'log-entries', path: '/persist/newlog/collect/app.0b6c3a4e-1111-2222-3333-444455556666.log*', withinPeriods: 2 },
    });
  });

  test.each<[string, string, string[]]>([
    ['log-entries without a path', '{ source: log-entries }', [
      'monitor.yaml:8: apps[0].scenarios[0].probe.params.path: is required with source "log-entries" (a file of LogEntry JSON lines; a * in the file name takes the newest match), unless the app has an eveDom',
    ]],
    ['an unknown source', '{ source: syslog }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.source: must be one of "console", "log-entries" (got "syslog")']],
    ['a bad pattern', '{ pattern: "(" }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.pattern: not a valid regular expression: Invalid regular expression: /(/: Unterminated group']],
    ['withinPeriods 0', '{ withinPeriods: 0 }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.withinPeriods: must be > 0 (got 0)']],
    ['a negative grace', '{ graceSeconds: -1 }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.graceSeconds: must be >= 0 (got -1)']],
    ['a small read bound', '{ maxReadBytes: 100 }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.maxReadBytes: must be >= 1024 (got 100)']],
    ['lines longer than a read', '{ maxReadBytes: 2048, maxLineBytes: 4096 }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.maxLineBytes: must not exceed maxReadBytes (2048) (got 4096)']],
    ['a source pattern for the console', '{ sourcePattern: "^vm" }', ['monitor.yaml:8: apps[0].scenarios[0].probe.params.sourcePattern: only read with source "log-entries" (console lines have no source)']],
    ['a bad source pattern', '{ source: log-entries, path: /x, sourcePattern: "[" }', [
      'monitor.yaml:8: apps[0].scenarios[0].probe.params.sourcePattern: not a valid regular expression: Invalid regular expression: /[/: Unterminated character class',
    ]],
    ['a glob in a directory', '{ source: log-entries, path: "/persist/*/app.log" }', [
      'monitor.yaml:8: apps[0].scenarios[0].probe.params.path: a glob (* or ?) only in the file name, not in a directory (got "/persist/*/app.log")',
    ]],
    ['a param of another probe', '{ maxAgeSeconds: 5 }', [
      'monitor.yaml:8: apps[0].scenarios[0].probe.params.maxAgeSeconds: unknown field (expected one of: source, path, pattern, sourcePattern, withinPeriods, graceSeconds, maxReadBytes, maxLineBytes)',
    ]],
  ])('%s', (_name, params, expected) => {
    expect(problems(app(params))).toEqual(expected);
  });

  test('an eveDom that does not start with an app UUID gives no default path', () => {
    expect(problems(app('{ source: log-entries }', '    eveDom: my-vm\n'))).toEqual([
      'monitor.yaml:9: apps[0].scenarios[0].probe.params.path: is required with source "log-entries": eveDom "my-vm" does not start with an app UUID, so newlogd\'s file name is not known',
    ]);
  });
});
