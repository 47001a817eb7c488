import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { INSTALL_PATHS, nmiOption, readInstallAssets } from '../bake/assets.js';
import { repoRoot } from '../util/repo-root.js';
import { BUNDLE_ENCODINGS, cloudInitUserData, cronSchedule, type BundleEncoding } from '../bake/cloud-init.js';
import { DEFAULT_AGENT_ZONE, normalizeAcpiPath } from '../protocol/acpi-path.js';
import { UsageError } from './usage-error.js';

export interface BakeCloudInitFlags {
  sh?: boolean;
  agentPath?: string;
  period: string;
  markPeriod: string;
  zone: string;
  console: string;
  responder?: string;
  node: string;
  packages: boolean;
  encoding: string;
  bundle?: string;
  nmiPanic?: boolean;
  nmiWatchdog?: boolean;
}

/** A path that needs no quoting in a unit's ExecStart, a cron line or YAML: absolute, plain characters. */
function plainPath(flag: string, v: string): string {
  if (!/^\/[A-Za-z0-9._+/-]{1,255}$/.test(v) || v.split('/').includes('..')) {
    throw new UsageError(flag, v, 'an absolute path of letters, digits and . _ + - /');
  }
  return v;
}

function seconds(flag: string, v: string, min: number, max: number): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(flag, v, `seconds between ${min} and ${max}`);
  }
  return Number(v);
}

export async function bakeCloudInit(flags: BakeCloudInitFlags, out: (s: string) => void): Promise<void> {
  const mode = flags.sh === true ? 'sh' : 'node';
  const periodS = seconds('--period', flags.period, 0.1, 3600);
  const markPeriodS = seconds('--mark-period', flags.markPeriod, 1, 86_400);
  if (mode === 'sh' && cronSchedule(markPeriodS) === undefined) {
    throw new UsageError('--mark-period', flags.markPeriod, 'with --sh marks come from cron: whole minutes dividing an hour (60, 120, 300, 600, 900, 1800...) or whole hours dividing a day');
  }
  const zone = normalizeAcpiPath(flags.zone);
  if (zone === undefined) throw new UsageError('--zone', flags.zone, 'an ACPI path like \\_TZ_.EDGA');
  const console = flags.console === 'none' ? null : plainPath('--console', flags.console);
  const agentPath = flags.agentPath === undefined ? undefined : plainPath('--agent-path', flags.agentPath);
  if (mode === 'sh' && flags.responder !== undefined) throw new UsageError('--responder', flags.responder, 'the POSIX-sh agent has no responder (drop --sh)');
  const responder = flags.responder === undefined || flags.responder === 'none' ? null : plainPath('--responder', flags.responder);
  const nodePath = plainPath('--node', flags.node);
  if (!(BUNDLE_ENCODINGS as readonly string[]).includes(flags.encoding)) {
    throw new UsageError('--encoding', flags.encoding, `one of ${BUNDLE_ENCODINGS.join(', ')}`);
  }
  let bundle: string | undefined;
  if (mode === 'node') {
    const path = flags.bundle ?? join(repoRoot(), 'dist', 'eve-diag-agent.js');
    try {
      bundle = await readFile(path, 'utf8');
    } catch (e) {
      const why = `cannot read the agent bundle ${path} (${(e as { code?: string }).code ?? (e as Error).message})`;
      if (flags.bundle !== undefined) throw new UsageError('--bundle', flags.bundle, why, { cause: e });
      throw new Error(`${why}: run \`npm run build:agent\` or pass --bundle FILE`, { cause: e });
    }
  }
  out(
    cloudInitUserData({
      mode,
      assets: await readInstallAssets(),
      bundle,
      agentPath,
      periodS,
      markPeriodS,
      zone,
      console,
      responder,
      nodePath,
      installNode: flags.packages,
      encoding: flags.encoding as BundleEncoding,
      ...nmiOption(flags),
      command: [
        'eve-diag bake cloud-init',
        ...(mode === 'sh' ? ['--sh'] : []),
        `--period ${periodS} --mark-period ${markPeriodS}`,
        ...(zone !== DEFAULT_AGENT_ZONE ? [`--zone '${zone}'`] : []),
        ...(agentPath !== undefined ? [`--agent-path ${agentPath}`] : []),
        ...(flags.nmiPanic === true ? ['--nmi-panic'] : []),
        ...(flags.nmiWatchdog === true ? ['--nmi-watchdog'] : []),
      ].join(' '),
    }).trimEnd(),
  );
}

export function register(bake: Command, out: (s: string) => void): void {
  bake
    .command('cloud-init')
    .description('print #cloud-config user-data that installs the guest agent (heartbeat, marks), its service and kernel.sysrq=1')
    .option('--sh', 'install the POSIX-sh agent (heartbeat service + cron marks) instead of the Node agent')
    .option('--agent-path <path>', `where the agent goes (default ${INSTALL_PATHS.agent}, with --sh ${INSTALL_PATHS.shAgent})`)
    .option('--period <seconds>', 'heartbeat period, 0.1 to 3600', '1')
    .option('--mark-period <seconds>', 'mark period (with --sh: a cron schedule, whole minutes)', '60')
    .option('--zone <path>', 'ACPI path of the agent thermal zone', DEFAULT_AGENT_ZONE)
    .option('--console <path>', 'console for marks, or none', '/dev/console')
    .option('--responder <path>', 'serial port for PING/PONG (e.g. /dev/virtio-ports/NAME, /dev/ttyS1)')
    .option('--node <path>', 'Node binary the unit runs (Node mode)', '/usr/bin/node')
    .option('--no-packages', 'do not add "packages: [nodejs]" (the image already has Node >= 18)')
    .option('--encoding <enc>', `how the bundle is inlined: ${BUNDLE_ENCODINGS.join(', ')}`, 'gz+b64')
    .option('--bundle <file>', 'the agent bundle (default dist/eve-diag-agent.js, from npm run build:agent)')
    .option('--nmi-panic', 'set kernel.unknown_nmi_panic=1: an NMI from the host (the nmi collector) panics the guest, with its backtraces (and a kdump where the guest has one)')
    .option('--nmi-watchdog', 'set kernel.nmi_watchdog=1: the hard-lockup detector (needs a virtual PMU: KVM, not TCG)')
    .action(async (flags: BakeCloudInitFlags) => bakeCloudInit(flags, out));
}

