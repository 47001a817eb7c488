import type { LogLine } from './store/store.js';

/**
 * App log lines as EVE carries them (eve-api `LogEntry`): one JSON object per line with `severity`,
 * `source`, `content`, `msgid`, `timestamp`. Two spellings of the time are taken: protojson's RFC 3339
 * text (what `eden pod logs --format=json` prints) and newlogd's `{seconds, nanos}`. Lines that are not
 * JSON objects are skipped and counted: eden prints a plain-text header per section ("App logs list
 * for app <uuid>:"). Everything is bounded: lines, line length, content length; a line that is too
 * long is skipped, never buffered whole.
 */

export interface ParseLogsOptions {
  maxLines?: number;
  maxLineBytes?: number;
  maxContentChars?: number;
}

export interface ParsedLogs {
  lines: LogLine[];
  /** Header or other non-JSON lines. */
  skipped: number;
  /** JSON lines that were not a LogEntry (reasons, at most 10). */
  rejected: string[];
  rejectedCount: number;
  /** More lines than maxLines: the rest was not read. */
  truncated: boolean;
}

function timeOf(t: unknown): string | undefined {
  if (typeof t === 'string') {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
  }
  if (typeof t === 'object' && t !== null) {
    const { seconds, nanos } = t as { seconds?: unknown; nanos?: unknown };
    // google.protobuf.Timestamp: nanos is an integer 0..999 999 999 (omitted when zero; protojson
    // may write either field as a decimal string). Anything else is no time, not a shifted one.
    const int = (x: unknown): number | undefined =>
      x === undefined ? 0 : typeof x === 'number' && Number.isInteger(x) ? x : typeof x === 'string' && /^\d{1,12}$/.test(x) ? Number(x) : undefined;
    const s = int(seconds);
    const n = int(nanos);
    if (s !== undefined && n !== undefined && s >= 0 && s < 1e11 && n >= 0 && n <= 999_999_999) return new Date(s * 1000 + Math.floor(n / 1e6)).toISOString();
  }
  return undefined;
}

export function parseLogEntries(text: string, o: ParseLogsOptions = {}): ParsedLogs {
  const maxLines = o.maxLines ?? 10_000;
  const maxLineBytes = o.maxLineBytes ?? 16 * 1024;
  const maxContent = o.maxContentChars ?? 8192;
  const out: ParsedLogs = { lines: [], skipped: 0, rejected: [], rejectedCount: 0, truncated: false };
  const reject = (why: string) => {
    out.rejectedCount++;
    if (out.rejected.length < 10) out.rejected.push(why);
  };
  let start = 0;
  let n = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const raw = text.slice(start, end).replace(/\r$/, '');
    start = end + 1;
    if (++n > maxLines) {
      out.truncated = true;
      break;
    }
    const line = raw.trim();
    if (line === '') continue;
    if (!line.startsWith('{')) {
      out.skipped++;
      continue;
    }
    if (line.length > maxLineBytes) {
      reject(`line ${n}: longer than ${maxLineBytes} bytes`);
      continue;
    }
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      reject(`line ${n}: not JSON`);
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      reject(`line ${n}: not an object`);
      continue;
    }
    const e = v as Record<string, unknown>;
    if (typeof e['content'] !== 'string') {
      reject(`line ${n}: no content`);
      continue;
    }
    const at = timeOf(e['timestamp']);
    if (at === undefined) {
      reject(`line ${n}: no valid timestamp`);
      continue;
    }
    out.lines.push({
      at,
      severity: typeof e['severity'] === 'string' ? e['severity'].slice(0, 16).toLowerCase() : 'info',
      source: typeof e['source'] === 'string' ? e['source'].slice(0, 256) : '',
      content: e['content'].slice(0, maxContent),
    });
  }
  return out;
}
