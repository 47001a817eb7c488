import { gzipSync } from 'node:zlib';
import { Document, isSeq } from 'yaml';
import { INSTALL_PATHS, nmiSysctlPairs, setCronJob, setExecStart, withNmiSysctls, type InstallAssets, type NmiSysctls } from './assets.js';
import { DEFAULT_AGENT_ZONE } from '../protocol/acpi-path.js';

/**
 * cloud-init user-data (`#cloud-config`) that installs the guest agent into a VM at its first boot:
 * `write_files` puts the agent, its configuration, the service and the sysctl drop-in in place and
 * `runcmd` turns them on. Pure: the caller reads the bundle and the assets.
 *
 * Node mode (default): the bundle, /etc/eve-diag/agent.json, the systemd unit; `packages: [nodejs]`
 * unless told not to (Debian 12 and Ubuntu 24.04 ship Node 18). Sh mode: the POSIX-sh agent, a
 * systemd unit running its heartbeat loop, and a cron line for the marks.
 */
export interface CloudInitOptions {
  mode: 'node' | 'sh';
  assets: InstallAssets;
  /** The bundle's text (node mode). */
  bundle?: string;
  /** Where the agent goes; default INSTALL_PATHS.agent / shAgent. */
  agentPath?: string;
  /** Heartbeat period, s. */
  periodS: number;
  /** Mark period, s (sh mode: a cron schedule, see cronSchedule). */
  markPeriodS: number;
  /** Normalized ACPI path. */
  zone: string;
  console: string | null;
  responder: string | null;
  /** Node binary in the unit (node mode). */
  nodePath: string;
  /** Add `packages: [nodejs]` (node mode). */
  installNode: boolean;
  encoding: BundleEncoding;
  /** The command line that produced this, for the header comment. */
  command?: string;
  /** NMI sysctls to set (drop-in and `sysctl -w` now); none by default. */
  nmiSysctls?: NmiSysctls;
}

export type BundleEncoding = 'text' | 'b64' | 'gz+b64';
export const BUNDLE_ENCODINGS: readonly BundleEncoding[] = ['text', 'b64', 'gz+b64'];

/** The cron schedule for a mark period, or undefined when cron cannot express it. */
export function cronSchedule(periodS: number): string | undefined {
  if (!Number.isInteger(periodS) || periodS <= 0 || periodS % 60 !== 0) return undefined;
  const min = periodS / 60;
  if (min === 1) return '* * * * *';
  if (min < 60 && 60 % min === 0) return `*/${min} * * * *`;
  if (min % 60 === 0 && 1440 % min === 0) return min === 60 ? '0 * * * *' : `0 */${min / 60} * * *`;
  return undefined;
}

interface WriteFile {
  path: string;
  permissions: string;
  owner: string;
  content: string;
  encoding?: string;
}

function file(path: string, content: string, permissions = '0644'): WriteFile {
  return { path, owner: 'root:root', permissions, content };
}

function bundleFile(path: string, bundle: string, encoding: BundleEncoding): WriteFile {
  switch (encoding) {
    case 'text':
      return file(path, bundle, '0755');
    case 'b64':
      return { ...file(path, Buffer.from(bundle).toString('base64'), '0755'), encoding: 'b64' };
    case 'gz+b64':
      return { ...file(path, gzipSync(Buffer.from(bundle), { level: 9 }).toString('base64'), '0755'), encoding: 'gz+b64' };
  }
}

/** systemd unescapes backslashes in ExecStart: `\_TZ_.EDGA` must be written `\\_TZ_.EDGA`. */
function systemdArg(s: string): string {
  return s.replace(/\\/g, '\\\\');
}

export function cloudInitUserData(o: CloudInitOptions): string {
  const files: WriteFile[] = [];
  const runcmd: string[][] = [['sysctl', '-w', 'kernel.sysrq=1'], ...nmiSysctlPairs(o.nmiSysctls).map(([k, v]) => ['sysctl', '-w', `${k}=${v}`])];
  const doc: Record<string, unknown> = {};
  if (o.mode === 'node') {
    if (o.bundle === undefined) throw new Error('node mode needs the agent bundle');
    const agentPath = o.agentPath ?? INSTALL_PATHS.agent;
    const config = {
      zone: o.zone,
      period: o.periodS,
      markPeriod: o.markPeriodS,
      syslog: true,
      console: o.console,
      responder: o.responder,
      checks: [],
    };
    if (o.installNode) doc.packages = ['nodejs'];
    files.push(
      bundleFile(agentPath, o.bundle, o.encoding),
      file(INSTALL_PATHS.config, `${JSON.stringify(config, null, 2)}\n`),
      file(INSTALL_PATHS.unit, setExecStart(o.assets.unit, `${o.nodePath} ${agentPath}`)),
    );
    runcmd.push(['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'eve-diag-agent.service']);
  } else {
    const agentPath = o.agentPath ?? INSTALL_PATHS.shAgent;
    const schedule = cronSchedule(o.markPeriodS);
    if (schedule === undefined) throw new RangeError(`markPeriodS: ${o.markPeriodS} s cannot be a cron schedule`);
    const hb = [agentPath, 'heartbeat', '--period', String(o.periodS)];
    if (o.zone !== DEFAULT_AGENT_ZONE) hb.push('--zone', systemdArg(o.zone));
    const mark = [agentPath, 'mark'];
    if (o.console !== '/dev/console') mark.push('--console', o.console ?? 'none');
    files.push(
      file(agentPath, o.assets.shAgent, '0755'),
      file(INSTALL_PATHS.shUnit, setExecStart(o.assets.shUnit, hb.join(' '))),
      file(INSTALL_PATHS.cron, setCronJob(o.assets.cron, `${schedule} root ${mark.join(' ')}`)),
    );
    runcmd.push(['systemctl', 'daemon-reload'], ['systemctl', 'enable', '--now', 'eve-diag-heartbeat.service']);
  }
  files.push(file(INSTALL_PATHS.sysctl, withNmiSysctls(o.assets.sysctl, o.nmiSysctls)));
  doc.write_files = files;
  doc.runcmd = runcmd;
  const header = [
    '#cloud-config',
    `# eve-diag guest agent (${o.mode === 'node' ? 'Node' : 'POSIX sh'}): heartbeat for the eve-diag SSDT, log marks, kernel.sysrq=1.`,
    ...(o.command !== undefined ? [`# generated by: ${o.command}`] : []),
    '# Boot the VM with console=ttyS0 (or hvc0) on the kernel command line so marks and panics reach the console log.',
  ].join('\n');
  const yaml = new Document(doc);
  // runcmd entries read best as one-line lists: `- [systemctl, daemon-reload]`.
  const cmds = yaml.get('runcmd');
  if (isSeq(cmds)) for (const item of cmds.items) if (isSeq(item)) item.flow = true;
  return `${header}\n${yaml.toString({ lineWidth: 0, blockQuote: 'literal' })}`;
}
