import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { reportInput } from '../../controller/analyzers/index.js';
import type { AnalysisInput } from '../../controller/analyzers/index.js';
import { MANIFEST_FILE, type ReportManifest } from '../../protocol/report-manifest.js';
import { repoRoot } from '../../util/repo-root.js';

/**
 * Report bundles captured from real guests (test/controller/captures.guest.test.ts writes them with
 * EVE_DIAG_UPDATE_FIXTURES=1): test/fixtures/bundles/<kernel>/<scenario>/, each a bundle directory as
 * the monitor's spool holds it.
 */
export const FIXTURES = join(repoRoot(), 'test', 'fixtures', 'bundles');

/** A bundle directory as the analyzers see it (node "fixture"). */
export async function bundleInput(dir: string): Promise<AnalysisInput> {
  const manifest = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as ReportManifest;
  return reportInput('fixture', manifest, (a) => readFile(join(dir, a.file)));
}

/** The captured bundles: [kernel, scenario, dir]. */
export async function fixtureBundles(): Promise<[string, string, string][]> {
  const out: [string, string, string][] = [];
  for (const k of (await readdir(FIXTURES, { withFileTypes: true })).filter((d) => d.isDirectory())) {
    for (const s of (await readdir(join(FIXTURES, k.name), { withFileTypes: true })).filter((d) => d.isDirectory())) out.push([k.name, s.name, join(FIXTURES, k.name, s.name)]);
  }
  return out.sort();
}
