import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { existsSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { nmiOption, readInstallAssets } from '../bake/assets.js';
import { repoRoot } from '../util/repo-root.js';
import { cronSchedule } from '../bake/cloud-init.js';
import { BakeInputError, bakeImage, describePlan, IMAGE_FORMATS, INIT_SYSTEMS, type ImageFormat, type InitSystem } from '../bake/image.js';
import { SymbolTable } from '../host-reader/symbols/system-map.js';
import { UsageError } from './usage-error.js';

export interface BakeImageFlags {
  image?: string;
  format?: string;
  sh?: boolean;
  period: string;
  markPeriod: string;
  partition: string;
  init: string;
  node: string;
  bundle?: string;
  nmiPanic?: boolean;
  nmiWatchdog?: boolean;
  systemMap?: string;
}

function seconds(flag: string, v: string, min: number, max: number): number {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(flag, v, `seconds between ${min} and ${max}`);
  }
  return Number(v);
}

/** A path that needs no quoting in a unit's ExecStart or a shell variable: absolute, plain characters. */
/** A host file to write: its directory must exist; absolute after resolving. */
function hostPath(flag: string, v: string): string {
  if (v === '') throw new UsageError(flag, v, 'a file to write');
  const abs = resolve(v);
  const parent = dirname(abs);
  if (!existsSync(parent) || !statSync(parent).isDirectory()) throw new UsageError(flag, v, `its directory ${parent} does not exist`);
  if (existsSync(abs) && !statSync(abs).isFile()) throw new UsageError(flag, v, 'exists and is not a regular file');
  return abs;
}

function plainPath(flag: string, v: string): string {
  if (!/^\/[A-Za-z0-9._+/-]{1,255}$/.test(v) || v.split('/').includes('..')) {
    throw new UsageError(flag, v, 'an absolute path of letters, digits and . _ + - /');
  }
  return v;
}

/** Flag checks that need no file or tool; throws UsageError (exit 2). */
export function validateBakeImageFlags(flags: BakeImageFlags) {
  if (flags.image === undefined || flags.image === '') throw new UsageError('--image', flags.image, 'the disk image to write the agent into (required)');
  const mode: 'node' | 'sh' = flags.sh === true ? 'sh' : 'node';
  if (flags.format !== undefined && !(IMAGE_FORMATS as readonly string[]).includes(flags.format)) {
    throw new UsageError('--format', flags.format, `one of ${IMAGE_FORMATS.join(', ')} (default: what qemu-img finds)`);
  }
  const periodS = seconds('--period', flags.period, 0.1, 3600);
  const markPeriodS = seconds('--mark-period', flags.markPeriod, 1, 86_400);
  if (mode === 'sh' && cronSchedule(markPeriodS) === undefined) {
    throw new UsageError('--mark-period', flags.markPeriod, 'with --sh marks come from cron: whole minutes dividing an hour (60, 120, 300, 600, 900, 1800...) or whole hours dividing a day');
  }
  let partition: number | 'auto';
  if (flags.partition === 'auto') partition = 'auto';
  else if (/^[1-9][0-9]{0,2}$/.test(flags.partition) && Number(flags.partition) <= 128) partition = Number(flags.partition);
  else throw new UsageError('--partition', flags.partition, 'a partition number 1-128 or auto');
  if (flags.init !== 'auto' && !(INIT_SYSTEMS as readonly string[]).includes(flags.init)) {
    throw new UsageError('--init', flags.init, `auto or one of ${INIT_SYSTEMS.join(', ')}`);
  }
  if (mode === 'sh' && flags.bundle !== undefined) throw new UsageError('--bundle', flags.bundle, 'the POSIX-sh agent needs no bundle (drop --sh)');
  return {
    image: flags.image,
    format: flags.format as ImageFormat | undefined,
    mode,
    periodS,
    markPeriodS,
    partition,
    init: flags.init === 'auto' ? undefined : (flags.init as InitSystem),
    nodePath: plainPath('--node', flags.node),
    ...nmiOption(flags),
    ...(flags.systemMap === undefined ? {} : { systemMapOut: hostPath('--system-map', flags.systemMap) }),
  };
}

export async function bakeImageCommand(flags: BakeImageFlags, out: (s: string) => void, err: (s: string) => void): Promise<void> {
  const v = validateBakeImageFlags(flags);
  const readBundle = async () => {
    const path = flags.bundle ?? join(repoRoot(), 'dist', 'eve-diag-agent.js');
    try {
      return await readFile(path, 'utf8');
    } catch (e) {
      const why = `cannot read the agent bundle ${path} (${(e as { code?: string }).code ?? (e as Error).message})`;
      if (flags.bundle !== undefined) throw new UsageError('--bundle', flags.bundle, why, { cause: e });
      throw new Error(`${why}: run \`npm run build:agent\` or pass --bundle FILE`, { cause: e });
    }
  };
  try {
    const checkSystemMap = (data: Buffer) => SymbolTable.parse(data).stats.textSymbols;
    const r = await bakeImage({ ...v, readBundle, checkSystemMap, assets: await readInstallAssets(), progress: (l) => err(`eve-diag: bake image: ${l}`) });
    for (const l of describePlan(r.plan)) out(l);
    if (r.systemMap !== undefined && 'path' in r.systemMap) out(`${r.systemMap.path} <- ${r.systemMap.from} (${r.systemMap.textSymbols} text symbols)`);
  } catch (e) {
    if (e instanceof BakeInputError) throw new UsageError(e.field, e.value, e.reason, { cause: e });
    throw e;
  }
}

export function register(bake: Command, out: (s: string) => void, err: (s: string) => void): void {
  bake
    .command('image')
    .description('write the guest agent, its service (enabled) and kernel.sysrq=1 into a disk image, offline (libguestfs)')
    .option('--image <disk>', 'the disk image to change (raw or qcow2; not in use by a running VM)')
    .option('--format <fmt>', `image format: ${IMAGE_FORMATS.join(', ')} (default: what qemu-img finds)`)
    .option('--sh', 'install the POSIX-sh agent (heartbeat service + cron marks) instead of the Node agent')
    .option('--period <seconds>', 'heartbeat period, 0.1 to 3600', '1')
    .option('--mark-period <seconds>', 'mark period (with --sh: a cron schedule, whole minutes)', '60')
    .option('--partition <n>', 'the root filesystem: partition number, or auto (the one filesystem with /etc and an init)', 'auto')
    .option('--init <init>', `the image's init: auto, ${INIT_SYSTEMS.join(', ')}`, 'auto')
    .option('--node <path>', 'Node binary the service runs (Node mode)', '/usr/bin/node')
    .option('--bundle <file>', 'the agent bundle (default dist/eve-diag-agent.js, from npm run build:agent)')
    .option('--system-map <file>', 'also copy the image kernel\'s System.map (the newest /boot/System.map-*) to this host file, for the gdb-stacks collector (a warning when it is missing or Debian\'s placeholder)')
    .option('--nmi-panic', 'set kernel.unknown_nmi_panic=1: an NMI from the host (the nmi collector) panics the guest, with its backtraces (and a kdump where the guest has one)')
    .option('--nmi-watchdog', 'set kernel.nmi_watchdog=1: the hard-lockup detector (needs a virtual PMU: KVM, not TCG)')
    .action(async (flags: BakeImageFlags) => bakeImageCommand(flags, out, err));
}
