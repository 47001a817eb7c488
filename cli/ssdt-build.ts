import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { definitionBlockAsl } from '../acpi/asl/emit.js';
import { DEFAULTS, buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { AmlValueError } from '../acpi/errors.js';
import { ensureDir, writeFilesAtomically } from '../util/atomic-write.js';
import { UsageError } from './usage-error.js';

export interface SsdtBuildFlags {
  out: string;
  name: string;
  oemId: string;
  oemTableId: string;
  oemRevision: string;
  period: string;
  ring: string;
  nonce?: string;
  scope: string;
  kernelZone: string;
  agentZone: string;
  json?: boolean;
}

/** Map builder option names to the CLI flags users typed, so errors name what they can fix. */
const FLAG_OF: Record<string, string> = {
  oemId: '--oem-id',
  oemTableId: '--oem-table-id',
  oemRevision: '--oem-revision',
  kernelPeriodMs: '--period',
  ringLength: '--ring',
  nonce: '--nonce',
  scope: '--scope',
  kernelZone: '--kernel-zone',
  agentZone: '--agent-zone',
};

function intFlag(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(flag, text, 'expected a non-negative integer');
  return Number(text);
}

/** `--period` in seconds with at most one decimal (the _TZP unit is 0.1 s). */
export function parsePeriod(text: string): number {
  if (!/^\d+(\.\d)?$/.test(text)) throw new UsageError('--period', text, 'seconds with at most one decimal, e.g. 1 or 0.5');
  return Math.round(Number(text) * 1000);
}

export async function ssdtBuild(flags: SsdtBuildFlags, out: (s: string) => void): Promise<void> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(flags.name)) {
    throw new UsageError('--name', flags.name, 'a file base name: letters, digits, . _ -');
  }
  let nonce: bigint | undefined;
  if (flags.nonce !== undefined) {
    if (!/^(0x)?[0-9a-fA-F]{1,16}$/.test(flags.nonce)) throw new UsageError('--nonce', flags.nonce, 'up to 16 hex digits');
    nonce = BigInt('0x' + flags.nonce.replace(/^0x/, ''));
  }
  let built;
  try {
    built = buildDiagSsdt({
      oemId: flags.oemId,
      oemTableId: flags.oemTableId,
      oemRevision: intFlag('--oem-revision', flags.oemRevision),
      kernelPeriodMs: parsePeriod(flags.period),
      ringLength: intFlag('--ring', flags.ring),
      nonce,
      scope: flags.scope,
      kernelZone: flags.kernelZone,
      agentZone: flags.agentZone,
    });
  } catch (e) {
    if (e instanceof AmlValueError) {
      const flag = FLAG_OF[e.field] ?? e.field;
      throw new UsageError(flag, undefined, e.message.replace(/^[^:]+: /, ''), { cause: e });
    }
    throw e;
  }
  const dir = resolve(flags.out);
  const base = join(dir, flags.name);
  try {
    await ensureDir(dir);
    await writeFilesAtomically([
      { path: `${base}.aml`, data: built.aml },
      { path: `${base}.asl`, data: definitionBlockAsl(built.block, `${flags.name}.aml`) },
      { path: `${base}.json`, data: JSON.stringify(built.layout, null, 2) + '\n' },
    ]);
  } catch (e) {
    throw new UsageError('--out', flags.out, `cannot write there: ${(e as Error).message}`, { cause: e });
  }
  const l = built.layout;
  if (flags.json) {
    out(JSON.stringify({ aml: `${base}.aml`, asl: `${base}.asl`, layout: `${base}.json`, ...l }));
    return;
  }
  out(
    [
      `wrote ${base}.aml (${l.table.length} bytes), ${base}.asl, ${base}.json`,
      `  table    SSDT ${l.table.oemId}/${l.table.oemTableId} rev ${l.table.oemRevision}, sha256 ${l.table.sha256.slice(0, 16)}…`,
      `  region   offset ${l.region.offset} (0x${l.region.offset.toString(16)}), ${l.region.size} bytes, nonce ${l.nonce}`,
      `  kernel   ${l.kernel.zone} polled every ${l.kernel.periodMs} ms (_TZP ${l.kernel.periodDs}), ring of ${l.ring.length} intervals`,
      `  agent    ${l.agent.zone} (read its temp from userspace)`,
      `  use      qemu ... -acpitable file=${base}.aml`,
    ].join('\n'),
  );
}

export function register(ssdt: Command, out: (s: string) => void): void {
  ssdt
    .command('build')
    .description('generate the diagnostic SSDT: <name>.aml (load with -acpitable), <name>.asl, <name>.json (layout)')
    .requiredOption('-o, --out <dir>', 'output directory (created if missing)')
    .option('--name <name>', 'file base name', 'eve-diag-ssdt')
    .option('--oem-id <id>', 'OEM ID in the table header (1-6 of A-Z 0-9 _)', DEFAULTS.oemId)
    .option('--oem-table-id <id>', 'OEM table ID (1-8 of A-Z 0-9 _)', DEFAULTS.oemTableId)
    .option('--oem-revision <n>', 'OEM revision', String(DEFAULTS.oemRevision))
    .option('--period <seconds>', 'kernel heartbeat period, 0.1 to 3600 in steps of 0.1', String(DEFAULTS.kernelPeriodMs / 1000))
    .option('--ring <n>', 'kernel interval ring length, a power of two 4..256', String(DEFAULTS.ringLength))
    .option('--nonce <hex>', '64-bit nonce (random by default; set it for reproducible builds)')
    .option('--scope <path>', 'ACPI scope holding the zones', DEFAULTS.scope)
    .option('--kernel-zone <name>', 'kernel heartbeat thermal zone name', DEFAULTS.kernelZone)
    .option('--agent-zone <name>', 'agent heartbeat thermal zone name', DEFAULTS.agentZone)
    .option('--json', 'print the result as one JSON object')
    .action(async (flags: SsdtBuildFlags) => ssdtBuild(flags, out));
}
