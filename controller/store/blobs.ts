import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { SHA256_RE } from '../../protocol/controller-api.js';

/**
 * Where artifact bytes live, content-addressed by SHA-256 (one copy however many reports hold it).
 * With SQLite: files `<data>/artifacts/<first 2 hex>/<sha256>` (written to a temporary, flushed, then
 * renamed: a file under its hash is always whole). With PostgreSQL: the `blobs.data` column, so every
 * instance sees every artifact without a shared directory (chosen and measured: bench/controller.ts).
 */
export interface BlobFiles {
  /** Stores `data` as `sha256` (the caller checked the hash). */
  put(sha256: string, data: Buffer): Promise<void>;
  get(sha256: string): Promise<Buffer | undefined>;
}

/** fsync(2) of a directory: the names created or renamed in it are on disk. */
async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function sha256Of(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export class FsBlobs implements BlobFiles {
  /** The `<first 2 hex>` directories known to exist (made, and their entry in `dir` flushed). */
  readonly #dirs = new Set<string>();
  /** Per directory: the fsync in flight, and the one queued behind it (shared by every rename made meanwhile). */
  readonly #dirSyncs = new Map<string, { running?: Promise<void>; next?: Promise<void> }>();

  constructor(readonly dir: string) {}

  #path(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new RangeError(`not a SHA-256: ${JSON.stringify(sha256)}`);
    return join(this.dir, sha256.slice(0, 2), sha256);
  }

  /**
   * Stores `data` under its hash: a temporary file written and fsynced, renamed, then its directory
   * fsynced (the rename is durable too) before this resolves.
   */
  async put(sha256: string, data: Buffer): Promise<void> {
    const path = this.#path(sha256);
    const sub = join(this.dir, sha256.slice(0, 2));
    if (!this.#dirs.has(sub)) {
      const made = await mkdir(sub, { recursive: true, mode: 0o700 });
      // A directory made now is an entry of its parent (or of the data directory): flushed too.
      if (made !== undefined) {
        await fsyncDir(dirname(made));
        if (made !== sub) await fsyncDir(this.dir);
      }
      this.#dirs.add(sub);
    }
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await open(tmp, 'wx', 0o600).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') this.#dirs.delete(sub); // removed behind our back: made again next time
        throw e;
      });
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await this.#syncDir(sub);
  }

  /** An fsync of `dir` that starts after this call (one already running may predate the caller's rename): callers meanwhile share it. */
  #syncDir(dir: string): Promise<void> {
    let st = this.#dirSyncs.get(dir);
    if (st === undefined) this.#dirSyncs.set(dir, (st = {}));
    const s = st;
    if (s.next !== undefined) return s.next;
    const launch = (): Promise<void> => {
      const p: Promise<void> = fsyncDir(dir).finally(() => {
        if (s.running === p) s.running = undefined;
      });
      s.running = p;
      return p;
    };
    if (s.running === undefined) return launch();
    const next = s.running
      .catch(() => undefined)
      .then(() => {
        s.next = undefined;
        return launch();
      });
    s.next = next;
    return next;
  }

  async get(sha256: string): Promise<Buffer | undefined> {
    return readFile(this.#path(sha256)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
  }
}
