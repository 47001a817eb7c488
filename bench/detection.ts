/**
 * Detection latency of the monitor (issue "Monitor", §6): the time from a fault injected into a real
 * guest to the monitor's verdict, per fault and per scenario timing. Each run boots a fresh test guest
 * (QEMU TCG, q35 + SeaBIOS, our SSDT with a 1 s kernel heartbeat), runs the monitor in this process
 * (runMonitor, config through parseConfig, no diagnostic collectors: detection, not diagnostics, is
 * measured), waits for it to see the guest healthy, injects the fault and timestamps the log records
 * with host monotonic time:
 *  - panic:     the guest boots with `panic=0 eve_diag.scenario=panic eve_diag.delay=N`; the fault time
 *               is the host time of the first console-logfile poll (every 50 ms) that shows
 *               `Kernel panic` (the kernel's own timestamp is not host time). Expected: guest-kernel-hung
 *               (guest-panicked would need pvpanic or a console panic probe; neither is configured).
 *  - userspace: the guest runs the agent-zone reader (`eve_diag.scenario=read-agent-zone`, 1 s), then
 *               `kill -STOP -1` is written to the console socket; the fault time is when the write
 *               completes. Expected: guest-userspace-hung (the kernel heartbeat stays alive).
 *  - lockup:    a hard lockup with interrupts off while QEMU says `running`: the guest prints the address
 *               of ksys_sync (/proc/kallsyms), the benchmark attaches QEMU's gdbstub for a moment (HMP
 *               `gdbserver` on its own QMP socket), writes `cli; jmp .` there and detaches; the fault time
 *               is when `sync` has been written to the console (1 vCPU: nothing else runs after it).
 *               Expected: guest-kernel-hung.
 *  - pause:     QMP `stop` on a second QMP socket of the VM (the monitor holds the first); the fault
 *               time is when QEMU's reply arrives. Expected: vm-not-running and never a hang verdict,
 *               watched for as long as a stall would have taken to become a verdict.
 * Timings: `default` = the config defaults (period 10 s, timeout 1 s, failureThreshold 3) and `fast` =
 * period 1 s, timeout 1 s, failureThreshold 3. Scenarios: qmp-status + kernel-heartbeat (+
 * agent-heartbeat, agentPeriodSeconds 1, in the guests that run the agent loop), all at that timing;
 * the heartbeat scenarios decide once (failureThreshold 1, their config default) and are read 4 times
 * per beat period (the probe's own interval), whatever the scenario period. `--slack` runs the kernel
 * stall rule at several stallSlack values (latency against tolerance of late beats).
 *
 * Before a userspace or pause fault the benchmark waits a random 0..period after the monitor saw the
 * guest healthy, so the fault lands at a random phase of the probe schedule (as the panic's boot delay
 * does against the workers' random start).
 *
 * Latency is fault to the first trouble verdict: the expected one or any hang verdict (a hung kernel
 * under host CPU pressure with jittery beat intervals is `guest-starved`, by the classifier's rules);
 * an unexpected one is flagged, and the run goes on waiting for the expected one to report whether it came.
 * Prints one table (fault, timing, runs, latency min/mean/max, verdicts, theoretical bound) and the
 * per-run details (with host PSI at the fault and at the verdict). Run: `bash bench/run.sh detection [--runs N] [--jobs N] [--faults ...] [--timings ...]`.
 */
import { randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { buildGuestImage } from '../build/guest-image.js';
import { parseConfig } from '../monitor/config.js';
import { readHostPressure, runMonitor } from '../monitor/daemon.js';
import type { LogRecord } from '../monitor/manager.js';
import { GdbClient } from '../host-reader/gdb/client.js';
import { QmpClient } from '../host-reader/qmp/index.js';
import { consoleWrite, launchBenchGuest, LogTail, sleep, stopAllBenchGuests, type BenchGuest } from './guest.js';
import { intFlag, numberFlag } from './flags.js';

const FAULTS = ['panic', 'lockup', 'userspace', 'pause'] as const;
type Fault = (typeof FAULTS)[number];

interface Timing {
  name: 'default' | 'fast';
  periodMs: number;
  timeoutMs: number;
  failureThreshold: number;
  /** The `defaults:` block of the config (empty: the parser's defaults). */
  yaml: string;
}

const TIMINGS: readonly Timing[] = [
  { name: 'default', periodMs: 10_000, timeoutMs: 1000, failureThreshold: 3, yaml: '' },
  { name: 'fast', periodMs: 1000, timeoutMs: 1000, failureThreshold: 3, yaml: 'defaults: { periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 3 }\n' },
];

/** Kernel heartbeat: the SSDT's period (the layout's, what the assessment uses) and what the guest does. */
const KERNEL_PERIOD_MS = 1000;
const KERNEL_BEAT_MS = 1024; // Linux 6.1 timer wheel: a 1 s _TZP is seen as 1024 ms (README)
const AGENT_PERIOD_MS = 1000; // eve_diag.period=1 and agentPeriodSeconds: 1
const AGENT_STALL_PERIODS = 3; // assess.ts stallAfterPeriods default (the agent's rule)
const HEARTBEAT_POLL_MS = KERNEL_PERIOD_MS / 4; // monitor/probes/heartbeat.ts: 4 reads per beat period
const AGENT_ZONE = '/sys/class/thermal/thermal_zone1/temp';
const HANG: ReadonlySet<string> = new Set(['guest-panicked', 'guest-kernel-hung', 'guest-userspace-hung', 'guest-starved', 'app-unhealthy']);
const EXPECTED: Record<Fault, ReadonlySet<string>> = {
  panic: new Set(['guest-kernel-hung', 'guest-panicked']),
  lockup: new Set(['guest-kernel-hung']),
  userspace: new Set(['guest-userspace-hung']),
  pause: new Set(['vm-not-running']),
};

const USAGE = `usage: bash bench/run.sh detection [--runs N] [--jobs N] [--faults LIST] [--timings LIST] [--slack LIST]
  --runs N        runs per (fault, timing, slack) (default 3)
  --slack LIST    comma-separated kernel stallSlack values, 0..10 (default 1, the config default)
  --jobs N        guests at a time (default 2; an idle TCG guest costs ~2 % of a core)
  --faults LIST   comma-separated: ${FAULTS.join(',')} (default all)
  --timings LIST  comma-separated: ${TIMINGS.map((t) => t.name).join(',')} (default all)`;

interface Options {
  slacks: number[];
  runs: number;
  jobs: number;
  faults: Fault[];
  timings: Timing[];
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: { runs: { type: 'string' }, jobs: { type: 'string' }, faults: { type: 'string' }, timings: { type: 'string' }, slack: { type: 'string' }, help: { type: 'boolean' } },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const bad = (msg: string): never => {
    console.error(`${msg}\n${USAGE}`);
    process.exit(2);
  };
  const int = (flag: string, v: string | undefined, dflt: number, max: number) => intFlag(bad, flag, v, dflt, 1, max);
  const list = <T>(flag: string, v: string | undefined, all: readonly T[], name: (x: T) => string): T[] => {
    if (v === undefined) return [...all];
    return v.split(',').map((w) => all.find((x) => name(x) === w.trim()) ?? bad(`--${flag}: unknown ${JSON.stringify(w)} (known: ${all.map(name).join(', ')})`));
  };
  const slack = (w: string): number => numberFlag(bad, 'slack', w, 0, 0, 10);
  return {
    slacks: values.slack === undefined ? [1] : values.slack.split(',').map(slack),
    runs: int('runs', values.runs, 3, 50),
    jobs: int('jobs', values.jobs, 2, 8),
    faults: list('faults', values.faults, FAULTS, (f) => f),
    timings: list('timings', values.timings, TIMINGS, (t) => t.name),
  };
}

// --- theory ------------------------------------------------------------------------------------------

interface Bound {
  loMs: number;
  hiMs: number;
}

/**
 * When a stall becomes a verdict. A heartbeat age is host time since the read that first saw the
 * counter change, and the heartbeat is read every q (a quarter of its period, HEARTBEAT_POLL_MS).
 * The kernel is stalled at an age of T = E + 8 ms + slack * Pk, E the longest interval its ring leads
 * us to expect (KERNEL_BEAT_MS on a steady guest: the 6.1 timer wheel beats every 1024 ms); the agent
 * at T = 3 agent periods. The last beat b lies within one beat interval H before the fault; the read
 * that sees it comes within q after b; the first read past T comes within q after that, and one
 * failing run is the verdict (failureThreshold 1):
 *     latency in (T - H, T + 2q]   (plus probe duration and timer slop)
 * A pause is seen by the next read of any scenario (QEMU's run state is in every probe's evidence,
 * and the heartbeat follows QMP events): latency in (0, P].
 */
function stallMs(fault: Fault, slack: number): number {
  return fault === 'userspace' ? AGENT_STALL_PERIODS * AGENT_PERIOD_MS : KERNEL_BEAT_MS + 8 + slack * KERNEL_PERIOD_MS;
}

function bound(fault: Fault, t: Timing, slack: number): Bound {
  if (fault === 'pause') return { loMs: 0, hiMs: t.periodMs };
  const T = stallMs(fault, slack);
  const H = fault === 'userspace' ? AGENT_PERIOD_MS : KERNEL_BEAT_MS;
  return { loMs: T - H, hiMs: T + 2 * HEARTBEAT_POLL_MS };
}

// --- one run -----------------------------------------------------------------------------------------

interface Rec {
  t: number;
  r: LogRecord;
}

/** The monitor's log records with host times, and waits on them. */
class Recorder {
  readonly records: Rec[] = [];
  readonly results = new Map<string, string>();
  verdict: string | undefined;
  /** First time every expected scenario passed and the verdict was running-healthy. */
  healthyAt: number | undefined;
  #waiters = new Set<() => void>();

  constructor(private readonly scenarios: readonly string[]) {}

  readonly log = (r: LogRecord): void => {
    const t = performance.now();
    this.records.push({ t, r });
    if (r.msg === 'scenario result') this.results.set(String(r['scenario']), String(r['result']));
    if (r.msg === 'verdict') this.verdict = String(r['verdict']);
    if (this.healthyAt === undefined && this.verdict === 'running-healthy' && this.scenarios.every((s) => this.results.get(s) === 'success')) {
      this.healthyAt = t;
    }
    for (const w of [...this.#waiters]) w();
  };

  /** The first record (in order) matching `pred`, waiting up to `timeoutMs`; undefined on timeout. */
  waitFor(pred: (x: Rec) => boolean, timeoutMs: number, signal: AbortSignal): Promise<Rec | undefined> {
    return new Promise((resolve) => {
      const done = (x: Rec | undefined) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        signal.removeEventListener('abort', onAbort);
        resolve(x);
      };
      const check = () => {
        const hit = this.records.find(pred);
        if (hit !== undefined) done(hit);
      };
      const onAbort = () => done(undefined);
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.#waiters.add(check);
      signal.addEventListener('abort', onAbort, { once: true });
      check();
    });
  }

  verdictsSince(t0: number): Rec[] {
    return this.records.filter((x) => x.t >= t0 && x.r.msg === 'verdict');
  }
}

interface Job {
  fault: Fault;
  timing: Timing;
  slack: number;
  rep: number;
}

interface RunResult extends Job {
  /** Fault to the first trouble verdict (expected or a hang verdict), ms; undefined when none came. */
  latencyMs?: number;
  verdict?: string;
  /** Why (the verdict record's reason). */
  reason?: string;
  /** When the first trouble verdict was not the expected one: fault to the expected one, if it came. */
  expectedMs?: number;
  /** Host CPU pressure (PSI cpu some avg10, %) at the fault and at the verdict. */
  psiAtFault?: number;
  psiAtVerdict?: number;
  /** Every verdict logged after the fault, in order. */
  verdictsAfter: string[];
  /** The monitor saw the guest healthy before the fault. */
  warm: boolean;
  /** Monitor start to healthy, ms. */
  warmMs?: number;
  /** Monitor start to fault, ms. */
  faultAfterStartMs?: number;
  bootMs: number;
  /** pause: hang verdicts and failing heartbeat scenarios seen in the watch window. */
  hangVerdicts?: string[];
  heartbeatFailures?: string[];
  watchedMs?: number;
  /** pause: `stop` sent to its reply, ms. */
  stopReplyMs?: number;
  /** lockup: how long the gdbstub kept the VM stopped to write the loop, ms. */
  gdbPauseMs?: number;
  note?: string;
}

interface Shared {
  table: string;
  layout: string;
  signal: AbortSignal;
  qemuVersion?: string;
}

function configText(guest: BenchGuest, layout: string, spool: string, t: Timing, agent: boolean, slack: number): string {
  return `${t.yaml}spool: { dir: ${JSON.stringify(spool)} }
apps:
  - name: vm
    transports:
      qmp: ${JSON.stringify(guest.qmpPath)}
      console: ${JSON.stringify(guest.consolePath)}
      consoleLog: ${JSON.stringify(guest.consoleLogPath)}
      consoleMux: true
      layout: ${JSON.stringify(layout)}
    scenarios:
      - name: run-state
        probe: { type: qmp-status }
      - name: kernel
        probe: { type: kernel-heartbeat, params: { stallSlack: ${slack} } }
${agent ? `      - name: agent\n        probe: { type: agent-heartbeat, params: { agentPeriodSeconds: ${AGENT_PERIOD_MS / 1000} } }\n` : ''}    diagnostics:
      collectors: []
`;
}

/**
 * Panic delay after /init starts: the monitor must have seen the guest healthy by then (2 periods +
 * margin), and the kernel beat ring (16 intervals) must have dropped the two ~4 ms intervals every
 * boot records when the zone is registered: the classifier counts them as jitter, and with host CPU
 * pressure (PSI some avg10 >= 40 %) a kernel that stops within ~14 beats of boot is `guest-starved`.
 */
function panicDelayS(t: Timing): number {
  return Math.max(Math.ceil((2 * t.periodMs) / 1000) + 8, 20);
}

/**
 * Makes the guest's next `sync` a hard lockup: reads ksys_sync's address from the guest's kallsyms
 * (printed on the console), stops the VM through its gdbstub (HMP `gdbserver` on the bench's QMP
 * socket), writes `cli; jmp .` there and detaches. Resolves with how long the VM was stopped, ms.
 */
async function armLockup(guest: BenchGuest, qmp: QmpClient): Promise<number> {
  const tail = new LogTail(guest.consoleLogPath);
  await tail.poll(); // from here on
  await consoleWrite(guest.consolePath, "echo 0 > /proc/sys/kernel/kptr_restrict; grep ' ksys_sync$' /proc/kallsyms\n");
  let addr: bigint | undefined;
  let seen = '';
  for (const deadline = performance.now() + 10_000; addr === undefined; ) {
    seen += await tail.poll();
    const m = /([0-9a-f]{16}) [Tt] ksys_sync\r?$/m.exec(seen);
    if (m !== null) addr = BigInt(`0x${m[1]}`);
    else if (performance.now() > deadline) throw new Error(`no ksys_sync address on the console: ${seen.slice(-300)}`);
    else await sleep(50);
  }
  const sock = join(guest.dir, 'gdb.sock');
  await qmp.hmp(`gdbserver unix:${sock},server=on,wait=off`);
  const t0 = performance.now();
  const gdb = await GdbClient.connect({ path: sock });
  try {
    await gdb.writeMemory(addr, Buffer.from([0xfa, 0xeb, 0xfe])); // cli; jmp .
    await gdb.detach();
  } finally {
    await gdb.close();
  }
  const pausedMs = performance.now() - t0;
  await qmp.hmp('gdbserver none').catch(() => undefined);
  return pausedMs;
}

async function runOne(job: Job, sh: Shared): Promise<RunResult> {
  const { fault, timing: t } = job;
  const agent = fault === 'userspace' || fault === 'pause';
  const append =
    fault === 'panic'
      ? `quiet panic=0 eve_diag.scenario=panic eve_diag.delay=${panicDelayS(t)}`
      : fault === 'lockup'
        ? 'quiet'
        : `quiet eve_diag.scenario=read-agent-zone eve_diag.zone_path=${AGENT_ZONE} eve_diag.period=${AGENT_PERIOD_MS / 1000}`;
  const b = bound(fault, t, job.slack);
  const t0 = performance.now();
  let guest: BenchGuest;
  try {
    guest = await launchBenchGuest({ table: sh.table, append, benchQmp: fault === 'pause' || fault === 'lockup' });
  } catch (e) {
    return { ...job, bootMs: performance.now() - t0, verdictsAfter: [], warm: false, note: `boot failed: ${(e as Error).message.split('\n')[0]}` };
  }
  const result: RunResult = { ...job, bootMs: performance.now() - t0, verdictsAfter: [], warm: false };
  const ac = new AbortController();
  const onOuterAbort = () => ac.abort(sh.signal.reason);
  sh.signal.addEventListener('abort', onOuterAbort, { once: true });
  let monitor: Promise<void> | undefined;
  let benchQmp: QmpClient | undefined;
  try {
    const file = join(guest.dir, 'monitor.yaml');
    const text = configText(guest, sh.layout, join(guest.dir, 'spool'), t, agent, job.slack);
    await writeFile(file, text);
    const config = parseConfig(text, file);
    const timing = config.apps[0]?.scenarios.map((s) => s.timing);
    const heartbeatF = config.apps[0]?.scenarios.filter((s) => s.probe.type.endsWith('-heartbeat')).map((s) => s.timing.failureThreshold);
    if (!timing?.every((x) => x.periodMs === t.periodMs && x.timeoutMs === t.timeoutMs) || !heartbeatF?.every((f) => f === 1)) {
      throw new Error(`config timing is not ${t.name}: ${JSON.stringify(timing)}`);
    }
    const rec = new Recorder(config.apps[0]?.scenarios.map((s) => s.name) ?? []);
    const panicTail = fault === 'panic' ? new LogTail(guest.consoleLogPath) : undefined;
    const start = performance.now();
    monitor = runMonitor(config, { log: rec.log, signal: ac.signal });
    monitor.catch(() => undefined);

    let faultAt: number;
    if (fault === 'panic') {
      // Poll the console logfile from boot on; the panic comes at its boot delay whatever the monitor does.
      const deadline = performance.now() + panicDelayS(t) * 1000 + 60_000;
      for (;;) {
        if (ac.signal.aborted) throw new Error('aborted');
        if ((await (panicTail as LogTail).poll()).includes('Kernel panic')) break;
        if (performance.now() > deadline) throw new Error('no `Kernel panic` on the console');
        await sleep(50);
      }
      faultAt = performance.now();
    } else {
      const healthy = await rec.waitFor(() => rec.healthyAt !== undefined, 2 * t.periodMs + 30_000, ac.signal);
      if (healthy === undefined) throw new Error(`monitor did not see the guest healthy: ${JSON.stringify(Object.fromEntries(rec.results))}, verdict ${rec.verdict}`);
      if (fault === 'pause' || fault === 'lockup') benchQmp = await QmpClient.connect({ path: guest.benchQmpPath });
      if (fault === 'lockup') result.gdbPauseMs = await armLockup(guest, benchQmp as QmpClient);
      await sleep(randomInt(0, Math.max(t.periodMs, KERNEL_PERIOD_MS))); // a random phase of the probe schedule and of the beat
      if (ac.signal.aborted) throw new Error('aborted');
      if (fault === 'lockup') {
        faultAt = await consoleWrite(guest.consolePath, 'sync\n');
      } else if (fault === 'userspace') {
        faultAt = await consoleWrite(guest.consolePath, 'kill -STOP -1\n');
      } else {
        // The fault time is when `stop` is sent: QEMU pauses before it replies, and a probe of the
        // monitor's may see `paused` (and log the verdict) before the reply reaches us.
        faultAt = performance.now();
        await (benchQmp as QmpClient).stop();
        result.stopReplyMs = performance.now() - faultAt;
        const st = await (benchQmp as QmpClient).queryStatus();
        if (st.running) throw new Error(`QMP stop: the VM still runs (${st.status})`);
      }
    }
    result.faultAfterStartMs = faultAt - start;
    result.warm = rec.healthyAt !== undefined && rec.healthyAt < faultAt;
    if (rec.healthyAt !== undefined) result.warmMs = rec.healthyAt - start;

    result.psiAtFault = (await readHostPressure())?.cpuSomeAvg10;
    // Detection: the first trouble verdict after the fault (the expected one, or any hang verdict).
    const expected = EXPECTED[fault];
    const isVerdict = (x: Rec, set: ReadonlySet<string>) => x.t >= faultAt && x.r.msg === 'verdict' && set.has(String(x.r['verdict']));
    const deadline = faultAt + b.hiMs + 20_000;
    const hit = await rec.waitFor((x) => isVerdict(x, expected) || isVerdict(x, HANG), deadline - performance.now(), ac.signal);
    if (hit !== undefined) {
      result.latencyMs = hit.t - faultAt;
      result.verdict = String(hit.r['verdict']);
      result.reason = String(hit.r['reason']);
      result.psiAtVerdict = (await readHostPressure())?.cpuSomeAvg10;
      if (!expected.has(result.verdict)) {
        const later = await rec.waitFor((x) => isVerdict(x, expected), Math.max(0, deadline - performance.now()), ac.signal);
        if (later !== undefined) result.expectedMs = later.t - faultAt;
        result.note = `not the expected ${[...expected].join('/')}${later !== undefined ? '' : `, which did not come within ${s1(deadline - faultAt)} s of the fault`}`;
      }
    } else {
      result.note = `no trouble verdict within ${s1(deadline - faultAt)} s`;
    }
    if (fault === 'pause') {
      // Watch as long as a stall would have taken to become a verdict (the upper bound of the heartbeat case).
      const watchUntil = faultAt + Math.max(bound('panic', t, job.slack).hiMs, AGENT_STALL_PERIODS * AGENT_PERIOD_MS) + 2000;
      const wait = watchUntil - performance.now();
      if (wait > 0) await rec.waitFor(() => false, wait, ac.signal);
      result.watchedMs = performance.now() - faultAt;
      result.hangVerdicts = rec.verdictsSince(faultAt).map((x) => String(x.r['verdict'])).filter((v) => HANG.has(v));
      result.heartbeatFailures = rec.records
        .filter((x) => x.t >= faultAt && x.r.msg === 'scenario result' && x.r['result'] === 'failure' && x.r['scenario'] !== 'run-state')
        .map((x) => String(x.r['scenario']));
    }
    result.verdictsAfter = rec.verdictsSince(faultAt).map((x) => String(x.r['verdict']));
    const errors = rec.records.filter((x) => x.r.level === 'error').map((x) => `${x.r.msg}: ${String(x.r['error'] ?? '')}`);
    if (errors.length > 0) result.note = [result.note, ...errors].filter((x) => x !== undefined).join('; ');
    return result;
  } catch (e) {
    result.note = (e as Error).message.split('\n')[0];
    return result;
  } finally {
    sh.signal.removeEventListener('abort', onOuterAbort);
    ac.abort(new Error('run done'));
    await monitor?.catch(() => undefined);
    await benchQmp?.close().catch(() => undefined);
    if (sh.qemuVersion === undefined) sh.qemuVersion = await qemuVersion().catch(() => undefined);
    await guest.stop();
  }
}

async function qemuVersion(): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) =>
    execFile('qemu-system-x86_64', ['--version'], (e, out) => (e ? reject(e) : resolve(/version (\S+)/.exec(out)?.[1] ?? '?'))),
  );
}

// --- output ------------------------------------------------------------------------------------------

const s1 = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? '-' : (ms / 1000).toFixed(1));
const s2 = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? '-' : (ms / 1000).toFixed(2));

function quantile(sorted: readonly number[], q: number): number | undefined {
  return sorted.length === 0 ? undefined : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function printReport(results: readonly RunResult[], o: Options, header: string[]): void {
  const rows: string[][] = [['fault', 'timing', 'slack', 'runs', 'min s', 'p50 s', 'p95 s', 'max s', 'verdict seen', 'bound s']];
  for (const fault of o.faults) {
    for (const t of o.timings) {
      for (const slack of fault === 'pause' || fault === 'userspace' ? [o.slacks[0] as number] : o.slacks) {
        const rs = results.filter((r) => r.fault === fault && r.timing.name === t.name && (fault === 'pause' || fault === 'userspace' || r.slack === slack));
        const ok = rs.filter((r) => r.latencyMs !== undefined && r.warm);
        const lat = ok.map((r) => r.latencyMs as number).sort((a, b) => a - b);
        const counts = new Map<string, number>();
        for (const r of rs) {
          const v = r.verdict === undefined ? 'none' : EXPECTED[fault].has(r.verdict) ? r.verdict : `${r.verdict} (!)`;
          counts.set(v, (counts.get(v) ?? 0) + 1);
        }
        let seen = [...counts].map(([v, n]) => `${v} x${n}`).join(', ');
        if (fault === 'pause') {
          const hangs = rs.reduce((n, r) => n + (r.hangVerdicts?.length ?? 0), 0);
          seen += hangs === 0 ? ', no hang verdict' : `, ${hangs} HANG VERDICT(S)`;
        }
        const b = bound(fault, t, slack);
        rows.push([
          fault,
          `${t.name} (P ${t.periodMs / 1000} s)`,
          fault === 'pause' || fault === 'userspace' ? '-' : String(slack),
          ok.length === rs.length ? String(rs.length) : `${ok.length}/${rs.length}`,
          s2(lat[0]),
          s2(quantile(lat, 0.5)),
          s2(quantile(lat, 0.95)),
          s2(lat[lat.length - 1]),
          seen,
          `${s1(b.loMs)}..${s2(b.hiMs)}`,
        ]);
      }
    }
  }
  const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const numeric = new Set([2, 3, 4, 5, 6, 7]);
  for (const h of header) console.log(h);
  console.log('');
  for (const r of rows) console.log(r.map((x, c) => (numeric.has(c) ? x.padStart(widths[c] ?? 0) : x.padEnd(widths[c] ?? 0))).join('  ').trimEnd());
  console.log('');
  console.log('latency: host time from the fault to the first log record with a trouble verdict: the expected one (panic:');
  console.log('  guest-kernel-hung|guest-panicked, lockup: guest-kernel-hung, userspace: guest-userspace-hung, pause: vm-not-running) or any hang verdict (guest-starved...);');
  console.log('  "(!)" marks an unexpected one (the runs below say why and whether the expected one followed). runs "a/b": a runs');
  console.log('  counted of b (a fault before the monitor saw the guest healthy, or no verdict at all, is not counted).');
  console.log(`bound: (T - H, T + 2q]: the kernel is stalled at an age of T = E + 8 ms + slack * ${KERNEL_PERIOD_MS / 1000} s (E = ${KERNEL_BEAT_MS} ms, the`);
  console.log(`  steady ring), the agent at 3 of its periods; H = beat interval; q = ${HEARTBEAT_POLL_MS} ms between heartbeat reads; one failing run`);
  console.log('  is the verdict (failureThreshold 1); plus probe duration. pause: (0, P]. slack: the kernel stallSlack of the run.');
  console.log('');
  console.log('runs:');
  for (const r of results) {
    const parts = [
      `${r.fault} ${r.timing.name} slack ${r.slack} #${r.rep}:`,
      `boot ${s1(r.bootMs)} s`,
      r.warmMs !== undefined ? `healthy after ${s1(r.warmMs)} s` : 'never healthy',
      r.faultAfterStartMs !== undefined ? `fault at ${s1(r.faultAfterStartMs)} s` : 'no fault',
      r.latencyMs !== undefined ? `${r.verdict} after ${s2(r.latencyMs)} s` : 'no verdict',
      ...(r.expectedMs !== undefined ? [`${[...EXPECTED[r.fault]].join('|')} after ${s2(r.expectedMs)} s`] : []),
      ...(r.verdict !== undefined && !EXPECTED[r.fault].has(r.verdict) ? [`reason: ${r.reason ?? '?'}`] : []),
      `PSI cpu some avg10 ${r.psiAtFault ?? '-'}% at the fault, ${r.psiAtVerdict ?? '-'}% at the verdict`,
      ...(r.stopReplyMs !== undefined ? [`stop replied in ${r.stopReplyMs.toFixed(0)} ms`] : []),
      ...(r.gdbPauseMs !== undefined ? [`gdbstub stopped the VM for ${r.gdbPauseMs.toFixed(0)} ms to arm the lockup`] : []),
      `verdicts after the fault: ${r.verdictsAfter.join(' -> ') || '-'}`,
      ...(r.watchedMs !== undefined
        ? [`watched ${s1(r.watchedMs)} s: hang verdicts ${r.hangVerdicts?.length ?? 0}, heartbeat scenario failures ${r.heartbeatFailures?.length ?? 0}`]
        : []),
      ...(r.warm ? [] : ['NOT COUNTED: the fault came before the monitor saw the guest healthy']),
      ...(r.note !== undefined ? [`note: ${r.note}`] : []),
    ];
    console.log(`  ${parts[0] ?? ''} ${parts.slice(1).join('; ')}`);
  }
}

// --- main --------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const command = ['bash', 'bench/run.sh', 'detection', ...process.argv.slice(2)].join(' ');
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-detection-'));
  const ac = new AbortController();
  const cleanup = async () => {
    ac.abort(new Error('stopped'));
    await stopAllBenchGuests();
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`${sig}: stopping every QEMU`);
    cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143)).catch(() => undefined);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const began = performance.now();
  try {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: KERNEL_PERIOD_MS });
    const sh: Shared = { table: join(dir, 'diag.aml'), layout: join(dir, 'diag.json'), signal: ac.signal };
    await writeFile(sh.table, aml);
    await writeFile(sh.layout, JSON.stringify(layout));
    await buildGuestImage(); // once, before guests boot in parallel

    // Longest runs first (default timing), so the parallel slots end together.
    const jobs: Job[] = [];
    for (const t of [...o.timings].sort((a, b) => b.periodMs - a.periodMs)) {
      for (let rep = 1; rep <= o.runs; rep++) {
        for (const fault of o.faults) {
          // The agent's rule and a pause do not depend on the kernel's slack: once per timing.
          for (const slack of fault === 'pause' || fault === 'userspace' ? [o.slacks[0] as number] : o.slacks) jobs.push({ fault, timing: t, slack, rep });
        }
      }
    }
    const results: RunResult[] = [];
    let next = 0;
    const worker = async () => {
      while (!ac.signal.aborted) {
        const job = jobs[next++];
        if (job === undefined) return;
        const r = await runOne(job, sh);
        results.push(r);
        console.error(
          `[${s1(performance.now() - began)} s] ${job.fault} ${job.timing.name} slack ${job.slack} #${job.rep}: ` +
            (r.latencyMs !== undefined ? `${r.verdict} after ${(r.latencyMs / 1000).toFixed(2)} s` : `no verdict (${r.note ?? '?'})`),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.jobs, jobs.length) }, worker));
    const order = (r: RunResult) => o.faults.indexOf(r.fault) * 100_000 + o.timings.indexOf(r.timing) * 10_000 + o.slacks.indexOf(r.slack) * 100 + r.rep;
    results.sort((a, b) => order(a) - order(b));
    printReport(results, o, [
      'eve-diag monitor: detection latency, fault in a real guest -> verdict',
      `command: ${command}`,
      `host: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}, QEMU ${sh.qemuVersion ?? '?'} (TCG, 1 vCPU, 512 MiB, q35 + SeaBIOS), ` +
        `${o.jobs} guest(s) at a time, total ${s1(performance.now() - began)} s`,
      `guest: SSDT kernel heartbeat period ${KERNEL_PERIOD_MS / 1000} s; scenarios qmp-status + kernel-heartbeat (+ agent-heartbeat, ` +
        `agentPeriodSeconds ${AGENT_PERIOD_MS / 1000}, in the agent-loop guests); no diagnostic collectors`,
    ]);
    const unexpected = (r: RunResult) => r.verdict === undefined || !EXPECTED[r.fault].has(r.verdict);
    if (results.some((r) => unexpected(r) || !r.warm || (r.hangVerdicts?.length ?? 0) > 0)) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
