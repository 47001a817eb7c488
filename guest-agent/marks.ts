import { formatMark } from '../protocol/mark.js';
import type { CheckResult, CheckSpec } from './checks.js';
import type { Log } from './log.js';
import type { ProcStats } from './procstat.js';
import type { LineSink } from './sinks.js';

export interface MarksDeps {
  version: string;
  readStats(): Promise<ProcStats>;
  runChecks(specs: readonly CheckSpec[]): Promise<CheckResult[]>;
  sinks: readonly LineSink[];
  log: Log;
}

/**
 * The marks duty: `step()` runs the checks, writes one mark line (protocol/mark.ts) to every sink
 * (syslog, the console) and resolves with it.
 */
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
