import { RING_MAX, TIMER_UNIT_NS } from '../../acpi/diag/layout.js';
import { intervalsNewestFirst, type DecodedRegion } from './decode.js';

/**
 * Heartbeat assessment: a pure function of (state from the previous samples, the current sample,
 * host monotonic time, the expected periods, the VM run state). No clock, no I/O: the caller owns
 * timing and keeps the returned state for the next call, like the kubelet prober's worker step.
 *
 * Rules (DESIGN facts 1, 2, 4):
 *  - a VM that is not running is `paused`, never `late` or `stalled`; after it resumes, ages restart
 *    from the resume sample (the guest's clocks did not run either);
 *  - counters are u32: deltas are taken modulo 2^32 (a wrap is progress); a counter that moves back
 *    by 2^31 or more, a new nonce, load count or load Timer means the guest rebooted (or kexec'd):
 *    the report says `restarted` once and the baseline starts again;
 *  - ages are host milliseconds since the sample in which a counter was last seen to change, so
 *    their resolution is the sampling interval;
 *  - the agent has no period in the layout: `agentPeriodMs` (default 1000) is used, and until the
 *    agent counter is non-zero the agent is `no-agent`; it is late after `lateAfterPeriods` and
 *    stalled after `stallAfterPeriods` of its period;
 *  - the kernel is judged once, against the intervals its own ring recorded (kernelStallBound):
 *    the longest interval the guest should take is E = max(period, the longest recorded interval of
 *    at least half a period), capped at 2 periods; the kernel is `late` when no beat was seen
 *    for more than period + 2 Timer steps and `stalled` at E + 2 Timer steps + stallSlack * period.
 *    Ages count from the sample that first saw the last beat (never before the beat), so a live
 *    kernel is never older than the interval it takes: polling more often only makes the verdict
 *    earlier. A hang at time f is stalled by f + bound + 2 * (sampling interval) at the latest.
 */

export type HeartbeatStatus =
  | 'not-loaded'
  | 'waiting'
  | 'unavailable'
  | 'no-agent'
  | 'alive'
  | 'late'
  | 'stalled'
  | 'paused'
  | 'restarted'
  | 'unknown';

/** The VM run state as QMP `query-status` reports it. */
export interface VmRunState {
  running: boolean;
  /** QMP RunState (`running`, `paused`, `shutdown`, `guest-panicked`, ...), for details only. */
  status?: string;
}

export interface AssessOptions {
  /** Agent: `late` after more than this many periods without a new beat. Default 1.5. */
  lateAfterPeriods?: number;
  /** Agent: `stalled` after this many periods or more without a new beat. Default 3. */
  stallAfterPeriods?: number;
  /**
   * Kernel: the margin beyond the longest expected interval before a missing beat is `stalled`, as a
   * fraction of the period (see kernelStallBound). Default 1: 2.0 s at a steady 1 s period, which keeps
   * the verdict within 3 s of a hang at 4 polls per period while a beat may come a whole period late
   * (a host that starves its vCPUs) before it is a stall. 0.25 is faster; 2 is more tolerant.
   */
  stallSlack?: number;
  /** Expected agent heartbeat period in ms. Default 1000. */
  agentPeriodMs?: number;
  /** How long a loaded table may show no kernel beat (`waiting`) before it is `unavailable` (never beats: no hung verdict from it). Default 60000. */
  graceMs?: number;
  /** Window for the beat rate, in host ms. Default 60000. */
  windowMs?: number;
  /** Most samples kept for the rate window. Default 64. */
  windowMaxSamples?: number;
  /** Granularity of the guest's AML Timer: jiffies in Linux 6.1, 4 ms with HZ=250. Default 4. */
  timerResolutionMs?: number;
}

const DEFAULTS: Required<AssessOptions> = {
  lateAfterPeriods: 1.5,
  stallAfterPeriods: 3,
  stallSlack: 1,
  agentPeriodMs: 1000,
  graceMs: 60_000,
  windowMs: 60_000,
  windowMaxSamples: 64,
  timerResolutionMs: 4,
};

/** Statistics of the interval ring, in ms. Values are multiples of the Timer resolution. */
export interface JitterStats {
  count: number;
  meanMs: number;
  stddevMs: number;
  minMs: number;
  maxMs: number;
  p95Ms: number;
  /** The Timer granularity: differences below it are noise. */
  resolutionMs: number;
}

export interface SignalReport {
  status: HeartbeatStatus;
  /** Counter value in this sample. */
  beats?: number;
  /** Beats since the previous sample (mod 2^32). */
  delta?: number;
  /** Host ms since the counter was last seen to change (or since monitoring/the resume began). */
  ageMs?: number;
  expectedPeriodMs: number;
  /** Beats per second over `rateWindowMs` of host time. */
  ratePerSec?: number;
  rateWindowMs?: number;
  detail: string;
}

export interface KernelReport extends SignalReport {
  /** Jitter of the recorded intervals (the ring). */
  jitter?: JitterStats;
  /**
   * Guest Timer ms per beat since the previous sample: (last Timer now - last Timer before) mod 2^32
   * over the beats in between. Absent when the host gap is too long for the 429 s Timer wrap.
   */
  guestIntervalMs?: number;
  /** The age at which a missing beat is `stalled` by this sample's ring (kernelStallBound). */
  stallAfterMs?: number;
}

export interface HeartbeatReport {
  at: number;
  vm: VmRunState;
  /** True in the one report where a reboot/reload was detected; the baseline was reset. */
  restarted: boolean;
  restartReason?: string;
  kernel: KernelReport;
  agent: SignalReport;
}

interface Track {
  beats: number;
  last: number;
  /** Host ms of the sample where the counter was last seen to change, or the baseline start. */
  changedAt: number;
  /** Changes seen since the baseline started. */
  changes: number;
}

/** Opaque to callers: keep it and pass it back as `previous`. */
export interface AssessState {
  at: number;
  vmRunning: boolean;
  nonce: string;
  loadCount: number;
  loadTimer: number;
  /** Host ms since which the table is known loaded with this baseline (the kernel grace). */
  loadedSince: number;
  kernel: Track;
  agent: Track;
  window: RateWindow;
}

/** One sample of the rate window. */
export interface RatePoint {
  at: number;
  kernel: number;
  agent: number;
}

/** Room a RateWindow's new buffer leaves to append in place: one copy per GROW samples. */
const GROW = 16;

/** The samples behind a RateWindow: (at, kernel, agent) triples, `written` of them so far. */
interface RateBuffer {
  data: Float64Array;
  written: number;
}

/**
 * The rate window's samples, oldest first: a view (start, end) of a buffer that successive states
 * share. Appending to the newest view writes in place (no copy per sample: this runs per VM per poll,
 * bench/fleet); appending to an older one (a caller that kept an old state) copies, so every state
 * keeps the window it had.
 */
export class RateWindow {
  private constructor(
    private readonly buf: RateBuffer,
    private readonly start: number,
    private readonly end: number,
  ) {}

  static of(p: RatePoint, capacity: number): RateWindow {
    const buf: RateBuffer = { data: new Float64Array(3 * Math.max(2, capacity)), written: 0 };
    RateWindow.#write(buf, 0, p.at, p.kernel, p.agent);
    return new RateWindow(buf, 0, 1);
  }

  static #write(buf: RateBuffer, i: number, at: number, kernel: number, agent: number): void {
    buf.data[3 * i] = at;
    buf.data[3 * i + 1] = kernel;
    buf.data[3 * i + 2] = agent;
    buf.written = i + 1;
  }

  get length(): number {
    return this.end - this.start;
  }

  at(i: number): number {
    return this.buf.data[3 * (this.start + i)] as number;
  }

  kernel(i: number): number {
    return this.buf.data[3 * (this.start + i) + 1] as number;
  }

  agent(i: number): number {
    return this.buf.data[3 * (this.start + i) + 2] as number;
  }

  /** The samples as objects (tests, debugging). */
  points(): RatePoint[] {
    const out: RatePoint[] = [];
    for (let i = 0; i < this.length; i++) out.push({ at: this.at(i), kernel: this.kernel(i), agent: this.agent(i) });
    return out;
  }

  /**
   * This window plus `p`, without the samples before `from` (keeping the newest one at or before it,
   * so sparse sampling still gives a rate) and at most `maxSamples`.
   */
  append(p: RatePoint, from: number, maxSamples: number): RateWindow {
    const n = this.length + 1;
    const at = (i: number) => (i < this.length ? this.at(i) : p.at);
    let drop = 0;
    while (n - drop > 2 && at(drop + 1) <= from) drop++;
    if (n - drop > maxSamples) drop = n - maxSamples;
    const capacity = this.buf.data.length / 3;
    if (this.buf.written === this.end && this.end < capacity) {
      RateWindow.#write(this.buf, this.end, p.at, p.kernel, p.agent);
      return new RateWindow(this.buf, this.start + drop, this.end + 1);
    }
    // Full, or an older view: the kept samples into a new buffer with room to grow in place again.
    const keep = n - drop;
    const buf: RateBuffer = { data: new Float64Array(3 * (keep + GROW)), written: 0 };
    const kept = keep - 1;
    buf.data.set(this.buf.data.subarray(3 * (this.start + drop), 3 * (this.start + drop + kept)));
    RateWindow.#write(buf, kept, p.at, p.kernel, p.agent);
    return new RateWindow(buf, 0, keep);
  }
}

export interface AssessInput {
  previous: AssessState | undefined;
  /** The decoded region, or undefined when the read or decode failed (`sampleError` says why). */
  sample: DecodedRegion | undefined;
  sampleError?: string;
  /** Host monotonic time of the sample, in ms. */
  now: number;
  /** Kernel period from the layout (DiagLayout.kernel.periodMs); default: the region's own. */
  kernelPeriodMs?: number;
  vm: VmRunState;
  /**
   * The caller saw the VM reset since the previous sample (QMP `RESET` event). The region alone
   * cannot always tell: a reboot that beat past the old count with the same load Timer looks like
   * progress.
   */
  resetSeen?: boolean;
}

export interface Assessment {
  report: HeartbeatReport;
  /** State for the next call; undefined until a sample was decoded. */
  state: AssessState | undefined;
}

const U32 = 0x1_0000_0000;
const HALF = 0x8000_0000;
/** Timer deltas are only unambiguous below one wrap (2^32 * 100 ns = 429.5 s); keep a margin. */
const TIMER_WRAP_MS = (U32 * TIMER_UNIT_NS) / 1e6;
const TIMER_SAFE_MS = TIMER_WRAP_MS * 0.9;
const UNITS_PER_MS = 1e6 / TIMER_UNIT_NS;

/** (b - a) mod 2^32 for u32 counters. */
export function delta32(a: number, b: number): number {
  return (b - a) >>> 0;
}

/** Options resolved once per options object (a poller passes the same one on every sample). */
const resolved = new WeakMap<AssessOptions, Required<AssessOptions>>();

function resolveOptions(o: AssessOptions): Required<AssessOptions> {
  let r = resolved.get(o);
  if (r === undefined) {
    r = checkOptions(o);
    resolved.set(o, r);
  }
  return r;
}

function checkOptions(o: AssessOptions): Required<AssessOptions> {
  const r = { ...DEFAULTS, ...o };
  const positive = (k: keyof AssessOptions) => {
    const v = r[k];
    if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${k}: a positive number (got ${String(v)})`);
  };
  (Object.keys(DEFAULTS) as (keyof AssessOptions)[]).filter((k) => k !== 'stallSlack').forEach(positive);
  if (!Number.isFinite(r.stallSlack) || r.stallSlack < 0 || r.stallSlack > 10) {
    throw new RangeError(`stallSlack: a fraction of the period, 0..10 (got ${String(r.stallSlack)})`);
  }
  if (r.stallAfterPeriods <= r.lateAfterPeriods) {
    throw new RangeError(`stallAfterPeriods (${r.stallAfterPeriods}) must exceed lateAfterPeriods (${r.lateAfterPeriods})`);
  }
  if (!Number.isInteger(r.windowMaxSamples) || r.windowMaxSamples < 2) {
    throw new RangeError(`windowMaxSamples: an integer >= 2 (got ${r.windowMaxSamples})`);
  }
  return r;
}

function isLoaded(r: Pick<DecodedRegion, 'loadCount' | 'kernel' | 'agent'>): boolean {
  return r.loadCount !== 0 || r.kernel.beats !== 0 || r.agent.beats !== 0;
}

/** Why `cur` cannot continue the baseline `prev`, or undefined. */
function restartReason(prev: AssessState, cur: DecodedRegion): string | undefined {
  // A table seen before its first load (the firmware's pristine copy) then loaded is not a restart.
  const prevLoaded = prev.loadCount !== 0 || prev.kernel.beats !== 0 || prev.agent.beats !== 0;
  if (cur.nonce !== prev.nonce) return `nonce changed from ${prev.nonce} to ${cur.nonce}: a different table`;
  if (!prevLoaded) return undefined;
  if (cur.loadCount !== prev.loadCount) return `load count changed from ${prev.loadCount} to ${cur.loadCount}: the table was loaded again`;
  if (cur.loadTimer !== prev.loadTimer) return `load Timer changed from ${prev.loadTimer} to ${cur.loadTimer}: the table was loaded again`;
  if (delta32(prev.kernel.beats, cur.kernel.beats) >= HALF) return `kernel beats went back from ${prev.kernel.beats} to ${cur.kernel.beats}`;
  if (delta32(prev.agent.beats, cur.agent.beats) >= HALF) return `agent beats went back from ${prev.agent.beats} to ${cur.agent.beats}`;
  return undefined;
}

function freshState(cur: DecodedRegion, now: number, running: boolean): AssessState {
  const track = (c: DecodedRegion['kernel']): Track => ({ beats: c.beats, last: c.last, changedAt: now, changes: 0 });
  return {
    at: now,
    vmRunning: running,
    nonce: cur.nonce,
    loadCount: cur.loadCount,
    loadTimer: cur.loadTimer,
    loadedSince: now,
    kernel: track(cur.kernel),
    agent: track(cur.agent),
    window: RateWindow.of({ at: now, kernel: cur.kernel.beats, agent: cur.agent.beats }, 2),
  };
}

function advance(prev: AssessState, cur: DecodedRegion, now: number, running: boolean, o: Required<AssessOptions>): AssessState {
  const resumed = running && !prev.vmRunning;
  const track = (t: Track, c: DecodedRegion['kernel']): Track => {
    const changed = delta32(t.beats, c.beats) !== 0;
    return {
      beats: c.beats,
      last: c.last,
      // After a pause the guest's clocks stood still too: age counts from the resume.
      changedAt: changed || resumed ? now : t.changedAt,
      changes: t.changes + (changed ? 1 : 0),
    };
  };
  const point = { at: now, kernel: cur.kernel.beats, agent: cur.agent.beats };
  // Paused time must not dilute the rate: a pause or a resume starts the window again.
  const window = !running || resumed ? RateWindow.of(point, o.windowMaxSamples) : prev.window.append(point, now - o.windowMs, o.windowMaxSamples);
  return {
    at: now,
    vmRunning: running,
    nonce: cur.nonce,
    loadCount: cur.loadCount,
    loadTimer: cur.loadTimer,
    loadedSince: !isLoaded(prev) || resumed ? now : prev.loadedSince,
    kernel: track(prev.kernel, cur.kernel),
    agent: track(prev.agent, cur.agent),
    window,
  };
}

interface Rates {
  kernel: number;
  agent: number;
  windowMs: number;
}

/** Beats per second of both signals over the window, or undefined for a window of no length. */
function ratesOf(window: RateWindow): Rates | undefined {
  const n = window.length;
  if (n < 2 || window.at(n - 1) <= window.at(0)) return undefined;
  let kernel = 0;
  let agent = 0;
  for (let i = 1; i < n; i++) {
    kernel += delta32(window.kernel(i - 1), window.kernel(i));
    agent += delta32(window.agent(i - 1), window.agent(i));
  }
  const ms = window.at(n - 1) - window.at(0);
  return { kernel: (kernel * 1000) / ms, agent: (agent * 1000) / ms, windowMs: ms };
}

/** The ring's recorded intervals in ms, newest first. */
function intervalsMsOf(region: Pick<DecodedRegion, 'ring' | 'kernel'>): number[] {
  return intervalsNewestFirst(region).map((u) => u / UNITS_PER_MS);
}

/** Jitter statistics of the ring's intervals (Timer units, 100 ns) converted to ms. */
export function jitterOf(region: Pick<DecodedRegion, 'ring' | 'kernel'>, resolutionMs = DEFAULTS.timerResolutionMs): JitterStats | undefined {
  return jitterOfMs(intervalsMsOf(region), resolutionMs);
}

// Scratch space of assessHeartbeat (one sample at a time: no call re-enters it): the ring's intervals
// in ms and their sorted copy, instead of two arrays per sample (bench/fleet).
const scratchMs = new Float64Array(RING_MAX);
const scratchSorted = new Float64Array(RING_MAX);

/** The ring's intervals in ms, newest first, into scratchMs; how many. */
function intervalsIntoScratch(region: Pick<DecodedRegion, 'ring' | 'kernel'>): number {
  const n = region.ring.length;
  if (n === 0 || (n & (n - 1)) !== 0 || n > RING_MAX) return 0;
  const beats = region.kernel.beats >>> 0;
  const count = Math.min(n, Math.max(0, beats - 1));
  let out = 0;
  for (let k = 0; k < count; k++) {
    const v = region.ring[(beats - k) & (n - 1)] ?? 0;
    if (v !== 0) scratchMs[out++] = v / UNITS_PER_MS;
  }
  return out;
}

function jitterOfMs(ms: ArrayLike<number>, resolutionMs: number, count = ms.length): JitterStats | undefined {
  const n = count;
  if (n === 0) return undefined;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += ms[i] as number;
  const mean = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += ((ms[i] as number) - mean) * ((ms[i] as number) - mean);
  // Insertion sort into the scratch copy: n <= RING_MAX, and the ring is nearly sorted already.
  const sorted = scratchSorted;
  for (let i = 0; i < n; i++) {
    const v = ms[i] as number;
    let j = i;
    for (; j > 0 && (sorted[j - 1] as number) > v; j--) sorted[j] = sorted[j - 1] as number;
    sorted[j] = v;
  }
  return {
    count: n,
    meanMs: mean,
    stddevMs: Math.sqrt(sq / n),
    minMs: sorted[0] as number,
    maxMs: sorted[n - 1] as number,
    p95Ms: sorted[Math.max(0, Math.ceil(0.95 * n) - 1)] as number,
    resolutionMs,
  };
}

function fmt(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function byAge(
  name: string,
  t: Track,
  now: number,
  periodMs: number,
  o: Required<AssessOptions>,
): Pick<SignalReport, 'status' | 'ageMs' | 'detail'> {
  const ageMs = now - t.changedAt;
  const periods = ageMs / periodMs;
  if (periods >= o.stallAfterPeriods) {
    return { status: 'stalled', ageMs, detail: `no ${name} beat for ${fmt(ageMs)} (${periods.toFixed(1)} periods of ${fmt(periodMs)})` };
  }
  if (periods > o.lateAfterPeriods) {
    return { status: 'late', ageMs, detail: `no ${name} beat for ${fmt(ageMs)} (${periods.toFixed(1)} periods of ${fmt(periodMs)})` };
  }
  if (t.changes === 0) {
    return { status: 'unknown', ageMs, detail: `${name} counter at ${t.beats}, no change seen yet (watching for ${fmt(ageMs)})` };
  }
  return { status: 'alive', ageMs, detail: `last ${name} beat seen ${fmt(ageMs)} ago` };
}

/** The most periods the kernel bound grows to, whatever the ring says (a guest's ring is its own). */
export const KERNEL_BOUND_MAX_PERIODS = 2;

/** How long a kernel beat may be missing before it is `late` and `stalled`, and from what. */
export interface KernelStallBound {
  /** The longest interval expected from the ring and the period (E), in ms. */
  expectedMs: number;
  /** `late` beyond this age. */
  lateMs: number;
  /** `stalled` at this age or more. */
  stallMs: number;
  /** How E was chosen, for the report. */
  basis: string;
}

/**
 * The kernel's stall rule (see the module comment): E = max(period, the longest recorded interval of
 * half a period or more), at most KERNEL_BOUND_MAX_PERIODS periods; late beyond period + 2 Timer steps,
 * stalled at E + 2 Timer steps + slack * period.
 */
export function kernelStallBound(periodMs: number, intervalsMs: ArrayLike<number>, slack: number, resolutionMs: number, count = intervalsMs.length): KernelStallBound {
  // Only the periodic polls say how long the next beat may take: intervals under half a period are
  // extra beats (the zone's registration reads it twice at boot, a tool reading its temp). The longest,
  // not mean + k sd: a few irregular beats soon after boot make the deviation of a short ring huge
  // (measured in bench/detection: the bound at its cap, and 4 s verdicts, seconds after boot).
  let polls = 0;
  let max = 0;
  for (let i = 0; i < count; i++) {
    const ms = intervalsMs[i] as number;
    if (ms < periodMs / 2) continue;
    polls++;
    if (ms > max) max = ms;
  }
  const cap = KERNEL_BOUND_MAX_PERIODS * periodMs;
  const how = polls > 0 && max > periodMs ? (max > cap ? 'cap' : 'ring') : 'period';
  const expectedMs = how === 'period' ? periodMs : how === 'cap' ? cap : max;
  return new StallBound(expectedMs, periodMs + 2 * resolutionMs, expectedMs + 2 * resolutionMs + slack * periodMs, how, polls);
}

/** A KernelStallBound whose basis is worded only when a report shows it (a live kernel's never is). */
class StallBound implements KernelStallBound {
  constructor(
    readonly expectedMs: number,
    readonly lateMs: number,
    readonly stallMs: number,
    private readonly how: 'period' | 'ring' | 'cap',
    private readonly polls: number,
  ) {}

  get basis(): string {
    if (this.how === 'period') return 'the period';
    if (this.how === 'cap') return `${KERNEL_BOUND_MAX_PERIODS} periods (the recorded intervals are longer)`;
    return `the longest of ${this.polls} recorded intervals`;
  }
}

function kernelByAge(t: Track, now: number, periodMs: number, bound: KernelStallBound): Pick<SignalReport, 'status' | 'ageMs' | 'detail'> {
  const ageMs = now - t.changedAt;
  const why = () => `no kernel beat for ${fmt(ageMs)} (period ${fmt(periodMs)}, stalled at ${fmt(bound.stallMs)}: ${bound.basis} ${fmt(bound.expectedMs)} + margin)`;
  if (ageMs >= bound.stallMs) return { status: 'stalled', ageMs, detail: why() };
  if (ageMs > bound.lateMs) return { status: 'late', ageMs, detail: why() };
  if (t.changes === 0) return { status: 'unknown', ageMs, detail: `kernel counter at ${t.beats}, no change seen yet (watching for ${fmt(ageMs)})` };
  return { status: 'alive', ageMs, detail: `last kernel beat seen ${fmt(ageMs)} ago` };
}

/** Assess one sample. Throws RangeError only for invalid options or inputs (programmer errors). */
export function assessHeartbeat(input: AssessInput, options: AssessOptions = {}): Assessment {
  const o = resolveOptions(options);
  const { previous, sample, now, vm } = input;
  if (!Number.isFinite(now)) throw new RangeError(`now: a finite host time in ms (got ${String(now)})`);
  if (previous !== undefined && now < previous.at) {
    throw new RangeError(`now: ${now} is before the previous sample (${previous.at}); use a monotonic clock`);
  }
  if (input.kernelPeriodMs !== undefined && !(Number.isFinite(input.kernelPeriodMs) && input.kernelPeriodMs > 0)) {
    throw new RangeError(`kernelPeriodMs: a positive number (got ${String(input.kernelPeriodMs)})`);
  }
  const running = vm.running;
  const vmDetail = `VM is ${vm.status ?? 'not running'}`;
  const kernelPeriodMs = input.kernelPeriodMs ?? (sample !== undefined ? sample.kernelPeriodDs * 100 : undefined) ?? 1000;
  const base = (status: HeartbeatStatus, periodMs: number, detail: string): SignalReport => ({ status, expectedPeriodMs: periodMs, detail });

  if (sample === undefined) {
    const status: HeartbeatStatus = running ? 'unknown' : 'paused';
    const detail = running ? `no sample: ${input.sampleError ?? 'region not read'}` : vmDetail;
    // Keep the baseline; remember a pause so that the resume restarts the ages.
    const state = previous === undefined || running ? previous : { ...previous, vmRunning: false };
    return {
      report: {
        at: now,
        vm,
        restarted: false,
        kernel: base(status, kernelPeriodMs, detail),
        agent: base(status, o.agentPeriodMs, detail),
      },
      state,
    };
  }

  const reason =
    previous === undefined ? undefined : input.resetSeen === true ? 'the VM was reset (QMP RESET)' : restartReason(previous, sample);
  const state = previous === undefined || reason !== undefined ? freshState(sample, now, running) : advance(previous, sample, now, running, o);

  const kernelDelta = previous === undefined || reason !== undefined ? undefined : delta32(previous.kernel.beats, sample.kernel.beats);
  const agentDelta = previous === undefined || reason !== undefined ? undefined : delta32(previous.agent.beats, sample.agent.beats);
  // Built field by field in one order (no spreads): this runs per VM per poll (bench/fleet).
  const rates = ratesOf(state.window);
  const kernel: KernelReport = { status: 'unknown', expectedPeriodMs: kernelPeriodMs, detail: '', beats: sample.kernel.beats };
  if (kernelDelta !== undefined) kernel.delta = kernelDelta;
  if (rates !== undefined) {
    kernel.ratePerSec = rates.kernel;
    kernel.rateWindowMs = rates.windowMs;
  }
  const intervalCount = intervalsIntoScratch(sample);
  const jitter = jitterOfMs(scratchMs, o.timerResolutionMs, intervalCount);
  if (jitter !== undefined) kernel.jitter = jitter;
  if (previous !== undefined && reason === undefined && kernelDelta !== undefined && kernelDelta > 0 && now - previous.at < TIMER_SAFE_MS) {
    kernel.guestIntervalMs = delta32(previous.kernel.last, sample.kernel.last) / UNITS_PER_MS / kernelDelta;
  }
  const agent: SignalReport = { status: 'unknown', expectedPeriodMs: o.agentPeriodMs, detail: '', beats: sample.agent.beats };
  if (agentDelta !== undefined) agent.delta = agentDelta;
  if (rates !== undefined) {
    agent.ratePerSec = rates.agent;
    agent.rateWindowMs = rates.windowMs;
  }

  const report: HeartbeatReport = { at: now, vm, restarted: reason !== undefined, kernel, agent };
  if (reason !== undefined) report.restartReason = reason;

  const set = (r: SignalReport, v: Pick<SignalReport, 'status' | 'detail'> & { ageMs?: number }) => {
    r.status = v.status;
    r.detail = v.detail;
    if (v.ageMs !== undefined) r.ageMs = v.ageMs;
  };

  if (!running) {
    set(kernel, { status: 'paused', detail: reason !== undefined ? `${vmDetail}; ${reason}` : vmDetail });
    set(agent, { status: 'paused', detail: vmDetail });
  } else if (reason !== undefined) {
    set(kernel, { status: 'restarted', detail: reason });
    set(agent, { status: 'restarted', detail: reason });
  } else if (!isLoaded(sample)) {
    const detail = 'load count and beats are 0: the table has not run (not loaded yet, or no ACPI in the guest)';
    set(kernel, { status: 'not-loaded', detail });
    set(agent, { status: 'not-loaded', detail });
  } else {
    // A counter at 0 that was never seen to change: no beat yet (a wrap to 0 is a change).
    if (sample.kernel.beats === 0 && state.kernel.changes === 0) {
      const ageMs = now - state.loadedSince;
      set(
        kernel,
        ageMs < o.graceMs
          ? { status: 'waiting', ageMs, detail: `table loaded, no kernel beat yet (${fmt(ageMs)} of ${fmt(o.graceMs)} grace)` }
          : // Never a beat since the load: this kernel does not poll our zone (thermal.off=1, no
            // CONFIG_ACPI_THERMAL, thermal.tzp=0). A kernel that hangs between loading the table
            // and starting its thermal driver looks the same, but a stall needs a heartbeat that
            // ran: no hung verdict from a heartbeat the guest never had; the other scenarios tell.
            {
              status: 'unavailable',
              ageMs,
              detail: `kernel heartbeat unavailable: the table loaded ${fmt(ageMs)} ago and the kernel never polled its zone (thermal.off=1? no ACPI thermal driver? thermal.tzp=0?)`,
            },
      );
    } else {
      const bound = kernelStallBound(kernelPeriodMs, scratchMs, o.stallSlack, o.timerResolutionMs, intervalCount);
      kernel.stallAfterMs = bound.stallMs;
      set(kernel, kernelByAge(state.kernel, now, kernelPeriodMs, bound));
      if (jitter !== undefined && jitter.meanMs > o.lateAfterPeriods * kernelPeriodMs) {
        kernel.detail += `; recorded intervals average ${fmt(jitter.meanMs)} against a period of ${fmt(kernelPeriodMs)} (thermal.tzp override?)`;
      }
    }
    if (sample.agent.beats === 0 && state.agent.changes === 0) {
      set(agent, { status: 'no-agent', detail: 'no agent beat since the table was loaded' });
    } else {
      set(agent, byAge('agent', state.agent, now, o.agentPeriodMs, o));
    }
  }
  return { report, state };
}
