import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The first executable file `name` in the PATH-style list `pathVar` (default: this process's PATH). */
export function findOnPath(name: string, pathVar: string | undefined = process.env.PATH): string | undefined {
  for (const d of (pathVar ?? '').split(delimiter)) {
    if (d === '') continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}
