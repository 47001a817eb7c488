import type { StepStatus } from '../../protocol/report-manifest.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Artifact, Collector, CollectorResult } from '../types.js';
import { artifactBytes, describeError, textArtifact } from './common.js';

/** One step of a diagnostic scenario: a collector with its own timeout and size cap. */
export interface DiagnosticStep {
  collector: Collector;
  timeoutMs: number;
  maxBytes: number;
}

/** How a step ended. */
export type { StepStatus };

export interface StepResult extends CollectorResult {
  index: number;
  kind: string;
  status: StepStatus;
  /** Wall-clock start (ISO 8601). */
  startedAt: string;
  durationMs: number;
}

export interface DiagnosticsRun {
  app: string;
  startedAt: string;
  durationMs: number;
  steps: StepResult[];
  /** Some steps were cut short or skipped because the total budget ran out (or the run was aborted). */
  budgetExhausted: boolean;
}

export interface RunDiagnosticsOptions {
  /** The whole run ends within this. Default: the sum of the steps' timeouts. */
  totalBudgetMs?: number;
  /** Aborting skips the remaining steps and aborts the running one. */
  signal?: AbortSignal;
  /**
   * After a step's timeout its collector is aborted and has this long to hand back what it already
   * collected (e.g. the SysRq keys done so far). Default 1000 ms: a run ends within
   * `totalBudgetMs + graceMs`.
   */
  graceMs?: number;
  clock?: Clock;
  /** Called after each step (progress, logs). An error it throws is ignored. */
  onStep?: (result: StepResult) => void;
}

/**
 * Runs the steps in order, each with its timeout (cut to what is left of the total budget) and size cap,
 * and collects every result: a step that fails, throws (a collector bug: `error`) or overruns
 * (`timeout`) never stops the ones after it. A collector that ignores its signal cannot hold the run:
 * the runner stops waiting for it at the deadline plus the grace period. Artifacts beyond the step's
 * `maxBytes` are cut (text) or dropped. Never throws for a failing step.
 */
export async function runDiagnostics(
  target: AppTarget,
  steps: readonly DiagnosticStep[],
  options: RunDiagnosticsOptions = {},
): Promise<DiagnosticsRun> {
  for (const [i, s] of steps.entries()) {
    if (typeof s?.collector?.collect !== 'function') throw new TypeError(`step ${i}: collector must implement collect()`);
    if (!(s.timeoutMs > 0)) throw new RangeError(`step ${i} (${s.collector.kind}): timeoutMs must be > 0, got ${String(s.timeoutMs)}`);
    if (!Number.isSafeInteger(s.maxBytes) || s.maxBytes < 0) {
      throw new RangeError(`step ${i} (${s.collector.kind}): maxBytes must be an integer >= 0, got ${String(s.maxBytes)}`);
    }
  }
  const clock = options.clock ?? realClock;
  const graceMs = options.graceMs ?? 1000;
  const budgetMs = options.totalBudgetMs ?? steps.reduce((sum, s) => sum + s.timeoutMs, 0);
  if (!(graceMs >= 0)) throw new RangeError(`graceMs must be >= 0, got ${String(graceMs)}`);
  if (!(budgetMs >= 0)) throw new RangeError(`totalBudgetMs must be >= 0, got ${String(budgetMs)}`);
  const started = clock.now();
  const startedAt = new Date().toISOString();
  const results: StepResult[] = [];
  let budgetExhausted = false;

  for (const [index, step] of steps.entries()) {
    const left = budgetMs - (clock.now() - started);
    const kind = step.collector.kind;
    let result: StepResult;
    if (options.signal?.aborted === true || left <= 0) {
      budgetExhausted = true;
      const why = options.signal?.aborted === true ? 'the run was aborted' : 'the total budget was used up';
      result = { index, kind, status: 'skipped', ok: false, summary: `${kind}: skipped, ${why}`, artifacts: [], startedAt: new Date().toISOString(), durationMs: 0 };
    } else {
      const timeoutMs = Math.max(1, Math.round(Math.min(step.timeoutMs, left)));
      if (timeoutMs < step.timeoutMs) budgetExhausted = true;
      result = await runStep(target, step, index, timeoutMs, graceMs, clock, options.signal);
    }
    results.push(result);
    try {
      options.onStep?.(result);
    } catch {
      // Progress reporting must not break the diagnostics.
    }
  }
  return { app: target.name, startedAt, durationMs: clock.now() - started, steps: results, budgetExhausted };
}

async function runStep(
  target: AppTarget,
  step: DiagnosticStep,
  index: number,
  timeoutMs: number,
  graceMs: number,
  clock: Clock,
  outer: AbortSignal | undefined,
): Promise<StepResult> {
  const kind = step.collector.kind;
  const startedAt = new Date().toISOString();
  const t0 = clock.now();
  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort(outer?.reason);
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const timers = new AbortController(); // cancels the runner's own sleeps
  let timedOut = false;

  type Outcome = { kind: 'result'; value: CollectorResult } | { kind: 'threw'; error: unknown } | { kind: 'gone' };
  const work: Promise<Outcome> = Promise.resolve()
    .then(() => step.collector.collect(target, { timeoutMs, signal: ac.signal, maxBytes: step.maxBytes }))
    .then(
      (value): Outcome => ({ kind: 'result', value }),
      (error: unknown): Outcome => ({ kind: 'threw', error }),
    );
  const deadline = clock.sleep(timeoutMs, timers.signal).then(
    () => {
      timedOut = true;
      ac.abort(new Error(`${kind} timed out after ${timeoutMs} ms`));
    },
    () => undefined,
  );
  try {
    // The deadline wins the race only once it fired; the outer signal aborting lets `work` end by itself
    // (or not: then the grace period below bounds it as well).
    const outerAborted = new Promise<Outcome>((resolve) => ac.signal.addEventListener('abort', () => resolve({ kind: 'gone' }), { once: true }));
    let outcome = await Promise.race([work, deadline.then((): Outcome => ({ kind: 'gone' })), outerAborted]);
    if (timedOut || ac.signal.aborted) {
      // Give the aborted collector a moment to hand back what it has.
      outcome = await Promise.race([
        work,
        clock.sleep(graceMs, timers.signal).then(
          (): Outcome => ({ kind: 'gone' }),
          (): Outcome => ({ kind: 'gone' }),
        ),
      ]);
    }
    const durationMs = clock.now() - t0;
    const base = { index, kind, startedAt, durationMs };
    const stopped = timedOut ? `timed out after ${timeoutMs} ms` : ac.signal.aborted ? 'aborted' : undefined;
    const stoppedStatus: StepStatus = timedOut ? 'timeout' : 'aborted';
    switch (outcome.kind) {
      case 'result': {
        const { artifacts, notes } = capArtifacts(outcome.value.artifacts, step.maxBytes);
        const summary = [String(outcome.value.summary), ...notes].join('; ');
        if (stopped !== undefined) return { ...base, status: stoppedStatus, ok: false, summary: `${summary} (${stopped})`, artifacts };
        return { ...base, status: 'done', ok: outcome.value.ok === true, summary, artifacts };
      }
      case 'threw':
        if (stopped !== undefined) return { ...base, status: stoppedStatus, ok: false, summary: `${kind}: ${stopped}`, artifacts: [] };
        return { ...base, status: 'error', ok: false, summary: `${kind}: collector error: ${describeError(outcome.error)}`, artifacts: [] };
      case 'gone':
      default:
        return { ...base, status: stoppedStatus, ok: false, summary: `${kind}: ${stopped ?? 'aborted'}, nothing collected`, artifacts: [] };
    }
  } finally {
    timers.abort();
    if (!ac.signal.aborted) ac.abort(new Error('step done'));
    outer?.removeEventListener('abort', onOuterAbort);
  }
}

/**
 * Keeps a collector's artifacts within `maxBytes` in total (a collector that ignores its cap must not
 * blow the report up): text is cut, other artifacts that do not fit are dropped.
 */
export function capArtifacts(artifacts: readonly Artifact[], maxBytes: number): { artifacts: Artifact[]; notes: string[] } {
  const out: Artifact[] = [];
  const notes: string[] = [];
  let left = maxBytes;
  for (const a of Array.isArray(artifacts) ? artifacts : []) {
    const size = artifactBytes(a);
    if (size <= left) {
      out.push(a);
      left -= size;
    } else if (a.mediaType === 'text/plain' && left > 0) {
      const cut = textArtifact(a.name, a.data, left, 'head', true);
      out.push(cut);
      left -= artifactBytes(cut);
    } else {
      notes.push(`${a.name} dropped (${size} bytes over the step's cap)`);
    }
  }
  return { artifacts: out, notes };
}
