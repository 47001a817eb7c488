import type { Command } from 'commander';
import { definitionBlockAsl } from '../acpi/asl/emit.js';
import { decodeTable } from '../acpi/decode/decode.js';
import { TIMER_UNIT_NS } from '../acpi/diag/layout.js';
import { AcpiError } from '../acpi/errors.js';
import type { parseHeader } from '../acpi/table.js';
import { findRegion, intervalsNewestFirst, type DecodedRegion } from '../host-reader/region/decode.js';
import { readTableFile } from './table-file.js';
import { EXIT_FAILURE, ExitStatus } from './usage-error.js';

export interface InspectResult {
  file: string;
  header: ReturnType<typeof parseHeader>;
  checksum: { valid: boolean; sum: number };
  region: ({ offset: number } & DecodedRegion) | null;
  regionError?: string;
  asl?: string;
  decodeError?: string;
}

export async function ssdtInspect(file: string): Promise<InspectResult> {
  // A dump from guest memory may run past the table: the header's length says where it ends.
  const { header, table, checksum } = await readTableFile('FILE', file, file);
  const found = findRegion(table);
  const result: InspectResult = {
    file,
    header,
    checksum,
    region: found && 'region' in found ? { offset: found.offset, ...found.region } : null,
  };
  if (found && 'error' in found) result.regionError = found.error;
  try {
    result.asl = definitionBlockAsl(decodeTable(table).block);
  } catch (e) {
    if (!(e instanceof AcpiError)) throw e;
    result.decodeError = e.message;
  }
  return result;
}

const ms = (timerUnits: number) => ((timerUnits * TIMER_UNIT_NS) / 1e6).toFixed(1);

export function formatInspect(r: InspectResult): string {
  const h = r.header;
  const lines = [
    `table     ${h.signature} length ${h.length}, revision ${h.revision}, OEM ${h.oemId}/${h.oemTableId} rev ${h.oemRevision}, creator ${h.creatorId} ${h.creatorRevision}`,
    `checksum  ${r.checksum.valid ? 'valid' : `INVALID (bytes sum to 0x${r.checksum.sum.toString(16).padStart(2, '0')}, header says 0x${h.checksum.toString(16).padStart(2, '0')})`}`,
  ];
  const g = r.region;
  if (g) {
    const iv = intervalsNewestFirst(g);
    lines.push(
      `region    offset ${g.offset} (0x${g.offset.toString(16)}), ${g.regionSize} bytes, layout v${g.version}, nonce ${g.nonce}`,
      `  period  ${g.kernelPeriodDs * 100} ms, ring of ${g.ringLength}`,
      `  load    count ${g.loadCount}, Timer ${g.loadTimer}`,
      `  kernel  beats ${g.kernel.beats}, last Timer ${g.kernel.last}`,
      `  agent   beats ${g.agent.beats}, last Timer ${g.agent.last}`,
      `  ring    ${iv.length ? iv.map(ms).join(' ') + ' ms (newest first)' : 'empty'}`,
    );
  } else {
    lines.push(`region    ${r.regionError ? `not decoded: ${r.regionError}` : 'none (no eve-diag region in this table)'}`);
  }
  if (r.decodeError) lines.push(`AML       cannot decode: ${r.decodeError}`);
  else lines.push('', r.asl ?? '');
  return lines.join('\n');
}

export function register(ssdt: Command, out: (s: string) => void): void {
  ssdt
    .command('inspect')
    .description('print a table\'s header, checksum state, region layout and values, and its ASL (decoded from the AML)')
    .argument('<file>', 'an .aml file, or a dump of the table from guest memory')
    .option('--json', 'print one JSON object')
    .option('--no-asl', 'leave the ASL out')
    .action(async (file: string, flags: { json?: boolean; asl: boolean }) => {
      const r = await ssdtInspect(file);
      if (!flags.asl) delete r.asl;
      out(flags.json ? JSON.stringify(r, null, 2) : formatInspect(r));
      if (r.decodeError) throw new ExitStatus(EXIT_FAILURE);
    });
}
