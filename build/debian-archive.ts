/**
 * Debian packages for the tests, fetched from the archive and never installed (DESIGN fact 14): a
 * tool runner for apt and dpkg, and the one step both the guest kernels (build/kernels.ts) and the
 * QEMU builds (build/qemus.ts) share, `apt-get download` + `dpkg-deb -x` into a cache entry that
 * appears whole or not at all.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** Runs `cmd` (LC_ALL=C) and resolves with its stdout; a failure rejects with `makeError(message)`, the error as its cause. */
export function runTool(cmd: string, args: readonly string[], makeError: (message: string, options: ErrorOptions) => Error, cwd?: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err === null) resolve(stdout);
      else reject(makeError(`${cmd} ${args.join(' ')} failed: ${(stderr || err.message).trim()}`, { cause: err }));
    }),
  );
}

/**
 * `apt-get download` of `packages` (`name=version`, with `aptArgs` such as `-t RELEASE`) and
 * `dpkg-deb -x` of each into one tree, `prepare`d, then renamed to `dir` under `cacheDir`: the cache
 * entry appears whole; a concurrent fetch that won the race is as good.
 */
export async function fetchIntoCache(o: {
  cacheDir: string;
  dir: string;
  packages: readonly string[];
  aptArgs?: readonly string[];
  makeError: (message: string, options?: ErrorOptions) => Error;
  prepare?: (root: string) => Promise<void>;
}): Promise<void> {
  await mkdir(o.cacheDir, { recursive: true });
  const tmp = await mkdtemp(join(o.cacheDir, '.fetch-'));
  try {
    await runTool('apt-get', [...(o.aptArgs ?? []), 'download', '-q', ...o.packages], o.makeError, tmp);
    const debs = (await readdir(tmp)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== o.packages.length) throw o.makeError(`apt-get download ${o.packages.join(' ')}: expected ${o.packages.length} .deb file(s), found ${debs.length}`);
    const root = join(tmp, 'root');
    for (const d of debs) await runTool('dpkg-deb', ['-x', join(tmp, d), root], o.makeError);
    await o.prepare?.(root);
    await rename(root, o.dir).catch((err: NodeJS.ErrnoException) => {
      if (!existsSync(o.dir) || (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST')) throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
