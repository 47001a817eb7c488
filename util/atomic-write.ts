import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Write several files so that either all appear or none do (as far as a filesystem allows):
 * every file is first written to a hidden temporary beside its target, then all are renamed.
 * On any write failure the temporaries are removed and nothing is left behind.
 */
export async function writeFilesAtomically(files: Array<{ path: string; data: string | Uint8Array; mode?: number }>): Promise<void> {
  const tag = randomBytes(4).toString('hex');
  const temps = files.map((f) => join(dirname(f.path), `.${basename(f.path)}.${tag}.tmp`));
  try {
    await Promise.all(files.map((f, i) => writeFile(temps[i] as string, f.data, { mode: f.mode ?? 0o644, flag: 'wx' })));
    for (let i = 0; i < files.length; i++) await rename(temps[i] as string, (files[i] as { path: string }).path);
  } catch (e) {
    await Promise.all(temps.map((t) => rm(t, { force: true })));
    throw e;
  }
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
