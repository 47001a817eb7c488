import { open, type FileHandle } from 'node:fs/promises';
import {
  checkRead,
  MemoryClosedError,
  MemoryReadError,
  UnmappedReadError,
  type GuestMemory,
  type ReadOptions,
} from './guest-memory.js';

/**
 * Guest memory read straight from the file behind a `-object memory-backend-file,mem-path=F`
 * (share=on): no QMP round trip, no dump file. The guest-physical layout is given as mappings; with
 * `info mtree -f` each RAM line `start-end (prio 0, ram): NAME @OFFSET` is one mapping with
 * fileOffset = OFFSET (the offset inside the RAM block, which is the offset inside the file), see
 * parseMtreeLowRam in host-reader/region/discover.ts.
 */
export interface FileMapping {
  guestAddr: bigint;
  size: number | bigint;
  fileOffset: number | bigint;
}

/** A validated mapping: guest range [start, end) at fileOffset. */
export interface FileSegment {
  start: bigint;
  end: bigint; // exclusive
  fileOffset: bigint;
}

const MAX_FILE_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

function toBig(field: string, v: number | bigint): bigint {
  if (typeof v === 'bigint') return v;
  if (!Number.isSafeInteger(v)) throw new RangeError(`${field}: an integer (got ${String(v)})`);
  return BigInt(v);
}

/** Validate and sort mappings; overlapping guest ranges or negative values are programmer errors. */
export function normalizeMappings(mappings: readonly FileMapping[]): FileSegment[] {
  const segs = mappings.map((m, i): FileSegment => {
    const size = toBig(`mappings[${i}].size`, m.size);
    const fileOffset = toBig(`mappings[${i}].fileOffset`, m.fileOffset);
    if (typeof m.guestAddr !== 'bigint' || m.guestAddr < 0n) {
      throw new RangeError(`mappings[${i}].guestAddr: a non-negative bigint (got ${String(m.guestAddr)})`);
    }
    if (size <= 0n) throw new RangeError(`mappings[${i}].size: positive (got ${size})`);
    if (fileOffset < 0n || fileOffset + size > MAX_FILE_OFFSET) {
      throw new RangeError(`mappings[${i}].fileOffset: 0..2^53 with its size (got ${fileOffset})`);
    }
    return { start: m.guestAddr, end: m.guestAddr + size, fileOffset };
  });
  segs.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (let i = 1; i < segs.length; i++) {
    const prev = segs[i - 1] as FileSegment;
    const cur = segs[i] as FileSegment;
    if (cur.start < prev.end) {
      throw new RangeError(`mappings: guest ranges overlap at 0x${cur.start.toString(16)}`);
    }
  }
  return segs;
}

export class FileBackedMemory implements GuestMemory {
  readonly name: string;
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    private readonly segments: readonly FileSegment[],
    readonly path: string,
    name: string | undefined,
  ) {
    this.name = name ?? `file:${path}`;
  }

  /** Open `path` read-only. Mappings are checked at once (RangeError); the file's size is not. */
  static async open(path: string, mappings: readonly FileMapping[], opts: { name?: string } = {}): Promise<FileBackedMemory> {
    const segments = normalizeMappings(mappings);
    const fh = await open(path, 'r');
    return new FileBackedMemory(fh, segments, path, opts.name);
  }

  async read(addr: bigint, size: number, opts: ReadOptions = {}): Promise<Uint8Array> {
    checkRead(addr, size);
    opts.signal?.throwIfAborted();
    if (this.closed) throw new MemoryClosedError(this.name, addr, size);
    const out = new Uint8Array(size);
    const end = addr + BigInt(size);
    // Plan first: the whole range must be covered by adjacent mappings before any I/O.
    const plan: { fileOffset: bigint; outAt: number; length: number }[] = [];
    let at = addr;
    for (const s of this.segments) {
      if (at >= end) break;
      if (s.end <= at) continue;
      if (s.start > at) break;
      const to = s.end < end ? s.end : end;
      plan.push({ fileOffset: s.fileOffset + (at - s.start), outAt: Number(at - addr), length: Number(to - at) });
      at = to;
    }
    if (at < end) throw new UnmappedReadError(this.name, addr, size, at);
    for (const p of plan) {
      let done = 0;
      while (done < p.length) {
        opts.signal?.throwIfAborted();
        let n: number;
        try {
          ({ bytesRead: n } = await this.fh.read(out, p.outAt + done, p.length - done, Number(p.fileOffset) + done));
        } catch (cause) {
          throw new MemoryReadError(this.name, addr, size, `reading ${this.path} failed`, { cause });
        }
        if (n === 0) {
          const pos = p.fileOffset + BigInt(done);
          throw new MemoryReadError(this.name, addr, size, `${this.path} ends at offset 0x${pos.toString(16)} inside a mapping`);
        }
        done += n;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
