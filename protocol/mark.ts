/**
 * The mark line: one structured line every period, written by the guest agent (Node or POSIX sh) to
 * syslog and to the console, so that logs shipped off the VM (EVE ships the console as app logs) show
 * the guest's userspace was alive at that time, and how it was doing:
 *
 *   eve-diag mark seq=12 uptime=734.21 load=0.08 mem_avail=401236kB agent=0.1.0 check.web=ok
 *
 * `seq` counts from 1 per agent process (a gap means lost marks, a restart means it starts again),
 * `uptime`, `load` and `mem_avail` are the kernel's own text, `agent` is the version of whoever wrote
 * the mark (the POSIX-sh agent writes `VERSION-sh`), and each configured check adds `check.NAME=ok`
 * or `check.NAME=fail:REASON`. Shared by the agent (which writes it) and the host (which looks for it
 * in the console log and in app logs); pure.
 */

export const MARK_PREFIX = 'eve-diag mark';

/** A regex source matching a mark anywhere in a line; group 1 is its seq. */
export const MARK_PATTERN = `${MARK_PREFIX} seq=(\\d+)`;

/** What a mark carries of the guest's state: the kernel's own text for each number. */
export interface MarkStats {
  uptime: string;
  load: string;
  /** MemAvailable with its unit, e.g. `123456kB`. */
  memAvail: string;
}

export interface MarkCheck {
  name: string;
  outcome: { ok: true } | { ok: false; reason: string };
}

export interface MarkFields {
  seq: number;
  stats: MarkStats;
  version: string;
  checks?: readonly MarkCheck[];
}

/** `check.web=ok check.db=fail:refused`: one `key=value` per check. */
export function formatChecks(results: readonly MarkCheck[]): string {
  return results.map((r) => `check.${r.name}=${r.outcome.ok ? 'ok' : `fail:${r.outcome.reason}`}`).join(' ');
}

/** The mark line. Pure. */
export function formatMark(m: MarkFields): string {
  if (!Number.isSafeInteger(m.seq) || m.seq < 0) throw new RangeError(`seq: a non-negative integer (got ${m.seq})`);
  const base = `${MARK_PREFIX} seq=${m.seq} uptime=${m.stats.uptime} load=${m.stats.load} mem_avail=${m.stats.memAvail} agent=${m.version}`;
  const checks = formatChecks(m.checks ?? []);
  return checks === '' ? base : `${base} ${checks}`;
}

export interface ParsedMark {
  seq: number;
  fields: Record<string, string>;
}

/** At most this many fields are read from one mark: a hostile guest's line cannot make a big object. */
const MAX_FIELDS = 64;

/** Parses a mark line (anywhere in `line`, e.g. after a syslog header); undefined when there is none. */
export function parseMark(line: string): ParsedMark | undefined {
  const at = line.indexOf(`${MARK_PREFIX} `);
  if (at < 0) return undefined;
  const fields: Record<string, string> = Object.create(null) as Record<string, string>;
  // Split at most MAX_FIELDS + 1 ways: a line of a million fields is refused without a million strings.
  const words = line.slice(at + MARK_PREFIX.length + 1).trim().split(/ +/, MAX_FIELDS + 1);
  if (words.length > MAX_FIELDS) return undefined;
  for (const kv of words) {
    const eq = kv.indexOf('=');
    if (eq <= 0) return undefined;
    fields[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const seq = Number(fields.seq);
  if (!/^\d+$/.test(fields.seq ?? '') || !Number.isSafeInteger(seq)) return undefined;
  return { seq, fields: { ...fields } };
}
