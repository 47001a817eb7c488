import type { ManifestArtifact, ReportManifest } from '../../protocol/report-manifest.js';
import type { AnalysisInput, TextArtifact } from './types.js';

/** The media types the analyzers read; binary artifacts (memory dumps, screenshots) are left out. */
export const TEXT_MEDIA_TYPES: ReadonlySet<string> = new Set(['text/plain', 'application/json']);
export const MAX_ANALYZED_ARTIFACT_BYTES = 8 * 1024 * 1024;

/**
 * A report as the analyzers see it: its manifest and its text artifacts, each read with `read` (from
 * the controller's blob store, or from a bundle directory) and at most `maxArtifactBytes` long.
 */
export async function reportInput(
  node: string,
  manifest: ReportManifest,
  read: (a: ManifestArtifact) => Promise<Buffer | undefined>,
  maxArtifactBytes = MAX_ANALYZED_ARTIFACT_BYTES,
): Promise<AnalysisInput> {
  const artifacts: TextArtifact[] = [];
  for (const step of manifest.steps) {
    for (const a of step.artifacts) {
      if (!TEXT_MEDIA_TYPES.has(a.mediaType) || a.bytes > maxArtifactBytes) continue;
      const data = await read(a);
      if (data !== undefined) artifacts.push({ file: a.file, name: a.name, kind: step.kind, mediaType: a.mediaType, text: data.subarray(0, maxArtifactBytes).toString('utf8') });
    }
  }
  return { node, app: manifest.app.name, manifest, artifacts };
}
