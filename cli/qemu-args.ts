import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { AGENT_PORT_NAME } from '../protocol/agent-ping.js';
import { EVE_DOM_RE, EVE_KVM_DIR, eveDomPaths } from '../host-reader/eve.js';
import { QEMU_ARGS_FORMATS, QemuArgsError, renderQemuArgs, type QemuArgsFormat, type QemuArgsSpec } from '../host-reader/qemu-args/index.js';
import { readTableFile } from './table-file.js';
import { UsageError } from './usage-error.js';

export interface QemuArgsFlags {
  table: string;
  qmp?: string;
  console?: string;
  consoleLog?: string;
  pvpanic?: boolean;
  vmcoreinfo?: boolean;
  erst?: string;
  gdb?: string;
  agentPort?: string;
  format: QemuArgsFormat;
  eveDom?: string;
}

/** Checks that `file` holds exactly one ACPI table (36-byte header, length = file size, checksum 0). */
async function checkTableFile(flag: string, typed: string, file: string): Promise<void> {
  const t = await readTableFile(flag, typed, file, { exact: true });
  if (!t.checksum.valid) {
    throw new UsageError(flag, typed, `not an ACPI table: checksum invalid (bytes sum to 0x${t.checksum.sum.toString(16).padStart(2, '0')}): a damaged file?`);
  }
}

/** A path flag: non-empty, made absolute against the current directory (QEMU may run elsewhere). */
function pathFlag(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value === '') throw new UsageError(flag, value, 'a path is required');
  return resolve(value);
}

/** The flag that sets each spec field, so a model error names what the user typed. */
const FLAG_OF: Record<string, string> = {
  acpiTable: '--table',
  'qmp.path': '--qmp',
  'console.path': '--console',
  'console.logfile': '--console-log',
  'erst.path': '--erst',
  'gdb.path': '--gdb',
  'agentPort.path': '--agent-port',
};

export async function qemuArgs(flags: QemuArgsFlags, out: (s: string) => void): Promise<void> {
  const fromEveDom = new Set<string>(); // spec fields filled from --eve-dom: their errors name --eve-dom
  let qmp = pathFlag('--qmp', flags.qmp);
  let cons = pathFlag('--console', flags.console);
  let consLog = pathFlag('--console-log', flags.consoleLog);
  if (flags.eveDom !== undefined) {
    if (!EVE_DOM_RE.test(flags.eveDom)) {
      throw new UsageError('--eve-dom', flags.eveDom, 'an EVE domain name: letters, digits, . _ - (one path segment)');
    }
    const eve = eveDomPaths(flags.eveDom);
    // Explicit flags win over the layout.
    if (qmp === undefined) {
      qmp = eve.qmp;
      fromEveDom.add('qmp.path');
    }
    if (cons === undefined) {
      cons = eve.console;
      fromEveDom.add('console.path');
    }
    if (consLog === undefined) {
      consLog = eve.consoleLog;
      fromEveDom.add('console.logfile');
    }
  }
  if (cons !== undefined && consLog === undefined) {
    throw new UsageError('--console-log', undefined, 'required with --console (the monitor reads the console from it)');
  }
  if (consLog !== undefined && cons === undefined) throw new UsageError('--console', undefined, 'required with --console-log');

  const table = pathFlag('--table', flags.table) as string;
  await checkTableFile('--table', flags.table, table);
  const erst = pathFlag('--erst', flags.erst);
  const gdb = pathFlag('--gdb', flags.gdb);
  const agentPort = pathFlag('--agent-port', flags.agentPort);
  const spec: QemuArgsSpec = {
    acpiTable: table,
    ...(qmp === undefined ? {} : { qmp: { path: qmp } }),
    ...(cons === undefined || consLog === undefined ? {} : { console: { path: cons, logfile: consLog } }),
    ...(flags.pvpanic === true ? { pvpanic: true } : {}),
    ...(flags.vmcoreinfo === true ? { vmcoreinfo: true } : {}),
    ...(erst === undefined ? {} : { erst: { path: erst } }),
    ...(gdb === undefined ? {} : { gdb: { path: gdb } }),
    ...(agentPort === undefined ? {} : { agentPort: { path: agentPort } }),
  };
  let text: string;
  try {
    text = renderQemuArgs(spec, flags.format);
  } catch (e) {
    if (e instanceof QemuArgsError) {
      const flag = FLAG_OF[e.field] ?? e.field;
      if (fromEveDom.has(e.field)) {
        throw new UsageError('--eve-dom', flags.eveDom, `its ${flag} path ${String(e.value)}: ${e.reason}`, { cause: e });
      }
      throw new UsageError(flag, e.value, e.reason, { cause: e });
    }
    throw e;
  }
  out(text.trimEnd());
}

const HELP_AFTER = `
Formats:
  argv        the flags on one line, quoted for a POSIX shell:
                eval "qemu-system-x86_64 ... $(eve-diag qemu-args --table t.aml)"
  json        the same flags as a JSON array of strings, for programs that build an argv
  readconfig  an ini fragment for QEMU -readconfig, the form EVE generates ([chardev "id"],
              [mon "id"], [device "id"], [object "id"] sections). -acpitable and -gdb have no
              section: its opening comment lists them, pass them on the command line as well.
              A value cannot contain a double quote there (QEMU's parser ends it).
  libvirt     a <qemu:commandline> element of <qemu:arg value="..."/> for a libvirt domain; the
              <domain> element must declare xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0".

--eve-dom NAME lays the sockets out as EVE does for its domain NAME:
  --qmp ${EVE_KVM_DIR}/NAME/qmp  --console ${EVE_KVM_DIR}/NAME/cons
  --console-log ${EVE_KVM_DIR}/NAME/cons.log (our choice: EVE has no fixed log path)
Explicit flags override it. Relative paths are made absolute against the current directory.
Commas in paths are doubled for QEMU; the table path may not contain ':'.`;

export function register(parent: Command, out: (s: string) => void): void {
  parent
    .command('qemu-args')
    .description('print the QEMU flags that load the diagnostic SSDT and add QMP, console, pvpanic, ERST, gdbstub, the agent port')
    .requiredOption('--table <file.aml>', 'the ACPI table to load with -acpitable (checked: header, length, checksum)')
    .option('--qmp <path>', 'add a QMP monitor on this unix socket')
    .option('--console <path>', 'add an EVE-style console: a mux=on chardev socket wired to a serial port')
    .option('--console-log <file>', 'the console chardev logfile (appended to; required with --console)')
    .option('--pvpanic', 'add -device pvpanic (the guest needs its pvpanic-mmio module)')
    .option('--vmcoreinfo', 'add -device vmcoreinfo: a memory dump (the memory-dump collector) then carries what makedumpfile and crash need (the guest needs its qemu_fw_cfg module)')
    .option('--erst <file>', 'add ACPI ERST backed by this file: it receives the panic log')
    .option('--gdb <path>', 'add a gdbstub on this unix socket (a connected gdb stops the VM)')
    .option('--agent-port <path>', `add a virtio-serial port ${AGENT_PORT_NAME} for the guest agent's PING/PONG responder, its host end on this unix socket (the agent-ping probe)`)
    .addOption(new Option('--format <format>', 'output format').choices(QEMU_ARGS_FORMATS).default('argv'))
    .option('--eve-dom <name>', `use the EVE layout ${EVE_KVM_DIR}/NAME/{qmp,cons,cons.log} for --qmp, --console, --console-log`)
    .addHelpText('after', HELP_AFTER)
    .exitOverride()
    .action(async (flags: QemuArgsFlags) => qemuArgs(flags, out));
}
