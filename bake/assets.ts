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

/**
 * What the guest kernel does with an NMI (the host's `nmi` collector, QMP inject-nmi), set on request by
 * `bake` in the sysctl drop-in. Unset: the kernel's default is left alone; `false` writes 0 explicitly.
 */
export interface NmiSysctls {
  /** `kernel.unknown_nmi_panic`: an NMI no source claims (QMP inject-nmi is one) panics the guest. */
  unknownNmiPanic?: boolean;
  /** `kernel.panic_on_unrecovered_nmi`: panic on an uncorrected memory (parity/ECC) NMI. */
  panicOnUnrecoveredNmi?: boolean;
  /** `kernel.panic_on_io_nmi`: panic on an I/O channel check NMI. */
  panicOnIoNmi?: boolean;
  /** `kernel.nmi_watchdog`: the hard-lockup detector (perf NMIs: needs a vPMU, e.g. KVM with `-cpu host`). */
  nmiWatchdog?: boolean;
}

/** The NMI sysctls the bake commands' `--nmi-panic` and `--nmi-watchdog` ask for; undefined for none. */
export function nmiSysctlsOf(flags: { nmiPanic?: boolean; nmiWatchdog?: boolean }): NmiSysctls | undefined {
  const o: NmiSysctls = {};
  if (flags.nmiPanic === true) o.unknownNmiPanic = true;
  if (flags.nmiWatchdog === true) o.nmiWatchdog = true;
  return Object.keys(o).length === 0 ? undefined : o;
}

/** `{ nmiSysctls }` for an options object when the flags ask for any, else nothing. */
export function nmiOption(flags: { nmiPanic?: boolean; nmiWatchdog?: boolean }): { nmiSysctls?: NmiSysctls } {
  const nmiSysctls = nmiSysctlsOf(flags);
  return nmiSysctls === undefined ? {} : { nmiSysctls };
}

export const NMI_SYSCTL_KEYS: Readonly<Record<keyof NmiSysctls, string>> = {
  unknownNmiPanic: 'kernel.unknown_nmi_panic',
  panicOnUnrecoveredNmi: 'kernel.panic_on_unrecovered_nmi',
  panicOnIoNmi: 'kernel.panic_on_io_nmi',
  nmiWatchdog: 'kernel.nmi_watchdog',
};

/** The `[key, value]` pairs asked for, in NMI_SYSCTL_KEYS order. Throws a TypeError for a non-boolean. */
export function nmiSysctlPairs(o: NmiSysctls | undefined): Array<[string, '0' | '1']> {
  if (o === undefined) return [];
  const out: Array<[string, '0' | '1']> = [];
  for (const [field, key] of Object.entries(NMI_SYSCTL_KEYS) as Array<[keyof NmiSysctls, string]>) {
    const v = o[field];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') throw new TypeError(`nmiSysctls.${field} must be a boolean, got ${JSON.stringify(v)}`);
    out.push([key, v ? '1' : '0']);
  }
  for (const k of Object.keys(o)) if (!(k in NMI_SYSCTL_KEYS)) throw new TypeError(`nmiSysctls: unknown setting ${JSON.stringify(k)}`);
  return out;
}

/** The sysctl drop-in with the NMI settings asked for appended (unchanged when none is). */
export function withNmiSysctls(dropIn: string, o: NmiSysctls | undefined): string {
  const pairs = nmiSysctlPairs(o);
  if (pairs.length === 0) return dropIn;
  const lines = [
    '# eve-diag: what this kernel does with an NMI from the host (eve-diag nmi collector, QMP inject-nmi).',
    ...pairs.map(([k, v]) => `${k} = ${v}`),
  ];
  return `${dropIn}${dropIn === '' || dropIn.endsWith('\n') ? '' : '\n'}${lines.join('\n')}\n`;
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
