import { planQemuArgs, type QemuArgsSpec, type QemuPiece } from './model.js';

/** Escapes a value inside a QEMU `key=value,...` option (QemuOpts): a comma is written twice. */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

function keyValues(props: ReadonlyArray<readonly [string, string]>): string[] {
  return props.map(([k, v]) => `${k}=${qemuOptValue(v)}`);
}

/** The command-line words of one piece. Ids are validated and hold no comma; every path is escaped. */
export function pieceArgv(p: QemuPiece): string[] {
  switch (p.kind) {
    case 'acpitable':
      return ['-acpitable', `file=${qemuOptValue(p.file)}`];
    case 'chardev-socket': {
      const extra: Array<[string, string]> = [];
      if (p.mux) extra.push(['mux', 'on']);
      if (p.logfile !== undefined) extra.push(['logfile', p.logfile], ['logappend', 'on']);
      return ['-chardev', ['socket', `id=${p.id}`, ...keyValues([['path', p.path], ['server', 'on'], ['wait', 'off'], ...extra])].join(',')];
    }
    case 'qmp-monitor':
      return ['-mon', `chardev=${p.chardev},mode=control`];
    case 'qmp-shorthand':
      return ['-qmp', `unix:${qemuOptValue(p.path)},server=on,wait=off`];
    case 'serial':
      return ['-serial', `chardev:${p.chardev}`];
    case 'device':
      return ['-device', [p.driver, `id=${p.id}`, ...keyValues(p.props)].join(',')];
    case 'object':
      return ['-object', [p.qomType, `id=${p.id}`, ...keyValues(p.props)].join(',')];
    case 'gdb':
      return ['-gdb', `chardev:${p.chardev}`];
  }
}

/** The flags to append to a QEMU command line, one array element per argv word. */
export function qemuArgv(spec: QemuArgsSpec): string[] {
  return planQemuArgs(spec).flatMap(pieceArgv);
}

// Words made only of these need no quoting in a POSIX shell (no globbing, expansion, splitting or tilde).
const SHELL_SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** POSIX shell quoting of one word: as is when safe, else in single quotes (a quote becomes '\''). */
export function shellQuote(word: string): string {
  if (SHELL_SAFE.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The argv as one line for a POSIX shell: `qemu-system-x86_64 ... $LINE` after `eval`, or pasted. */
export function shellArgs(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** `argv` format: the flags shell-quoted on one line. */
export function renderShell(spec: QemuArgsSpec): string {
  return shellArgs(qemuArgv(spec));
}

/** `json` format: the flags as a JSON array of strings (one line), for programs that build an argv. */
export function renderJson(spec: QemuArgsSpec): string {
  return JSON.stringify(qemuArgv(spec));
}
