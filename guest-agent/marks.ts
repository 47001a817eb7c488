import { formatChecks, type CheckResult, type CheckSpec } from './checks.js';
import type { Log } from './log.js';
import type { ProcStats } from './procstat.js';
import type { LineSink } from './sinks.js';

/**
 * Marks: one structured line every period, to syslog and to the console, so that logs shipped off
 * the VM (EVE ships the console as app logs) show the guest's userspace was alive at that time, and
 * how it was doing:
 *
 *   eve-diag mark seq=12 uptime=734.21 load=0.08 mem_avail=401236kB agent=0.1.0 check.web=ok
 *
 * `seq` counts from 1 per agent process (a gap means lost marks, a restart means it starts again),
 * `uptime`, `load` and `mem_avail` are the kernel's own text (see procstat.ts), `agent` is the
 * version of whoever wrote the mark (the POSIX-sh agent writes `VERSION-sh`), and each configured
 * check adds `check.NAME=ok` or `check.NAME=fail:REASON`.
 */

export const MARK_PREFIX = 'eve-diag mark';

export interface MarkFields {
  seq: number;
  stats: ProcStats;
  version: string;
  checks?: readonly CheckResult[];
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

/** Parses a mark line (anywhere in `line`, e.g. after a syslog header); undefined when there is none. */
export function parseMark(line: string): ParsedMark | undefined {
  const at = line.indexOf(`${MARK_PREFIX} `);
  if (at < 0) return undefined;
  const fields: Record<string, string> = {};
  for (const kv of line.slice(at + MARK_PREFIX.length + 1).trim().split(/ +/)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) return undefined;
    fields[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const seq = Number(fields.seq);
  if (!/^\d+$/.test(fields.seq ?? '') || !Number.isSafeInteger(seq)) return undefined;
  return { seq, fields };
}

export interface MarksDeps {
  version: string;
  readStats(): Promise<ProcStats>;
  runChecks(specs: readonly CheckSpec[]): Promise<CheckResult[]>;
  sinks: readonly LineSink[];
  log: Log;
}

/** The marks duty: `step()` runs the checks, writes one mark to every sink and resolves with it. */
export class Marks {
  #seq: number;

  constructor(
    readonly checks: readonly CheckSpec[],
    private readonly deps: MarksDeps,
    /** The last sequence number used (a reload keeps counting). */
    lastSeq = 0,
  ) {
    this.#seq = lastSeq;
  }

  get seq(): number {
    return this.#seq;
  }

  async step(): Promise<string> {
    const seq = ++this.#seq;
    const [stats, checks] = await Promise.all([this.deps.readStats(), this.deps.runChecks(this.checks)]);
    const line = formatMark({ seq, stats, version: this.deps.version, checks });
    // Sinks never reject (they log their own failures); one slow sink does not hold up the others.
    await Promise.all(this.deps.sinks.map((s) => s.write(line)));
    return line;
  }
}
