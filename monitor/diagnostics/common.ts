import { sanitizeLine, sanitizeText } from '../../host-reader/console/sanitize.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import type { Clock } from '../../util/clock.js';
import type { QmpLinks } from '../probes/qmp-link.js';
import type { Artifact, CollectorResult } from '../types.js';

/**
 * What the diagnostic collectors share: a QMP session per collection, a deadline, and bounded artifacts.
 */

/** A QMP session lent to one collection; `release` ends the loan (closes it, or hands a shared one back). */
export interface QmpLease {
  qmp: QmpClient;
  release(): Promise<void>;
}

/**
 * Lends a QMP session on `path` (tests inject one that talks to a fake server). QEMU serves one QMP
 * client at a time, so the monitor lends the connection its probes already hold (see linkConnector).
 */
export type QmpConnector = (path: string, options: { timeoutMs: number; signal: AbortSignal }) => Promise<QmpLease>;

/** A connection of its own, closed on release (the `eve-diag diagnose` case: nothing else holds QMP). */
export const connectQmp: QmpConnector = async (path, { timeoutMs, signal }) => {
  const qmp = await QmpClient.connect({ path }, { timeoutMs, signal, defaultTimeoutMs: timeoutMs });
  return { qmp, release: () => qmp.close().catch(() => undefined) };
};

/** The time left of one collection. */
export class Deadline {
  readonly #end: number;

  constructor(
    timeoutMs: number,
    private readonly clock: Pick<Clock, 'now'>,
  ) {
    this.#end = clock.now() + timeoutMs;
  }

  /** Milliseconds left, at least 0. */
  remaining(): number {
    return Math.max(0, this.#end - this.clock.now());
  }

  /** At most `ms`, and no later than the deadline (at least 1 ms, so a timeout is never "none"). */
  cap(ms: number): number {
    return Math.max(1, Math.min(ms, this.remaining()));
  }

  get expired(): boolean {
    return this.remaining() <= 0;
  }
}

/** A failed collection: no artifacts, and why. */
export function failed(summary: string, artifacts: Artifact[] = []): CollectorResult {
  return { ok: false, summary: sanitizeLine(summary), artifacts };
}

/** One printable line saying what went wrong (error messages can carry guest text). */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error && !error.message.includes(error.cause.message) ? `: ${error.cause.message}` : '';
    return sanitizeLine(`${error.message}${cause}`, 240);
  }
  return sanitizeLine(String(error), 240);
}

/** Size of an artifact's data in bytes. */
export function artifactBytes(artifact: Artifact): number {
  return typeof artifact.data === 'string' ? Buffer.byteLength(artifact.data, 'utf8') : artifact.data.length;
}

/** A text artifact: sanitized and at most `maxBytes` (UTF-8), keeping the head or the tail. */
export function textArtifact(
  name: string,
  data: string | Uint8Array,
  maxBytes: number,
  keep: 'head' | 'tail' = 'head',
  alreadyTruncated = false,
): Artifact {
  const { text, truncated } = sanitizeText(data, { maxBytes, keep });
  const artifact: Artifact = { name, mediaType: 'text/plain', data: text };
  if (truncated || alreadyTruncated) artifact.truncated = true;
  return artifact;
}

/**
 * A JSON artifact of at most `maxBytes`. JSON cut in the middle would not parse, so a value too large
 * becomes `{"truncated": true, "bytes": N, "head": "<the start of the JSON text>"}`.
 */
export function jsonArtifact(name: string, value: unknown, maxBytes: number): Artifact {
  const text = `${JSON.stringify(value, null, 2)}\n`;
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return { name, mediaType: 'application/json', data: text };
  const bytes = Buffer.byteLength(text, 'utf8');
  // JSON escaping can grow the head (quotes, control characters): leave room for it.
  const room = Math.max(0, Math.floor((maxBytes - 80) / 2));
  const head = sanitizeText(text, { maxBytes: room }).text;
  let data = `${JSON.stringify({ truncated: true, bytes, head })}\n`;
  if (Buffer.byteLength(data, 'utf8') > maxBytes) data = maxBytes >= 40 ? `${JSON.stringify({ truncated: true, bytes })}\n` : '';
  return { name, mediaType: 'application/json', data, truncated: true };
}

/** `n` bytes for humans: `812 B`, `3.2 KiB`, `1.5 MiB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

/** Runs `fn` with a QMP session on `path` and always closes it. */
export async function withQmp<T>(
  connector: QmpConnector,
  path: string,
  options: { timeoutMs: number; signal: AbortSignal },
  fn: (qmp: QmpClient) => Promise<T>,
): Promise<T> {
  const lease = await connector(path, options);
  try {
    return await fn(lease.qmp);
  } finally {
    await lease.release();
  }
}

/**
 * Lends the QMP connection the monitor's probes share (one per VM: QEMU serves one QMP client at a
 * time). Release hands it back; the link stays open for the probes.
 */
export function linkConnector(links: QmpLinks): QmpConnector {
  return async (path, { signal }) => {
    const link = links.acquire(path);
    try {
      return { qmp: await link.client(signal), release: () => links.release(link) };
    } catch (e) {
      await links.release(link);
      throw e;
    }
  };
}
