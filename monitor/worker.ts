import type { Clock } from '../util/clock.js';
import { Ticker } from './ticker.js';
import type { AppTarget, Probe, ProbeResult, ScenarioTiming } from './types.js';

/**
 * The prober worker: one per (app, scenario). It owns timing (jittered start, initial delay,
 * period, timeout) and thresholds; the probe itself is a pure function of (target, timeout).
 * Like the kubelet's worker, `step` is the whole decision and is tested alone with no clock.
 */

/** The thresholded result a worker reports. Starts `unknown` until a threshold is crossed. */
export type WorkerResult = 'success' | 'failure' | 'unknown';

export interface WorkerState {
  result: WorkerResult;
  consecutiveSuccesses: number;
  consecutiveFailures: number;
  last?: ProbeResult & { at: number; durationMs: number };
  /** When `result` last changed. */
  since: number;
  probes: number;
}

export function initialState(now: number): WorkerState {
  return { result: 'unknown', consecutiveSuccesses: 0, consecutiveFailures: 0, since: now, probes: 0 };
}

/**
 * Apply one probe result. Failure after `failureThreshold` consecutive failures; back to success only
 * after `successThreshold` consecutive successes (the hold after failure). An `unknown` probe result
 * neither counts as success nor as failure and leaves the result as it was.
 */
export function step(
  state: WorkerState,
  probe: ProbeResult,
  timing: Pick<ScenarioTiming, 'failureThreshold' | 'successThreshold'>,
  at: number,
  durationMs = 0,
): { state: WorkerState; changed: boolean } {
  let { consecutiveSuccesses, consecutiveFailures, result, since } = state;
  if (probe.outcome === 'success') {
    consecutiveSuccesses++;
    consecutiveFailures = 0;
  } else if (probe.outcome === 'failure') {
    consecutiveFailures++;
    consecutiveSuccesses = 0;
  }
  let next: WorkerResult = result;
  if (consecutiveFailures >= timing.failureThreshold) next = 'failure';
  else if (consecutiveSuccesses >= timing.successThreshold) next = 'success';
  const changed = next !== result;
  if (changed) {
    result = next;
    since = at;
  }
  // Field by field, no spread of the result: this runs per VM per poll (bench/fleet).
  const last: NonNullable<WorkerState['last']> = { outcome: probe.outcome, detail: probe.detail, at, durationMs };
  if (probe.evidence !== undefined) last.evidence = probe.evidence;
  return {
    state: { result, consecutiveSuccesses, consecutiveFailures, since, probes: state.probes + 1, last },
    changed,
  };
}

/**
 * Run a probe with its timeout: a probe that overruns is a failure; a throw is a bug, reported as unknown.
 * `onStart` gets the probe's own promise, which may outlive this call when the probe ignores its signal.
 */
export async function runProbe(
  probe: Probe,
  target: AppTarget,
  timeoutMs: number,
  clock: Clock,
  signal: AbortSignal,
  onStart?: (run: Promise<unknown>) => void,
): Promise<ProbeResult> {
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  let timedOut = false;
  const timeout = clock.sleep(timeoutMs, ac.signal).then(
    () => {
      timedOut = true;
      ac.abort(new Error(`probe timed out after ${timeoutMs} ms`));
    },
    () => undefined,
  );
  try {
    const run = probe.run(target, { timeoutMs, signal: ac.signal }).catch(
      (e: unknown): ProbeResult => ({ outcome: 'unknown', detail: `probe error: ${(e as Error)?.message ?? String(e)}` }),
    );
    onStart?.(run);
    const r = await Promise.race([
      run,
      // Resolves only at the deadline, so a probe that ignores its signal cannot hold the worker.
      timeout.then(() => (timedOut ? ({ outcome: 'failure', detail: '' } as ProbeResult) : new Promise<never>(() => undefined))),
    ]);
    // A probe that gave up because its signal fired at the deadline still timed out.
    return timedOut ? { outcome: 'failure', detail: `timed out after ${timeoutMs} ms` } : r;
  } finally {
    if (!ac.signal.aborted) ac.abort(new Error('probe done'));
    signal.removeEventListener('abort', onAbort);
  }
}

/** The shortest interval a probe may ask for (Probe.intervalMs). */
export const MIN_PROBE_INTERVAL_MS = 50;

export interface WorkerUpdate {
  app: string;
  scenario: string;
  state: WorkerState;
  changed: boolean;
}

/**
 * Owns the timing of one (app, scenario): waits a random part of the period (jitter, so many apps
 * do not probe in step) plus the initial delay, then probes every period until stopped (or more
 * often, when the probe asks: Probe.intervalMs).
 */
export class Worker {
  #state: WorkerState;
  /** The probe's last run while it has not returned (it may outlive its timeout), and when it started. */
  #inFlight: { run: Promise<unknown>; since: number } | undefined;
  constructor(
    readonly app: AppTarget,
    readonly scenario: string,
    private readonly probe: Probe,
    private readonly timing: ScenarioTiming,
    private readonly clock: Clock,
    private readonly onUpdate: (u: WorkerUpdate) => void,
    private readonly random: () => number = Math.random,
    /** The timer it shares with the other workers (the manager's); default one of its own. */
    private readonly ticker: Ticker = new Ticker(clock, 0),
  ) {
    this.#state = initialState(clock.now());
  }

  get state(): WorkerState {
    return this.#state;
  }

  /**
   * One probe and one step; exposed for tests and for `diagnose`. At most one run of the probe is in
   * flight: while a run that ignored its timeout has not returned, no new one starts and the step
   * counts a failure (the probe cannot tell anything about the target meanwhile).
   */
  async probeOnce(signal: AbortSignal): Promise<WorkerUpdate> {
    const t0 = this.clock.now();
    const fast = this.#inFlight === undefined ? this.#runSync(t0) : undefined;
    return fast !== undefined ? this.#apply(fast, t0) : this.#probeAwaited(signal, t0);
  }

  /** The awaited run (runProbe with its timeout), or a failure while an earlier run has not returned. */
  async #probeAwaited(signal: AbortSignal, t0: number): Promise<WorkerUpdate> {
    const r: ProbeResult =
      this.#inFlight !== undefined
        ? {
            outcome: 'failure',
            detail: `the previous probe run has not returned after ${Math.round(t0 - this.#inFlight.since)} ms (it ignores its timeout); not starting another`,
          }
        : await runProbe(this.probe, this.app, this.timing.timeoutMs, this.clock, signal, (run) => {
            const entry = { run, since: t0 };
            this.#inFlight = entry;
            const clear = () => {
              if (this.#inFlight === entry) this.#inFlight = undefined;
            };
            run.then(clear, clear);
          });
    return this.#apply(r, t0);
  }

  #apply(r: ProbeResult, t0: number): WorkerUpdate {
    const now = this.clock.now();
    const { state, changed } = step(this.#state, r, this.timing, now, now - t0);
    this.#state = state;
    const u = { app: this.app.name, scenario: this.scenario, state, changed };
    this.onUpdate(u);
    return u;
  }

  /**
   * Probe.runSync, with the same rules as an awaited run: a result later than the timeout is a
   * timeout (it cannot be cut short, but it did not answer in time), a throw is unknown.
   */
  #runSync(t0: number): ProbeResult | undefined {
    if (this.probe.runSync === undefined) return undefined;
    let r: ProbeResult | undefined;
    try {
      r = this.probe.runSync(this.app);
    } catch (e) {
      return { outcome: 'unknown', detail: `probe error: ${(e as Error)?.message ?? String(e)}` };
    }
    if (r !== undefined && this.clock.now() - t0 > this.timing.timeoutMs) return { outcome: 'failure', detail: `timed out after ${this.timing.timeoutMs} ms` };
    return r;
  }

  /** The scenario's period, or the probe's shorter interval (never below MIN_PROBE_INTERVAL_MS). */
  #periodMs(): number {
    const hint = this.probe.intervalMs?.();
    if (hint === undefined || !Number.isFinite(hint) || hint <= 0) return this.timing.periodMs;
    return Math.min(this.timing.periodMs, Math.max(MIN_PROBE_INTERVAL_MS, hint));
  }

  /**
   * Probe until `signal` aborts: the first run after the initial delay and a random part of the
   * period, then one per period from each run's start. A probe that answers at once (runSync) is
   * stepped right in the ticker's callback: no promise, timer or listener per poll. Rejects when
   * stepping throws (an onUpdate bug), resolves on abort.
   */
  run(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return resolve();
      let entry: ReturnType<Ticker['at']> | undefined;
      const stop = (e?: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (entry !== undefined) this.ticker.cancel(entry);
        entry = undefined;
        if (e === undefined || signal.aborted) resolve();
        else reject(e);
      };
      const onAbort = () => stop();
      signal.addEventListener('abort', onAbort, { once: true });
      // Runs are due a period apart from the first one's due time, not from when each one ran: a
      // shared timer runs a little late, and late starts must not add up (a 1 Hz poll of a 1 Hz beat
      // would drift across the beat's phase). A run that ends past its next due time runs again at once.
      let due = 0;
      const next = (at: number) => {
        if (signal.aborted) return;
        const now = this.clock.now();
        due = at >= now - this.#periodMs() ? at : now; // more than a period behind: start again from now
        entry = this.ticker.at(due, fire);
      };
      const fire = () => {
        entry = undefined;
        if (signal.aborted) return;
        const t0 = this.clock.now();
        const start = due;
        try {
          const fast = this.#inFlight === undefined ? this.#runSync(t0) : undefined;
          if (fast !== undefined) {
            this.#apply(fast, t0);
            next(start + this.#periodMs());
            return;
          }
        } catch (e) {
          stop(e);
          return;
        }
        this.#probeAwaited(signal, t0).then(
          () => next(start + this.#periodMs()),
          (e: unknown) => stop(e),
        );
      };
      next(this.clock.now() + this.timing.initialDelayMs + this.random() * this.timing.periodMs);
    });
  }
}
