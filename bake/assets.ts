import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../util/repo-root.js';

/**
 * The install assets in this directory (systemd units, cron line, sysctl drop-in, init scripts, the
 * POSIX-sh agent) and where they go in a VM image. `eve-diag bake cloud-init` reads them from here, so
 * what it installs is what this directory documents.
 */

export const INSTALL_PATHS = {
  agent: '/usr/local/lib/eve-diag/eve-diag-agent.js',
  shAgent: '/usr/local/lib/eve-diag/eve-diag-agent.sh',
  config: '/etc/eve-diag/agent.json',
  unit: '/etc/systemd/system/eve-diag-agent.service',
  shUnit: '/etc/systemd/system/eve-diag-heartbeat.service',
  cron: '/etc/cron.d/eve-diag',
  sysctl: '/etc/sysctl.d/90-eve-diag.conf',
  openrc: '/etc/init.d/eve-diag-agent',
} as const;

export interface InstallAssets {
  shAgent: string;
  unit: string;
  shUnit: string;
  cron: string;
  sysctl: string;
  openrc: string;
  sysvinit: string;
  config: string;
}

const FILES: Record<keyof InstallAssets, string> = {
  shAgent: 'eve-diag-agent.sh',
  unit: 'eve-diag-agent.service',
  shUnit: 'eve-diag-heartbeat.service',
  cron: 'eve-diag.cron',
  sysctl: '90-eve-diag.conf',
  openrc: 'openrc/eve-diag-agent',
  sysvinit: 'sysvinit/eve-diag-agent',
  config: 'agent.json',
};


export function installDir(): string {
  return join(repoRoot(), 'guest-agent', 'install');
}

export async function readInstallAssets(dir = installDir()): Promise<InstallAssets> {
  const entries = await Promise.all(
    (Object.entries(FILES) as [keyof InstallAssets, string][]).map(async ([k, f]) => {
      try {
        return [k, await readFile(join(dir, f), 'utf8')] as const;
      } catch (e) {
        throw new Error(`cannot read the install asset ${join(dir, f)}: ${(e as Error).message}`, { cause: e });
      }
    }),
  );
  return Object.fromEntries(entries) as unknown as InstallAssets;
}

/** Replaces the unit's one `ExecStart=` line. */
export function setExecStart(unit: string, execStart: string): string {
  const lines = unit.split('\n');
  const at = lines.flatMap((l, i) => (l.startsWith('ExecStart=') ? [i] : []));
  if (at.length !== 1) throw new Error(`expected one ExecStart= line in the unit, found ${at.length}`);
  lines[at[0] as number] = `ExecStart=${execStart}`;
  return lines.join('\n');
}

/** Replaces the cron file's job line (the one line that is not a comment or a variable). */
export function setCronJob(cron: string, job: string): string {
  const lines = cron.split('\n');
  const at = lines.flatMap((l, i) => (/^[0-9*@]/.test(l) ? [i] : []));
  if (at.length !== 1) throw new Error(`expected one job line in the cron file, found ${at.length}`);
  lines[at[0] as number] = job;
  return lines.join('\n');
}
