import { readFile } from 'node:fs/promises';
import type { DiagLayout } from '../acpi/diag/layout.js';
import { isBridgedSocket } from './libvirt/bridged-sockets.js';
import { FileBackedMemory } from './memory/file-backed.js';
import type { GuestMemory } from './memory/guest-memory.js';
import { PmemsaveMemory } from './memory/pmemsave.js';
import { ProcMemError, ProcMemory } from './memory/procmem.js';
import { XpMemory } from './memory/xp.js';
import { QmpClient } from './qmp/index.js';
import { resolveQemuPid, type QemuPid } from './qemu-pid.js';
import { HeartbeatPoller, RegionReader } from './reader.js';
import type { AssessOptions } from './region/assess.js';
import { parseMtreeLowRam } from './region/discover.js';

/**
 * How guest memory is read: `procmem` (`/proc/<qemu pid>/mem`, no QMP per read), `pmemsave` (QMP),
 * `xp` (HMP), `file` (a memory-backend-file), or `auto` (the default): procmem where this process may
 * read QEMU's memory, else pmemsave.
 */
export type MemoryPath = 'auto' | 'procmem' | 'pmemsave' | 'xp' | 'file';
export const MEMORY_PATHS: readonly MemoryPath[] = ['auto', 'procmem', 'pmemsave', 'xp', 'file'];
export const DEFAULT_MEMORY_PATH: MemoryPath = 'auto';

/** Something the user gave us is not right (flag, file): the CLI maps it to exit code 2. */
export class SessionInputError extends Error {
  override name = 'SessionInputError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${field}: ${reason} (got ${JSON.stringify(value)})`, options);
  }
}

/** Read and check a layout JSON written by `ssdt build`. */
export async function loadLayout(path: string): Promise<DiagLayout> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new SessionInputError('--layout', path, `cannot read: ${(e as Error).message}`, { cause: e });
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new SessionInputError('--layout', path, `not JSON: ${(e as Error).message}`, { cause: e });
  }
  const l = j as Partial<DiagLayout>;
  const ok =
    l.format === 'eve-diag-ssdt-layout' &&
    l.layoutVersion === 1 &&
    typeof l.nonce === 'string' &&
    /^[0-9a-f]{16}$/.test(l.nonce) &&
    typeof l.region?.offset === 'number' &&
    typeof l.table?.length === 'number' &&
    typeof l.ring?.length === 'number' &&
    typeof l.kernel?.periodMs === 'number';
  if (!ok) throw new SessionInputError('--layout', path, 'not an eve-diag layout (from `eve-diag ssdt build`, layout version 1)');
  return l as DiagLayout;
}

export interface SessionOptions {
  qmpPath: string;
  layout: DiagLayout;
  /** Default DEFAULT_MEMORY_PATH (`auto`). */
  memory?: MemoryPath;
  /** For `memory: 'file'`: the memory-backend-file mem-path. */
  memPath?: string;
  /** For procmem/auto: the QEMU pid, else a pidfile, else the QMP socket's owner (host-reader/qemu-pid.ts). */
  pid?: number;
  pidFile?: string;
  assess?: AssessOptions;
  connectTimeoutMs?: number;
  /** Told which memory path `auto` chose and why (one line). */
  log?: (line: string) => void;
}

/** A connected reader: QMP client, guest memory, region reader, heartbeat poller. */
export interface Session {
  qmp: QmpClient;
  memory: GuestMemory;
  reader: RegionReader;
  poller: HeartbeatPoller;
  /** The path in use and why (set by openSession). */
  memoryChoice?: MemoryChoice;
  close(): Promise<void>;
}

/** `--memory procmem` was asked for and cannot work here; `reason` says why (`EACCES opening /proc/1/mem (ptrace_scope 1)`). */
export class ProcmemUnavailableError extends Error {
  override name = 'ProcmemUnavailableError';
  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`--memory procmem: unavailable: ${reason}`, options);
  }
}

export interface MemoryChoice {
  /** The path in use: never `auto`. */
  path: Exclude<MemoryPath, 'auto'>;
  /** For procmem: the QEMU pid and how it was found. */
  pid?: QemuPid;
  /** One line for logs: `procmem: pid 123 (owner of /run/.../qmp ...)`, `procmem unavailable: ...: using pmemsave`. */
  note: string;
}

export interface OpenMemoryOptions {
  memory?: MemoryPath;
  qmpPath: string;
  memPath?: string;
  pid?: number;
  pidFile?: string;
  signal?: AbortSignal;
}

function shortReason(e: unknown): string {
  if (e instanceof ProcMemError) return e.reason;
  return (e as Error)?.message ?? String(e);
}

/**
 * procmem with its checks: the pid resolves, `/proc/<pid>/mem` opens, and a test read of one page of
 * low RAM (just below its top) succeeds. Rejects with ProcmemUnavailableError saying why.
 */
async function openProcmem(qmp: QmpClient, o: OpenMemoryOptions): Promise<{ memory: ProcMemory; pid: QemuPid }> {
  let pid: QemuPid;
  try {
    pid = await resolveQemuPid({ qmpPath: o.qmpPath, ...(o.pid !== undefined ? { pid: o.pid } : {}), ...(o.pidFile !== undefined ? { pidFile: o.pidFile } : {}) });
  } catch (e) {
    throw new ProcmemUnavailableError(shortReason(e), { cause: e });
  }
  let memory: ProcMemory;
  try {
    memory = await ProcMemory.open(qmp, { pid: pid.pid, label: `${o.qmpPath} pid ${pid.pid}` });
  } catch (e) {
    if (o.signal?.aborted) throw e;
    throw new ProcmemUnavailableError(shortReason(e), { cause: e });
  }
  try {
    // The low RAM range that holds 1 MiB and up (where the table is), read one page below its end.
    const low = memory.ranges.filter((r) => r.start >= 0x10_0000n && r.end <= 1n << 32n).sort((a, b) => (a.end > b.end ? -1 : 1));
    const r = low[0] ?? memory.ranges[0];
    if (r !== undefined) await memory.read(r.end - 4096n > r.start ? r.end - 4096n : r.start, 64, o.signal ? { signal: o.signal } : {});
  } catch (e) {
    await memory.close().catch(() => undefined);
    if (o.signal?.aborted) throw e;
    throw new ProcmemUnavailableError(`test read: ${shortReason(e)}`, { cause: e });
  }
  return { memory, pid };
}

/**
 * Open guest memory by path over a connected QMP client. `auto` tries procmem and falls back to
 * pmemsave, saying why in `choice.note`; `procmem` rejects with ProcmemUnavailableError; `file`
 * without `memPath` is a SessionInputError.
 */
export async function openGuestMemory(qmp: QmpClient, o: OpenMemoryOptions): Promise<{ memory: GuestMemory; choice: MemoryChoice }> {
  const path = o.memory ?? DEFAULT_MEMORY_PATH;
  switch (path) {
    case 'auto':
    case 'procmem': {
      try {
        const { memory, pid } = await openProcmem(qmp, o);
        return { memory, choice: { path: 'procmem', pid, note: `procmem: QEMU pid ${pid.pid} from ${pid.detail}` } };
      } catch (e) {
        if (path === 'procmem' || !(e instanceof ProcmemUnavailableError)) throw e;
        // libvirt's QEMU runs as its own user, confined: it cannot write pmemsave's file into our
        // private directory. HMP xp goes through libvirt like any command.
        if (isBridgedSocket(o.qmpPath)) {
          return { memory: new XpMemory(qmp, o.qmpPath), choice: { path: 'xp', note: `procmem unavailable: ${e.reason}: using xp (a libvirt domain: its QEMU cannot write pmemsave's file into our directory)` } };
        }
        const memory = await PmemsaveMemory.open(qmp, { label: o.qmpPath });
        return { memory, choice: { path: 'pmemsave', note: `procmem unavailable: ${e.reason}: using pmemsave` } };
      }
    }
    case 'pmemsave':
      return { memory: await PmemsaveMemory.open(qmp, { label: o.qmpPath }), choice: { path, note: 'pmemsave (asked for)' } };
    case 'xp':
      return { memory: new XpMemory(qmp, o.qmpPath), choice: { path, note: 'xp (asked for)' } };
    case 'file': {
      if (!o.memPath) throw new SessionInputError('--mem-path', o.memPath, 'required with --memory file');
      const ram = parseMtreeLowRam(await qmp.hmp('info mtree -f', o.signal ? { signal: o.signal } : {}));
      const memory = await FileBackedMemory.open(
        o.memPath,
        ram.ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
      );
      return { memory, choice: { path, note: `file ${o.memPath} (asked for)` } };
    }
  }
}

export async function openSession(o: SessionOptions): Promise<Session> {
  const qmp = await QmpClient.connect({ path: o.qmpPath }, { timeoutMs: o.connectTimeoutMs ?? 5000 });
  let opened: { memory: GuestMemory; choice: MemoryChoice };
  try {
    opened = await openGuestMemory(qmp, o);
  } catch (e) {
    await qmp.close();
    throw e;
  }
  if ((o.memory ?? DEFAULT_MEMORY_PATH) === 'auto') o.log?.(opened.choice.note);
  const session = sessionOf(qmp, opened.memory, o.layout, o.assess);
  session.memoryChoice = opened.choice;
  return session;
}

/** A session over a connected QMP client and guest memory; it owns both from now on. */
export function sessionOf(qmp: QmpClient, memory: GuestMemory, layout: DiagLayout, assess?: AssessOptions): Session {
  const reader = new RegionReader(qmp, memory, layout);
  const poller = new HeartbeatPoller(qmp, reader, assess);
  return {
    qmp,
    memory,
    reader,
    poller,
    async close() {
      poller.close();
      try {
        await memory.close?.();
      } finally {
        // QMP is closed whatever the memory's close did: QEMU serves one QMP client at a time.
        await qmp.close();
      }
    },
  };
}
