import { readFile } from 'node:fs/promises';
import type { DiagLayout } from '../acpi/diag/layout.js';
import { FileBackedMemory } from './memory/file-backed.js';
import type { GuestMemory } from './memory/guest-memory.js';
import { PmemsaveMemory } from './memory/pmemsave.js';
import { XpMemory } from './memory/xp.js';
import { QmpClient } from './qmp/index.js';
import { HeartbeatPoller, RegionReader } from './reader.js';
import type { AssessOptions } from './region/assess.js';
import { parseMtreeLowRam } from './region/discover.js';

export type MemoryPath = 'pmemsave' | 'xp' | 'file';
export const MEMORY_PATHS: readonly MemoryPath[] = ['pmemsave', 'xp', 'file'];

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
  memory?: MemoryPath;
  /** For `memory: 'file'`: the memory-backend-file mem-path. */
  memPath?: string;
  assess?: AssessOptions;
  connectTimeoutMs?: number;
}

/** A connected reader: QMP client, guest memory, region reader, heartbeat poller. */
export interface Session {
  qmp: QmpClient;
  memory: GuestMemory;
  reader: RegionReader;
  poller: HeartbeatPoller;
  close(): Promise<void>;
}

export async function openSession(o: SessionOptions): Promise<Session> {
  const qmp = await QmpClient.connect({ path: o.qmpPath }, { timeoutMs: o.connectTimeoutMs ?? 5000 });
  let memory: GuestMemory;
  try {
    switch (o.memory ?? 'pmemsave') {
      case 'pmemsave':
        memory = await PmemsaveMemory.open(qmp, { label: o.qmpPath });
        break;
      case 'xp':
        memory = new XpMemory(qmp, o.qmpPath);
        break;
      case 'file': {
        if (!o.memPath) throw new SessionInputError('--mem-path', o.memPath, 'required with --memory file');
        const ram = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
        memory = await FileBackedMemory.open(
          o.memPath,
          ram.ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
        );
        break;
      }
    }
  } catch (e) {
    await qmp.close();
    throw e;
  }
  return sessionOf(qmp, memory, o.layout, o.assess);
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
