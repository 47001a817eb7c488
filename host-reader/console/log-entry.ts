/**
 * EVE log entries as JSON lines: the form an app's console output takes once EVE's logging pipeline
 * has it (QEMU's console chardev writes to its stdout, containerd hands that to memlogd as source
 * `guest_vm-<domain>`, newlogd writes one entry per line to /persist/newlog/collect/app.<uuid>.log*),
 * and the form `eden pod logs --format=json` prints. Both are eve-api's `logs.LogEntry`
 * (proto/logs/log.proto): `severity`, `source`, `iid`, `content`, `msgid`, `tags`, `timestamp`,
 * `filename`, `function`. newlogd marshals it with Go's encoding/json (`timestamp` is
 * `{"seconds":N,"nanos":N}`, `msgid` a number), eden with protojson (`timestamp` an RFC 3339 string,
 * `msgid` a decimal string). memlogd's own lines (`{"time","source","msg"}`) are read too.
 *
 * Every line is hostile (the guest wrote `content`): the parser takes a bounded line, never throws,
 * and keeps only strings and numbers of the known fields.
 */

export interface LogEntryLine {
  /** The logged text (LogEntry `content`, memlogd/logrus `msg`). */
  content: string;
  severity?: string;
  source?: string;
  /** Wall-clock ms of the entry's timestamp, when it has a valid one. */
  timestampMs?: number;
  /** LogEntry `msgid` (counts per app: a gap is lost entries), as a decimal string. */
  msgid?: string;
}

export type LogEntryParse = { ok: true; entry: LogEntryLine } | { ok: false; reason: 'too-long' | 'not-json' | 'not-an-object' | 'no-content' };

/** Longest line parsed by default (bytes of UTF-8 are at least its characters). */
export const DEFAULT_MAX_ENTRY_CHARS = 64 * 1024;

/** One JSON line of log entries. `{ ok: false }` for anything else (the caller counts them). */
export function parseLogEntry(line: string, maxChars = DEFAULT_MAX_ENTRY_CHARS): LogEntryParse {
  if (line.length > maxChars) return { ok: false, reason: 'too-long' };
  const s = line.trim();
  if (!s.startsWith('{')) return { ok: false, reason: 'not-json' };
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    return { ok: false, reason: 'not-json' };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { ok: false, reason: 'not-an-object' };
  const o = v as Record<string, unknown>;
  const content = typeof o.content === 'string' ? o.content : typeof o.msg === 'string' ? o.msg : undefined;
  if (content === undefined) return { ok: false, reason: 'no-content' };
  const entry: LogEntryLine = { content };
  const severity = str(o.severity) ?? str(o.level);
  if (severity !== undefined) entry.severity = severity;
  const source = str(o.source);
  if (source !== undefined) entry.source = source;
  const ts = timestampMs(o.timestamp) ?? timestampMs(o.time);
  if (ts !== undefined) entry.timestampMs = ts;
  const msgid = typeof o.msgid === 'number' && Number.isSafeInteger(o.msgid) && o.msgid >= 0 ? String(o.msgid) : typeof o.msgid === 'string' && /^\d{1,20}$/.test(o.msgid) ? o.msgid : undefined;
  if (msgid !== undefined) entry.msgid = msgid;
  return { ok: true, entry };
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length <= 256 ? v : undefined);

/**
 * `{"seconds":N,"nanos":N}` (integers or decimal strings) or an RFC 3339 string; undefined otherwise.
 * As google.protobuf.Timestamp says, `nanos` is 0..999 999 999 (a larger or negative one is not a
 * fraction of the second: a line saying so is not trusted with a time).
 */
export function timestampMs(v: unknown): number | undefined {
  if (typeof v === 'string') {
    if (v.length > 64) return undefined;
    const t = Date.parse(v);
    return Number.isFinite(t) ? t : undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  // Go's encoding/json omits a zero field (`{}` is the epoch); protojson writes int64 as a string.
  const int = (x: unknown): number | undefined =>
    typeof x === 'number' && Number.isInteger(x) ? x : typeof x === 'string' && /^-?\d{1,19}$/.test(x) ? Number(x) : x === undefined ? 0 : undefined;
  const seconds = int(o.seconds);
  const nanos = int(o.nanos);
  if (seconds === undefined || nanos === undefined || nanos < 0 || nanos > 999_999_999) return undefined;
  const ms = seconds * 1000 + Math.floor(nanos / 1e6);
  // Date's range: anything else is not a time.
  return Math.abs(ms) <= 8.64e15 ? ms : undefined;
}
