/**
 * Guest physical memory as the host reader sees it: a small Promise interface with several
 * implementations (QMP `pmemsave`, HMP `xp`, a memory-backend-file mapping, a sparse fake for tests).
 * Everything above it (table discovery, region polling) is written against this interface only.
 */

import type { QmpClient } from '../qmp/index.js';

export interface ReadOptions {
  /** Abort a pending read; implementations reject with `signal.reason`. */
  signal?: AbortSignal;
}

export interface GuestMemory {
  /**
   * Read `size` bytes of guest physical memory at `addr`. Resolves with exactly `size` bytes or
   * rejects: with a {@link GuestMemoryError} for a runtime failure (unmapped range, I/O error,
   * closed), with `signal.reason` when aborted, with a RangeError for invalid arguments.
   */
  read(addr: bigint, size: number, opts?: ReadOptions): Promise<Uint8Array>;
  /**
   * The same read answered at once, when this memory can (procmem: one pread of a range it has
   * translated): exactly `size` bytes, or undefined when it cannot or the read failed; the caller then
   * awaits `read`, which reports the failure properly. Lets a steady heartbeat poll run with no
   * promise, timer or abort signal of its own (bench/fleet).
   */
  readSync?(addr: bigint, size: number): Uint8Array | undefined;
  /** A short human-readable name for logs and errors (`pmemsave:/run/.../qmp`, `file:/dev/shm/x`). */
  readonly name: string;
  /** Translate guest addresses again (a RESET, memory hotplug), for a memory that translates them (procmem). */
  reopen?(signal?: AbortSignal): Promise<void>;
  /** Go on over a new QMP connection to the same QEMU (procmem: its later translations). */
  rebind?(qmp: QmpClient): void;
  /** The QEMU process this memory reads is still there (procmem: a new QEMU is a new memory). */
  alive?(): Promise<boolean>;
  close?(): Promise<void>;
}

/** Largest single read any implementation accepts: callers read in bounded chunks. */
export const MAX_READ_SIZE = 256 * 1024 * 1024;
const ADDR_LIMIT = 1n << 64n;

/** Programmer-error checks shared by implementations: throws RangeError naming the bad value. */
export function checkRead(addr: bigint, size: number): void {
  if (typeof addr !== 'bigint' || addr < 0n || addr >= ADDR_LIMIT) {
    throw new RangeError(`addr: a guest physical address 0..2^64-1 (got ${String(addr)})`);
  }
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_READ_SIZE) {
    throw new RangeError(`size: an integer 0..${MAX_READ_SIZE} (got ${String(size)})`);
  }
  if (addr + BigInt(size) > ADDR_LIMIT) {
    throw new RangeError(`addr + size: beyond 2^64 (addr 0x${addr.toString(16)}, size ${size})`);
  }
}

function hex(a: bigint): string {
  return `0x${a.toString(16)}`;
}

/** Root of the runtime failures of GuestMemory implementations. */
export class GuestMemoryError extends Error {
  override name = 'GuestMemoryError';
  constructor(
    /** The memory's `name`. */
    readonly memory: string,
    readonly addr: bigint,
    readonly size: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${memory}: ${message} (read ${hex(addr)}+${size})`, options);
  }
}

/** Part of the requested range is not backed by anything this memory can read. */
export class UnmappedReadError extends GuestMemoryError {
  override name = 'UnmappedReadError';
  constructor(
    memory: string,
    addr: bigint,
    size: number,
    /** First guest address of the request that is not mapped. */
    readonly unmappedAt: bigint,
  ) {
    super(memory, addr, size, `guest address ${hex(unmappedAt)} is not mapped`);
  }
}

/** The backing store failed or returned fewer bytes than mapped (a truncated mem-path file). */
export class MemoryReadError extends GuestMemoryError {
  override name = 'MemoryReadError';
}

/** `read` after `close`. */
export class MemoryClosedError extends GuestMemoryError {
  override name = 'MemoryClosedError';
  constructor(memory: string, addr: bigint, size: number) {
    super(memory, addr, size, 'memory is closed');
  }
}
