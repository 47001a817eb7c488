/**
 * Which process is the QEMU behind a QMP socket: the `procmem` memory path (memory/procmem.ts) reads
 * `/proc/<that pid>/mem`. Tried in this order, first answer wins:
 *
 * 1. **An explicit pid** (monitor config `params.pid`): the user knows best; it is only checked to be a
 *    live process.
 * 2. **A pidfile**: `params.pidFile`, else EVE's own when the QMP socket is an EVE domain's
 *    (`/run/hypervisor/kvm/<dom>/qmp` or `listener.qmp` -> `<dom>/pid`, written by QEMU's `-pidfile`;
 *    host-reader/eve.ts). QEMU's own statement, one small read. A pidfile outlives its QEMU and a pid can
 *    be reused, so when the QMP socket's owner can be checked (below) a pid that does not hold the socket
 *    is rejected as stale and the next way is tried. A libvirt domain's socket is eve-diag's own bridge
 *    (host-reader/libvirt/qmp-bridge.ts, libvirt/bridged-sockets.ts): its pidfile is libvirt's
 *    (`/run/libvirt/qemu/<name>.pid`), taken without that check.
 * 3. **The owner of the QMP socket**: the listening socket bound at that path in `/proc/net/unix` (its
 *    inode), then the process with an fd `socket:[inode]` in `/proc/<pid>/fd`. Works anywhere with no
 *    configuration (a hand-started QEMU, the tests) but walks every process's fds, and needs the
 *    rights to read them, which are the ptrace rights procmem needs anyway. Node has no SO_PEERCRED
 *    (`getsockopt` on the connected socket), hence the walk. Only the host's network namespace's sockets
 *    are in `/proc/net/unix`: run in QEMU's.
 *
 * Every file is read with a size bound and every value checked; failures say what was tried.
 */
import { open, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { EVE_DOM_RE, EVE_KVM_DIR, eveDomPaths } from './eve.js';
import { isBridgedSocket } from './libvirt/bridged-sockets.js';

export type QemuPidSource = 'explicit' | 'pidfile' | 'socket-owner';

export interface QemuPid {
  pid: number;
  source: QemuPidSource;
  /** How it was found, for logs: `pidfile /run/hypervisor/kvm/x/pid`, `owner of /tmp/q.sock (inode 123)`. */
  detail: string;
}

/** No way gave a pid; `attempts` says why each failed. */
export class QemuPidError extends Error {
  override name = 'QemuPidError';
  constructor(
    readonly qmpPath: string,
    readonly attempts: readonly string[],
  ) {
    super(`cannot tell the QEMU pid behind ${qmpPath}: ${attempts.join('; ')}`);
  }
}

export interface ResolveQemuPidOptions {
  qmpPath: string;
  pid?: number;
  pidFile?: string;
  /** Default `/proc` (tests point it elsewhere). */
  procRoot?: string;
  /** Where EVE keeps its domains; default EVE_KVM_DIR. */
  eveRoot?: string;
}

export const PID_MAX = 4_194_304; // PID_MAX_LIMIT on 64-bit Linux
const PIDFILE_MAX = 64;
const NET_UNIX_MAX = 64 * 1024 * 1024;
const STAT_MAX = 4096;
const MAX_FDS_PER_PROCESS = 1_048_576;

/** Reads at most `max` bytes of `path`; a longer file is an error (a /proc file reports size 0). */
export async function readBounded(path: string, max: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(64 * 1024, max + 1 - total));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      if (total > max) throw new RangeError(`${path}: longer than ${max} bytes`);
    }
    return Buffer.concat(chunks, total);
  } finally {
    await fh.close();
  }
}

function checkPid(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > PID_MAX) throw new RangeError(`${field}: a pid 1..${PID_MAX} (got ${String(v)})`);
  return v;
}

/** A pidfile: one decimal pid, an optional newline, nothing else. */
export async function readPidFile(path: string): Promise<number> {
  const text = (await readBounded(path, PIDFILE_MAX)).toString('latin1');
  const m = /^\s*(\d{1,7})\s*$/.exec(text);
  if (m === null) throw new RangeError(`${path}: not a pid (${JSON.stringify(text.slice(0, 32))})`);
  return checkPid(path, Number(m[1]));
}

/** Is `pid` a live (not zombie) process? */
export async function processAlive(pid: number, procRoot = '/proc'): Promise<boolean> {
  try {
    const s = (await readBounded(`${procRoot}/${pid}/stat`, STAT_MAX)).toString('latin1');
    const close = s.lastIndexOf(')');
    const state = s.charAt(close + 2);
    return close > 0 && state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** EVE's pidfile for a QMP socket of an EVE domain (`<root>/<dom>/qmp` or `listener.qmp`), else undefined. */
export function evePidFileFor(qmpPath: string, root: string = EVE_KVM_DIR): string | undefined {
  const abs = resolve(qmpPath);
  const dir = dirname(abs);
  const dom = basename(dir);
  if (resolve(dirname(dir)) !== resolve(root) || !EVE_DOM_RE.test(dom)) return undefined;
  const p = eveDomPaths(dom, root);
  return abs === p.qmp || abs === p.listenerQmp ? p.pidfile : undefined;
}

/**
 * The inodes of the listening unix sockets bound at `path` in `/proc/net/unix` text (header line, then
 * `Num RefCount Protocol Flags Type St Inode Path`; listening = flag __SO_ACCEPTCON 0x10000, state 01).
 */
export function parseProcNetUnix(text: string, paths: readonly string[]): number[] {
  const want = new Set(paths);
  const out: number[] = [];
  for (const line of text.split('\n').slice(1)) {
    // The path is the rest of the line after the 7th field, and may contain spaces.
    const m = /^\s*[0-9a-fA-F]+: [0-9a-fA-F]{8} [0-9a-fA-F]{8} ([0-9a-fA-F]{8}) [0-9a-fA-F]{4} ([0-9a-fA-F]{2}) (\d{1,20})(?: (.*))?$/.exec(line);
    if (m === null) continue;
    const [, flags, st, inode, path] = m as unknown as [string, string, string, string, string | undefined];
    if (path === undefined || !want.has(path)) continue;
    if ((parseInt(flags, 16) & 0x10000) === 0 || st !== '01') continue;
    const n = Number(inode);
    if (Number.isSafeInteger(n) && n > 0) out.push(n);
  }
  return out;
}

/** The inode of the socket listening at `socketPath` (matched as given, absolute and real path), or undefined. */
export async function listeningSocketInode(socketPath: string, procRoot = '/proc'): Promise<number | undefined> {
  const names = new Set([socketPath, resolve(socketPath)]);
  const real = await realpath(socketPath).catch(() => undefined);
  if (real !== undefined) names.add(real);
  const text = (await readBounded(`${procRoot}/net/unix`, NET_UNIX_MAX)).toString('utf8');
  const inodes = [...new Set(parseProcNetUnix(text, [...names]))];
  if (inodes.length > 1) throw new RangeError(`${socketPath}: ${inodes.length} listening sockets bound at this path (inodes ${inodes.join(', ')})`);
  return inodes[0];
}

/** Does process `pid` hold `socket:[inode]`? undefined when its fds cannot be read (gone, no rights). */
export async function holdsSocket(pid: number, inode: number, procRoot = '/proc'): Promise<boolean | undefined> {
  const fdDir = `${procRoot}/${pid}/fd`;
  let fds: string[];
  try {
    fds = await readdir(fdDir);
  } catch {
    return undefined;
  }
  const want = `socket:[${inode}]`;
  for (const fd of fds.slice(0, MAX_FDS_PER_PROCESS)) {
    if (!/^\d{1,10}$/.test(fd)) continue;
    const link = await readlink(`${fdDir}/${fd}`).catch(() => undefined);
    if (link === want) return true;
  }
  return false;
}

/**
 * The processes holding `socket:[inode]` (walks `/proc/<pid>/fd`). `denied` counts the processes whose
 * fds could not be read.
 */
export async function socketHolders(inode: number, procRoot = '/proc'): Promise<{ pids: number[]; denied: number }> {
  const names = await readdir(procRoot);
  const pids: number[] = [];
  let denied = 0;
  for (const name of names) {
    if (!/^\d{1,7}$/.test(name)) continue;
    const pid = Number(name);
    const held = await holdsSocket(pid, inode, procRoot);
    if (held === undefined) {
      // Gone meanwhile, or not ours to look at.
      const st = await stat(`${procRoot}/${name}`).catch(() => undefined);
      if (st !== undefined) denied++;
    } else if (held) pids.push(pid);
  }
  return { pids, denied };
}

async function comm(pid: number, procRoot: string): Promise<string> {
  return (await readBounded(`${procRoot}/${pid}/comm`, 64).catch(() => Buffer.alloc(0))).toString('latin1').trim();
}

/** Resolve the QEMU pid behind `qmpPath` (see the module doc for the order and why). */
export async function resolveQemuPid(o: ResolveQemuPidOptions): Promise<QemuPid> {
  const procRoot = o.procRoot ?? '/proc';
  const attempts: string[] = [];
  if (o.pid !== undefined) {
    const pid = checkPid('pid', o.pid);
    if (await processAlive(pid, procRoot)) return { pid, source: 'explicit', detail: `pid ${pid} (configured)` };
    attempts.push(`configured pid ${pid}: no such process`);
    throw new QemuPidError(o.qmpPath, attempts);
  }
  // The socket's inode, for the stale-pidfile check and the owner walk.
  let inode: number | undefined;
  let inodeError: string | undefined;
  try {
    inode = await listeningSocketInode(o.qmpPath, procRoot);
    if (inode === undefined) inodeError = `no listening unix socket bound at ${o.qmpPath} in ${procRoot}/net/unix (another network namespace, or a relative bind path?)`;
  } catch (e) {
    inodeError = `${procRoot}/net/unix: ${(e as Error).message}`;
  }
  const pidFile = o.pidFile ?? evePidFileFor(o.qmpPath, o.eveRoot);
  if (pidFile !== undefined) {
    try {
      const pid = await readPidFile(pidFile);
      if (!(await processAlive(pid, procRoot))) {
        attempts.push(`pidfile ${pidFile}: pid ${pid} is not running`);
      } else if (inode !== undefined && (await holdsSocket(pid, inode, procRoot)) === false && !isBridgedSocket(o.qmpPath)) {
        attempts.push(`pidfile ${pidFile}: pid ${pid} does not hold the QMP socket (stale pidfile?)`);
      } else {
        return { pid, source: 'pidfile', detail: `pidfile ${pidFile}` };
      }
    } catch (e) {
      attempts.push(`pidfile ${pidFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (inode === undefined) {
    attempts.push(inodeError as string);
    throw new QemuPidError(o.qmpPath, attempts);
  }
  if (isBridgedSocket(o.qmpPath)) {
    attempts.push(`${o.qmpPath} is this process's own bridge (libvirt): only a pidfile tells QEMU's pid`);
    throw new QemuPidError(o.qmpPath, attempts);
  }
  const { pids, denied } = await socketHolders(inode, procRoot);
  let pid: number | undefined = pids.length === 1 ? pids[0] : undefined;
  if (pids.length > 1) {
    const qemus: number[] = [];
    for (const p of pids) if ((await comm(p, procRoot)).startsWith('qemu')) qemus.push(p);
    if (qemus.length === 1) pid = qemus[0];
    else attempts.push(`socket inode ${inode} is held by ${pids.length} processes (${pids.join(', ')}): which is QEMU is unclear`);
  }
  if (pid !== undefined) return { pid, source: 'socket-owner', detail: `owner of ${o.qmpPath} (socket inode ${inode})` };
  if (pids.length === 0) {
    attempts.push(`no process holds socket inode ${inode}${denied > 0 ? ` among those we may inspect (${denied} processes' fds not readable: ptrace rights needed)` : ''}`);
  }
  throw new QemuPidError(o.qmpPath, attempts);
}
