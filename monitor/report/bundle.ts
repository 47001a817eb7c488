import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { copyFile, lstat, mkdir, open, readdir, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { sanitizeLine, sanitizeText } from '../../host-reader/console/sanitize.js';
import type { StepResult } from '../diagnostics/runner.js';
import type { Artifact, Verdict } from '../types.js';
import {
  isSafeName,
  MANIFEST_FILE,
  MANIFEST_SCHEMA_NAME,
  MANIFEST_SCHEMA_VERSION,
  manifestProblems,
  MAX_ARTIFACTS_PER_STEP,
  MAX_STEPS,
  MAX_SUMMARY_CHARS,
  MAX_TIMELINE_SAMPLES,
  VERDICTS,
  type JsonValue,
  type ManifestArtifact,
  type ManifestExternal,
  type ManifestOmission,
  type ReportManifest,
  type TimelineEntry,
} from '../../protocol/report-manifest.js';

/**
 * A report bundle is one directory in a spool: `<spool>/<id>/manifest.json` plus the artifact files. It is
 * written atomically: everything goes into `<spool>/.tmp-<id>/` (each file fsynced), which is then renamed
 * to `<spool>/<id>/`. A reader (the shipper to the controller) only ever sees complete bundles: names
 * starting with a dot are not bundles, and a failed write removes its temporary directory.
 */

export class ReportError extends Error {
  override name = 'ReportError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A manifest that does not validate (`problems`: JSON pointers and what is wrong). */
export class ManifestError extends ReportError {
  override name = 'ManifestError';

  constructor(
    readonly path: string,
    readonly problems: readonly string[],
  ) {
    super(`invalid report manifest ${path}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (+${problems.length - 5} more)` : ''}`);
  }
}

/**
 * A file a collector left on disk instead of holding it in memory (a guest memory dump): the bundle
 * writer moves it into the bundle directory (a rename on the same filesystem, else a copy then unlink),
 * hashes it streaming, and lists it under the step's `external` (kept on the node, not shipped).
 * Whatever happens, the file at `path` is gone once writeBundle returns or throws: it is the bundle's now.
 */
export interface ExternalFile {
  /** Absolute path of the file to take in. */
  path: string;
}

/** An artifact whose content is a file on disk (`data` is ignored, `''` by convention). */
export type ExternalArtifact = Artifact & { external: ExternalFile };

/** Whether a collector's artifact is a file on disk rather than bytes in memory. */
export function isExternalArtifact(a: Artifact): a is ExternalArtifact {
  const e = (a as Partial<ExternalArtifact>).external;
  return typeof e === 'object' && e !== null && typeof e.path === 'string';
}

/** An artifact for a file on disk (see ExternalFile). */
export function externalArtifact(name: string, mediaType: Artifact['mediaType'], path: string): ExternalArtifact {
  return { name, mediaType, data: '', external: { path } };
}

/** One heartbeat sample (or any sample) of the timeline: `at` plus JSON fields. */
export interface TimelineSample {
  /** ISO 8601 text, epoch milliseconds, or a Date. */
  at: string | number | Date;
  [key: string]: unknown;
}

/** A step as the runner reports it; `status`, `startedAt`, `durationMs` may be missing for hand-made steps. */
export type ReportStep = Pick<StepResult, 'kind' | 'ok' | 'summary' | 'artifacts'> &
  Partial<Pick<StepResult, 'status' | 'startedAt' | 'durationMs'>>;

export interface ReportInput {
  app: string | { name: string };
  verdict: Verdict;
  evidence?: Record<string, unknown>;
  timeline?: readonly TimelineSample[];
  steps: readonly ReportStep[];
  /** Default: now. */
  createdAt?: Date;
}

/** File writes, injectable so tests can make one fail. */
export interface BundleIo {
  writeFile(path: string, data: Uint8Array): Promise<void>;
}

export interface WriteBundleOptions {
  /** Bundle size cap (artifacts plus manifest). Default 16 MiB. */
  maxTotalBytes?: number;
  /** Newest timeline samples kept. Default 1000. */
  maxTimelineSamples?: number;
  /** Evidence larger than this (as JSON) is replaced by a note. Default 64 KiB. */
  maxEvidenceBytes?: number;
  /**
   * External files (ExternalFile) larger than this, together, are not taken in: the file is deleted and
   * listed as omitted. Default: no limit (the Spool passes what its quota leaves).
   */
  maxExternalBytes?: number;
  /** Bundle id (default: UTC time, app name, random suffix). */
  id?: string;
  io?: BundleIo;
}

export interface WrittenBundle {
  id: string;
  dir: string;
  manifest: ReportManifest;
}

export const DEFAULT_MAX_BUNDLE_BYTES = 16 * 1024 * 1024;
export const MAX_MANIFEST_READ_BYTES = 8 * 1024 * 1024;
const MAX_JSON_DEPTH = 16;
const MAX_JSON_STRING_BYTES = 4096;
const MAX_JSON_ARRAY = 1000;
const MAX_JSON_KEYS = 256;

/**
 * Writes a report bundle into `spool` (created 0700 if missing) and returns its id, directory and
 * manifest. Text artifacts and every string of the manifest are sanitized; artifact names must be safe
 * file names (`SAFE_NAME_PATTERN`) and unique per step, and are stored as `NN-NAME` (NN: the step index).
 * When the artifacts do not fit in `maxTotalBytes`, text is cut and the rest is listed as omitted.
 * External artifacts (a memory dump on disk, see ExternalFile) are outside `maxTotalBytes` and
 * `totalBytes`: moved in and listed under the step's `external`, within `maxExternalBytes`; in every
 * case their source file is gone when this returns or throws.
 * Throws a `RangeError`/`TypeError` for bad input before touching the disk, and a `ReportError` (its
 * `cause`: the errno error) when writing fails, after removing the temporary directory.
 */
export async function writeBundle(spool: string, input: ReportInput, options: WriteBundleOptions = {}): Promise<WrittenBundle> {
  const externals = (Array.isArray(input?.steps) ? input.steps : []).flatMap((s) =>
    (Array.isArray(s?.artifacts) ? (s.artifacts as readonly Artifact[]) : []).filter(isExternalArtifact).map((a) => a.external.path),
  );
  try {
    return await writeBundleNow(spool, input, options);
  } finally {
    // Taken into the bundle (moved) or refused: either way the collector's file must not stay behind.
    await Promise.all(externals.map((p) => unlink(p).catch(() => undefined)));
  }
}

async function writeBundleNow(spool: string, input: ReportInput, options: WriteBundleOptions): Promise<WrittenBundle> {
  if (typeof spool !== 'string' || spool.length === 0) throw new TypeError(`spool must be a non-empty path, got ${JSON.stringify(spool)}`);
  const maxTotalBytes = options.maxTotalBytes ?? DEFAULT_MAX_BUNDLE_BYTES;
  const maxTimeline = options.maxTimelineSamples ?? 1000;
  const maxEvidenceBytes = options.maxEvidenceBytes ?? 64 * 1024;
  const maxExternalBytes = options.maxExternalBytes ?? Number.MAX_SAFE_INTEGER;
  for (const [k, v] of Object.entries({ maxTotalBytes, maxTimelineSamples: maxTimeline, maxEvidenceBytes, maxExternalBytes })) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${k} must be an integer >= 0, got ${String(v)}`);
  }
  if (maxTimeline > MAX_TIMELINE_SAMPLES) throw new RangeError(`maxTimelineSamples must be <= ${MAX_TIMELINE_SAMPLES}`);
  const appName = typeof input.app === 'string' ? input.app : input.app?.name;
  if (typeof appName !== 'string' || appName.length === 0) throw new TypeError(`app name must be a non-empty string, got ${JSON.stringify(appName)}`);
  if (!(VERDICTS as readonly string[]).includes(input.verdict)) throw new RangeError(`unknown verdict ${JSON.stringify(input.verdict)}`);
  if (!Array.isArray(input.steps) || input.steps.length > MAX_STEPS) throw new RangeError(`steps must be an array of at most ${MAX_STEPS}`);
  const createdAt = input.createdAt ?? new Date();
  if (Number.isNaN(createdAt.getTime())) throw new RangeError('createdAt is an invalid Date');
  const id = options.id ?? newBundleId(createdAt, appName);
  if (!isSafeName(id)) throw new RangeError(`bundle id must match the safe name pattern, got ${JSON.stringify(id)}`);

  // Names first: a bad one is a programmer error and nothing may reach the disk.
  const width = Math.max(2, String(input.steps.length - 1).length);
  const planned = input.steps.map((step, index) => {
    if (!Array.isArray(step.artifacts) || step.artifacts.length > MAX_ARTIFACTS_PER_STEP) {
      throw new RangeError(`step ${index}: artifacts must be an array of at most ${MAX_ARTIFACTS_PER_STEP}`);
    }
    const seen = new Set<string>();
    return step.artifacts.map((a: Artifact) => {
      if (!isSafeName(a.name)) {
        throw new RangeError(`step ${index} (${step.kind}): artifact name ${JSON.stringify(a.name)} is not a safe file name (no path separators, no leading dot)`);
      }
      if (seen.has(a.name)) throw new RangeError(`step ${index} (${step.kind}): artifact name ${JSON.stringify(a.name)} appears twice`);
      seen.add(a.name);
      const file = `${String(index).padStart(width, '0')}-${a.name}`;
      if (!isSafeName(file) || file === MANIFEST_FILE) throw new RangeError(`step ${index}: artifact name ${JSON.stringify(a.name)} is too long`);
      if (isExternalArtifact(a)) {
        if (!a.external.path.startsWith('/')) throw new RangeError(`step ${index} (${step.kind}): external file ${JSON.stringify(a.external.path)} must be an absolute path`);
        return { artifact: a, file, data: Buffer.alloc(0), external: a.external };
      }
      return { artifact: a, file, data: artifactContent(a), external: undefined };
    });
  });

  let truncated = false;
  const samples = input.timeline ?? [];
  if (samples.length > maxTimeline) truncated = true;
  const timeline: TimelineEntry[] = samples.slice(Math.max(0, samples.length - maxTimeline)).map((s, i) => {
    const at = toIso(s.at);
    if (at === undefined) throw new RangeError(`timeline[${i}].at must be an ISO date, epoch ms or a Date, got ${JSON.stringify(s.at)}`);
    const { at: _at, ...rest } = s;
    return { ...(toJson(rest, 1) as Record<string, JsonValue>), at };
  });
  let evidence = toJson(input.evidence ?? {}, 0) as Record<string, JsonValue>;
  const evidenceBytes = Buffer.byteLength(JSON.stringify(evidence), 'utf8');
  if (evidenceBytes > maxEvidenceBytes) {
    evidence = { truncated: true, bytes: evidenceBytes };
    truncated = true;
  }

  const manifest: ReportManifest = {
    schema: MANIFEST_SCHEMA_NAME,
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    id,
    createdAt: createdAt.toISOString(),
    app: { name: sanitizeLine(appName, 256) || '?' },
    verdict: input.verdict,
    evidence,
    timeline,
    steps: [],
    totalBytes: 0,
    truncated,
  };
  // What the manifest takes without artifact entries, plus a generous entry size each: the rest is the
  // artifacts' budget.
  const entryReserve = 512;
  const artifactCount = planned.reduce((n, p) => n + p.length, 0);
  const stepReserve = input.steps.length * (MAX_SUMMARY_CHARS * 3 + 256);
  let budget = maxTotalBytes - Buffer.byteLength(JSON.stringify(manifest, null, 2), 'utf8') - stepReserve - artifactCount * entryReserve;

  const io = options.io ?? { writeFile: writeFileSynced };
  const tmp = join(spool, `.tmp-${id}`);
  const dir = join(spool, id);
  try {
    await mkdir(spool, { recursive: true, mode: 0o700 });
    if (await exists(dir)) throw new ReportError(`a bundle ${id} already exists in ${spool}`);
    await mkdir(tmp, { mode: 0o700 });
  } catch (cause) {
    if (cause instanceof ReportError) throw cause;
    throw new ReportError(`cannot create the bundle directory in ${spool}: ${(cause as Error).message}`, { cause });
  }

  // External files first: they move into the temporary directory and are hashed there.
  const taken = new Map<string, { bytes: number; sha256: string } | { omitted: string; bytes: number }>();
  let externalLeft = maxExternalBytes;
  try {
    for (const p of planned.flat()) {
      if (p.external === undefined) continue;
      const took = await takeExternal(p.external.path, join(tmp, p.file), externalLeft);
      if ('sha256' in took) externalLeft -= took.bytes;
      taken.set(p.file, took);
    }
  } catch (cause) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw new ReportError(`cannot write bundle ${id} in ${spool}: ${(cause as Error).message}`, { cause });
  }

  const files: { file: string; data: Buffer }[] = [];
  input.steps.forEach((step, index) => {
    const artifacts: ManifestArtifact[] = [];
    const omitted: ManifestOmission[] = [];
    const external: ManifestExternal[] = [];
    for (const p of planned[index] ?? []) {
      if (p.external !== undefined) {
        const took = taken.get(p.file);
        if (took === undefined || 'omitted' in took) {
          omitted.push({ name: p.artifact.name, bytes: took?.bytes ?? 0, reason: took?.omitted ?? 'not taken in' });
          manifest.truncated = true;
        } else {
          external.push({ name: p.artifact.name, file: p.file, mediaType: p.artifact.mediaType, bytes: took.bytes, sha256: took.sha256, uploaded: false });
        }
        continue;
      }
      let data = p.data;
      let cut = p.artifact.truncated === true;
      if (data.length > budget) {
        if (p.artifact.mediaType === 'text/plain' && budget >= 1024) {
          data = Buffer.from(sanitizeText(data, { maxBytes: budget }).text, 'utf8');
          cut = true;
        } else {
          omitted.push({ name: p.artifact.name, bytes: data.length, reason: 'the bundle size cap was reached' });
          manifest.truncated = true;
          continue;
        }
        manifest.truncated = true;
      }
      budget -= data.length;
      files.push({ file: p.file, data });
      artifacts.push({
        name: p.artifact.name,
        file: p.file,
        mediaType: p.artifact.mediaType,
        bytes: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        truncated: cut,
      });
      manifest.totalBytes += data.length;
    }
    const status = step.status ?? 'done';
    manifest.steps.push({
      index,
      kind: sanitizeLine(String(step.kind), 64) || '?',
      ok: step.ok === true,
      status,
      summary: sanitizeLine(String(step.summary), MAX_SUMMARY_CHARS),
      startedAt: step.startedAt === undefined ? null : (toIso(step.startedAt) ?? null),
      durationMs: typeof step.durationMs === 'number' && Number.isFinite(step.durationMs) && step.durationMs >= 0 ? Math.round(step.durationMs) : null,
      artifacts,
      omitted,
      ...(external.length > 0 ? { external } : {}),
    });
  });
  const problems = manifestProblems(manifest);
  if (problems.length > 0) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw new ManifestError(`${id}/${MANIFEST_FILE}`, problems); // a bug here, not bad input
  }
  files.push({ file: MANIFEST_FILE, data: Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8') });

  try {
    for (const f of files) await io.writeFile(join(tmp, f.file), f.data);
    await syncDir(tmp);
    await rename(tmp, dir);
    await syncDir(spool);
  } catch (cause) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw new ReportError(`cannot write bundle ${id} in ${spool}: ${(cause as Error).message}`, { cause });
  }
  return { id, dir, manifest };
}

export interface SpoolEntry {
  id: string;
  dir: string;
}

/** The complete bundles in `spool`, oldest first (ids start with their UTC time). A missing spool is empty. */
export async function listSpool(spool: string): Promise<SpoolEntry[]> {
  let entries;
  try {
    entries = await readdir(spool, { withFileTypes: true });
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ReportError(`cannot list the spool ${spool}: ${(cause as Error).message}`, { cause });
  }
  return entries
    .filter((e) => e.isDirectory() && isSafeName(e.name))
    .map((e) => ({ id: e.name, dir: join(spool, e.name) }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Removes temporary directories (`.tmp-*`) older than `olderThanMs` that a crashed writer left in `spool`,
 * and `.tmp-*` files (a memory dump a collector wrote there and nobody took in). Returns how many were
 * removed.
 */
export async function cleanSpool(spool: string, olderThanMs = 60 * 60 * 1000): Promise<number> {
  const entries = await readdir(spool, { withFileTypes: true }).catch(() => []);
  let removed = 0;
  for (const e of entries) {
    if (!(e.isDirectory() || e.isFile()) || !e.name.startsWith('.tmp-')) continue;
    const path = join(spool, e.name);
    const st = await lstat(path).catch(() => undefined);
    if (st !== undefined && Date.now() - st.mtimeMs >= olderThanMs) {
      await rm(path, { recursive: true, force: true });
      removed += 1;
    }
  }
  return removed;
}

export interface ReadManifestOptions {
  /** Check that every artifact file (external ones too, read streaming) has the size and SHA-256 the manifest says. Default true. */
  verifyFiles?: boolean;
}

/**
 * Reads and validates `<dir>/manifest.json` (schema, then file sizes and hashes). Throws `ManifestError`
 * listing the problems, or `ReportError` when it cannot be read.
 */
export async function readManifest(dir: string, options: ReadManifestOptions = {}): Promise<ReportManifest> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    const data = await readSpoolFile(path, MAX_MANIFEST_READ_BYTES);
    if (data === undefined) throw new ManifestError(path, ['not a regular file (a symlink?)']);
    text = data.toString('utf8');
  } catch (cause) {
    if (cause instanceof SpoolFileTooLarge) throw new ManifestError(path, [`file is ${cause.bytes} bytes, more than ${MAX_MANIFEST_READ_BYTES}`]);
    if (cause instanceof ReportError) throw cause;
    throw new ReportError(`cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ManifestError(path, [`not JSON: ${(cause as Error).message}`]);
  }
  const problems = manifestProblems(value);
  if (problems.length > 0) throw new ManifestError(path, problems);
  const manifest = value as ReportManifest;
  if (options.verifyFiles ?? true) {
    for (const step of manifest.steps) {
      for (const a of step.artifacts) {
        // Read no more than the manifest says (and one byte to tell a longer file), never through a link.
        const data = await readSpoolFile(join(dir, a.file), a.bytes).catch((e: unknown) => (e instanceof SpoolFileTooLarge ? e : undefined));
        if (data === undefined) problems.push(`/steps/${step.index}: file ${a.file} is missing (or not a regular file)`);
        else if (data instanceof SpoolFileTooLarge) problems.push(`/steps/${step.index}: file ${a.file} has ${data.bytes} bytes, not ${a.bytes}`);
        else if (data.length !== a.bytes) problems.push(`/steps/${step.index}: file ${a.file} has ${data.length} bytes, not ${a.bytes}`);
        else if (createHash('sha256').update(data).digest('hex') !== a.sha256) problems.push(`/steps/${step.index}: file ${a.file} does not match its sha256`);
      }
      for (const e of step.external ?? []) {
        const got = await hashFile(join(dir, e.file)).catch(() => undefined);
        if (got === undefined) problems.push(`/steps/${step.index}: external file ${e.file} is missing`);
        else if (got.bytes !== e.bytes) problems.push(`/steps/${step.index}: external file ${e.file} has ${got.bytes} bytes, not ${e.bytes}`);
        else if (got.sha256 !== e.sha256) problems.push(`/steps/${step.index}: external file ${e.file} does not match its sha256`);
      }
    }
    if (problems.length > 0) throw new ManifestError(path, problems);
  }
  return manifest;
}

/** `20261126T115428123Z-vm1-3fa2c1d4`: sorts by time; the app name made safe; 32 random bits. */
export function newBundleId(createdAt: Date, app: string): string {
  const stamp = createdAt.toISOString().replace(/[-:]/g, '').replace('.', '');
  const slug = app.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '').slice(0, 48) || 'app';
  return `${stamp}-${slug}-${randomBytes(4).toString('hex')}`;
}

/** Media types stored as text (sanitized); every other one is binary, stored byte for byte. */
const TEXT_MEDIA_TYPES: ReadonlySet<string> = new Set(['text/plain', 'application/json']);

/** The bytes stored for an artifact: text sanitized (JSON text too: it stays valid JSON), binary as is. */
function artifactContent(a: ReportStep['artifacts'][number]): Buffer {
  if (!TEXT_MEDIA_TYPES.has(a.mediaType)) {
    return typeof a.data === 'string' ? Buffer.from(a.data, 'utf8') : Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  }
  if (typeof a.data !== 'string' && !(a.data instanceof Uint8Array)) throw new TypeError(`artifact ${a.name}: data must be a string or bytes`);
  // The collectors bounded their artifacts already; this bound only guards against a broken one.
  return Buffer.from(sanitizeText(a.data, { maxBytes: DEFAULT_MAX_BUNDLE_BYTES }).text, 'utf8');
}

/** A JSON copy of `value`: strings sanitized, sizes and depth bounded, non-JSON values dropped or made null. */
function toJson(value: unknown, depth: number): JsonValue {
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'string') return sanitizeText(value, { maxBytes: MAX_JSON_STRING_BYTES }).text;
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return toIso(value) ?? null;
  if (depth >= MAX_JSON_DEPTH) return '[too deep]';
  if (Array.isArray(value)) return value.slice(0, MAX_JSON_ARRAY).map((v) => toJson(v, depth + 1));
  if (typeof value === 'object') {
    const out: Record<string, JsonValue> = {};
    for (const [k, v] of Object.entries(value).slice(0, MAX_JSON_KEYS)) {
      if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
      out[sanitizeLine(k, 128) || '_'] = toJson(v, depth + 1);
    }
    return out;
  }
  return null;
}

function toIso(at: unknown): string | undefined {
  let d: Date | undefined;
  if (at instanceof Date) d = at;
  else if (typeof at === 'number') d = new Date(at);
  else if (typeof at === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(at)) d = new Date(at);
  if (d === undefined || Number.isNaN(d.getTime())) return undefined;
  return d.toISOString();
}

/**
 * Moves the external file `from` to `to` (rename; a copy then unlink across filesystems), fsynced, and
 * hashes it streaming. Refuses (and deletes) what is not a regular file, or is larger than `room`.
 */
async function takeExternal(from: string, to: string, room: number): Promise<{ bytes: number; sha256: string } | { omitted: string; bytes: number }> {
  const st = await lstat(from).catch(() => undefined);
  if (st === undefined) return { omitted: 'the file the collector wrote is gone', bytes: 0 };
  if (!st.isFile()) return { omitted: 'the collector\'s file is not a regular file', bytes: 0 };
  if (st.size > room) return { omitted: `the spool has no room for it (${st.size} bytes, ${Math.max(0, room)} left)`, bytes: st.size };
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(from, to, fsConstants.COPYFILE_EXCL);
    await unlink(from);
  }
  const handle = await open(to, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  return hashFile(to);
}

/** SHA-256 and size of a regular file, read streaming; a symlink (or a FIFO, a device) is refused, not followed. */
export async function hashFile(path: string): Promise<{ bytes: number; sha256: string }> {
  const handle = await openRegular(path);
  try {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of handle.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false })) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return { bytes, sha256: hash.digest('hex') };
  } finally {
    await handle.close();
  }
}

/**
 * Files of the spool are opened with O_NOFOLLOW (a symlink someone placed there is ELOOP, never
 * followed) and O_NONBLOCK (a FIFO placed there does not block the open); what is open must be a
 * regular file.
 */
const O_READ_NOFOLLOW = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;

async function openRegular(path: string): Promise<import('node:fs/promises').FileHandle> {
  const handle = await open(path, O_READ_NOFOLLOW);
  const st = await handle.stat().catch(async (e: unknown) => {
    await handle.close();
    throw e;
  });
  if (!st.isFile()) {
    await handle.close();
    throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EFTYPE' });
  }
  return handle;
}

/** A file of the spool longer than its reader allows. */
export class SpoolFileTooLarge extends ReportError {
  override name = 'SpoolFileTooLarge';
  constructor(
    readonly path: string,
    readonly bytes: number,
    readonly max: number,
  ) {
    super(`${path}: ${bytes} bytes, more than the ${max} read`);
  }
}

/**
 * The bytes of `path`, a regular file of the spool, at most `maxBytes` (else SpoolFileTooLarge);
 * undefined when it is missing, a symlink or not a regular file. Nothing is followed.
 */
export async function readSpoolFile(path: string, maxBytes: number): Promise<Buffer | undefined> {
  let handle;
  try {
    handle = await openRegular(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'EFTYPE' || code === 'ENOTDIR') return undefined;
    throw e;
  }
  try {
    const { size } = await handle.stat();
    if (size > maxBytes) throw new SpoolFileTooLarge(path, size, maxBytes);
    const buf = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await handle.read(buf, got, size - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } finally {
    await handle.close();
  }
}

/**
 * Writes `path` in the spool whole, mode 0600: a new temporary beside it (O_EXCL: a name that exists,
 * a symlink too, is an error, never followed), flushed, then renamed over `path` (a symlink there is
 * replaced, its target untouched).
 */
export async function writeSpoolFile(path: string, data: string | Uint8Array): Promise<void> {
  // `.tmp-*`: one a crash leaves directly in the spool is removed by cleanSpool.
  const tmp = join(dirname(path), `.tmp-${basename(path)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const handle = await open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** Appends to `path` in the spool (created 0600); a symlink there is ELOOP, never followed. */
export async function appendSpoolFile(path: string, data: string): Promise<number> {
  const handle = await open(path, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK, 0o600);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EFTYPE' });
    await handle.appendFile(data);
    return st.size + Buffer.byteLength(data);
  } finally {
    await handle.close();
  }
}

async function writeFileSynced(path: string, data: Uint8Array): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDir(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Whether anything is at `path` (a symlink too, dangling or not). */
async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}
