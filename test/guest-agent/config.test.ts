import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  DEFAULT_CONFIG,
  DEFAULT_CONFIG_PATH,
  describeConfig,
  loadConfig,
  parseFlags,
  validateFile,
} from '../../guest-agent/config.js';

const files = (map: Record<string, string>) => async (p: string) => {
  const t = map[p];
  if (t === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
  return t;
};

describe('parseFlags', () => {
  it('reads every flag, as "--flag value" and "--flag=value"', () => {
    const f = parseFlags([
      '--config', '/c.json', '--zone=\\_TZ.EDGA', '--period', '0.5', '--zone-retry=10', '--mark-period', '30',
      '--no-syslog', '--console', 'none', '--responder', '/dev/ttyS1', '--root', '/tmp/r', '--once', '--print-config',
    ]);
    expect(f).toEqual({
      config: '/c.json',
      values: { zone: '\\_TZ.EDGA', period: 0.5, zoneRetry: 10, markPeriod: 30, syslog: false, console: 'none', responder: '/dev/ttyS1', root: '/tmp/r' },
      once: true,
      printConfig: true,
      version: false,
      help: false,
    });
    expect(parseFlags(['--version']).version).toBe(true);
    expect(parseFlags(['-h']).help).toBe(true);
  });

  it.each([
    [['--period', 'x'], '--period: seconds, e.g. 1 or 0.5 (got "x")'],
    [['--period', '-1'], '--period: seconds, e.g. 1 or 0.5 (got "-1")'],
    [['--period', '4000'], '--period: seconds between 0.1 and 3600, or 0 for off (got 4000)'],
    [['--period', '0.01'], '--period: seconds between 0.1 and 3600, or 0 for off (got 0.01)'],
    [['--mark-period', '0.5'], '--mark-period: seconds between 1 and 86400, or 0 for off (got 0.5)'],
    [['--zone-retry', '0'], '--zone-retry: seconds between 1 and 3600 (got 0)'],
    [['--zone', 'EDGA'], '--zone: an ACPI path like \\_TZ_.EDGA (got "EDGA")'],
    [['--console', 'tty0'], '--console: an absolute path, or null / "none" for off (got "tty0")'],
    [['--root', 'none'], '--root: an absolute path (got "none")'],
    [['--bogus'], '--bogus: unknown option (see --help)'],
    [['--period'], '--period: needs a value'],
  ])('%j -> %s', (argv, message) => {
    expect(() => parseFlags(argv)).toThrow(ConfigError);
    expect(() => parseFlags(argv)).toThrow(message);
  });
});

describe('validateFile', () => {
  it('accepts the documented example', () => {
    const c = validateFile(
      {
        zone: '\\_TZ_.EDGA',
        period: 1,
        zoneRetry: 30,
        markPeriod: 60,
        syslog: true,
        console: '/dev/console',
        responder: null,
        checks: [
          { name: 'web', http: 'http://127.0.0.1:8080/health', timeout: 2 },
          { name: 'db', tcp: '127.0.0.1:5432' },
          { name: 'v6', tcp: '[::1]:22' },
          { name: 'disk', command: 'test -w /var/lib/app', timeout: 5 },
        ],
      },
      'agent.json',
    );
    expect(c.checks).toEqual([
      { name: 'web', kind: 'http', url: 'http://127.0.0.1:8080/health', timeoutMs: 2000 },
      { name: 'db', kind: 'tcp', host: '127.0.0.1', port: 5432, timeoutMs: 5000 },
      { name: 'v6', kind: 'tcp', host: '::1', port: 22, timeoutMs: 5000 },
      { name: 'disk', kind: 'command', command: 'test -w /var/lib/app', timeoutMs: 5000 },
    ]);
    expect(c.console).toBe('/dev/console');
    expect(c.responder).toBeNull();
  });

  it.each([
    [[], 'f: must hold one JSON object'],
    [{ perod: 1 }, 'f: perod: unknown key (expected one of zone, period, zoneRetry, markPeriod, syslog, console, responder, root, checks, disk)'],
    [{ period: '1' }, 'f: period: seconds between 0.1 and 3600, or 0 for off (got "1")'],
    [{ syslog: 'yes' }, 'f: syslog: true or false (got "yes")'],
    [{ console: 3 }, 'f: console: an absolute path, or null / "none" for off (got 3)'],
    [{ checks: {} }, 'f: checks: an array of checks (got {})'],
    [{ checks: Array(17).fill({ name: 'a', command: 'true' }) }, 'f: checks: at most 16 checks (got 17)'],
    [{ checks: [{ name: 'a b', command: 'true' }] }, 'f: checks[0].name: 1-32 characters of A-Z a-z 0-9 _ . - (got "a b")'],
    [{ checks: [{ name: 'a', command: 'true' }, { name: 'a', command: 'true' }] }, 'f: checks[1].name: used by another check (got "a")'],
    [{ checks: [{ name: 'a' }] }, 'f: checks[0]: exactly one of "command", "tcp", "http" (got none)'],
    [{ checks: [{ name: 'a', tcp: 'h:1', http: 'http://h/' }] }, 'f: checks[0]: exactly one of "command", "tcp", "http" (got tcp, http)'],
    [{ checks: [{ name: 'a', tcp: 'h' }] }, 'f: checks[0].tcp: host:port (IPv6 as [addr]:port), port 1..65535 (got "h")'],
    [{ checks: [{ name: 'a', tcp: 'h:70000' }] }, 'f: checks[0].tcp: host:port (IPv6 as [addr]:port), port 1..65535 (got "h:70000")'],
    [{ checks: [{ name: 'a', http: 'ftp://h/' }] }, 'f: checks[0].http: an http:// or https:// URL (got "ftp://h/")'],
    [{ checks: [{ name: 'a', command: ' ' }] }, 'f: checks[0].command: a non-empty shell command (run with /bin/sh -c), at most 4096 characters (got " ")'],
    [{ checks: [{ name: 'a', command: 'true', timeout: 0 }] }, 'f: checks[0].timeout: seconds between 0.1 and 300 (got 0)'],
    [{ checks: [{ name: 'a', command: 'true', retries: 3 }] }, 'f: checks[0].retries: unknown key (expected name, command, tcp, http, timeout)'],
  ])('%j -> %s', (json, message) => {
    expect(() => validateFile(json, 'f')).toThrow(message);
  });
});

describe('loadConfig', () => {
  it('no file at the default path: the defaults', async () => {
    const { config, source } = await loadConfig(parseFlags([]), files({}));
    expect(config).toEqual(DEFAULT_CONFIG);
    expect(source).toBe(`defaults (no ${DEFAULT_CONFIG_PATH})`);
  });

  it('defaults < file < flags', async () => {
    const { config, source } = await loadConfig(
      parseFlags(['--period', '2', '--console', '/dev/ttyS0']),
      files({ [DEFAULT_CONFIG_PATH]: JSON.stringify({ period: 5, markPeriod: 10, console: '/dev/hvc0', syslog: false }) }),
    );
    expect(config).toMatchObject({ periodMs: 2000, markPeriodMs: 10_000, console: '/dev/ttyS0', syslog: false, zoneRetryMs: 30_000 });
    expect(source).toBe(DEFAULT_CONFIG_PATH);
  });

  it('a --config file that is missing is an error naming --config', async () => {
    await expect(loadConfig(parseFlags(['--config', '/nope.json']), files({}))).rejects.toThrow('--config: cannot read /nope.json (ENOENT) (got "/nope.json")');
  });

  it('bad JSON and bad values name the file and the key', async () => {
    await expect(loadConfig(parseFlags(['--config', '/a.json']), files({ '/a.json': '{period: 1}' }))).rejects.toThrow(/^\/a\.json: not valid JSON/);
    await expect(loadConfig(parseFlags(['--config', '/a.json']), files({ '/a.json': '{"markPeriod": -5}' }))).rejects.toThrow(
      '/a.json: markPeriod: seconds between 1 and 86400, or 0 for off (got -5)',
    );
    await expect(loadConfig(parseFlags(['--config', '/a.json']), files({ '/a.json': ' '.repeat(70_000) }))).rejects.toThrow(/larger than 65536 bytes/);
  });

  it('describeConfig prints what validateFile reads back to the same configuration', async () => {
    const { config } = await loadConfig(
      parseFlags(['--config', '/a.json']),
      files({ '/a.json': JSON.stringify({ checks: [{ name: 'v6', tcp: '[::1]:22', timeout: 0.5 }, { name: 'w', http: 'http://h/x' }, { name: 'c', command: 'true' }] }) }),
    );
    const again = validateFile(describeConfig(config), 'x');
    expect({ ...DEFAULT_CONFIG, ...again }).toEqual(config);
  });
});
