import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';

/**
 * A maker of temporary directories for the tests of one file, each removed after its test: call it
 * at the top of the file, then `temp()` in a test.
 */
export function tempDirs(prefix = 'eve-diag-test-'): () => string {
  let made: string[] = [];
  afterEach(() => {
    for (const d of made) rmSync(d, { recursive: true, force: true });
    made = [];
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    made.push(d);
    return d;
  };
}
