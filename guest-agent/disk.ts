import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { uptime } from 'node:os';
import { join } from 'node:path';
import { DISK_SECTOR, diskSlotOffset, encodeDiskRecord, nextDiskSeq } from '../protocol/heartbeat-disk.js';
import { errText, type Log } from './log.js';

/**
 * The heartbeat disk writer (transport 2, "disk drive"): every period one 512-byte record (format in
 * protocol/heartbeat-disk.ts) to the next slot of a small raw disk attached to the VM
 * (`/dev/vdb`), which the host reads as a plain image file. The device is opened once, read-write with
 * O_DSYNC (each write reaches the virtual disk before it returns, so the host sees it; fdatasync when
 * the platform has no O_DSYNC) and never created. At open the ring is read and `seq` goes on from the
 * newest valid record (nextDiskSeq), so it keeps growing across agent restarts and reboots. Record
 * `seq` goes to sector `seq % slots`: nothing outside the ring's sectors is ever written, and a device
 * smaller than the ring is refused. A missing or failing device is said once (key `disk`), closed, and
 * opened again after `retryMs`; the other duties go on.
 *
 * (O_DIRECT would also bypass the guest page cache but needs 512-byte aligned buffers, which Node
 * cannot promise; with O_DSYNC the kernel writes the sector's whole page-cache block back, holding
 * the same bytes the ring already has.)
 */

export type DiskStatus = 'starting' | 'ok' | 'error';

/** The device as the writer uses it: positional reads and writes of whole sectors. */
export interface DiskDevice {
  /** Reads into `buf` from byte `position`; resolves with the bytes read (0 at the end). */
  read(buf: Uint8Array, position: number): Promise<number>;
  /** Writes `buf` at byte `position`; resolves with the bytes written once they are on the device. */
  write(buf: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface DiskWriterOptions {
  path: string;
  /** Ring size in sectors (1..4096). */
  slots: number;
  /** The writer's period, recorded in every record. */
  periodMs: number;
  /** How long a missing or failing device waits before it is opened again. */
  retryMs: number;
  /** Random per agent start when not given. */
  instance?: bigint;
  /** The last seq this agent wrote (a reload): the next one is at least one more. */
  lastSeq?: bigint;
}

export interface DiskWriterDeps {
  log: Log;
  /** Opens the device; default: read-write, O_DSYNC, never created. */
  open?: (path: string) => Promise<DiskDevice>;
  /** Guest uptime (CLOCK_BOOTTIME) in ms; default /proc/uptime. */
  uptimeMs?: () => Promise<number>;
  /** Wall clock in ms; default Date.now. */
  wallMs?: () => number;
}

const KEY = 'disk';

/** The flags the device is opened with: read-write, synchronous data, never created. */
export const DISK_OPEN_FLAGS = constants.O_RDWR | (constants.O_DSYNC ?? 0);

/** Opens `path` for the writer (no O_CREAT: a missing device stays missing). */
export async function openDiskDevice(path: string): Promise<DiskDevice> {
  const fh = await open(path, DISK_OPEN_FLAGS);
  const sync = constants.O_DSYNC === undefined;
  return {
    read: async (buf, position) => (await fh.read(buf, 0, buf.length, position)).bytesRead,
    write: async (buf, position) => {
      const { bytesWritten } = await fh.write(buf, 0, buf.length, position);
      if (sync) await fh.datasync();
      return bytesWritten;
    },
    close: () => fh.close(),
  };
}

/** Uptime in ms from `<root>/proc/uptime` ("734.21 1234.56"); os.uptime() when it cannot be read. */
export async function readUptimeMs(root = '/'): Promise<number> {
  try {
    const m = /^(\d+(?:\.\d+)?)\s/.exec(await readFile(join(root, 'proc/uptime'), 'latin1'));
    if (m !== null) return Math.round(Number(m[1]) * 1000);
  } catch {
    // fall through
  }
  return Math.round(uptime() * 1000);
}

export function randomInstance(): bigint {
  return randomBytes(8).readBigUInt64LE(0);
}

const u64 = (n: number) => BigInt(Math.max(0, Math.floor(Number.isFinite(n) ? n : 0)));

export class DiskWriter {
  readonly instance: bigint;
  #dev: DiskDevice | undefined;
  /** The seq the next record gets (known once the ring was read). */
  #next: bigint | undefined;
  #last: bigint;
  #nextOpen = -Infinity;
  #status: DiskStatus = 'starting';
  #writes = 0;
  #busy = false;
  #closed = false;

  constructor(
    readonly options: DiskWriterOptions,
    private readonly deps: DiskWriterDeps,
  ) {
    this.instance = options.instance ?? randomInstance();
    this.#last = options.lastSeq ?? 0n;
  }

  get status(): DiskStatus {
    return this.#status;
  }
  /** Records written by this writer. */
  get writes(): number {
    return this.#writes;
  }
  /** The seq of the last record written (or `lastSeq`, 0 before any). */
  get seq(): bigint {
    return this.#last;
  }
  /** A step is in progress. */
  get busy(): boolean {
    return this.#busy;
  }

  /** One period's work: open the device if needed (not before the retry time), write one record. */
  async step(now: number): Promise<DiskStatus> {
    if (this.#closed || this.#busy) return this.#status;
    this.#busy = true;
    try {
      await this.#step(now);
    } finally {
      this.#busy = false;
      if (this.#closed) await this.#drop();
    }
    return this.#status;
  }

  /** Stops writing and closes the device (at the end of a step in progress). */
  close(): void {
    this.#closed = true;
    if (!this.#busy) this.#drop().catch((e: unknown) => this.deps.log.problem(`${KEY}:close`, `disk heartbeat: closing ${this.options.path}: ${errText(e)}`));
  }

  async #step(now: number): Promise<void> {
    const { path, slots } = this.options;
    if (this.#dev === undefined) {
      if (now < this.#nextOpen) return;
      let seq: bigint;
      try {
        this.#dev = await (this.deps.open ?? openDiskDevice)(path);
        seq = nextDiskSeq(await this.#readRing(this.#dev), slots);
      } catch (e) {
        return this.#fail(now, `cannot open ${path}: ${errText(e)}`);
      }
      this.#next = seq > this.#last ? seq : this.#last + 1n;
      if (this.#closed) return;
    }
    const seq = this.#next as bigint;
    try {
      const [uptimeMs, wallMs] = await Promise.all([(this.deps.uptimeMs ?? readUptimeMs)(), (this.deps.wallMs ?? Date.now)()]);
      const record = encodeDiskRecord({ seq, uptimeMs: u64(uptimeMs), wallMs: u64(wallMs), instance: this.instance, periodMs: this.options.periodMs, slots });
      const n = await this.#dev.write(record, diskSlotOffset(seq, slots));
      if (n !== DISK_SECTOR) throw new Error(`short write (${n} of ${DISK_SECTOR} bytes)`);
    } catch (e) {
      return this.#fail(now, `cannot write ${path}: ${errText(e)}`);
    }
    this.#last = seq;
    this.#next = seq + 1n;
    this.#writes++;
    if (this.#status !== 'ok') {
      const what = `writing ${path} (${slots} slots, every ${this.options.periodMs / 1000} s) from seq ${seq}`;
      if (this.deps.log.has(KEY)) this.deps.log.resolved(KEY, `disk heartbeat resumed: ${what}`);
      else this.deps.log.info(`disk heartbeat: ${what}`);
    }
    this.#status = 'ok';
  }

  /** The ring's sectors; a device that ends before them is refused (nothing would be written). */
  async #readRing(dev: DiskDevice): Promise<Uint8Array> {
    const ring = new Uint8Array(this.options.slots * DISK_SECTOR);
    let got = 0;
    while (got < ring.length) {
      const n = await dev.read(ring.subarray(got), got);
      if (n <= 0) break;
      got += n;
    }
    if (got < ring.length) throw new Error(`smaller than ${this.options.slots} slots of ${DISK_SECTOR} bytes (${got} bytes)`);
    return ring;
  }

  async #fail(now: number, message: string): Promise<void> {
    this.#status = 'error';
    this.#nextOpen = now + this.options.retryMs;
    this.deps.log.problem(KEY, `disk heartbeat paused: ${message}; trying again every ${Math.round(this.options.retryMs / 1000)} s`);
    await this.#drop();
  }

  async #drop(): Promise<void> {
    const dev = this.#dev;
    this.#dev = undefined;
    this.#next = undefined;
    await dev?.close().catch(() => undefined);
  }
}
