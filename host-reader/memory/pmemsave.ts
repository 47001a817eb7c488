import { readFileSync, unlinkSync } from 'node:fs';
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { QmpClient } from '../qmp/index.js';
import { checkRead, GuestMemoryError, MemoryClosedError, MemoryReadError, type GuestMemory, type ReadOptions } from './guest-memory.js';

const DIR_PREFIX = 'eve-diag-pmem-';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // running, as another user
  }
}

/** Removes `eve-diag-pmem-<pid>-*` directories of `parent` owned by this user whose process is gone. */
export async function removeStaleDirs(parent: string): Promise<string[]> {
  const removed: string[] = [];
  const uid = process.getuid?.();
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    const m = /^eve-diag-pmem-(\d{1,10})-[A-Za-z0-9]{6}$/.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    const path = join(parent, name);
    const st = await lstat(path).catch(() => undefined);
    // Never follow a link, never touch another user's directory.
    if (st === undefined || !st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(path);
  }
  return removed;
}

/**
 * Guest memory through QMP `pmemsave`: QEMU writes the range to a file in a private directory
 * (mode 0700, created here), we read it back and remove it. QEMU must run on this host and be able
 * to write there (same user, or root). Each read is one QMP round trip plus a file write/read.
 *
 * The file is read and removed synchronously: QEMU has just written it (it is in the page cache) and
 * the async readFile + rm took six thread-pool round trips (open, fstat, read, close, lstat, unlink),
 * most of the CPU a read cost us. One file name is reused while no other read is pending.
 */
export class PmemsaveMemory implements GuestMemory {
  readonly name: string;
  #seq = 0;
  #pending = 0;
  readonly #file0: string;
  #closed = false;

  private constructor(
    private readonly qmp: QmpClient,
    private readonly dir: string,
    label: string,
  ) {
    this.name = `pmemsave:${label}`;
    this.#file0 = join(dir, 'r0.bin');
  }

  /**
   * Opens a private directory `<tmpDir>/eve-diag-pmem-<pid>-XXXXXX` (mkdtemp makes it 0700), first
   * removing those a crashed eve-diag left: ours by uid, named for a pid that is no longer running.
   */
  static async open(qmp: QmpClient, opts: { label?: string; tmpDir?: string } = {}): Promise<PmemsaveMemory> {
    const parent = opts.tmpDir ?? tmpdir();
    await removeStaleDirs(parent);
    const dir = await mkdtemp(join(parent, `${DIR_PREFIX}${process.pid}-`));
    return new PmemsaveMemory(qmp, dir, opts.label ?? 'qmp');
  }

  async read(addr: bigint, size: number, opts: ReadOptions = {}): Promise<Uint8Array> {
    checkRead(addr, size);
    if (this.#closed) throw new MemoryClosedError(this.name, addr, size);
    if (size === 0) return new Uint8Array(0);
    if (addr > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`addr: beyond 2^53 (0x${addr.toString(16)})`);
    // Concurrent reads need their own files; a lone read reuses one name.
    const file = this.#pending === 0 ? this.#file0 : join(this.dir, `r${++this.#seq}.bin`);
    this.#pending += 1;
    try {
      await this.qmp.pmemsave(Number(addr), size, file, opts.signal ? { signal: opts.signal } : undefined);
      opts.signal?.throwIfAborted();
      const data = readFileSync(file);
      if (data.length !== size) throw new MemoryReadError(this.name, addr, size, `QEMU wrote ${data.length} bytes, expected ${size}`);
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } catch (e) {
      if (e instanceof GuestMemoryError || opts.signal?.aborted) throw e;
      throw new MemoryReadError(this.name, addr, size, `pmemsave failed: ${(e as Error).message}`, { cause: e });
    } finally {
      this.#pending -= 1;
      try {
        unlinkSync(file);
      } catch {
        // Not written (the command failed or was aborted before QEMU ran it), or already gone.
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await rm(this.dir, { recursive: true, force: true });
  }
}
