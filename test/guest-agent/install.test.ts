import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { INSTALL_PATHS, installDir, readInstallAssets, setCronJob, setExecStart, type InstallAssets } from '../../bake/assets.js';
import { FakeRoot, PROC_SAMPLE } from './fake-tree.js';

let assets: InstallAssets;
let dir: string;
let bundle: string;
beforeAll(async () => {
  assets = await readInstallAssets();
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-install-'));
  bundle = (await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') })).outfile;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `Key=value` lines of one unit section. */
function section(unit: string, name: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur = '';
  for (const line of unit.split('\n')) {
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) cur = s[1] as string;
    else if (cur === name && /^\w+=/.test(line)) {
      const at = line.indexOf('=');
      const k = line.slice(0, at);
      out.set(k, [...(out.get(k) ?? []), line.slice(at + 1)]);
    }
  }
  return out;
}

const SYSTEMD_ANALYZE = '/usr/bin/systemd-analyze';

function verifyUnit(name: string, text: string) {
  if (!existsSync(SYSTEMD_ANALYZE)) throw new Error(`${SYSTEMD_ANALYZE} is missing: apt-get install systemd`);
  const d = mkdtempSync(join(dir, 'unit-'));
  const p = join(d, name);
  writeFileSync(p, text);
  return spawnSync(SYSTEMD_ANALYZE, ['verify', p], { encoding: 'utf8', timeout: 60_000 });
}

describe('systemd units', () => {
  it('the Node unit: always restarted, hardened, and still able to write the console and the kernel log', () => {
    const s = section(assets.unit, 'Service');
    expect(s.get('ExecStart')).toEqual(['/usr/bin/node /usr/local/lib/eve-diag/eve-diag-agent.js']);
    expect(s.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(s.get('Restart')).toEqual(['always']);
    expect(s.get('NoNewPrivileges')).toEqual(['yes']);
    expect(s.get('ProtectSystem')).toEqual(['strict']);
    expect(s.get('ProtectHome')).toEqual(['yes']);
    // These would break the agent: hidden /dev/console and ports, denied /dev/kmsg, V8's JIT, root's devices.
    for (const k of ['PrivateDevices', 'ProtectKernelLogs', 'MemoryDenyWriteExecute', 'User', 'DynamicUser', 'ReadOnlyPaths', 'InaccessiblePaths']) {
      expect(s.has(k), k).toBe(false);
    }
    expect(section(assets.unit, 'Install').get('WantedBy')).toEqual(['multi-user.target']);
  });

  it('the sh heartbeat unit: always restarted, hardened further (it only reads sysfs)', () => {
    const s = section(assets.shUnit, 'Service');
    expect(s.get('ExecStart')).toEqual([`${INSTALL_PATHS.shAgent} heartbeat --period 1`]);
    for (const [k, v] of [['Restart', 'always'], ['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['MemoryDenyWriteExecute', 'yes']]) {
      expect(s.get(k as string), k).toEqual([v]);
    }
  });

  it('systemd-analyze verify accepts both (ExecStart pointed at files that exist here)', () => {
    const node = verifyUnit('eve-diag-agent.service', setExecStart(assets.unit, `${process.execPath} ${bundle}`));
    expect(node.stderr).toBe('');
    expect(node.status).toBe(0);
    const sh = verifyUnit('eve-diag-heartbeat.service', setExecStart(assets.shUnit, `${join(installDir(), 'eve-diag-agent.sh')} heartbeat --period 1`));
    expect(sh.stderr).toBe('');
    expect(sh.status).toBe(0);
  });

  it('setExecStart replaces the one ExecStart line, and refuses a unit without exactly one', () => {
    expect(section(setExecStart(assets.unit, '/x y'), 'Service').get('ExecStart')).toEqual(['/x y']);
    expect(() => setExecStart('[Service]\n', '/x')).toThrow(/found 0/);
  });
});

describe('cron, sysctl, config', () => {
  it('the cron line runs the sh agent mark mode as root every minute', () => {
    const jobs = assets.cron.split('\n').filter((l) => /^[0-9*]/.test(l));
    expect(jobs).toEqual([`* * * * * root ${INSTALL_PATHS.shAgent} mark`]);
    expect(setCronJob(assets.cron, '*/5 * * * * root /x mark')).toContain('\n*/5 * * * * root /x mark\n');
  });

  it('the sysctl drop-in enables every SysRq function (DESIGN fact 8)', () => {
    const settings = assets.sysctl.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    expect(settings).toEqual(['kernel.sysrq = 1']);
  });

  it('the example agent.json is valid and says the defaults', async () => {
    const { validateFile, DEFAULT_CONFIG } = await import('../../guest-agent/config.js');
    expect({ ...DEFAULT_CONFIG, ...validateFile(JSON.parse(assets.config), 'agent.json') }).toEqual(DEFAULT_CONFIG);
  });
});

describe('init scripts', () => {
  it('parse as sh (OpenRC script, sysvinit script)', () => {
    for (const f of ['openrc/eve-diag-agent', 'sysvinit/eve-diag-agent']) {
      expect(() => execFileSync('/bin/busybox', ['sh', '-n', join(installDir(), f)])).not.toThrow();
      expect(() => execFileSync('/bin/dash', ['-n', join(installDir(), f)])).not.toThrow();
    }
    expect(assets.openrc.startsWith('#!/sbin/openrc-run\n')).toBe(true);
    expect(assets.openrc).toContain('supervisor=supervise-daemon');
  });

  it('the sysvinit script starts, reports, reloads and stops the Node agent (start-stop-daemon)', async () => {
    const root = new FakeRoot();
    try {
      root.proc(PROC_SAMPLE);
      root.addZone(0, '\\_TZ_.EDGA');
      const console_ = join(root.root, 'console');
      writeFileSync(console_, '');
      const env = {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        EVE_DIAG_NODE: process.execPath,
        EVE_DIAG_AGENT: bundle,
        EVE_DIAG_PIDFILE: join(root.root, 'agent.pid'),
        EVE_DIAG_ARGS: `--root ${root.root} --console ${console_} --no-syslog --mark-period 1 --period 0.5`,
      };
      const init = (cmd: string) => spawnSync('/bin/sh', [join(installDir(), 'sysvinit/eve-diag-agent'), cmd], { encoding: 'utf8', env, timeout: 30_000 });
      expect(init('status').status).toBe(3);
      const start = init('start');
      expect(start.status, start.stderr).toBe(0);
      try {
        const pid = readFileSync(env.EVE_DIAG_PIDFILE, 'utf8').trim();
        expect(init('status').stdout).toBe(`eve-diag-agent is running (${pid})\n`);
        const end = Date.now() + 15_000;
        while (!readFileSync(console_, 'utf8').includes('seq=2') && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
        expect(readFileSync(console_, 'utf8')).toMatch(/^eve-diag mark seq=1 uptime=734\.21 .*\neve-diag mark seq=2 /);
        expect(init('reload').status).toBe(0);
        expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')).toContain(bundle);
      } finally {
        expect(init('stop').status).toBe(0);
      }
      expect(init('status').status).toBe(3);
      expect(existsSync(env.EVE_DIAG_PIDFILE)).toBe(false);
    } finally {
      root.cleanup();
    }
  });

  it('the sysvinit script runs the sh heartbeat when Node is not there', () => {
    const root = new FakeRoot();
    try {
      const env = {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        EVE_DIAG_NODE: join(root.root, 'no-node'),
        EVE_DIAG_SH_AGENT: join(installDir(), 'eve-diag-agent.sh'),
        EVE_DIAG_PIDFILE: join(root.root, 'agent.pid'),
        EVE_DIAG_ARGS: `--root ${root.root} --period 0.5`,
      };
      const init = (cmd: string) => spawnSync('/bin/sh', [join(installDir(), 'sysvinit/eve-diag-agent'), cmd], { encoding: 'utf8', env, timeout: 30_000 });
      expect(init('start').status).toBe(0);
      try {
        const pid = readFileSync(env.EVE_DIAG_PIDFILE, 'utf8').trim();
        // start-stop-daemon -b -m writes the pidfile in its forked child before that child execs the
        // agent: until the exec, /proc/PID/cmdline is start-stop-daemon's own (seen under load).
        const want = [env.EVE_DIAG_SH_AGENT, 'heartbeat', '--period', '0.5'];
        const cmdline = () => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        const deadline = Date.now() + 10_000;
        while (!want.every((w) => cmdline().includes(w)) && Date.now() < deadline) spawnSync('sleep', ['0.05']);
        expect(cmdline()).toEqual(expect.arrayContaining(want));
      } finally {
        expect(init('stop').status).toBe(0);
      }
      expect(init('status').status).toBe(3);
    } finally {
      root.cleanup();
    }
  });
});
