/**
 * The node-to-controller API, version 1 (docs/controller-api.yaml is its OpenAPI description): the paths,
 * the bodies and the acknowledgement, shared by the monitor's shipper and the controller. Pure.
 *
 * A report travels in three idempotent steps, so an upload cut at any point resumes where it stopped
 * and a retry never stores anything twice:
 *
 *   POST /api/v1/reports                      the manifest; answers which artifacts (by SHA-256) the
 *                                             controller does not hold yet
 *   PUT  /api/v1/reports/{id}/artifacts/{sha} one artifact's bytes (gzip allowed); checked against the
 *                                             manifest's size and hash
 *   POST /api/v1/reports/{id}/commit          the report is stored once every artifact is there; the
 *                                             answer is the acknowledgement the node keeps
 *
 * and small things in one request each: verdict changes (`/api/v1/events`), app log lines
 * (`/api/v1/logs`, EVE's LogEntry JSON lines), reports the node had to drop (`/api/v1/dropped`).
 */
import { isSafeName, VERDICTS, type Verdict } from './report-manifest.js';

export const API_PREFIX = '/api/v1';

export const paths = {
  reports: `${API_PREFIX}/reports`,
  artifact: (id: string, sha256: string) => `${API_PREFIX}/reports/${encodeURIComponent(id)}/artifacts/${sha256}`,
  commit: (id: string) => `${API_PREFIX}/reports/${encodeURIComponent(id)}/commit`,
  events: `${API_PREFIX}/events`,
  logs: `${API_PREFIX}/logs`,
  dropped: `${API_PREFIX}/dropped`,
} as const;

export const SHA256_RE = /^[0-9a-f]{64}$/;

/** POST /reports answer. */
export interface ReportOffer {
  id: string;
  status: 'pending' | 'stored';
  /** SHA-256 of the artifacts still to be sent (empty when stored). */
  missing: string[];
  ack?: ReportAck;
}

/** POST /reports/{id}/commit answer, 200: what the node records as delivered. */
export interface ReportAck {
  id: string;
  /** The controller's key for the report (its read API and dashboard use it). */
  key: number;
  stored: true;
  /** SHA-256 of the manifest as received. */
  manifestSha256: string;
  artifacts: { sha256: string; bytes: number }[];
  storedAt: string;
}

/** A verdict change, sent as it happens. */
export interface VerdictEvent {
  /** Unique per node (a retry carries the same id: stored once). */
  id: string;
  app: string;
  verdict: Verdict;
  reason: string;
  at: string;
  kernel?: { status?: string; beats?: number; ageMs?: number };
  agent?: { status?: string; beats?: number; ageMs?: number };
}

export const MAX_EVENTS_PER_REQUEST = 100;

/** A report the node removed before it was delivered (its spool quota). */
export interface DroppedNotice {
  id: string;
  bytes: number;
  droppedAt: string;
  reason: string;
}

/** Problems of a list of verdict events (empty when it is valid). Hostile input: every field bounded. */
export function verdictEventProblems(v: unknown): string[] {
  if (!Array.isArray(v)) return ['the body must be a JSON array of events'];
  if (v.length > MAX_EVENTS_PER_REQUEST) return [`at most ${MAX_EVENTS_PER_REQUEST} events per request (got ${v.length})`];
  const out: string[] = [];
  v.forEach((e: unknown, i) => {
    const o = e as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return void out.push(`[${i}]: not an object`);
    if (!isSafeName(o['id'])) out.push(`[${i}].id: a safe name (letters, digits, . _ -, at most 128)`);
    if (typeof o['app'] !== 'string' || o['app'].length === 0 || o['app'].length > 256) out.push(`[${i}].app: a string of 1..256 characters`);
    if (!(VERDICTS as readonly unknown[]).includes(o['verdict'])) out.push(`[${i}].verdict: one of ${VERDICTS.join(', ')}`);
    if (typeof o['reason'] !== 'string' || o['reason'].length > 2000) out.push(`[${i}].reason: a string of at most 2000 characters`);
    if (typeof o['at'] !== 'string' || Number.isNaN(Date.parse(o['at']))) out.push(`[${i}].at: an ISO 8601 time`);
    for (const k of ['kernel', 'agent']) {
      const s = o[k];
      if (s === undefined) continue;
      if (typeof s !== 'object' || s === null || Array.isArray(s)) out.push(`[${i}].${k}: an object`);
      else if (JSON.stringify(s).length > 512) out.push(`[${i}].${k}: at most 512 bytes`);
    }
    const known = new Set(['id', 'app', 'verdict', 'reason', 'at', 'kernel', 'agent']);
    for (const k of Object.keys(o)) if (!known.has(k)) out.push(`[${i}].${k}: unknown field`);
  });
  return out.slice(0, 20);
}

/** Problems of a list of dropped-report notices. */
export function droppedNoticeProblems(v: unknown): string[] {
  if (!Array.isArray(v)) return ['the body must be a JSON array of notices'];
  if (v.length > MAX_EVENTS_PER_REQUEST) return [`at most ${MAX_EVENTS_PER_REQUEST} notices per request (got ${v.length})`];
  const out: string[] = [];
  v.forEach((e: unknown, i) => {
    const o = e as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return void out.push(`[${i}]: not an object`);
    if (!isSafeName(o['id'])) out.push(`[${i}].id: a bundle id`);
    if (!Number.isSafeInteger(o['bytes']) || (o['bytes'] as number) < 0) out.push(`[${i}].bytes: a non-negative integer`);
    if (typeof o['droppedAt'] !== 'string' || Number.isNaN(Date.parse(o['droppedAt']))) out.push(`[${i}].droppedAt: an ISO 8601 time`);
    if (typeof o['reason'] !== 'string' || o['reason'].length > 256) out.push(`[${i}].reason: a string of at most 256 characters`);
  });
  return out.slice(0, 20);
}
