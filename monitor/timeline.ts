import type { ProbeOutcome } from './types.js';

/**
 * The recent heartbeat and run-state samples of one app: what a report's timeline shows (the minutes
 * before the verdict, one sample per probe run). A fixed ring of typed arrays: a few KiB per app
 * however long the monitor runs, and nothing allocated per sample but a small string table (scenario,
 * status and run-state names repeat).
 */

export interface TimelinePoint {
  /** Wall-clock ms. */
  at: number;
  scenario: string;
  probe: string;
  outcome: ProbeOutcome;
  /** The heartbeat status (alive, late, stalled...) or nothing. */
  status?: string;
  beats?: number;
  ageMs?: number;
  /** QEMU's run state (running, paused...), from a run-state probe or a heartbeat's view of the VM. */
  runState?: string;
}

/** A sample as a report stores it: the point, its time as ISO 8601. */
export type TimelineSampleOut = Omit<TimelinePoint, 'at'> & { at: string; [key: string]: unknown };

const OUTCOMES: readonly ProbeOutcome[] = ['success', 'failure', 'unknown'];
const NONE = 0xff;
/** Distinct names kept per timeline (scenario/probe/status/run state); beyond it a name reads as `?`. */
const MAX_NAMES = 64;

export class Timeline {
  readonly #at: Float64Array;
  readonly #beats: Float64Array;
  readonly #age: Float64Array;
  readonly #codes: Uint8Array; // 5 per sample: scenario, probe, outcome, status, runState
  readonly #names: string[] = [];
  #next = 0;
  #size = 0;

  constructor(readonly capacity = 360) {
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 100_000) throw new RangeError(`capacity: 1..100000 (got ${capacity})`);
    this.#at = new Float64Array(capacity);
    this.#beats = new Float64Array(capacity).fill(NaN);
    this.#age = new Float64Array(capacity).fill(NaN);
    this.#codes = new Uint8Array(capacity * 5);
  }

  get size(): number {
    return this.#size;
  }

  #code(name: string | undefined): number {
    if (name === undefined) return NONE;
    let i = this.#names.indexOf(name);
    if (i < 0) {
      if (this.#names.length >= MAX_NAMES) return NONE - 1;
      i = this.#names.push(name) - 1;
    }
    return i;
  }

  #name(code: number): string | undefined {
    return code === NONE ? undefined : (this.#names[code] ?? '?');
  }

  record(p: TimelinePoint): void {
    const i = this.#next;
    this.#at[i] = p.at;
    this.#beats[i] = p.beats ?? NaN;
    this.#age[i] = p.ageMs ?? NaN;
    const c = i * 5;
    this.#codes[c] = this.#code(p.scenario);
    this.#codes[c + 1] = this.#code(p.probe);
    this.#codes[c + 2] = OUTCOMES.indexOf(p.outcome);
    this.#codes[c + 3] = this.#code(p.status);
    this.#codes[c + 4] = this.#code(p.runState);
    this.#next = (i + 1) % this.capacity;
    this.#size = Math.min(this.#size + 1, this.capacity);
  }

  /** The samples, oldest first. */
  samples(): TimelineSampleOut[] {
    const out: TimelineSampleOut[] = [];
    const start = (this.#next - this.#size + this.capacity) % this.capacity;
    for (let k = 0; k < this.#size; k++) {
      const i = (start + k) % this.capacity;
      const c = i * 5;
      const s: TimelineSampleOut = {
        at: new Date(this.#at[i] as number).toISOString(),
        scenario: this.#name(this.#codes[c] as number) ?? '?',
        probe: this.#name(this.#codes[c + 1] as number) ?? '?',
        outcome: OUTCOMES[this.#codes[c + 2] as number] ?? 'unknown',
      };
      const status = this.#name(this.#codes[c + 3] as number);
      const runState = this.#name(this.#codes[c + 4] as number);
      if (status !== undefined) s.status = status;
      if (!Number.isNaN(this.#beats[i])) s.beats = this.#beats[i] as number;
      if (!Number.isNaN(this.#age[i])) s.ageMs = this.#age[i] as number;
      if (runState !== undefined) s.runState = runState;
      out.push(s);
    }
    return out;
  }
}

/**
 * The timeline point of a probe result, for the probes whose results a timeline keeps; else undefined.
 * Fields the evidence lacks are undefined (Timeline.record keeps them as absent).
 */
export function timelinePoint(at: number, scenario: string, probe: string, outcome: ProbeOutcome, evidence: Record<string, unknown> | undefined): TimelinePoint | undefined {
  const ev = evidence ?? {};
  const str = (v: unknown) => (typeof v === 'string' ? v.slice(0, 32) : undefined);
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const vm = ev['vm'] as { status?: unknown } | undefined;
  switch (probe) {
    case 'kernel-heartbeat':
    case 'agent-heartbeat':
      return { at, scenario, probe, outcome, status: str(ev['status']), beats: num(ev['beats']), ageMs: num(ev['ageMs']), runState: str(vm?.status) };
    case 'qmp-status':
      return { at, scenario, probe, outcome, runState: str(ev['status']) };
    default:
      return undefined;
  }
}
