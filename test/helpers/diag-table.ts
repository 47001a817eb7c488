import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { buildDiagSsdt, type DiagSsdtOptions } from '../../acpi/diag/ssdt.js';

/** The diagnostic SSDT of a test file, and where its table and layout files are. */
export interface DiagTableFiles {
  readonly aml: Uint8Array;
  readonly layout: ReturnType<typeof buildDiagSsdt>['layout'];
  /** The test file's temporary directory (0700, removed after the file's tests). */
  readonly dir: string;
  /** The table, for `-acpitable file=` (launchGuest's `acpiTables`). */
  readonly tableFile: string;
  /** Its layout JSON, for a target's `layout`. */
  readonly layoutFile: string;
}

/**
 * Builds the diagnostic SSDT once for a test file and writes it and its layout into a temporary
 * directory before the file's tests (beforeAll), removed after them (afterAll). The paths are read
 * in tests and hooks, not at module load.
 */
export function diagTableFiles(prefix: string, options: DiagSsdtOptions): DiagTableFiles {
  const { aml, layout } = buildDiagSsdt(options);
  let dir: string | undefined;
  const need = (): string => {
    if (dir === undefined) throw new Error('diagTableFiles: read in a test or hook, after beforeAll');
    return dir;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
    await writeFile(join(dir, 'eve-diag-ssdt.aml'), aml);
    await writeFile(join(dir, 'eve-diag-ssdt.json'), JSON.stringify(layout));
  });
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  return {
    aml,
    layout,
    get dir() {
      return need();
    },
    get tableFile() {
      return join(need(), 'eve-diag-ssdt.aml');
    },
    get layoutFile() {
      return join(need(), 'eve-diag-ssdt.json');
    },
  };
}
