import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildAgentBundle } from '../../build/agent-bundle.js';
import { INSTALL_PATHS, readInstallAssets, type InstallAssets } from '../../bake/assets.js';
import { cronSchedule } from '../../bake/cloud-init.js';
import { validateFile } from '../../guest-agent/config.js';
import { runCli } from '../helpers/cli.js';

interface WriteFile {
  path: string;
  permissions: string;
  owner: string;
  content: string;
  encoding?: string;
}
interface CloudConfig {
  packages?: string[];
  write_files: WriteFile[];
  runcmd: string[][];
}

let dir: string;
let bundlePath: string;
let bundle: string;
let assets: InstallAssets;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'eve-diag-bake-'));
  const b = await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') });
  bundlePath = b.outfile;
  bundle = b.code;
  assets = await readInstallAssets();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function bake(...args: string[]): Promise<{ text: string; doc: CloudConfig; files: Map<string, WriteFile> }> {
  const r = await runCli('bake', 'cloud-init', ...args);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out.split('\n')[0]).toBe('#cloud-config');
  const doc = parse(r.out) as CloudConfig;
  return { text: r.out, doc, files: new Map(doc.write_files.map((f) => [f.path, f])) };
}

function decoded(f: WriteFile): string {
  switch (f.encoding) {
    case undefined:
      return f.content;
    case 'b64':
      return Buffer.from(f.content, 'base64').toString();
    case 'gz+b64':
      return gunzipSync(Buffer.from(f.content, 'base64')).toString();
    default:
      throw new Error(`unexpected encoding ${f.encoding}`);
  }
}

describe('eve-diag bake cloud-init (Node agent)', () => {
  it('writes the bundle, config, unit and sysctl drop-in, installs Node, enables the service', async () => {
    const { doc, files } = await bake('--bundle', bundlePath);
    expect(Object.keys(doc).sort()).toEqual(['packages', 'runcmd', 'write_files']);
    expect(doc.packages).toEqual(['nodejs']);
    expect([...files.keys()]).toEqual([INSTALL_PATHS.agent, INSTALL_PATHS.config, INSTALL_PATHS.unit, INSTALL_PATHS.sysctl]);
    for (const f of files.values()) expect(f.owner).toBe('root:root');
    const agent = files.get(INSTALL_PATHS.agent) as WriteFile;
    expect(agent.permissions).toBe('0755');
    expect(agent.encoding).toBe('gz+b64');
    expect(decoded(agent)).toBe(bundle);
    expect(files.get(INSTALL_PATHS.unit)?.permissions).toBe('0644');
    expect(files.get(INSTALL_PATHS.unit)?.content).toBe(assets.unit);
    expect(files.get(INSTALL_PATHS.sysctl)?.content).toBe(assets.sysctl);
    const config = validateFile(JSON.parse(files.get(INSTALL_PATHS.config)?.content ?? ''), 'agent.json');
    expect(config).toMatchObject({ zone: '\\_TZ_.EDGA', periodMs: 1000, markPeriodMs: 60_000, console: '/dev/console', responder: null, syslog: true });
    expect(doc.runcmd).toEqual([
      ['sysctl', '-w', 'kernel.sysrq=1'],
      ['systemctl', 'daemon-reload'],
      ['systemctl', 'enable', '--now', 'eve-diag-agent.service'],
    ]);
  });

  it('options: paths, periods, zone, console, responder, encodings, no packages', async () => {
    const { doc, files } = await bake(
      '--bundle', bundlePath, '--agent-path', '/opt/eve/agent.js', '--period', '0.5', '--mark-period', '30', '--zone', '\\_TZ.EDGB',
      '--console', '/dev/hvc0', '--responder', '/dev/virtio-ports/org.lfedge.eve.diag.0', '--node', '/usr/local/bin/node', '--no-packages', '--encoding', 'b64',
    );
    expect(doc.packages).toBeUndefined();
    expect(decoded(files.get('/opt/eve/agent.js') as WriteFile)).toBe(bundle);
    expect(files.get(INSTALL_PATHS.unit)?.content).toContain('\nExecStart=/usr/local/bin/node /opt/eve/agent.js\n');
    expect(validateFile(JSON.parse(files.get(INSTALL_PATHS.config)?.content ?? ''), 'c')).toMatchObject({
      zone: '\\_TZ_.EDGB',
      periodMs: 500,
      markPeriodMs: 30_000,
      console: '/dev/hvc0',
      responder: '/dev/virtio-ports/org.lfedge.eve.diag.0',
    });
    const text = await bake('--bundle', bundlePath, '--encoding', 'text');
    const agent = text.files.get(INSTALL_PATHS.agent) as WriteFile;
    expect(agent.encoding).toBeUndefined();
    expect(agent.content).toBe(bundle);
    const none = await bake('--bundle', bundlePath, '--console', 'none');
    expect(JSON.parse(none.files.get(INSTALL_PATHS.config)?.content ?? '').console).toBeNull();
  });
});

describe('eve-diag bake cloud-init --nmi-panic --nmi-watchdog', () => {
  it('sets the NMI sysctls in the drop-in and at once; none without the flags', async () => {
    const { doc, files, text } = await bake('--bundle', bundlePath, '--nmi-panic', '--nmi-watchdog');
    const dropIn = files.get(INSTALL_PATHS.sysctl)?.content ?? '';
    expect(dropIn).toMatch(/^kernel\.unknown_nmi_panic ?= ?1$/m);
    expect(dropIn).toMatch(/^kernel\.nmi_watchdog ?= ?1$/m);
    expect(doc.runcmd).toEqual(expect.arrayContaining([['sysctl', '-w', 'kernel.unknown_nmi_panic=1'], ['sysctl', '-w', 'kernel.nmi_watchdog=1']]));
    expect(text).toMatch(/--nmi-panic --nmi-watchdog/);
    const plain = await bake('--bundle', bundlePath);
    expect(plain.files.get(INSTALL_PATHS.sysctl)?.content).not.toMatch(/nmi/);
  });
});

describe('eve-diag bake cloud-init --sh', () => {
  it('writes the sh agent, the heartbeat unit, the cron line and the sysctl drop-in; no Node', async () => {
    const { doc, files, text } = await bake('--sh', '--mark-period', '300', '--period', '2');
    expect(doc.packages).toBeUndefined();
    expect([...files.keys()]).toEqual([INSTALL_PATHS.shAgent, INSTALL_PATHS.shUnit, INSTALL_PATHS.cron, INSTALL_PATHS.sysctl]);
    expect(files.get(INSTALL_PATHS.shAgent)).toMatchObject({ permissions: '0755', content: assets.shAgent });
    expect(files.get(INSTALL_PATHS.shUnit)?.content).toContain(`\nExecStart=${INSTALL_PATHS.shAgent} heartbeat --period 2\n`);
    const cron = files.get(INSTALL_PATHS.cron) as WriteFile;
    expect(cron.permissions).toBe('0644');
    expect(cron.content.split('\n').filter((l) => /^[0-9*]/.test(l))).toEqual([`*/5 * * * * root ${INSTALL_PATHS.shAgent} mark`]);
    expect(doc.runcmd).toEqual([
      ['sysctl', '-w', 'kernel.sysrq=1'],
      ['systemctl', 'daemon-reload'],
      ['systemctl', 'enable', '--now', 'eve-diag-heartbeat.service'],
    ]);
    expect(text).not.toContain('eve-diag-agent.js');
  });

  it('a custom zone is escaped for systemd; console none reaches the cron line', async () => {
    const { files } = await bake('--sh', '--zone', '\\_SB.EDGX', '--console', 'none', '--agent-path', '/opt/a.sh');
    expect(files.get(INSTALL_PATHS.shUnit)?.content).toContain('\nExecStart=/opt/a.sh heartbeat --period 1 --zone \\\\_SB_.EDGX\n');
    expect(files.get(INSTALL_PATHS.cron)?.content).toContain('\n* * * * * root /opt/a.sh mark --console none\n');
  });

  it('cronSchedule: only periods cron can express', () => {
    expect(cronSchedule(60)).toBe('* * * * *');
    expect(cronSchedule(900)).toBe('*/15 * * * *');
    expect(cronSchedule(3600)).toBe('0 * * * *');
    expect(cronSchedule(7200)).toBe('0 */2 * * *');
    for (const s of [30, 90, 420, 3000, 5 * 3600, 0]) expect(cronSchedule(s)).toBeUndefined();
  });
});

describe('bad flags: exit 2 naming the flag', () => {
  it.each([
    [['--period', '0'], '--period'],
    [['--period', 'fast'], '--period'],
    [['--mark-period', '0.5'], '--mark-period'],
    [['--sh', '--mark-period', '90'], '--mark-period'],
    [['--zone', 'EDGA'], '--zone'],
    [['--console', 'tty0'], '--console'],
    [['--agent-path', '/opt/my agent.js'], '--agent-path'],
    [['--agent-path', '/opt/../x'], '--agent-path'],
    [['--sh', '--responder', '/dev/ttyS1'], '--responder'],
    [['--node', 'node'], '--node'],
    [['--encoding', 'zip'], '--encoding'],
    [['--bundle', '/nonexistent/eve-diag-agent.js'], '--bundle'],
  ])('%j', async (args, flag) => {
    const r = await runCli('bake', 'cloud-init', ...args);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err.startsWith(`eve-diag: ${flag}: `)).toBe(true);
  });

  it('an unknown flag is commander’s usage error (exit 2)', async () => {
    const r = await runCli('bake', 'cloud-init', '--nope');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown option '--nope'/);
  });
});
