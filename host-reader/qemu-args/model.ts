import { AGENT_PORT_NAME } from '../../protocol/agent-ping.js';
import { QemuArgsError } from './errors.js';

/**
 * What to add to a QEMU launch so eve-diag can watch the VM: our ACPI table, and optionally the host-side
 * channels the monitor uses (QMP, an EVE-style console with a logfile, pvpanic, ERST, a gdbstub, the
 * agent's PING/PONG port on virtio-serial).
 * Every path is absolute: QEMU may run in another directory than the one that produced the flags.
 * Ids default to `evediag-*` names so the flags can be appended to an existing configuration (EVE's).
 */
export interface QemuArgsSpec {
  /** The ACPI table file, loaded with `-acpitable file=...`. May not contain `:` (QEMU splits file= there). */
  acpiTable: string;
  qmp?: QmpSpec;
  console?: ConsoleSpec;
  /** `-device pvpanic` (ISA). The guest needs its `pvpanic-mmio` module to report a panic (DESIGN fact 10). */
  pvpanic?: boolean | { id?: string };
  erst?: ErstSpec;
  /**
   * `-device vmcoreinfo`: a fw_cfg file where the guest kernel (its `qemu_fw_cfg` driver) writes its
   * VMCOREINFO (kernel version, symbol addresses, struct offsets); QEMU puts it in a
   * `dump-guest-memory` dump, so `makedumpfile` and `crash` can read the dump without the guest's vmlinux.
   * Off unless asked: QEMU allows one vmcoreinfo device per VM, and a configuration may have one already.
   */
  vmcoreinfo?: boolean | { id?: string };
  gdb?: GdbSpec;
  agentPort?: AgentPortSpec;
}

export interface QmpSpec {
  /** Unix socket QEMU listens on. */
  path: string;
  /** Chardev id; default `evediag-qmp`. */
  id?: string;
  /**
   * `mon` (default): `-chardev socket,...` plus `-mon chardev=ID,mode=control`, the form EVE's config uses;
   * `qmp`: the `-qmp unix:PATH,server=on,wait=off` shorthand. Both are the same chardev + monitor in
   * `-readconfig`, which has no shorthand.
   */
  style?: 'mon' | 'qmp';
}

export interface ConsoleSpec {
  /** Unix socket of the console: a `mux=on` chardev, so Ctrl-A b sends a BREAK (DESIGN fact 8). */
  path: string;
  /** The chardev logfile: what the monitor reads, passively (DESIGN fact 8). Appended to, never truncated. */
  logfile: string;
  /** Chardev id; default `evediag-cons`. */
  id?: string;
  /** Id of the serial device in `-readconfig` (an `isa-serial` device); default `evediag-serial`. */
  serialId?: string;
}

export interface ErstSpec {
  /** File backing the ERST store: after a guest panic it holds the compressed dmesg (DESIGN fact 9). */
  path: string;
  /** The memory backend's id; default `erstnvram`. */
  memdevId?: string;
  /** The acpi-erst device's id; default `evediag-erst`. */
  id?: string;
}

export interface GdbSpec {
  /** Unix socket of the gdbstub. A gdb client that connects stops the VM until it continues or detaches. */
  path: string;
  /** Chardev id; default `evediag-gdb`. */
  id?: string;
}

export interface AgentPortSpec {
  /** Unix socket of the host end of the guest agent's PING/PONG port (the `agent-ping` probe connects to it). */
  path: string;
  /** Chardev id; default `evediag-agent` (the port device is `<id>-port`). */
  id?: string;
  /** The virtio-serial port name the guest sees; default AGENT_PORT_NAME (`org.lfedge.eve.diag.0`). */
  name?: string;
  /** Id of the virtio-serial controller added for it; default `evediag-vser`. */
  busId?: string;
}

export const DEFAULT_IDS = {
  qmp: 'evediag-qmp',
  console: 'evediag-cons',
  serial: 'evediag-serial',
  pvpanic: 'evediag-pvpanic',
  erstMemdev: 'erstnvram',
  erst: 'evediag-erst',
  vmcoreinfo: 'evediag-vmcoreinfo',
  gdb: 'evediag-gdb',
  agentPort: 'evediag-agent',
  virtioSerial: 'evediag-vser',
} as const;

/** Size of the ERST backing file (DESIGN fact 9): eight 8 KiB records, acpi-erst's default record size. */
export const ERST_SIZE = 0x10000;

/** A unix socket path is at most 107 bytes (sun_path is 108 with its NUL); QEMU refuses longer ones. */
export const SOCKET_PATH_MAX_BYTES = 107;
/** PATH_MAX (4096) less the terminating NUL. */
export const PATH_MAX_BYTES = 4095;
/** QEMU 7.2's -readconfig parser keeps only the first 63 characters of a section id (tested). */
export const ID_MAX_CHARS = 63;

type Props = ReadonlyArray<readonly [string, string]>;

/**
 * One piece of the launch, independent of the output format. Each renderer maps every kind to its own form;
 * `acpitable` and `gdb` have no `-readconfig` section in QEMU 7.2 and stay on the command line.
 */
export type QemuPiece =
  /** `-acpitable file=FILE` */
  | { readonly kind: 'acpitable'; readonly file: string }
  /** `-chardev socket,id=ID,path=PATH,server=on,wait=off[,mux=on][,logfile=LOG,logappend=on]` */
  | { readonly kind: 'chardev-socket'; readonly id: string; readonly path: string; readonly mux: boolean; readonly logfile?: string }
  /** `-mon chardev=ID,mode=control` (a QMP monitor on that chardev) */
  | { readonly kind: 'qmp-monitor'; readonly chardev: string }
  /** `-qmp unix:PATH,server=on,wait=off`; `id` names its chardev and monitor where a section form needs one */
  | { readonly kind: 'qmp-shorthand'; readonly id: string; readonly path: string }
  /** `-serial chardev:ID`; `deviceId` names the equivalent `isa-serial` device */
  | { readonly kind: 'serial'; readonly chardev: string; readonly deviceId: string }
  /** `-device DRIVER,id=ID,k=v...` */
  | { readonly kind: 'device'; readonly driver: string; readonly id: string; readonly props: Props }
  /** `-object TYPE,id=ID,k=v...` */
  | { readonly kind: 'object'; readonly qomType: string; readonly id: string; readonly props: Props }
  /** `-gdb chardev:ID` */
  | { readonly kind: 'gdb'; readonly chardev: string };

const ID_RE = /^[A-Za-z][A-Za-z0-9_-]*$/;
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL_RE = /[\x00-\x1f\x7f]/;

function byteLength(s: string): number {
  return new TextEncoder().encode(s).length;
}

function checkId(field: string, value: unknown): string {
  if (typeof value !== 'string' || !ID_RE.test(value)) {
    throw new QemuArgsError(field, value, 'an id is a letter followed by letters, digits, _ or -');
  }
  if (value.length > ID_MAX_CHARS) throw new QemuArgsError(field, value, `an id is at most ${ID_MAX_CHARS} characters`);
  return value;
}

function checkPath(field: string, value: unknown, kind: 'file' | 'socket'): string {
  if (typeof value !== 'string' || value === '') throw new QemuArgsError(field, value, 'a path is required');
  if (!value.startsWith('/')) throw new QemuArgsError(field, value, 'must be an absolute path (QEMU may run in another directory)');
  // NUL cannot reach argv; a newline or other control character would break the readconfig and libvirt forms.
  if (CONTROL_RE.test(value)) throw new QemuArgsError(field, value, 'control characters are not allowed in a path');
  if (value.endsWith('/')) throw new QemuArgsError(field, value, 'must name a file, not a directory');
  const max = kind === 'socket' ? SOCKET_PATH_MAX_BYTES : PATH_MAX_BYTES;
  if (byteLength(value) > max) {
    throw new QemuArgsError(field, value, `at most ${max} bytes${kind === 'socket' ? ' (the unix socket address limit)' : ''}`);
  }
  return value;
}

/** Tracks ids per QEMU namespace (chardev, device, object) and every path, so collisions name the field. */
class Registry {
  private readonly ids = new Map<string, string>(); // "namespace:id" -> field
  private readonly paths = new Map<string, string>(); // path -> field

  id(namespace: 'chardev' | 'device' | 'object', field: string, id: string): void {
    const key = `${namespace}:${id}`;
    const other = this.ids.get(key);
    if (other !== undefined) throw new QemuArgsError(field, id, `the ${namespace} id is already used by ${other}`);
    this.ids.set(key, field);
  }

  path(field: string, path: string): void {
    const other = this.paths.get(path);
    if (other !== undefined) throw new QemuArgsError(field, path, `the same path as ${other}`);
    this.paths.set(path, field);
  }
}

function optionalObject<T extends object>(field: string, value: unknown): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new QemuArgsError(field, value, 'expected an object');
  return value as T;
}

/** Validates a spec and resolves its defaults into the pieces of the launch, in command-line order. */
export function planQemuArgs(spec: QemuArgsSpec): QemuPiece[] {
  const reg = new Registry();
  const pieces: QemuPiece[] = [];

  const file = checkPath('acpiTable', spec.acpiTable, 'file');
  // QEMU splits -acpitable file= at ':' and concatenates the files (tested with 7.2).
  if (file.includes(':')) throw new QemuArgsError('acpiTable', file, "may not contain ':' (QEMU reads file=A:B as two files)");
  reg.path('acpiTable', file);
  pieces.push({ kind: 'acpitable', file });

  const qmp = optionalObject<QmpSpec>('qmp', spec.qmp);
  if (qmp) {
    const path = checkPath('qmp.path', qmp.path, 'socket');
    const id = checkId('qmp.id', qmp.id ?? DEFAULT_IDS.qmp);
    const style = qmp.style ?? 'mon';
    if (style !== 'mon' && style !== 'qmp') throw new QemuArgsError('qmp.style', style, "either 'mon' or 'qmp'");
    reg.path('qmp.path', path);
    reg.id('chardev', 'qmp.id', id);
    if (style === 'mon') pieces.push({ kind: 'chardev-socket', id, path, mux: false }, { kind: 'qmp-monitor', chardev: id });
    else pieces.push({ kind: 'qmp-shorthand', id, path });
  }

  const cons = optionalObject<ConsoleSpec>('console', spec.console);
  if (cons) {
    const path = checkPath('console.path', cons.path, 'socket');
    const logfile = checkPath('console.logfile', cons.logfile, 'file');
    const id = checkId('console.id', cons.id ?? DEFAULT_IDS.console);
    const deviceId = checkId('console.serialId', cons.serialId ?? DEFAULT_IDS.serial);
    reg.path('console.path', path);
    reg.path('console.logfile', logfile);
    reg.id('chardev', 'console.id', id);
    reg.id('chardev', 'console.id', `${id}-base`); // a mux=on chardev creates its backend as ID-base
    reg.id('device', 'console.serialId', deviceId);
    pieces.push({ kind: 'chardev-socket', id, path, mux: true, logfile }, { kind: 'serial', chardev: id, deviceId });
  }

  if (spec.pvpanic !== undefined && spec.pvpanic !== false) {
    const o = spec.pvpanic === true ? {} : optionalObject<{ id?: string }>('pvpanic', spec.pvpanic);
    const id = checkId('pvpanic.id', o?.id ?? DEFAULT_IDS.pvpanic);
    reg.id('device', 'pvpanic.id', id);
    pieces.push({ kind: 'device', driver: 'pvpanic', id, props: [] });
  }

  const erst = optionalObject<ErstSpec>('erst', spec.erst);
  if (erst) {
    const path = checkPath('erst.path', erst.path, 'file');
    const memdev = checkId('erst.memdevId', erst.memdevId ?? DEFAULT_IDS.erstMemdev);
    const id = checkId('erst.id', erst.id ?? DEFAULT_IDS.erst);
    reg.path('erst.path', path);
    reg.id('object', 'erst.memdevId', memdev);
    reg.id('device', 'erst.id', id);
    // share=on: the guest's writes must reach the file, not a private copy (DESIGN fact 9).
    const size = `0x${ERST_SIZE.toString(16)}`;
    pieces.push(
      { kind: 'object', qomType: 'memory-backend-file', id: memdev, props: [['mem-path', path], ['size', size], ['share', 'on']] },
      { kind: 'device', driver: 'acpi-erst', id, props: [['memdev', memdev]] },
    );
  }

  if (spec.vmcoreinfo !== undefined && spec.vmcoreinfo !== false) {
    const o = spec.vmcoreinfo === true ? {} : optionalObject<{ id?: string }>('vmcoreinfo', spec.vmcoreinfo);
    const id = checkId('vmcoreinfo.id', o?.id ?? DEFAULT_IDS.vmcoreinfo);
    reg.id('device', 'vmcoreinfo.id', id);
    pieces.push({ kind: 'device', driver: 'vmcoreinfo', id, props: [] });
  }

  const gdb = optionalObject<GdbSpec>('gdb', spec.gdb);
  if (gdb) {
    const path = checkPath('gdb.path', gdb.path, 'socket');
    const id = checkId('gdb.id', gdb.id ?? DEFAULT_IDS.gdb);
    reg.path('gdb.path', path);
    reg.id('chardev', 'gdb.id', id);
    pieces.push({ kind: 'chardev-socket', id, path, mux: false }, { kind: 'gdb', chardev: id });
  }

  const agent = optionalObject<AgentPortSpec>('agentPort', spec.agentPort);
  if (agent) {
    const path = checkPath('agentPort.path', agent.path, 'socket');
    const id = checkId('agentPort.id', agent.id ?? DEFAULT_IDS.agentPort);
    const busId = checkId('agentPort.busId', agent.busId ?? DEFAULT_IDS.virtioSerial);
    const name = agent.name ?? AGENT_PORT_NAME;
    if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) {
      throw new QemuArgsError('agentPort.name', name, 'a virtio-serial port name: letters, digits, . _ - (at most 63)');
    }
    reg.path('agentPort.path', path);
    reg.id('chardev', 'agentPort.id', id);
    reg.id('device', 'agentPort.busId', busId);
    reg.id('device', 'agentPort.id', `${id}-port`);
    pieces.push(
      { kind: 'device', driver: 'virtio-serial-pci', id: busId, props: [] },
      { kind: 'chardev-socket', id, path, mux: false },
      { kind: 'device', driver: 'virtserialport', id: `${id}-port`, props: [['bus', `${busId}.0`], ['chardev', id], ['name', name]] },
    );
  }
  return pieces;
}
