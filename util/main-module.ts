import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Whether the module at `moduleUrl` (its `import.meta.url`) is the script Node was started with
 * (`process.argv[1]`, links resolved: an npm bin link or a symlinked checkout). A module that esbuild
 * bundled into another entry has that entry's URL; `fileName` (e.g. /agent-bundle\.[jt]s$/) then
 * keeps it from thinking it is the entry.
 */
export function isMainModule(moduleUrl: string, fileName?: RegExp): boolean {
  try {
    const self = realpathSync(fileURLToPath(moduleUrl));
    if (fileName !== undefined && !fileName.test(self)) return false;
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === self;
  } catch {
    return false;
  }
}
