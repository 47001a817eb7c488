import type { Clock } from '../util/clock.js';
import { classify, type Classification, type HostPressure, type ScenarioObservation } from './classify.js';
import type { AppConfig } from './config.js';
import type { MonitorMetrics } from './metrics.js';
import pLimit from 'p-limit';
import { createProbe } from './probes/index.js';
import { DISCOVERY_CONCURRENCY } from './probes/heartbeat.js';
import type { QmpLinks } from './probes/qmp-link.js';
import type { Probe, Verdict } from './types.js';
import { Timeline, timelinePoint, type TimelineSampleOut } from './timeline.js';
import { Ticker } from './ticker.js';
import { Worker, type WorkerUpdate } from './worker.js';

/**
 * The manager owns the workers (one per app and scenario), keeps the latest observation of each,
 * classifies each app after every change, and starts the app's diagnostic scenario when a verdict
 * says the guest is in trouble (with a per-app cooldown). It follows apps appearing and going away
 * (EVE autodiscovery) through `sync()`.
 */

/** Verdicts that start the diagnostic scenario. A VM that is not running is the operator's doing. */
export const TROUBLE: ReadonlySet<Verdict> = new Set(['guest-panicked', 'guest-kernel-hung', 'guest-userspace-hung', 'app-unhealthy', 'guest-starved']);

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  [k: string]: unknown;
}

export interface DiagnosticsRun {
  app: AppConfig;
  classification: Classification;
  /** What tripped it: the scenario whose worker turned to failure. */
  trigger: WorkerUpdate;
  /** The app's heartbeat and run-state samples up to now, oldest first. */
  timeline: TimelineSampleOut[];
  signal: AbortSignal;
}

export interface ManagerDeps {
  clock: Clock;
  links: QmpLinks;
  log: (r: LogRecord) => void;
  metrics?: MonitorMetrics;
  /** Told of every verdict change of an app (the shipper sends it to the controller). */
  onVerdict?: (app: AppConfig, c: Classification) => void;
  /** Runs the app's diagnostic scenario and ships the report; resolves with where the report went. */
  diagnose?: (run: DiagnosticsRun) => Promise<string | undefined>;
  /** Host pressure around an app's VM, for the `guest-starved` verdict. */
  hostPressure?: (app: AppConfig) => Promise<HostPressure | undefined>;
  /**
   * The app's own vCPU threads' wait for a CPU (monitor/vcpu-pressure.ts), asked only when a
   * classification says `guest-kernel-hung`: the app is classified again with it. Primed (one
   * reading, not awaited) when the kernel heartbeat turns late, so the hang verdict does not wait for
   * a window of its own.
   */
  vcpuPressure?: {
    sample(app: AppConfig, signal: AbortSignal): Promise<Pick<HostPressure, 'vcpuWaitRatio' | 'vcpuDetail'> | undefined>;
    prime(app: AppConfig): void;
  };
  /** Probe factory (tests inject fakes); default createProbe. */
  probeFor?: (app: AppConfig, scenario: AppConfig['scenarios'][number]) => Probe;
  random?: () => number;
  /** Wall clock for timeline samples (tests). */
  wallNow?: () => number;
  /** Samples kept per app for report timelines. Default 360. */
  timelineSamples?: number;
  /**
   * The workers share one timer (monitor/ticker.ts) that wakes at most every this many ms: probes due
   * within it run together, that much late at most. Default TICK_MS.
   */
  tickMs?: number;
}

/** The workers' shared timer wakes at most this often (ms): 1000 VMs at 1 Hz is 100 wake-ups a second, not 1000. */
export const TICK_MS = 10;

interface AppRun {
  app: AppConfig;
  ac: AbortController;
  workers: Worker[];
  probes: Probe[];
  done: Promise<unknown>;
  observations: Map<string, ScenarioObservation>;
  verdict: Classification | undefined;
  lastDiagnosis: number | undefined;
  diagnosing: boolean;
  /** The running classification loop (one per app at most); never rejects. */
  classifying: Promise<void> | undefined;
  /** The update to classify next: the newest, unless an older one is a trigger (a change to failure). */
  pending: WorkerUpdate | undefined;
  timeline: Timeline;
}

export interface AppStatus {
  app: string;
  verdict: Verdict | undefined;
  reason: string | undefined;
  scenarios: ScenarioObservation[];
}

export class Manager {
  readonly #apps = new Map<string, AppRun>();
  readonly #diagnoses = new Set<Promise<unknown>>();
  #stopped = false;
  readonly #ticker: Ticker;
  /** Every probe's table discoveries, DISCOVERY_CONCURRENCY at a time. */
  readonly #discoveries = pLimit(DISCOVERY_CONCURRENCY);

  constructor(private readonly deps: ManagerDeps) {
    this.#ticker = new Ticker(deps.clock, deps.tickMs ?? TICK_MS, (e) =>
      this.#logSafely({ level: 'error', msg: 'worker failed', error: String((e as Error)?.message ?? e) }),
    );
  }

  /** Make the running set equal to `apps`: start new ones, stop vanished ones, restart changed ones. */
  async sync(apps: readonly AppConfig[]): Promise<void> {
    if (this.#stopped) return;
    const wanted = new Map(apps.map((a) => [a.name, a]));
    for (const [name, run] of this.#apps) {
      const next = wanted.get(name);
      if (!next || JSON.stringify(next) !== JSON.stringify(run.app)) {
        await this.#stopApp(run, next ? 'changed' : 'gone');
      }
    }
    for (const app of apps) if (!this.#apps.has(app.name)) this.#startApp(app);
  }

  status(): AppStatus[] {
    return [...this.#apps.values()].map((r) => ({
      app: r.app.name,
      verdict: r.verdict?.verdict,
      reason: r.verdict?.reason,
      scenarios: [...r.observations.values()],
    }));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#apps.values()].map((r) => this.#stopApp(r, 'shutdown')));
    await Promise.allSettled([...this.#diagnoses]);
  }

  #startApp(app: AppConfig): void {
    const { clock, log } = this.deps;
    const ac = new AbortController();
    const run: AppRun = { app, ac, workers: [], probes: [], done: Promise.resolve(), observations: new Map(), verdict: undefined, lastDiagnosis: undefined, diagnosing: false, classifying: undefined, pending: undefined, timeline: new Timeline(this.deps.timelineSamples) };
    for (const sc of app.scenarios) {
      const probe = this.deps.probeFor?.(app, sc) ?? createProbe(sc.probe, { links: this.deps.links, periodMs: sc.timing.periodMs, now: () => clock.now(), discoveries: this.#discoveries });
      run.probes.push(probe);
      run.observations.set(sc.name, { scenario: sc.name, probe: sc.probe.type, result: 'unknown' });
      run.workers.push(new Worker(app.target, sc.name, probe, sc.timing, clock, (u) => this.#onUpdate(run, u), this.deps.random, this.#ticker));
    }
    run.done = Promise.allSettled(
      run.workers.map((w) =>
        w.run(ac.signal).catch((e: unknown) => log({ level: 'error', msg: 'worker failed', app: app.name, scenario: w.scenario, error: String(e) })),
      ),
    );
    this.#apps.set(app.name, run);
    log({ level: 'info', msg: 'app added', app: app.name, origin: app.origin, scenarios: app.scenarios.map((s) => `${s.name}:${s.probe.type}`) });
  }

  async #stopApp(run: AppRun, why: 'gone' | 'changed' | 'shutdown'): Promise<void> {
    run.ac.abort(new Error(`app ${why}`));
    this.#apps.delete(run.app.name);
    await run.done;
    await run.classifying;
    await Promise.allSettled(run.probes.map((p) => p.close?.()));
    this.deps.metrics?.removeApp(run.app.name);
    this.deps.log({ level: 'info', msg: 'app removed', app: run.app.name, why });
  }

  #onUpdate(run: AppRun, u: WorkerUpdate): void {
    const { metrics, log } = this.deps;
    const last = u.state.last;
    const prev = run.observations.get(u.scenario);
    const probeType = prev?.probe ?? 'unknown';
    if (last) metrics?.probe(run.app.name, u.scenario, last.outcome, last.durationMs);
    const obs: ScenarioObservation = { scenario: u.scenario, probe: probeType, result: u.state.result, ...(last ? { last } : {}) };
    run.observations.set(u.scenario, obs);
    const age = last?.evidence?.['ageMs'];
    if (metrics && typeof age === 'number' && (probeType === 'kernel-heartbeat' || probeType === 'agent-heartbeat')) {
      metrics.setHeartbeatAge(run.app.name, probeType === 'kernel-heartbeat' ? 'kernel' : 'agent', age / 1000);
    }
    if (last) {
      const point = timelinePoint((this.deps.wallNow ?? Date.now)(), u.scenario, probeType, last.outcome, last.evidence);
      if (point) run.timeline.record(point);
    }
    if (u.changed) log({ level: u.state.result === 'failure' ? 'warn' : 'info', msg: 'scenario result', app: run.app.name, scenario: u.scenario, result: u.state.result, detail: last?.detail });
    // An unknown probe result leaves the scenario's result as it was (worker.ts step): said once, when
    // it starts (the first result too), so a probe that cannot tell (a console held by another client
    // from before the monitor's first try) is in the log too.
    else if (last?.outcome === 'unknown' && prev?.last?.outcome !== 'unknown') {
      log({ level: 'info', msg: 'scenario result unknown', app: run.app.name, scenario: u.scenario, result: u.state.result, detail: last.detail });
    }
    if (steadyHeartbeat(run.verdict, prev, obs)) return;
    this.#scheduleClassify(run, u);
  }

  /**
   * At most one classification per app runs at a time; updates that arrive meanwhile are coalesced
   * (classify reads the newest observations anyway), keeping one that may trigger diagnostics, so a
   * slow host-pressure read never piles up work. A failure in it (a metric, a logger, the
   * classifier) is logged: never an unhandled rejection in the daemon.
   */
  #scheduleClassify(run: AppRun, u: WorkerUpdate): void {
    const trigger = (x: WorkerUpdate | undefined) => x !== undefined && x.changed && x.state.result === 'failure';
    if (!trigger(run.pending) || trigger(u)) run.pending = u;
    if (run.classifying !== undefined) return;
    run.classifying = (async () => {
      for (let next = run.pending; next !== undefined; next = run.pending) {
        run.pending = undefined;
        try {
          await this.#classify(run, next);
        } catch (e) {
          this.#logSafely({ level: 'error', msg: 'classification failed', app: run.app.name, scenario: next.scenario, error: String((e as Error)?.message ?? e) });
        }
      }
    })().finally(() => (run.classifying = undefined));
  }

  /** Logs, and swallows a throwing logger: the manager's own failure paths must not fail. */
  #logSafely(r: LogRecord): void {
    try {
      this.deps.log(r);
    } catch {
      // nothing left to tell it to
    }
  }

  async #classify(run: AppRun, u: WorkerUpdate): Promise<void> {
    const host = this.deps.hostPressure ? await this.deps.hostPressure(run.app).catch(() => undefined) : undefined;
    if (run.ac.signal.aborted) return;
    let c = classify({ app: run.app.name, scenarios: [...run.observations.values()], ...(host ? { host } : {}) });
    const vp = this.deps.vcpuPressure;
    if (vp !== undefined && u.state.last?.evidence?.['status'] === 'late' && run.observations.get(u.scenario)?.probe === 'kernel-heartbeat') vp.prime(run.app);
    if (c.verdict === 'guest-kernel-hung' && vp !== undefined) {
      const vcpu = await vp.sample(run.app, run.ac.signal).catch(() => undefined);
      if (run.ac.signal.aborted) return;
      if (vcpu !== undefined) {
        c = classify({ app: run.app.name, scenarios: [...run.observations.values()], host: { ...host, ...vcpu } });
      }
    }
    const before = run.verdict?.verdict;
    run.verdict = c;
    this.deps.metrics?.setVerdict(run.app.name, c.verdict);
    if (c.verdict !== before) {
      this.deps.log({ level: TROUBLE.has(c.verdict) ? 'warn' : 'info', msg: 'verdict', app: run.app.name, verdict: c.verdict, reason: c.reason, ...(c.runState ? { runState: c.runState } : {}) });
      this.deps.onVerdict?.(run.app, c);
    }
    if (TROUBLE.has(c.verdict) && u.changed && u.state.result === 'failure') this.#maybeDiagnose(run, c, u);
  }

  #maybeDiagnose(run: AppRun, c: Classification, trigger: WorkerUpdate): void {
    const { clock, log, diagnose } = this.deps;
    if (!diagnose || run.diagnosing) return;
    const now = clock.now();
    if (run.lastDiagnosis !== undefined && now - run.lastDiagnosis < run.app.diagnostics.cooldownMs) {
      log({ level: 'info', msg: 'diagnostics skipped: cooldown', app: run.app.name, verdict: c.verdict, nextInMs: Math.round(run.app.diagnostics.cooldownMs - (now - run.lastDiagnosis)) });
      return;
    }
    run.diagnosing = true;
    run.lastDiagnosis = now;
    this.deps.metrics?.diagnostics.inc({ app: run.app.name, verdict: c.verdict });
    log({ level: 'warn', msg: 'diagnostics started', app: run.app.name, verdict: c.verdict, trigger: trigger.scenario });
    const p = diagnose({ app: run.app, classification: c, trigger, timeline: run.timeline.samples(), signal: run.ac.signal })
      .then(
        (where) => log({ level: 'info', msg: 'diagnostics done', app: run.app.name, verdict: c.verdict, report: where }),
        (e: unknown) => log({ level: 'error', msg: 'diagnostics failed', app: run.app.name, error: String((e as Error)?.message ?? e) }),
      )
      .catch((e: unknown) => this.#logSafely({ level: 'error', msg: 'diagnostics failed', app: run.app.name, error: String((e as Error)?.message ?? e) }))
      .finally(() => {
        run.diagnosing = false;
        this.#diagnoses.delete(p);
      });
    this.#diagnoses.add(p);
  }
}

/**
 * An update that cannot change a healthy verdict, so it is not classified again (1000 VMs polled at
 * 1 Hz would classify 1000 times a second, bench/fleet): a heartbeat that was and still is a success,
 * `alive`, with the run state the verdict already names, while the app is running-healthy. Anything
 * else (a change, another status, another run state, another probe) is classified.
 */
export function steadyHeartbeat(verdict: Classification | undefined, before: ScenarioObservation | undefined, now: ScenarioObservation): boolean {
  if (verdict?.verdict !== 'running-healthy' || (now.probe !== 'kernel-heartbeat' && now.probe !== 'agent-heartbeat')) return false;
  if (before?.result !== 'success' || before.last?.outcome !== 'success' || now.result !== 'success' || now.last?.outcome !== 'success') return false;
  const ev = now.last.evidence;
  const vm = ev?.['vm'] as { status?: unknown } | undefined;
  return ev?.['status'] === 'alive' && before.last.evidence?.['status'] === 'alive' && vm?.status === verdict.runState;
}
