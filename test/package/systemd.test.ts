import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { repoRoot } from '../../util/repo-root.js';
import { runCli } from '../helpers/cli.js';

/**
 * The host's systemd units (packaging/systemd, issue 14 §4): `systemd-analyze verify` accepts them
 * (ExecStart pointed at this checkout's CLI, the path being the only thing that differs), and the
 * command lines they run are ones the CLI accepts.
 */
const SYSTEMD_ANALYZE = '/usr/bin/systemd-analyze';
const units = join(repoRoot(), 'packaging', 'systemd');
const dir = mkdtempSync(join(tmpdir(), 'eve-diag-units-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const read = (name: string) => readFileSync(join(units, name), 'utf8');
const execStart = (unit: string) => {
  const lines = unit.split('\n').filter((l) => l.startsWith('ExecStart='));
  expect(lines).toHaveLength(1);
  return (lines[0] as string).slice('ExecStart='.length);
};
const keys = (unit: string) => new Map(unit.split('\n').filter((l) => /^\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));

function verify(name: string): { status: number | null; stderr: string } {
  if (!existsSync(SYSTEMD_ANALYZE)) throw new Error(`${SYSTEMD_ANALYZE} is missing: apt-get install systemd (npm test's build/setup.ts does)`);
  const unit = read(name).replace(/^ExecStart=\/usr\/local\/bin\/eve-diag /m, `ExecStart=${process.execPath} ${join(repoRoot(), 'dist', 'cli', 'main.js')} `);
  const p = join(dir, name);
  writeFileSync(p, unit);
  const r = spawnSync(SYSTEMD_ANALYZE, ['verify', p], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr };
}

describe('packaging/systemd', () => {
  test.each(['eve-diag-monitor.service', 'eve-diag-controller.service'])('systemd-analyze verify accepts %s', (name) => {
    const r = verify(name);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test('the monitor unit: only CAP_SYS_PTRACE (procmem), the spool the one writable path, restarted always', () => {
    const k = keys(read('eve-diag-monitor.service'));
    expect(k.get('CapabilityBoundingSet')).toBe('CAP_SYS_PTRACE');
    expect(k.get('ProtectSystem')).toBe('strict');
    expect(k.get('ReadWritePaths')).toBe('/var/lib/eve-diag');
    expect(k.get('NoNewPrivileges')).toBe('yes');
    expect(k.get('Restart')).toBe('always');
    expect(k.has('PrivateTmp')).toBe(false); // QEMU sockets in /tmp must stay reachable
  });

  test('the controller unit: its own user, no capabilities, TLS from systemd credentials', () => {
    const unit = read('eve-diag-controller.service');
    const k = keys(unit);
    expect(k.get('User')).toBe('eve-diag');
    expect(k.get('CapabilityBoundingSet')).toBe('');
    expect(execStart(unit)).toMatch(/--tls-cert %d\/cert\.pem --tls-key %d\/key\.pem/);
    expect(unit).toMatch(/^LoadCredential=cert\.pem:/m);
  });

  test('the monitor ExecStart flags are the CLI’s: a missing config is the only complaint', async () => {
    const args = execStart(read('eve-diag-monitor.service')).split(' ').slice(1);
    expect(args.slice(0, 3)).toEqual(['monitor', '--config', '/etc/eve-diag/monitor.yaml']);
    const missing = join(dir, 'nope.yaml');
    const r = await runCli(...args.map((a) => (a === '/etc/eve-diag/monitor.yaml' ? missing : a)));
    expect(r.code).toBe(2);
    expect(r.err).toContain(missing);
    expect(r.err).not.toMatch(/unknown option/);
  });

  test('the controller ExecStart flags are the CLI’s: a missing certificate is the only complaint', async () => {
    const args = execStart(read('eve-diag-controller.service'))
      .split(' ')
      .slice(1)
      .map((a) => a.replace('/var/lib/eve-diag/controller', join(dir, 'data')).replace('0.0.0.0:8470', '127.0.0.1:0').replace('%d', join(dir, 'creds')));
    const r = await runCli(...args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--tls-cert/);
    expect(r.err).not.toMatch(/unknown option/);
  });
});
