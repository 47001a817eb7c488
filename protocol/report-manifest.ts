import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';

type JsonSchema = { readonly [keyword: string]: unknown };
// ajv-formats is CommonJS: its default export arrives as the module object under NodeNext.
const addFormats = ((addFormatsPlugin as unknown as { default?: unknown }).default ?? addFormatsPlugin) as (ajv: Ajv2020) => Ajv2020;

/**
 * The manifest of a report bundle (`<spool>/<id>/manifest.json`): what was found (verdict, evidence, the
 * heartbeat timeline) and what the diagnostic scenario collected (one entry per step, each artifact with
 * its file, size and SHA-256). The contract between the monitor that writes bundles and the controller
 * that receives them. Versioned: a reader checks `schema` and `schemaVersion` first. The JSON Schema
 * below is published as docs/report-manifest.schema.json (a test keeps them equal).
 */

export const MANIFEST_SCHEMA_NAME = 'eve-diag/report-manifest';
export const MANIFEST_SCHEMA_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';

/** Bundle ids and artifact file names: no path separators, no leading dot, at most 128 characters. */
export const SAFE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
const SAFE_NAME = new RegExp(SAFE_NAME_PATTERN);

/** Every verdict the monitor gives, in precedence order of the healthy case first (monitor/classify.ts). */
export const VERDICTS = [
  'running-healthy',
  'vm-not-running',
  'guest-panicked',
  'guest-kernel-hung',
  'guest-userspace-hung',
  'app-unhealthy',
  'guest-starved',
  'unknown',
] as const;
export type Verdict = (typeof VERDICTS)[number];

/** How a diagnostic step ended. */
export const STEP_STATUSES = ['done', 'timeout', 'aborted', 'error', 'skipped'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];

/**
 * `image/png`: the screendump collector's screen. `application/vnd.eve-diag.kdump`: a guest memory dump
 * (QEMU dump-guest-memory kdump-zlib; QEMU 7.2 writes makedumpfile's flattened form, `makedumpfile -R`
 * reassembles it);
 * `application/vnd.eve-diag.elf-core`: the same as an ELF core file.
 */
export const MEDIA_TYPES = [
  'text/plain',
  'application/json',
  'application/octet-stream',
  'image/png',
  'application/vnd.eve-diag.kdump',
  'application/vnd.eve-diag.elf-core',
] as const;
export type MediaType = (typeof MEDIA_TYPES)[number];

/** Whether `name` may be a bundle id or a file name in a bundle. */
export function isSafeName(name: unknown): name is string {
  return typeof name === 'string' && SAFE_NAME.test(name) && name !== '.' && name !== '..';
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface ManifestArtifact {
  /** The collector's name for it. */
  name: string;
  /** The file in the bundle directory (the step's index, a dash, the name). */
  file: string;
  mediaType: MediaType;
  bytes: number;
  sha256: string;
  /** Cut by the collector's or the bundle's size cap. */
  truncated: boolean;
}

/**
 * A file kept in the bundle directory on the node but not part of the bundle as shipped: a guest memory
 * dump (hundreds of MiB). The spool counts it against its quota; the shipper does not upload it (the
 * controller never asks for it); `bytes` and `sha256` (computed streaming) let whoever fetches it by hand
 * check it. Listed apart from `artifacts`, so a reader that knows only those is not misled.
 */
export interface ManifestExternal {
  name: string;
  /** The file in the bundle directory (the step's index, a dash, the name). */
  file: string;
  mediaType: MediaType;
  bytes: number;
  sha256: string;
  /** Always false today: no external file is ever uploaded by the shipper. */
  uploaded: false;
}

export interface ManifestOmission {
  name: string;
  bytes: number;
  reason: string;
}

export interface ManifestStep {
  index: number;
  kind: string;
  ok: boolean;
  status: StepStatus;
  summary: string;
  startedAt: string | null;
  durationMs: number | null;
  artifacts: ManifestArtifact[];
  /** Artifacts left out because the bundle's total size cap was reached. */
  omitted: ManifestOmission[];
  /** Files kept beside the manifest but not shipped (a memory dump); absent when there are none. */
  external?: ManifestExternal[];
}

export interface TimelineEntry {
  at: string;
  [key: string]: JsonValue;
}

export interface ReportManifest {
  schema: typeof MANIFEST_SCHEMA_NAME;
  schemaVersion: typeof MANIFEST_SCHEMA_VERSION;
  id: string;
  createdAt: string;
  app: { name: string };
  verdict: Verdict;
  evidence: { [key: string]: JsonValue };
  /** Heartbeat samples around the failure, oldest first (as the caller gave them, bounded). */
  timeline: TimelineEntry[];
  steps: ManifestStep[];
  /** Sum of the artifact files' sizes (the manifest and the external files not included). */
  totalBytes: number;
  /** Something was cut or left out to respect the bundle's limits (timeline, evidence, artifacts). */
  truncated: boolean;
}

export const MAX_STEPS = 256;
export const MAX_ARTIFACTS_PER_STEP = 256;
export const MAX_TIMELINE_SAMPLES = 10_000;
export const MAX_SUMMARY_CHARS = 1000;

const name = { type: 'string', pattern: SAFE_NAME_PATTERN } as const;
/** What an artifact entry and an external file entry both say of their file. */
const fileProperties = {
  name,
  file: { ...name, not: { const: MANIFEST_FILE } },
  mediaType: { enum: [...MEDIA_TYPES] },
  bytes: { type: 'integer', minimum: 0 },
  sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
} as const;
const dateTime = { type: 'string', format: 'date-time' } as const;

/** The JSON Schema of `manifest.json`, version 1. */
export const REPORT_MANIFEST_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:eve-diag:report-manifest:1',
  title: 'eve-diag report bundle manifest',
  description:
    'manifest.json of an eve-diag report bundle: the verdict on a failed monitoring scenario, its evidence, the heartbeat timeline, and the diagnostic steps with their artifact files (in the same directory).',
  type: 'object',
  required: ['schema', 'schemaVersion', 'id', 'createdAt', 'app', 'verdict', 'evidence', 'timeline', 'steps', 'totalBytes', 'truncated'],
  additionalProperties: false,
  properties: {
    schema: { const: MANIFEST_SCHEMA_NAME },
    schemaVersion: { const: MANIFEST_SCHEMA_VERSION },
    id: { ...name, description: 'Bundle id, also the name of its directory in the spool.' },
    createdAt: dateTime,
    app: {
      type: 'object',
      required: ['name'],
      additionalProperties: false,
      properties: { name: { type: 'string', minLength: 1, maxLength: 256 } },
    },
    verdict: { enum: [...VERDICTS] },
    evidence: { type: 'object', description: 'Facts behind the verdict (probe results, heartbeat status...).' },
    timeline: {
      type: 'array',
      maxItems: MAX_TIMELINE_SAMPLES,
      items: { type: 'object', required: ['at'], properties: { at: dateTime } },
    },
    steps: { type: 'array', maxItems: MAX_STEPS, items: { $ref: '#/$defs/step' } },
    totalBytes: { type: 'integer', minimum: 0 },
    truncated: { type: 'boolean' },
  },
  $defs: {
    step: {
      type: 'object',
      required: ['index', 'kind', 'ok', 'status', 'summary', 'startedAt', 'durationMs', 'artifacts', 'omitted'],
      additionalProperties: false,
      properties: {
        index: { type: 'integer', minimum: 0 },
        kind: { type: 'string', minLength: 1, maxLength: 64 },
        ok: { type: 'boolean' },
        status: { enum: [...STEP_STATUSES] },
        summary: { type: 'string', maxLength: MAX_SUMMARY_CHARS },
        startedAt: { type: ['string', 'null'], format: 'date-time' },
        durationMs: { type: ['number', 'null'], minimum: 0 },
        artifacts: { type: 'array', maxItems: MAX_ARTIFACTS_PER_STEP, items: { $ref: '#/$defs/artifact' } },
        omitted: { type: 'array', maxItems: MAX_ARTIFACTS_PER_STEP, items: { $ref: '#/$defs/omission' } },
        external: {
          type: 'array',
          maxItems: MAX_ARTIFACTS_PER_STEP,
          description: 'Files kept in the bundle directory on the node, not shipped with the bundle (a guest memory dump).',
          items: { $ref: '#/$defs/external' },
        },
      },
    },
    artifact: {
      type: 'object',
      required: ['name', 'file', 'mediaType', 'bytes', 'sha256', 'truncated'],
      additionalProperties: false,
      properties: { ...fileProperties, truncated: { type: 'boolean' } },
    },
    external: {
      type: 'object',
      required: ['name', 'file', 'mediaType', 'bytes', 'sha256', 'uploaded'],
      additionalProperties: false,
      properties: { ...fileProperties, uploaded: { const: false } },
    },
    omission: {
      type: 'object',
      required: ['name', 'bytes', 'reason'],
      additionalProperties: false,
      properties: {
        name: { type: 'string', maxLength: 256 },
        bytes: { type: 'integer', minimum: 0 },
        reason: { type: 'string', maxLength: 256 },
      },
    },
  },
} as const satisfies JsonSchema;

/**
 * Checks `value` against the schema, then what a schema cannot say: file names unique in the bundle,
 * step indexes in order. Returns the problems found (empty: valid).
 */
let validator: ValidateFunction | undefined;
const MAX_SCHEMA_ERRORS = 20;

/** One schema error as `/json/pointer: what is wrong`, phrased for people reading a report problem. */
function describeSchemaError(e: ErrorObject): string {
  const at = e.instancePath || '/';
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'const':
      return `${at}: must be ${JSON.stringify(p['allowedValue'])}`;
    case 'enum':
      return `${at}: must be one of ${(p['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'required':
      return `${at}: must have property ${JSON.stringify(p['missingProperty'])}`;
    case 'additionalProperties':
      return `${at}: unexpected property ${JSON.stringify(p['additionalProperty'])}`;
    case 'format':
      return p['format'] === 'date-time' ? `${at}: must be an RFC 3339 date-time` : `${at}: must be a ${String(p['format'])}`;
    case 'not':
      return `${at}: must not match ${JSON.stringify(e.schema)}`;
    default:
      return `${at}: ${e.message ?? 'is invalid'}`;
  }
}

export function manifestProblems(value: unknown): string[] {
  validator ??= addFormats(new Ajv2020({ allErrors: true, strict: true, verbose: true })).compile(REPORT_MANIFEST_SCHEMA);
  const problems = validator(value)
    ? []
    : (validator.errors ?? []).slice(0, MAX_SCHEMA_ERRORS).map(describeSchemaError);
  if (problems.length > 0) return problems;
  const manifest = value as ReportManifest;
  const files = new Set<string>();
  manifest.steps.forEach((step, i) => {
    if (step.index !== i) problems.push(`/steps/${i}/index: must be ${i}`);
    for (const a of [...step.artifacts, ...(step.external ?? [])]) {
      if (files.has(a.file)) problems.push(`/steps/${i}: file ${JSON.stringify(a.file)} appears twice`);
      files.add(a.file);
    }
  });
  const total = manifest.steps.reduce((sum, s) => sum + s.artifacts.reduce((t, a) => t + a.bytes, 0), 0);
  if (total !== manifest.totalBytes) problems.push(`/totalBytes: must be the sum of the artifact sizes, ${total}`);
  return problems;
}
