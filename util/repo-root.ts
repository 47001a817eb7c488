import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The directory holding package.json, found upward from this module: works from the sources, from
 * dist/, and from an esbuild bundle under .cache/ (import.meta.url is then the bundle's).
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}: this needs the files of the installed package (the single-file bundle dist/eve-diag.mjs carries the host side only; install the package: npm i -g eve-diag-*.tgz)`);
    dir = up;
  }
  return dir;
}
