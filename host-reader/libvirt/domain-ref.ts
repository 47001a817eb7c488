/**
 * A libvirt domain as eve-diag names it: the domain's name and the connection URI of the libvirt
 * daemon that runs it. eve-diag reads guest memory through /proc/<qemu pid>/mem, so the domain must run
 * on this host: only local URIs (`qemu:///system`, `qemu:///session`, their `qemu+unix` forms, with
 * an optional `?socket=` of the daemon) are accepted. Pure: no I/O.
 */
import { dirname, join } from 'node:path';

export interface LibvirtDomainRef {
  /** The domain's name (`virsh list --all`). */
  domain: string;
  /** The libvirt connection URI. */
  uri: string;
}

export const LIBVIRT_URI_DEFAULT = 'qemu:///system';
/** The system daemon's QEMU state directory, where it writes `<name>.pid` (libvirt's qemu driver). */
export const LIBVIRT_SYSTEM_QEMU_RUN_DIR = '/run/libvirt/qemu';

/** A domain name or URI that eve-diag will not use; `field` and `value` name the input. */
export class LibvirtRefError extends Error {
  override name = 'LibvirtRefError';
  constructor(
    readonly field: 'domain' | 'uri',
    readonly value: string,
    readonly reason: string,
  ) {
    super(`libvirt ${field} ${JSON.stringify(value)}: ${reason}`);
  }
}

/**
 * libvirt accepts nearly any name; eve-diag passes it to virsh as one argument (never through a shell)
 * and in a file name, so it refuses what would be read as an option, a path or a control character.
 */
export function checkDomainName(name: string): string {
  if (name.length === 0 || name.length > 200) throw new LibvirtRefError('domain', name, 'a domain name of 1..200 characters');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f/]/.test(name)) throw new LibvirtRefError('domain', name, 'must not contain "/" or control characters');
  if (name.startsWith('-')) throw new LibvirtRefError('domain', name, 'must not start with "-"');
  return name;
}

interface LocalUri {
  mode: 'system' | 'session';
  /** The daemon's socket, from `?socket=`. */
  socket?: string;
}

function parseLocalUri(uri: string): LocalUri {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new LibvirtRefError('uri', uri, 'not a URI (e.g. qemu:///system)');
  }
  if (u.protocol !== 'qemu:' && u.protocol !== 'qemu+unix:') {
    throw new LibvirtRefError('uri', uri, 'only qemu:// and qemu+unix:// URIs: the domain must run on this host (its memory is read through /proc)');
  }
  if (u.host !== '') throw new LibvirtRefError('uri', uri, 'names a remote host: the domain must run on this host (its memory is read through /proc)');
  if (u.pathname !== '/system' && u.pathname !== '/session') throw new LibvirtRefError('uri', uri, 'the path must be /system or /session');
  const socket = u.searchParams.get('socket');
  if (socket !== null && !socket.startsWith('/')) throw new LibvirtRefError('uri', uri, '?socket= must be an absolute path');
  return { mode: u.pathname === '/system' ? 'system' : 'session', ...(socket !== null ? { socket } : {}) };
}

/** Checks a domain reference; throws LibvirtRefError naming the field. */
export function checkDomainRef(ref: LibvirtDomainRef): LibvirtDomainRef {
  checkDomainName(ref.domain);
  parseLocalUri(ref.uri);
  return ref;
}

/**
 * Where libvirt's QEMU driver writes the domain's QEMU pid: `/run/libvirt/qemu/<name>.pid` for the
 * system daemon; `<runtime dir>/libvirt/qemu/run/<name>.pid` for a session daemon, the runtime dir
 * being the one that holds its socket (`?socket=<dir>/libvirt/libvirt-sock`) or `$XDG_RUNTIME_DIR`.
 */
export function libvirtPidFile(ref: LibvirtDomainRef, env: NodeJS.ProcessEnv = process.env): string {
  const { mode, socket } = parseLocalUri(ref.uri);
  const name = `${checkDomainName(ref.domain)}.pid`;
  if (mode === 'system') return join(socket !== undefined ? join(dirname(socket), 'qemu') : LIBVIRT_SYSTEM_QEMU_RUN_DIR, name);
  const libvirtRun = socket !== undefined ? dirname(socket) : join(env.XDG_RUNTIME_DIR ?? `/run/user/${process.getuid?.() ?? 0}`, 'libvirt');
  return join(libvirtRun, 'qemu', 'run', name);
}
