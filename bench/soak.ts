/**
 * No false alarm (issue 11 §3): four real guests watched for a long time while `stress-ng` loads every
 * host core, by one monitor per kernel `stallSlack` setting, all at once (each monitor on its own QMP
 * socket of each VM: QEMU serves one client per socket). The guests (QEMU TCG, 1 vCPU, q35 + SeaBIOS,
 * our SSDT with a 1 s kernel heartbeat):
 *  - idle:   the shell only;
 *  - user:   a shell loop spinning in user space;
 *  - kernel: a loop in the kernel and its I/O paths (reads of /proc/kallsyms, writes of 8 MiB to the
 *            guest's RAM-backed root and `sync`): the test guest has no disk;
 *  - paused: QMP `stop` for 20 s every `--pause-every` seconds, then `cont` (on the bench's own socket).
 * Every guest is healthy throughout, so any hang verdict (guest-kernel-hung, guest-panicked,
 * guest-userspace-hung) is a false alarm; guest-starved (the host starves the vCPUs and says so) is
 * allowed and counted, as is vm-not-running for the paused guest. Prints, per setting, the false alarms,
 * the starved and not-running verdicts, the kernel scenario failures, and the detection bound the setting
 * gives at a 1 s period (from bench/detection.ts's theory), so a user can choose; and checks that every
 * guest ends running-healthy for every monitor (a monitor that never saw a guest healthy proves nothing).
 *
 * It also watches the monitor's own resources (issue 13 §3): the monitors run in this process, so
 * every --sample seconds it reads this process's VmRSS (/proc/self/status), its open file descriptors
 * (the entries of /proc/self/fd) and the V8 heap in use as the monitor's /metrics reports it
 * (`eve_diag_nodejs_heap_size_used_bytes`, prom-client's default metrics, served on 127.0.0.1:0 by the
 * first monitor's MonitorMetrics), and prints for each the first, last, max and mean, the least-squares
 * slope per hour and the growth it projects over 24 h (bench/slope.ts), with a verdict: "no growth
 * trend" when the projected growth is below max(10 % of the mean, a floor: 8 MiB RSS, 4 MiB heap,
 * 2 fds), and whether that verdict stands against the noise (projection +- 2 standard errors).
 * Run: `bash bench/run.sh soak [--minutes N] [--slack LIST] [--stress N] [--kinds LIST] [--sample S]`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { buildGuestImage } from '../build/guest-image.js';
import { QmpClient } from '../host-reader/qmp/index.js';
import { parseConfig } from '../monitor/config.js';
import { readHostPressure, runMonitor } from '../monitor/daemon.js';
import type { LogRecord } from '../monitor/manager.js';
import { MonitorMetrics } from '../monitor/metrics.js';
import { findOnPath } from '../util/which.js';
import { consoleWrite, launchBenchGuest, sleep, stopAllBenchGuests, type BenchGuest } from './guest.js';
import { intFlag, numberFlag } from './flags.js';
import { trend, type GrowthThreshold, type TimedSample, type Trend } from './slope.js';

const KINDS = ['idle', 'user', 'kernel', 'paused'] as const;
type Kind = (typeof KINDS)[number];
const LOAD: Record<Kind, string | undefined> = {
  idle: undefined,
  user: 'while :; do :; done &',
  kernel: 'while :; do cat /proc/kallsyms > /dev/null; dd if=/dev/zero of=/soak.bin bs=1M count=8 2>/dev/null; sync; rm -f /soak.bin; done &',
  paused: undefined,
};
const FALSE_ALARM: ReadonlySet<string> = new Set(['guest-kernel-hung', 'guest-panicked', 'guest-userspace-hung', 'app-unhealthy']);
const KERNEL_PERIOD_MS = 1000;
const KERNEL_BEAT_MS = 1024;
const POLL_MS = KERNEL_PERIOD_MS / 4;
const PAUSE_MS = 20_000;

const USAGE = `usage: bash bench/run.sh soak [--minutes N] [--slack LIST] [--stress N] [--pause-every S] [--kinds LIST] [--sample S]
  --minutes N      how long to watch after the guests are up (default 30)
  --slack LIST     comma-separated kernel stallSlack values, one monitor each (default 0.25,1,2)
  --stress N       stress-ng --cpu workers on the host (default: every core, ${cpus().length}; 0: none)
  --pause-every S  seconds between the paused guest's stops (default 180)
  --kinds LIST     comma-separated guests to boot, of ${KINDS.join(',')} (default all four; fewer for a
                   short check on a shared machine)
  --sample S       seconds between samples of the monitor's RSS, heap and open fds (default 10)
  --warmup S       seconds at the start left out of the resource slopes (default 120: the heap and the
                   caches fill while every guest is discovered; not a trend)`;

interface Options {
  minutes: number;
  slacks: number[];
  stress: number;
  pauseEveryS: number;
  kinds: Kind[];
  sampleS: number;
  warmupS: number;
}

function parseOptions(argv: string[]): Options {
  const bad = (msg: string): never => {
    console.error(`${msg}\n${USAGE}`);
    process.exit(2);
  };
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        minutes: { type: 'string' },
        slack: { type: 'string' },
        stress: { type: 'string' },
        'pause-every': { type: 'string' },
        kinds: { type: 'string' },
        sample: { type: 'string' },
        warmup: { type: 'string' },
        help: { type: 'boolean' },
      },
    }));
  } catch (e) {
    return bad((e as Error).message);
  }
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const num = (flag: string, v: string | undefined, dflt: number, min: number, max: number) => numberFlag(bad, flag, v, dflt, min, max);
  const slacks = (values.slack ?? '0.25,1,2').split(',').map((w) => num('slack', w, 0, 0, 10));
  if (slacks.length > 4) bad(`--slack: at most 4 values (got ${slacks.length})`);
  const stress = intFlag(bad, 'stress', values.stress, cpus().length, 0, 64);
  const kinds = (values.kinds ?? KINDS.join(',')).split(',').map((k) => ((KINDS as readonly string[]).includes(k) ? (k as Kind) : bad(`--kinds: each of ${KINDS.join(', ')} (got ${JSON.stringify(k)})`)));
  if (new Set(kinds).size !== kinds.length) bad(`--kinds: each guest once (got ${JSON.stringify(values.kinds)})`);
  return {
    minutes: num('minutes', values.minutes, 30, 0.5, 600),
    slacks,
    stress,
    pauseEveryS: num('pause-every', values['pause-every'], 180, 30, 3600),
    kinds: KINDS.filter((k) => kinds.includes(k)),
    sampleS: num('sample', values.sample, 10, 1, 600),
    warmupS: num('warmup', values.warmup, 120, 0, 3600),
  };
}

// --- the monitor's resources ------------------------------------------------------------------------

const MIB = 1024 * 1024;
const HEAP_METRIC = 'eve_diag_nodejs_heap_size_used_bytes';
const RESOURCES = ['rss', 'heap', 'fds'] as const;
type Resource = (typeof RESOURCES)[number];
const RESOURCE_TEXT: Record<Resource, string> = {
  rss: 'RSS MiB (VmRSS)',
  heap: `V8 heap used MiB (/metrics ${HEAP_METRIC})`,
  fds: 'open fds (/proc/PID/fd)',
};
/**
 * A projected 24 h growth at or above max(relative x mean, absolute) is a trend. 10 % a day is what a
 * node would notice within a week of uptime; the floors keep a small mean from making noise a trend
 * (8 MiB of RSS and 4 MiB of heap are within one GC cycle of the monitor; 2 fds is one QMP reconnect
 * left open).
 */
const GROWTH: Record<Resource, GrowthThreshold> = {
  rss: { relative: 0.1, absolute: 8 },
  heap: { relative: 0.1, absolute: 4 },
  fds: { relative: 0.1, absolute: 2 },
};

function vmRssMiB(): number {
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);
  if (!Number.isFinite(kb)) throw new Error('no VmRSS line in /proc/self/status');
  return kb / 1024;
}

/** Open file descriptors of this process (the directory's own descriptor, open while it is read, not counted). */
function openFds(): number {
  return readdirSync('/proc/self/fd').length - 1;
}

/** The unlabelled samples of a Prometheus text exposition (our own /metrics: bounded to 4 MiB, 5 s). */
async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (r.status !== 200) throw new Error(`GET ${url}: ${r.status}`);
  const text = await r.text();
  if (text.length > 4 * MIB) throw new Error(`GET ${url}: ${text.length} characters, more than 4 MiB`);
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/.exec(line);
    if (m !== null) out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

interface ResourceSamples {
  series: Record<Resource, TimedSample[]>;
  scrapeErrors: string[];
}

/** Samples every `everyMs` until `stop` resolves. */
async function sampleResources(metricsUrl: string, everyMs: number, stop: Promise<void>, into: ResourceSamples): Promise<void> {
  const t0 = performance.now();
  let stopped = false;
  stop.then(
    () => (stopped = true),
    () => (stopped = true),
  );
  for (let k = 0; !stopped; k++) {
    const tS = (performance.now() - t0) / 1000;
    into.series.rss.push({ tS, value: vmRssMiB() });
    into.series.fds.push({ tS, value: openFds() });
    try {
      const heap = (await scrapeMetrics(metricsUrl)).get(HEAP_METRIC);
      if (heap === undefined || !Number.isFinite(heap)) throw new Error(`${HEAP_METRIC} is not in /metrics`);
      into.series.heap.push({ tS, value: heap / MIB });
    } catch (e) {
      if (into.scrapeErrors.length < 10) into.scrapeErrors.push(`${tS.toFixed(0)} s: ${(e as Error).message}`);
    }
    const wait = t0 + (k + 1) * everyMs - performance.now();
    if (wait > 0) await Promise.race([sleep(wait), stop]);
  }
}

function printResources(r: ResourceSamples, everyS: number, warmupS: number): boolean {
  const rows = [['resource', 'n', 'first', 'last', 'max', 'mean', 'slope/h', '24 h projected', '+-2 SE', 'threshold', 'verdict']];
  let growth = false;
  const f = (v: number) => (Number.isFinite(v) ? (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2)) : '-');
  for (const k of RESOURCES) {
    const xs = r.series[k].filter((x) => x.tS >= warmupS);
    if (xs.length < 3) {
      rows.push([RESOURCE_TEXT[k], String(xs.length), '', '', '', '', '', '', '', '', 'too few samples']);
      continue;
    }
    const t: Trend = trend(xs, GROWTH[k]);
    if (t.growing && t.conclusive) growth = true;
    const verdict = `${t.growing ? 'GROWTH' : 'no growth trend'}${t.conclusive ? '' : ' (inconclusive: the noise spans the threshold)'}`;
    rows.push([RESOURCE_TEXT[k], String(t.n), f(t.first), f(t.last), f(t.max), f(t.mean), f(t.slopePerHour), f(t.projected24h), f(t.noise24h), f(t.threshold), verdict]);
  }
  const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((x) => (x[c] ?? '').length)));
  const span = Math.max(0, ...RESOURCES.map((k) => r.series[k].at(-1)?.tS ?? 0));
  console.log(`monitor resources: pid ${process.pid} (the monitors run in this process), every ${everyS} s over ${(span / 60).toFixed(1)} min, the first ${warmupS} s (warm-up) left out`);
  for (const x of rows) console.log(x.map((v, c) => (c === 0 || c === x.length - 1 ? v.padEnd(widths[c] ?? 0) : v.padStart(widths[c] ?? 0))).join('  ').trimEnd());
  console.log('slope: least squares of value on time; 24 h projected: slope x 24 h; +-2 SE: two standard errors of the slope over 24 h.');
  console.log(
    `verdict: "no growth trend" when the 24 h projection is below the threshold, max(10 % of the mean, ${GROWTH.rss.absolute} MiB RSS / ${GROWTH.heap.absolute} MiB heap / ${GROWTH.fds.absolute} fds);`,
  );
  console.log('  inconclusive when projection +- 2 SE crosses the threshold (a short run of a GC heap: its sawtooth hides a slow slope).');
  for (const e of r.scrapeErrors) console.log(`  /metrics failed at ${e}`);
  return growth;
}

interface Tally {
  verdicts: Map<string, number>;
  falseAlarms: string[];
  /** Verdict records per app, in order. */
  trail: Map<string, string[]>;
}

function configText(guests: Map<Kind, BenchGuest>, socket: number, layout: string, spool: string, slack: number): string {
  const apps = [...guests].map(
    ([kind, g]) => `  - name: ${kind}
    transports: { qmp: ${JSON.stringify(g.extraQmpPaths[socket])}, layout: ${JSON.stringify(layout)} }
    scenarios:
      - { name: run-state, probe: { type: qmp-status } }
      - { name: kernel, probe: { type: kernel-heartbeat, params: { stallSlack: ${slack} } } }
    diagnostics: { collectors: [] }
`,
  );
  return `defaults: { periodSeconds: 1, timeoutSeconds: 1 }\nspool: { dir: ${JSON.stringify(spool)} }\napps:\n${apps.join('')}`;
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const command = ['bash', 'bench/run.sh', 'soak', ...process.argv.slice(2)].join(' ');
  const stressNg = findOnPath('stress-ng');
  if (o.stress > 0 && stressNg === undefined) {
    console.error('stress-ng is not installed: apt-get install stress-ng');
    process.exit(1);
  }
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-soak-'));
  const ac = new AbortController();
  let stress: ChildProcess | undefined;
  const cleanup = async () => {
    ac.abort(new Error('stopped'));
    if (stress?.pid !== undefined && stress.exitCode === null) process.kill(-stress.pid, 'SIGKILL');
    await stopAllBenchGuests();
    await rm(dir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`${sig}: stopping stress-ng and every QEMU`);
    cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143)).catch(() => undefined);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const monitors: Promise<void>[] = [];
  let metricsServer: Server | undefined;
  try {
    const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: KERNEL_PERIOD_MS });
    const table = join(dir, 'diag.aml');
    const layoutPath = join(dir, 'diag.json');
    await writeFile(table, aml);
    await writeFile(layoutPath, JSON.stringify(layout));
    await buildGuestImage();
    const guests = new Map<Kind, BenchGuest>();
    for (const kind of o.kinds) {
      const g = await launchBenchGuest({ table, append: 'quiet', benchQmp: true, extraQmp: o.slacks.length });
      guests.set(kind, g);
      const load = LOAD[kind];
      if (load !== undefined) await consoleWrite(g.consolePath, `${load}\n`);
      console.error(`[soak] ${kind} guest up (pid ${g.pid})${load !== undefined ? `, running: ${load}` : ''}`);
    }
    if (o.stress > 0) {
      // Its own process group: killed as a whole, even its workers.
      stress = spawn(stressNg as string, ['--cpu', String(o.stress), '--timeout', `${Math.ceil(o.minutes * 60) + 120}s`, '--quiet'], { stdio: 'ignore', detached: true });
      console.error(`[soak] stress-ng --cpu ${o.stress} (pid ${stress.pid})`);
    }
    // The ring needs 16 beats to forget the two short intervals of boot; the monitors start now anyway.
    const tallies = o.slacks.map((): Tally => ({ verdicts: new Map(), falseAlarms: [], trail: new Map() }));
    // The newest verdict of each app per monitor, watched or not: a monitor that never saw a guest
    // healthy would have no false alarm to give.
    const latest = o.slacks.map(() => new Map<string, string>());
    const kernelFailures = o.slacks.map(() => 0);
    const began = performance.now();
    let watching = false;
    // The monitors' metrics, as `eve-diag monitor` keeps them; the first registry has prom-client's
    // process metrics (the V8 heap among them) and is served on /metrics for the resource sampler.
    const metrics = o.slacks.map((_, i) => new MonitorMetrics({ processMetrics: i === 0 }));
    const served = await (metrics[0] as MonitorMetrics).listen('127.0.0.1', 0);
    metricsServer = served.server;
    const metricsUrl = `http://127.0.0.1:${served.port}/metrics`;
    o.slacks.forEach((slack, i) => {
      const text = configText(guests, i, layoutPath, join(dir, `spool-${i}`), slack);
      const config = parseConfig(text, join(dir, `monitor-${i}.yaml`));
      const tally = tallies[i] as Tally;
      const log = (r: LogRecord) => {
        if (watching && r.msg === 'scenario result' && r['scenario'] === 'kernel' && r['result'] === 'failure') kernelFailures[i] = (kernelFailures[i] as number) + 1;
        if (r.msg !== 'verdict') return;
        const v = String(r['verdict']);
        const app = String(r['app']);
        (latest[i] as Map<string, string>).set(app, v);
        if (!watching) return;
        tally.verdicts.set(v, (tally.verdicts.get(v) ?? 0) + 1);
        tally.trail.set(app, [...(tally.trail.get(app) ?? []), v]);
        if (FALSE_ALARM.has(v)) {
          const line = `${((performance.now() - began) / 1000).toFixed(0)} s ${app}: ${v} (${String(r['reason'] ?? '')})`;
          tally.falseAlarms.push(line);
          console.error(`[soak] slack ${slack}: FALSE ALARM ${line}`);
        }
      };
      const m = runMonitor(config, { log, signal: ac.signal, metrics: metrics[i] as MonitorMetrics });
      m.catch((e: unknown) => console.error(`[soak] monitor ${i} failed: ${(e as Error).message}`));
      monitors.push(m.catch(() => undefined));
    });
    // Count from the first healthy state on: the first seconds are the baseline.
    await sleep(20_000);
    watching = true;
    const pausedGuest = guests.get('paused');
    const pauser = pausedGuest === undefined ? undefined : await QmpClient.connect({ path: pausedGuest.benchQmpPath });
    // From here on the set of sockets is steady (the pauser's included): sample the monitor's resources.
    const resources: ResourceSamples = { series: { rss: [], heap: [], fds: [] }, scrapeErrors: [] };
    let stopSampling = () => {};
    const samplingStopped = new Promise<void>((r) => (stopSampling = r));
    const sampler = sampleResources(metricsUrl, o.sampleS * 1000, samplingStopped, resources);
    const psi: number[] = [];
    const end = performance.now() + o.minutes * 60_000;
    let nextPause = performance.now() + o.pauseEveryS * 1000;
    let pauses = 0;
    while (performance.now() < end && !ac.signal.aborted) {
      const p = (await readHostPressure())?.cpuSomeAvg10;
      if (p !== undefined) psi.push(p);
      if (pauser !== undefined && performance.now() >= nextPause) {
        await pauser.stop();
        await sleep(PAUSE_MS);
        await pauser.cont();
        pauses++;
        nextPause = performance.now() + o.pauseEveryS * 1000;
      }
      const left = Math.round((end - performance.now()) / 1000);
      if (left % 60 < 10) console.error(`[soak] ${left} s left; false alarms so far: ${tallies.map((t, i) => `slack ${o.slacks[i]}: ${t.falseAlarms.length}`).join(', ')}`);
      await sleep(10_000);
    }
    stopSampling();
    await sampler;
    await pauser?.close();
    for (const [kind, g] of guests) {
      const st = await QmpClient.connect({ path: g.benchQmpPath }).then(async (c) => {
        const s = await c.queryStatus();
        await c.close();
        return s;
      });
      if (!st.running) throw new Error(`the ${kind} guest is ${st.status} at the end: the soak is not valid`);
    }
    await sleep(5000); // the paused guest's monitors see it resumed
    const unhealthy = latest.flatMap((m, i) => o.kinds.filter((k) => m.get(k) !== 'running-healthy').map((k) => `slack ${o.slacks[i]} ${k}: ${m.get(k) ?? 'no verdict'}`));
    const psiMean = psi.length ? psi.reduce((a, b) => a + b, 0) / psi.length : undefined;
    console.log('eve-diag monitor: false alarms in a soak, real guests under host CPU load');
    console.log(`command: ${command}`);
    console.log(
      `host: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}; stress-ng --cpu ${o.stress}; ` +
        `PSI cpu some avg10 mean ${psiMean?.toFixed(1) ?? '-'}%, max ${psi.length ? Math.max(...psi).toFixed(1) : '-'}%`,
    );
    console.log(
      `guests: ${o.kinds.join(', ')} (TCG, 1 vCPU each, SSDT period 1 s); watched ${o.minutes} min${pauser === undefined ? '' : `; the paused one stopped ${pauses} x ${PAUSE_MS / 1000} s`}`,
    );
    console.log('');
    const rows = [['stallSlack', 'stall at s', 'bound s', 'false alarms', 'guest-starved', 'vm-not-running', 'kernel scenario failures']];
    o.slacks.forEach((slack, i) => {
      const t = tallies[i] as Tally;
      const T = KERNEL_BEAT_MS + 8 + slack * KERNEL_PERIOD_MS;
      rows.push([String(slack), (T / 1000).toFixed(2), ((T + 2 * POLL_MS) / 1000).toFixed(2), String(t.falseAlarms.length), String(t.verdicts.get('guest-starved') ?? 0), String(t.verdicts.get('vm-not-running') ?? 0), String(kernelFailures[i])]);
    });
    const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
    for (const r of rows) console.log(r.map((x, c) => x.padStart(widths[c] ?? 0)).join('  '));
    console.log('');
    console.log('stall at: the kernel age that is `stalled` on a steady guest (E 1.024 s + 8 ms + slack x 1 s); bound: the detection');
    console.log('  bound it gives (+ 2 reads of 250 ms). false alarms: guest-kernel-hung/-panicked/-userspace-hung/app-unhealthy on');
    console.log('  guests that never hung; guest-starved is allowed (the host starved the vCPUs and the verdict says so).');
    console.log('  kernel scenario failures: changes of the kernel-heartbeat scenario to failure (a verdict needs them).');
    console.log(`final verdicts: ${unhealthy.length === 0 ? 'every guest running-healthy for every monitor' : `NOT HEALTHY: ${unhealthy.join('; ')}`}`);
    for (const [i, t] of tallies.entries()) for (const line of t.falseAlarms) console.log(`  slack ${o.slacks[i]}: ${line}`);
    console.log('');
    const growth = printResources(resources, o.sampleS, o.warmupS);
    if (tallies[o.slacks.indexOf(1)]?.falseAlarms.length || unhealthy.length > 0 || growth) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    ac.abort(new Error('done'));
    await Promise.all(monitors);
    metricsServer?.closeAllConnections();
    await new Promise((r) => (metricsServer === undefined ? r(undefined) : metricsServer.close(r)));
    await cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
