/**
 * The fault suite's scoreboard (issue 13 §2): every scripted fault is a `FaultScenario`; running one
 * gives a `FaultRow`. `bash bench/run.sh faults` runs them all and prints one table; the quick ones
 * also run in `npm test` (test/faults/*.test.ts), each asserting its row is clean.
 */

export interface FaultRow {
  /** What was done, e.g. "QEMU SIGSTOPped 20 s mid-poll". */
  fault: string;
  /** What should happen, e.g. "qemu-unresponsive, never guest-kernel-hung; recovers on SIGCONT". */
  expected: string;
  /** What happened, in a few words (verdicts seen, log lines, metrics). */
  observed: string;
  /** Processes of ours that exited abnormally or threw unhandled (monitor, controller, shipper). */
  crashes: number;
  /** Reports written to the spool that neither reached the controller nor were reported not delivered. */
  lost: number;
  /** Reports the controller stored more than once. */
  duplicates: number;
  /** Hang verdicts (guest-kernel-hung, guest-userspace-hung, guest-panicked) that were not true. */
  falseHangs: number;
  /** The fault was visible in the monitor's (or controller's) log and metrics. */
  visible: boolean;
  /** The observed outcome is the expected one. */
  pass: boolean;
}

export interface FaultScenario {
  name: string;
  /** Quick enough (and deterministic enough) for `npm test`. */
  quick: boolean;
  /** Needs a real QEMU guest (the bench runs these one at a time). */
  guest: boolean;
  run(): Promise<FaultRow>;
}

/** A row is clean when it passes and nothing crashed, was lost, stored twice or falsely called hung. */
export function clean(r: FaultRow): boolean {
  return r.pass && r.visible && r.crashes === 0 && r.lost === 0 && r.duplicates === 0 && r.falseHangs === 0;
}

const COLUMNS = ['fault', 'expected', 'observed', 'crashes', 'lost', 'dups', 'false hangs', 'visible', 'result'] as const;

/** The table `bench/run.sh faults` prints (plain text, one row per fault). */
export function formatScoreboard(rows: readonly FaultRow[]): string {
  const cells = rows.map((r) => [
    r.fault,
    r.expected,
    r.observed,
    String(r.crashes),
    String(r.lost),
    String(r.duplicates),
    String(r.falseHangs),
    r.visible ? 'yes' : 'NO',
    clean(r) ? 'pass' : 'FAIL',
  ]);
  const widths = COLUMNS.map((c, i) => Math.min(60, Math.max(c.length, ...cells.map((row) => row[i]!.length))));
  const line = (row: readonly string[]): string => row.map((v, i) => (v.length > widths[i]! ? `${v.slice(0, widths[i]! - 1)}~` : v.padEnd(widths[i]!))).join(' | ');
  const total = rows.reduce((a, r) => ({ c: a.c + r.crashes, l: a.l + r.lost, d: a.d + r.duplicates, f: a.f + r.falseHangs }), { c: 0, l: 0, d: 0, f: 0 });
  return [
    line(COLUMNS),
    widths.map((w) => '-'.repeat(w)).join('-+-'),
    ...cells.map(line),
    '',
    `${rows.filter(clean).length}/${rows.length} clean; crashes ${total.c}, lost ${total.l}, duplicates ${total.d}, false hangs ${total.f}`,
  ].join('\n');
}
