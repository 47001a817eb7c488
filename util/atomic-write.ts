/**
 * Writing files so that a reader sees the old content or the new, never half of it: each file is
 * written to a hidden temporary beside its target (same filesystem), flushed to disk, then renamed
 * over it; on any failure the temporaries are removed and nothing is left behind. The one helper
 * for every file eve-diag writes whole (CLI outputs, the agent bundle, the guest image).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface AtomicFile {
  path: string;
  data: string | Uint8Array;
  /** Default 0o644. */
  mode?: number;
}

async function writeSynced(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  // 'wx': never follow or reuse something already at the temporary's name.
  const fh = await open(path, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes several files so that either all appear or none do (as far as a filesystem allows): every
 * file is written and flushed first, then all are renamed.
 */
export async function writeFilesAtomically(files: readonly AtomicFile[]): Promise<void> {
  const tag = `${process.pid}.${randomBytes(4).toString('hex')}`;
  const temps = files.map((f) => join(dirname(f.path), `.${basename(f.path)}.${tag}.tmp`));
  try {
    await Promise.all(files.map((f, i) => writeSynced(temps[i] as string, f.data, f.mode ?? 0o644)));
    for (let i = 0; i < files.length; i++) await rename(temps[i] as string, (files[i] as AtomicFile).path);
  } catch (e) {
    await Promise.all(temps.map((t) => rm(t, { force: true })));
    throw e;
  }
}

/** One file, atomically. */
export function writeFileAtomically(path: string, data: string | Uint8Array, mode?: number): Promise<void> {
  return writeFilesAtomically([{ path, data, ...(mode === undefined ? {} : { mode }) }]);
}

/**
 * mkdir -p without Node's recursive mkdir, which loops forever on paths such as /proc/x (ENOENT
 * from a parent that exists). Each missing ancestor is created once; any error is thrown.
 */
export async function ensureDir(path: string): Promise<void> {
  const missing: string[] = [];
  let p = path;
  for (;;) {
    try {
      if (!(await stat(p)).isDirectory()) throw new Error(`${p} exists and is not a directory`);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      missing.push(p);
      const parent = dirname(p);
      if (parent === p) break;
      p = parent;
    }
  }
  for (const dir of missing.reverse()) await mkdir(dir);
}
