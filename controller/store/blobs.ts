import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
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

export function sha256Of(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export class FsBlobs implements BlobFiles {
  constructor(readonly dir: string) {}

  #path(sha256: string): string {
    if (!SHA256_RE.test(sha256)) throw new RangeError(`not a SHA-256: ${JSON.stringify(sha256)}`);
    return join(this.dir, sha256.slice(0, 2), sha256);
  }

  async put(sha256: string, data: Buffer): Promise<void> {
    const path = this.#path(sha256);
    await mkdir(join(this.dir, sha256.slice(0, 2)), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async get(sha256: string): Promise<Buffer | undefined> {
    return readFile(this.#path(sha256)).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
  }
}
