import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { MediaType } from '../../protocol/report-manifest.js';
import { realClock, type Clock } from '../../util/clock.js';
import { externalArtifact } from '../report/bundle.js';
import type { AppTarget, Artifact, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, formatBytes, jsonArtifact, type QmpConnector, type QmpLease } from './common.js';

/**
 * The guest's memory, for `crash` or `makedumpfile` on the host (issue 12 §3): QMP `dump-guest-memory`
 * writes it to a file beside the report (never through this process's memory), as `kdump-zlib` when this
 * QEMU offers it (query-dump-guest-memory-capability; Debian's 7.2 offers elf, kdump-zlib and win-dmp),
 * else ELF. The dump runs detached and is polled with `query-dump` within the step's deadline.
 *
 *  - The guest's RAM (query-memory-size-summary) is checked first: a VM with more than `maxRamBytes` is
 *    refused (the dump of an ELF file is as large as the RAM; kdump-zlib is smaller, zero pages and
 *    compression, but bounded by it).
 *  - QEMU stops the vCPUs while it dumps and lets them run again afterwards. QEMU 7.2 cannot cancel a
 *    dump: on a timeout the partial file is deleted, but QEMU goes on writing to it (the disk space comes
 *    back when it is done) and the VM stays paused until then.
 *  - The artifact is external (monitor/report/bundle.ts ExternalFile): the bundle writer moves the file
 *    into the bundle directory, hashes it, and lists it as kept on the node, not shipped. A small
 *    `memory-dump.json` (format, RAM, size, time) is an ordinary artifact.
 *  - For `makedumpfile --dump-dmesg` or `crash` to find the kernel's symbols without the guest's vmlinux,
 *    the VM needs `-device vmcoreinfo` (qemu-args `vmcoreinfo`) and the guest its `qemu_fw_cfg` driver,
 *    which writes the kernel's VMCOREINFO there; QEMU puts it in the dump.
 *  - QEMU 7.2 writes kdump-zlib in makedumpfile's *flattened* form (`makedumpfile -R FILE < DUMP` makes it
 *    a plain kdump file), and with a KASLR-relocated kernel a wrong phys_base in it, which this collector
 *    rewrites in place (fixKdumpPhysBase). ELF dumps (paging off) are for gdb/crash: makedumpfile 1.7.2
 *    refuses them ("Can't get the number of PT_LOAD").
 *
 * Disruptive (the VM is paused for the dump's duration, seconds per GiB) and large: off by default.
 */

export const MEMORY_DUMP_FORMATS = ['auto', 'kdump-zlib', 'elf'] as const;
export type MemoryDumpFormat = (typeof MEMORY_DUMP_FORMATS)[number];

/** Default RAM cap: a VM with more memory is not dumped. */
export const DEFAULT_MAX_DUMP_RAM_BYTES = 2 * 1024 * 1024 * 1024;

export interface MemoryDumpOptions {
  /**
   * Where QEMU writes the dump (QEMU opens the file itself, so it must be able to write there). Best the
   * spool directory: the same filesystem, so the bundle writer renames it in, and a dump nobody took in
   * (`.tmp-memory-*`) is removed by the spool's maintenance. Default the system's temporary directory.
   */
  dir?: string;
  /** Refuse a VM with more RAM than this. Default DEFAULT_MAX_DUMP_RAM_BYTES (2 GiB). */
  maxRamBytes?: number;
  /** Default `auto`: kdump-zlib when QEMU supports it, else elf. */
  format?: MemoryDumpFormat;
  /** query-dump poll interval. Default 250 ms. */
  pollMs?: number;
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

interface DumpStatus {
  status: 'none' | 'active' | 'completed' | 'failed';
  completed: number;
  total: number;
}

const KDUMP_SIGNATURE = Buffer.from('KDUMP   ', 'latin1');
/** QEMU 7.2 writes kdump formats in makedumpfile's flattened form (`makedumpfile -R` reassembles it). */
const FLAT_SIGNATURE = Buffer.from('makedumpfile\0', 'latin1');
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const MEDIA: Record<'kdump-zlib' | 'elf', MediaType> = { 'kdump-zlib': 'application/vnd.eve-diag.kdump', elf: 'application/vnd.eve-diag.elf-core' };
const FILE_NAME: Record<'kdump-zlib' | 'elf', string> = { 'kdump-zlib': 'memory.kdump', elf: 'memory.elf' };

/** The first bytes of a file (at most `n`). */
async function head(path: string, n: number): Promise<Buffer> {
  const h = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await h.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await h.close();
  }
}

/** The flattened stream's records read looking for the headers (QEMU writes them first). */
const HEADER_RECORDS = 16;
const MAX_HEADER_RECORD_BYTES = 1024 * 1024;
const PHYS_BASE_RE = /NUMBER\(phys_base\)=(-?)(\d+)\n/;

export interface PhysBaseFix {
  /** The value the kernel gave (VMCOREINFO `NUMBER(phys_base)`, decimal), as the u64 stored; undefined when not found. */
  physBase?: bigint;
  /** The kdump sub-header said something else and was rewritten. */
  patched: boolean;
  /** Why nothing was done, when nothing was. */
  note?: string;
}

/**
 * QEMU 7.2 reads the x86 kernel's `NUMBER(phys_base)=-12582912` (decimal; negative or not 0 whenever
 * KASLR moved the kernel's physical address) as hexadecimal, and writes that value into the kdump
 * sub-header, where makedumpfile and crash take it from: every kernel address then translates wrongly
 * (`__vtop4_x86_64: Can't get pgd`). This rewrites the sub-header's phys_base with the kernel's value,
 * only when the stored one is exactly QEMU's misreading of it (a fixed QEMU's dump is left alone).
 * Handles makedumpfile's flattened form (what QEMU 7.2 writes for kdump-*) and a plain kdump file.
 * Reads only the first records (the headers and notes come first); never loads the dump.
 */
export async function fixKdumpPhysBase(path: string): Promise<PhysBaseFix> {
  const h = await open(path, constants.O_RDWR | constants.O_NOFOLLOW);
  try {
    const size = (await h.stat()).size;
    const read = async (pos: number, n: number): Promise<Buffer> => {
      const b = Buffer.alloc(n);
      const { bytesRead } = await h.read(b, 0, n, pos);
      return b.subarray(0, bytesRead);
    };
    // Where each piece of the reassembled file lies in this one: [file offset, length, position here].
    const pieces: Array<{ offset: number; length: number; at: number }> = [];
    const start = await read(0, 16);
    if (start.subarray(0, FLAT_SIGNATURE.length).equals(FLAT_SIGNATURE)) {
      let at = 4096; // MAX_SIZE_MDF_HEADER: the flat header's block
      for (let i = 0; i < HEADER_RECORDS && at + 16 <= size; i++) {
        const rh = await read(at, 16);
        const offset = rh.readBigInt64BE(0);
        const length = rh.readBigInt64BE(8);
        if (offset < 0n || length < 0n) break; // the end mark (-1, -1)
        if (length > BigInt(size) || offset > BigInt(Number.MAX_SAFE_INTEGER)) return { patched: false, note: 'a flattened record header is corrupt' };
        pieces.push({ offset: Number(offset), length: Number(length), at: at + 16 });
        at += 16 + Number(length);
      }
    } else if (start.subarray(0, KDUMP_SIGNATURE.length).equals(KDUMP_SIGNATURE)) {
      pieces.push({ offset: 0, length: size, at: 0 });
    } else {
      return { patched: false, note: 'not a kdump file' };
    }
    /** The bytes at `offset` of the reassembled file, when one piece holds them all. */
    const bytesAt = async (offset: number, n: number): Promise<{ data: Buffer; at: number } | undefined> => {
      const p = pieces.find((x) => x.offset <= offset && offset + n <= x.offset + x.length);
      if (p === undefined) return undefined;
      const at = p.at + (offset - p.offset);
      return { data: await read(at, n), at };
    };
    const header = await bytesAt(0, 432);
    if (header === undefined || !header.data.subarray(0, 8).equals(KDUMP_SIGNATURE)) return { patched: false, note: 'no kdump header' };
    // After the signature (8), version (4), utsname (390), padding to 408, timestamp (16), status (4).
    const blockSize = header.data.readUInt32LE(428);
    if (blockSize < 512 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) return { patched: false, note: `implausible block size ${blockSize}` };
    const sub = await bytesAt(blockSize, 8);
    if (sub === undefined || sub.data.length < 8) return { patched: false, note: 'no kdump sub-header' };
    const stored = sub.data.readBigUInt64LE(0);

    let m: RegExpExecArray | null = null;
    for (const p of pieces.filter((x) => x.length <= MAX_HEADER_RECORD_BYTES)) {
      m = PHYS_BASE_RE.exec((await read(p.at, p.length)).toString('latin1'));
      if (m !== null) break;
    }
    if (m === null) return { patched: false, note: 'no NUMBER(phys_base) in the VMCOREINFO (no vmcoreinfo device?)' };
    const sign = m[1] === '-' ? -1n : 1n;
    const digits = m[2] as string;
    const physBase = BigInt.asUintN(64, sign * BigInt(digits));
    const misread = BigInt.asUintN(64, sign * BigInt(`0x${digits}`));
    if (stored === physBase) return { physBase, patched: false };
    if (stored !== misread) return { physBase, patched: false, note: `the sub-header's phys_base 0x${stored.toString(16)} is neither the kernel's nor QEMU's misreading of it` };
    const fixed = Buffer.alloc(8);
    fixed.writeBigUInt64LE(physBase);
    await h.write(fixed, 0, 8, sub.at);
    await h.sync();
    return { physBase, patched: true };
  } finally {
    await h.close();
  }
}

export class MemoryDumpCollector implements Collector {
  readonly kind = 'memory-dump';
  readonly #dir: string;
  readonly #maxRam: number;
  readonly #format: MemoryDumpFormat;
  readonly #pollMs: number;
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: MemoryDumpOptions = {}) {
    this.#dir = options.dir ?? tmpdir();
    if (!isAbsolute(this.#dir)) throw new RangeError(`MemoryDumpCollector: dir must be an absolute path (QEMU opens it), got ${JSON.stringify(options.dir)}`);
    // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
    if (/[\x00-\x1f\x7f]/.test(this.#dir)) throw new RangeError(`MemoryDumpCollector: dir may hold no control character, got ${JSON.stringify(options.dir)}`);
    this.#maxRam = options.maxRamBytes ?? DEFAULT_MAX_DUMP_RAM_BYTES;
    if (!Number.isSafeInteger(this.#maxRam) || this.#maxRam < 1) throw new RangeError(`MemoryDumpCollector: maxRamBytes must be an integer >= 1, got ${String(options.maxRamBytes)}`);
    this.#format = options.format ?? 'auto';
    if (!(MEMORY_DUMP_FORMATS as readonly string[]).includes(this.#format)) {
      throw new RangeError(`MemoryDumpCollector: format must be one of ${MEMORY_DUMP_FORMATS.join(', ')}, got ${String(options.format)}`);
    }
    this.#pollMs = options.pollMs ?? 250;
    if (!(this.#pollMs > 0)) throw new RangeError(`MemoryDumpCollector: pollMs must be > 0, got ${String(options.pollMs)}`);
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.qmp === undefined) return failed('memory-dump: the app has no QMP socket');
    if (opts.signal.aborted) return failed('memory-dump: aborted before it started');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    const t0 = this.#clock.now();
    let lease: QmpLease | undefined;
    let path: string | undefined;
    let keep = false;
    try {
      lease = await this.#connect(target.qmp, { timeoutMs: deadline.cap(5000), signal: opts.signal });
      const qmp = lease.qmp;
      const call = <T>(cmd: string, args?: Record<string, unknown>) =>
        qmp.execute<T>(cmd, args, { timeoutMs: deadline.cap(10_000), signal: opts.signal });

      const mem = await call<{ 'base-memory': number; 'plugged-memory'?: number }>('query-memory-size-summary');
      const ram = (mem['base-memory'] ?? 0) + (mem['plugged-memory'] ?? 0);
      if (!(ram > 0)) return failed(`memory-dump: query-memory-size-summary gave no memory size (${JSON.stringify(mem)})`);
      if (ram > this.#maxRam) return failed(`memory-dump: refused, the VM has ${formatBytes(ram)} of RAM, more than the ${formatBytes(this.#maxRam)} cap (maxRamBytes)`);

      const caps = await call<{ formats?: string[] }>('query-dump-guest-memory-capability').catch(() => ({ formats: ['elf'] }));
      const offered = Array.isArray(caps.formats) ? caps.formats : ['elf'];
      const format: 'kdump-zlib' | 'elf' = this.#format === 'auto' ? (offered.includes('kdump-zlib') ? 'kdump-zlib' : 'elf') : this.#format;
      if (!offered.includes(format)) return failed(`memory-dump: this QEMU cannot dump as ${format} (it offers ${offered.join(', ')})`);

      const before = await call<DumpStatus>('query-dump');
      if (before.status === 'active') return failed('memory-dump: QEMU is already dumping this VM (query-dump: active)');

      // Created here, exclusively and 0600: QEMU then truncates our file, never one planted in its place.
      await mkdir(this.#dir, { recursive: true, mode: 0o700 });
      path = join(this.#dir, `.tmp-memory-${randomBytes(6).toString('hex')}.${format === 'elf' ? 'elf' : 'kdump'}`);
      await (await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)).close();

      await call('dump-guest-memory', { paging: false, protocol: `file:${path}`, detach: true, format });
      let status: DumpStatus = { status: 'active', completed: 0, total: ram };
      while (!deadline.expired && !opts.signal.aborted) {
        try {
          status = await call<DumpStatus>('query-dump');
        } catch (e) {
          // The step's deadline ran out during the poll (its call is capped by it): still not done.
          if (deadline.expired && !opts.signal.aborted) break;
          throw e;
        }
        if (status.status !== 'active') break;
        await this.#clock.sleep(deadline.cap(this.#pollMs), opts.signal).catch(() => undefined);
      }
      const seconds = ((this.#clock.now() - t0) / 1000).toFixed(1);
      if (status.status === 'active') {
        const done = status.total > 0 ? ` (${Math.floor((100 * status.completed) / status.total)}% done)` : '';
        return failed(`memory-dump: not finished within ${seconds} s${done}; the partial file was deleted, QEMU 7.2 cannot cancel: the VM stays paused until its dump ends`);
      }
      if (status.status !== 'completed') return failed(`memory-dump: QEMU reports the dump ${status.status} (query-dump) after ${seconds} s`);

      const st = await lstat(path);
      const magic = await head(path, 16);
      const wanted = format === 'elf' ? [ELF_MAGIC] : [FLAT_SIGNATURE, KDUMP_SIGNATURE];
      if (!wanted.some((w) => magic.subarray(0, w.length).equals(w))) {
        return failed(`memory-dump: the ${formatBytes(st.size)} file QEMU wrote does not start like a ${format} dump`);
      }
      let fixNote = '';
      if (format === 'kdump-zlib') {
        const fix = await fixKdumpPhysBase(path).catch((e: unknown): PhysBaseFix => ({ patched: false, note: describeError(e) }));
        if (fix.patched) fixNote = `; phys_base fixed to ${BigInt.asIntN(64, fix.physBase ?? 0n)} (QEMU read it as hex)`;
        else if (fix.note !== undefined) fixNote = `; phys_base not checked: ${fix.note}`;
      }
      keep = true;
      const artifacts: Artifact[] = [
        externalArtifact(FILE_NAME[format], MEDIA[format], path),
        jsonArtifact('memory-dump.json', { format, ramBytes: ram, bytes: st.size, durationMs: Math.round(this.#clock.now() - t0), shipped: false }, Math.min(opts.maxBytes, 4096)),
      ];
      return {
        ok: true,
        summary: `memory-dump: ${format} of ${formatBytes(ram)} of RAM, ${formatBytes(st.size)} in ${seconds} s (kept on the node, not shipped)${fixNote}`,
        artifacts,
      };
    } catch (error) {
      return failed(`memory-dump: ${describeError(error)}`);
    } finally {
      if (!keep && path !== undefined) await unlink(path).catch(() => undefined);
      await lease?.release();
    }
  }
}
