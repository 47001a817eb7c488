import type { ProbeResult, Verdict } from './types.js';
import type { WorkerResult } from './worker.js';

/**
 * The classifier: one verdict for one app from the latest state of its scenarios (the worker's
 * thresholded result plus the newest probe result and its evidence), optionally with host pressure.
 * Pure: no clock, no I/O; the same input gives the same verdict and the evidence that led to it.
 *
 * Precedence, first match wins:
 *   1. guest-panicked     a GUEST_PANICKED event (qmp-status `panic`/`events`), run state
 *                         `guest-panicked`, or a recent `Kernel panic` line in the console or the
 *                         app's log stream (console-passive, log-marks) while the kernel heartbeat
 *                         is not alive (an alive heartbeat means it rebooted since)
 *   2. vm-not-running     QEMU's run state (the newest one any probe saw) is not `running`, or no
 *                         QEMU answers on the QMP socket. A paused, migrating or shutting-down VM
 *                         therefore never gets a hang verdict.
 *   3. guest-starved      kernel heartbeat late/stalled, large jitter in its interval ring (or the
 *                         vCPU threads got no CPU), and host CPU pressure (PSI or vCPU run delay)
 *   4. guest-kernel-hung  kernel heartbeat failing while the VM runs
 *   5. guest-userspace-hung  kernel heartbeat alive, and a userspace probe failing (agent
 *                         heartbeat, console command, marks in the console or the app's logs,
 *                         heartbeat disk, guest agent ping)
 *   6. app-unhealthy      the guest is alive (kernel or userspace probe passing), an app probe
 *                         (tcp, http) failing
 *   7. running-healthy    something passes and nothing fails
 *   8. unknown            anything else: no evidence yet, or failures the probes cannot place
 *                         (userspace failing with no kernel heartbeat to tell a kernel hang from
 *                         a userspace one; an app failing with no sign the guest lives)
 */

/** The latest state of one scenario of the app. */
export interface ScenarioObservation {
  scenario: string;
  /** Probe kind (`kernel-heartbeat`, `qmp-status`, `tcp`...). */
  probe: string;
  /** The worker's thresholded result. */
  result: WorkerResult;
  /** The newest probe result; `at` orders run states seen by different probes. */
  last?: ProbeResult & { at?: number };
}

/** Host-side pressure around the VM (optional input; collected by the caller). */
export interface HostPressure {
  /** /proc/pressure/cpu `some avg10`, percent. */
  cpuSomeAvg10?: number;
  /** Share of wall time the VM's vCPU threads were runnable but waiting for a CPU (schedstat), 0..1. */
  vcpuWaitRatio?: number;
  /** Where vcpuWaitRatio came from (pid, thread, window). */
  vcpuDetail?: string;
  /** The vCPU threads got (almost) no CPU time in the window. */
  vcpuStarved?: boolean;
  detail?: string;
}

export interface ClassifyOptions {
  /** PSI cpu some avg10 at or above this is pressure. Default 40 (%). */
  psiHighAvg10?: number;
  /** vCPU wait ratio at or above this is pressure. Default 0.5. */
  vcpuWaitHigh?: number;
  /** Ring jitter is large when the longest interval is at least this many periods. Default 2. */
  jitterMaxPeriods?: number;
  /** ... or when its standard deviation is at least this share of the period. Default 0.25. */
  jitterStddevShare?: number;
  /** A console panic line older than this is history. Default 600000 (10 min). */
  consolePanicMaxAgeMs?: number;
}

export interface ClassifyInput {
  app: string;
  scenarios: readonly ScenarioObservation[];
  host?: HostPressure;
}

export interface Classification {
  app: string;
  verdict: Verdict;
  /** One line: why this verdict. */
  reason: string;
  /** QEMU's run state, when a probe saw one. */
  runState?: string;
  /** The observations that led to the verdict. */
  evidence: ScenarioObservation[];
  /** Host pressure, when it mattered. */
  host?: HostPressure;
}

const KERNEL = new Set(['kernel-heartbeat']);
const USERSPACE = new Set(['agent-heartbeat', 'agent-ping', 'console-active', 'console-passive', 'log-marks', 'disk-heartbeat', 'guest-ping']);
/** Probes that report a `Kernel panic` line seen in the guest's log stream (`evidence.panic`). */
const LOG_PANIC = new Set(['console-passive', 'log-marks']);
const APP = new Set(['tcp', 'http']);
const NO_QEMU = new Set(['ENOENT', 'ECONNREFUSED']);

const DEFAULTS: Required<ClassifyOptions> = {
  psiHighAvg10: 40,
  vcpuWaitHigh: 0.5,
  jitterMaxPeriods: 2,
  jitterStddevShare: 0.25,
  consolePanicMaxAgeMs: 600_000,
};

type Ev = Record<string, unknown>;
const ev = (o: ScenarioObservation): Ev => (o.last?.evidence ?? {}) as Ev;
const rec = (v: unknown): Ev | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Ev) : undefined);

/** The newest run state any probe reported, with the observation it came from. */
function runStateOf(obs: readonly ScenarioObservation[]): { state: string; from: ScenarioObservation } | undefined {
  let best: { state: string; from: ScenarioObservation; at: number; rank: number } | undefined;
  for (const o of obs) {
    const e = ev(o);
    const state = o.probe === 'qmp-status' ? e.status : rec(e.vm)?.status;
    if (typeof state !== 'string') continue;
    const at = o.last?.at ?? -Infinity;
    const rank = o.probe === 'qmp-status' ? 1 : 0; // same time: QEMU's own answer wins
    if (best === undefined || at > best.at || (at === best.at && rank > best.rank)) best = { state, from: o, at, rank };
  }
  return best === undefined ? undefined : { state: best.state, from: best.from };
}

function heartbeatStatus(o: ScenarioObservation | undefined): string | undefined {
  const s = o === undefined ? undefined : ev(o).status;
  return typeof s === 'string' ? s : undefined;
}

function jitterLarge(o: ScenarioObservation, opt: Required<ClassifyOptions>): boolean {
  const e = ev(o);
  const j = rec(e.jitter);
  const period = typeof e.expectedPeriodMs === 'number' ? e.expectedPeriodMs : undefined;
  if (j === undefined || period === undefined || period <= 0) return false;
  const max = typeof j.maxMs === 'number' ? j.maxMs : 0;
  const sd = typeof j.stddevMs === 'number' ? j.stddevMs : 0;
  const res = typeof j.resolutionMs === 'number' ? j.resolutionMs : 0;
  // Starvation stretches intervals. Short ones are extra beats (the thermal core reads each zone at
  // registration, a guest tool may read the kernel zone's temp): spread without a stretched interval
  // is not starvation (seen in the detection bench: two 4 ms boot intervals gave a false guest-starved).
  const stretched = max >= 1.25 * period;
  return max >= opt.jitterMaxPeriods * period || (stretched && sd >= opt.jitterStddevShare * period && sd > 2 * res);
}

function pressureHigh(h: HostPressure | undefined, opt: Required<ClassifyOptions>): boolean {
  if (h === undefined) return false;
  return (h.cpuSomeAvg10 ?? 0) >= opt.psiHighAvg10 || (h.vcpuWaitRatio ?? 0) >= opt.vcpuWaitHigh || h.vcpuStarved === true;
}

export function classify(input: ClassifyInput, options: ClassifyOptions = {}): Classification {
  const opt = { ...DEFAULTS, ...options };
  const obs = input.scenarios;
  const out = (verdict: Verdict, reason: string, evidence: ScenarioObservation[], extra: Partial<Classification> = {}): Classification => {
    const run = runStateOf(obs);
    return { app: input.app, verdict, reason, evidence, ...(run !== undefined ? { runState: run.state } : {}), ...extra };
  };
  const of = (kinds: Set<string>) => obs.filter((o) => kinds.has(o.probe));
  const failing = (o: ScenarioObservation) => o.result === 'failure';
  const passing = (o: ScenarioObservation) => o.result === 'success';

  const kernel = of(KERNEL);
  const kernelAlive = kernel.some((o) => passing(o) && ['alive', 'restarted'].includes(heartbeatStatus(o) ?? 'alive'));

  // 1. Panic.
  for (const o of obs.filter((x) => x.probe === 'qmp-status')) {
    const e = ev(o);
    const events = Array.isArray(e.events) ? (e.events as Ev[]) : [];
    if (rec(e.panic) !== undefined || events.some((x) => x.event === 'GUEST_PANICKED')) {
      return out('guest-panicked', 'QEMU reported GUEST_PANICKED (pvpanic)', [o]);
    }
  }
  const run = runStateOf(obs);
  if (run?.state === 'guest-panicked') return out('guest-panicked', 'QEMU run state is guest-panicked', [run.from]);
  if (!kernelAlive) {
    for (const o of obs.filter((x) => LOG_PANIC.has(x.probe))) {
      const p = rec(ev(o).panic);
      if (p !== undefined && typeof p.ageMs === 'number' && p.ageMs <= opt.consolePanicMaxAgeMs) {
        return out('guest-panicked', `${o.probe === 'log-marks' ? 'log' : 'console'}: ${String(p.line)}`, [o, ...kernel]);
      }
    }
  }

  // 2. Not running: never a hang.
  if (run !== undefined && run.state !== 'running') {
    return out('vm-not-running', `QEMU run state is ${run.state}`, [run.from]);
  }
  // QEMU gone: the QMP socket refuses or vanished, newer than any run state seen.
  const gone = obs
    .filter((o) => (o.probe === 'qmp-status' || KERNEL.has(o.probe) || o.probe === 'agent-heartbeat') && o.last?.outcome === 'failure')
    .filter((o) => NO_QEMU.has(String(ev(o).errno)))
    .sort((a, b) => (b.last?.at ?? 0) - (a.last?.at ?? 0))[0];
  if (gone !== undefined && (run === undefined || (gone.last?.at ?? 0) >= (run.from.last?.at ?? 0))) {
    return out('vm-not-running', `no QEMU on the QMP socket (${String(ev(gone).errno)})`, [gone], { runState: 'no-qemu' });
  }

  // 3, 4. The kernel heartbeat.
  const kernelBad = kernel.filter((o) => failing(o) || ['late', 'stalled'].includes(heartbeatStatus(o) ?? ''));
  if (kernelBad.length > 0 && pressureHigh(input.host, opt)) {
    // Host-wide PSI needs the beat intervals to tie it to this VM; this VM's own vCPU threads waiting
    // for a CPU (or getting none) is evidence enough. A hung kernel spinning with interrupts off under
    // that much host load is reported starved too: the reason names the wait.
    const jittery = kernelBad.filter((o) => jitterLarge(o, opt));
    const waited = (input.host?.vcpuWaitRatio ?? 0) >= opt.vcpuWaitHigh;
    if (jittery.length > 0 || waited || input.host?.vcpuStarved === true) {
      const h = input.host as HostPressure;
      const why = [
        h.cpuSomeAvg10 !== undefined ? `host PSI cpu some avg10 ${h.cpuSomeAvg10}%` : undefined,
        h.vcpuWaitRatio !== undefined ? `vCPU run delay ${Math.round(h.vcpuWaitRatio * 100)}%${h.vcpuDetail !== undefined ? ` (${h.vcpuDetail})` : ''}` : undefined,
        h.vcpuStarved === true ? 'vCPU threads got no CPU' : undefined,
        jittery.length > 0 ? 'large jitter in the kernel beat intervals' : undefined,
      ].filter((x) => x !== undefined);
      return out('guest-starved', `kernel heartbeat ${heartbeatStatus(kernelBad[0]) ?? 'failing'} under host pressure: ${why.join(', ')}`, kernelBad, { host: h });
    }
  }
  // A hung kernel is a table read that shows no beat (stalled, or late with failOn late). A failure
  // with no reading (the probe timed out, QMP did not answer) says nothing about the guest: QEMU, or
  // the monitor itself (1000 VMs connecting at once), was too slow. It is unknown, never a hang.
  const kernelFailing = kernel.filter(failing);
  const kernelHung = kernelFailing.filter((o) => ['stalled', 'late'].includes(heartbeatStatus(o) ?? ''));
  if (kernelHung.length > 0) {
    const note = pressureHigh(input.host, opt) ? ' (host under pressure, but the beat intervals show no starvation)' : '';
    return out('guest-kernel-hung', `kernel heartbeat ${heartbeatStatus(kernelHung[0]) ?? 'failing'} while the VM runs${note}`, kernelHung);
  }
  if (kernelFailing.length > 0) {
    return out('unknown', `kernel heartbeat probe failing with no reading of the table: ${kernelFailing[0]?.last?.detail ?? 'no detail'}`, kernelFailing);
  }

  // 5. Userspace.
  const userFailing = of(USERSPACE).filter(failing);
  if (userFailing.length > 0) {
    if (kernelAlive) {
      return out('guest-userspace-hung', `kernel alive, ${userFailing.map((o) => o.scenario).join(', ')} failing`, [...userFailing, ...kernel.filter(passing)]);
    }
    return out('unknown', `${userFailing.map((o) => o.scenario).join(', ')} failing; no live kernel heartbeat to tell a kernel hang from a userspace hang`, userFailing);
  }

  // 6. The app.
  const appFailing = of(APP).filter(failing);
  if (appFailing.length > 0) {
    const alive = [...kernel, ...of(USERSPACE)].filter(passing);
    if (alive.length > 0) return out('app-unhealthy', `guest alive, ${appFailing.map((o) => o.scenario).join(', ')} failing`, [...appFailing, ...alive]);
    return out('unknown', `${appFailing.map((o) => o.scenario).join(', ')} failing; no probe shows the guest itself is alive`, appFailing);
  }

  // 7. Healthy.
  const anyFailing = obs.filter(failing);
  const anyPassing = obs.filter(passing);
  if (anyFailing.length === 0 && anyPassing.length > 0) return out('running-healthy', `${anyPassing.length} scenario(s) passing`, anyPassing);
  if (anyFailing.length > 0) return out('unknown', `${anyFailing.map((o) => o.scenario).join(', ')} failing`, anyFailing);
  return out('unknown', 'no scenario has a result yet', []);
}
