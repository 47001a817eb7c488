import { checkRead, MemoryClosedError, UnmappedReadError, type GuestMemory, type ReadOptions } from './guest-memory.js';

/**
 * A sparse fake guest RAM for tests: a few mapped ranges hold bytes, the rest of the address space
 * reads as zeros (a large, mostly empty guest) or throws UnmappedReadError (`unmapped: 'throw'`).
 * It counts reads and bytes so tests can assert how much a scan cost, and exposes a hook that runs
 * before each read (to abort a scan half-way, inject a failure or change bytes between reads).
 */
export interface FakeMemoryOptions {
  name?: string;
  /** What an unmapped byte does: read as zero (default) or make the read throw. */
  unmapped?: 'zeros' | 'throw';
  /** End of the address space (exclusive): any read reaching it throws, even with `zeros`. */
  limit?: bigint;
  /** Runs before each read is served; may throw (or reject) to fail the read. */
  onRead?: (addr: bigint, size: number) => void | Promise<void>;
  /**
   * Answer `readSync` too (as procmem does); default false: readSync is undefined-always and every
   * read is awaited. A memory with `onRead` never answers at once (the hook may be async).
   */
  sync?: boolean;
}

export interface FakeReadRecord {
  addr: bigint;
  size: number;
}

interface Mapping {
  start: bigint;
  end: bigint; // exclusive
  bytes: Uint8Array | undefined; // undefined: mapped zeros, no storage
}

const LOG_MAX = 4096;

export class FakeGuestMemory implements GuestMemory {
  readonly name: string;
  /** Reads served (failed reads are not counted). */
  reads = 0;
  /** Bytes returned by served reads. */
  bytesRead = 0;
  /** The last reads served, oldest first (bounded). */
  readonly log: FakeReadRecord[] = [];
  closed = false;
  private readonly mappings: Mapping[] = [];
  private readonly unmapped: 'zeros' | 'throw';
  private readonly limit: bigint | undefined;
  private readonly onRead: FakeMemoryOptions['onRead'];
  private readonly sync: boolean;
  /** Reads answered by readSync (also counted in `reads`). */
  syncReads = 0;

  constructor(opts: FakeMemoryOptions = {}) {
    this.name = opts.name ?? 'fake';
    this.unmapped = opts.unmapped ?? 'zeros';
    this.limit = opts.limit;
    this.onRead = opts.onRead;
    this.sync = opts.sync ?? false;
  }

  /** Map `bytes` (copied) at `addr`. Overlapping an existing mapping is a programmer error. */
  map(addr: bigint, bytes: Uint8Array): this {
    return this.add(addr, BigInt(bytes.length), bytes.slice());
  }

  /** Map `size` bytes of zeros at `addr` without storing them (RAM for `unmapped: 'throw'`). */
  mapZeros(addr: bigint, size: bigint | number): this {
    return this.add(addr, BigInt(size), undefined);
  }

  private add(addr: bigint, size: bigint, bytes: Uint8Array | undefined): this {
    const where = `0x${addr.toString(16)}+0x${size.toString(16)}`;
    if (addr < 0n || size <= 0n) throw new RangeError(`map: ${where} is not a non-empty range`);
    const end = addr + size;
    if (this.limit !== undefined && end > this.limit) throw new RangeError(`map: ${where} is beyond the limit 0x${this.limit.toString(16)}`);
    for (const m of this.mappings) {
      if (addr < m.end && m.start < end) throw new RangeError(`map: ${where} overlaps the mapping at 0x${m.start.toString(16)}`);
    }
    this.mappings.push({ start: addr, end, bytes });
    this.mappings.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    return this;
  }

  /** Overwrite mapped bytes in place (what the guest's AML does): inside one `map`ped range. */
  write(addr: bigint, bytes: Uint8Array): void {
    const end = addr + BigInt(bytes.length);
    const m = this.mappings.find((x) => x.start <= addr && end <= x.end);
    if (m?.bytes === undefined) {
      throw new RangeError(`write: 0x${addr.toString(16)}+${bytes.length} is not inside one mapping with storage`);
    }
    m.bytes.set(bytes, Number(addr - m.start));
  }

  resetCounters(): void {
    this.reads = 0;
    this.bytesRead = 0;
    this.log.length = 0;
  }

  async read(addr: bigint, size: number, opts: ReadOptions = {}): Promise<Uint8Array> {
    checkRead(addr, size);
    opts.signal?.throwIfAborted();
    if (this.closed) throw new MemoryClosedError(this.name, addr, size);
    await this.onRead?.(addr, size);
    opts.signal?.throwIfAborted();
    return this.#serve(addr, size);
  }

  readSync(addr: bigint, size: number): Uint8Array | undefined {
    if (!this.sync || this.onRead !== undefined || this.closed) return undefined;
    try {
      checkRead(addr, size);
      const out = this.#serve(addr, size);
      this.syncReads++;
      return out;
    } catch {
      return undefined;
    }
  }

  #serve(addr: bigint, size: number): Uint8Array {
    const end = addr + BigInt(size);
    if (this.limit !== undefined && end > this.limit) {
      throw new UnmappedReadError(this.name, addr, size, addr > this.limit ? addr : this.limit);
    }
    const out = new Uint8Array(size);
    let covered = addr; // with 'throw', every byte below `covered` is known to be mapped
    for (const m of this.mappings) {
      if (m.end <= addr || m.start >= end) continue;
      if (this.unmapped === 'throw' && m.start > covered) break;
      const from = m.start > addr ? m.start : addr;
      const to = m.end < end ? m.end : end;
      if (m.bytes !== undefined) out.set(m.bytes.subarray(Number(from - m.start), Number(to - m.start)), Number(from - addr));
      covered = to;
    }
    if (this.unmapped === 'throw' && covered < end) throw new UnmappedReadError(this.name, addr, size, covered);
    this.reads++;
    this.bytesRead += size;
    if (this.log.length >= LOG_MAX) this.log.shift();
    this.log.push({ addr, size });
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
