import { pieceArgv, shellArgs } from './argv.js';
import { QemuArgsError } from './errors.js';
import { planQemuArgs, type QemuArgsSpec, type QemuPiece } from './model.js';

/**
 * The `-readconfig` ini form, as EVE generates its VM configs: `[group "id"]` sections of `key = "value"`
 * lines. QEMU 7.2's parser (util/qemu-config.c), as tested here:
 *  - a value ends at the first `"`, with no escape (a path with a quote is silently cut short), and values
 *    are taken literally otherwise: commas are not doubled;
 *  - lines are read into a 1024-byte buffer: a longer line is split and its rest fails to parse;
 *  - a comment is a line starting with `#` in column 0, and a blank line must be empty (no spaces);
 *  - `[chardev]`, `[mon]`, `[device]` and `[object]` sections work; `-acpitable` and `-gdb` have none (an
 *    `[acpi]` section is accepted and ignored: one naming a missing file raised no error), so those stay on
 *    the command line. `-serial chardev:ID` becomes an `isa-serial` device on that chardev (EVE's form).
 */
export interface ReadconfigFragment {
  /** The ini text; its opening comment names the flags that must stay on the command line. */
  text: string;
  /** The flags with no -readconfig section: pass them on the QEMU command line with `-readconfig FILE`. */
  argv: string[];
}

/**
 * Longest line we write. QEMU 7.2 reads lines with fgets into 1024 bytes: a 1024-byte line failed to parse
 * (tested); 1023 bytes passed only because the newline left over then reads as an empty line. At 1022 bytes
 * every line is read whole, newline included.
 */
export const READCONFIG_LINE_MAX_BYTES = 1022;

interface Section {
  group: 'chardev' | 'mon' | 'device' | 'object';
  id: string;
  entries: Array<[string, string]>;
  /** A comment line written above the section. */
  note?: string;
}

function socketSection(id: string, path: string, mux: boolean, logfile?: string): Section {
  const entries: Array<[string, string]> = [['backend', 'socket'], ['path', path], ['server', 'on'], ['wait', 'off']];
  if (mux) entries.push(['mux', 'on']);
  if (logfile !== undefined) entries.push(['logfile', logfile], ['logappend', 'on']);
  return { group: 'chardev', id, entries };
}

const monSection = (chardev: string): Section => ({ group: 'mon', id: chardev, entries: [['mode', 'control'], ['chardev', chardev]] });

/** The sections of one piece, or undefined when it has no section form and stays on the command line. */
function sectionsOf(p: QemuPiece): Section[] | undefined {
  switch (p.kind) {
    case 'acpitable':
    case 'gdb':
      return undefined;
    case 'chardev-socket':
      return [socketSection(p.id, p.path, p.mux, p.logfile)];
    case 'qmp-monitor':
      return [monSection(p.chardev)];
    case 'qmp-shorthand':
      return [socketSection(p.id, p.path, false), monSection(p.id)];
    case 'serial':
      return [
        {
          group: 'device',
          id: p.deviceId,
          entries: [['driver', 'isa-serial'], ['chardev', p.chardev]],
          note: `The same as -serial chardev:${p.chardev}: the next free serial port (ttyS0 when it is the first).`,
        },
      ];
    case 'device':
      return [{ group: 'device', id: p.id, entries: [['driver', p.driver], ...p.props.map(([k, v]): [string, string] => [k, v])] }];
    case 'object':
      return [{ group: 'object', id: p.id, entries: [['qom-type', p.qomType], ...p.props.map(([k, v]): [string, string] => [k, v])] }];
  }
}

const byteLength = (s: string) => new TextEncoder().encode(s).length;

/** Spec paths that land in section values, with the field that holds them. */
function sectionPaths(spec: QemuArgsSpec): Array<[string, string]> {
  const out: Array<[string, string | undefined]> = [
    ['qmp.path', spec.qmp?.path],
    ['console.path', spec.console?.path],
    ['console.logfile', spec.console?.logfile],
    ['erst.path', spec.erst?.path],
    ['gdb.path', spec.gdb?.path],
    ['agentPort.path', spec.agentPort?.path],
  ];
  return out.filter((e): e is [string, string] => e[1] !== undefined);
}

// The longest key a path is written under (`  mem-path = "..."`).
const PATH_LINE_OVERHEAD = '  mem-path = ""'.length;

/** `readconfig` format. Throws QemuArgsError naming the field whose value the ini syntax cannot carry. */
export function renderReadconfig(spec: QemuArgsSpec): ReadconfigFragment {
  const pieces = planQemuArgs(spec);
  for (const [field, path] of sectionPaths(spec)) {
    if (path.includes('"')) throw new QemuArgsError(field, path, 'a -readconfig value cannot contain a double quote (QEMU ends the value there)');
    if (byteLength(path) + PATH_LINE_OVERHEAD > READCONFIG_LINE_MAX_BYTES) {
      throw new QemuArgsError(field, path, `too long for a -readconfig line (at most ${READCONFIG_LINE_MAX_BYTES} bytes)`);
    }
  }

  const argvOnly: string[][] = [];
  const sections: Section[] = [];
  for (const p of pieces) {
    const s = sectionsOf(p);
    if (s === undefined) argvOnly.push(pieceArgv(p));
    else sections.push(...s);
  }

  // One flag per comment line: only the table path can make one long (ids are short).
  const flagLines = argvOnly.map((words) => `#   ${shellArgs(words)}`);
  if (flagLines.some((line) => byteLength(line) > READCONFIG_LINE_MAX_BYTES)) {
    throw new QemuArgsError('acpiTable', spec.acpiTable, `too long for a -readconfig comment line (at most ${READCONFIG_LINE_MAX_BYTES} bytes)`);
  }
  const lines = [
    '# eve-diag qemu-args: QEMU -readconfig fragment (QEMU 7.2 syntax, as EVE generates it).',
    '# These options have no -readconfig section: pass them on the QEMU command line as well:',
    ...flagLines,
  ];
  for (const s of sections) {
    lines.push('');
    if (s.note !== undefined) lines.push(`# ${s.note}`);
    lines.push(`[${s.group} "${s.id}"]`, ...s.entries.map(([k, v]) => `  ${k} = "${v}"`));
  }
  for (const line of lines) {
    if (byteLength(line) > READCONFIG_LINE_MAX_BYTES) throw new Error(`readconfig line too long (bug): ${line.slice(0, 80)}`);
  }
  return { text: lines.join('\n') + '\n', argv: argvOnly.flat() };
}
