/**
 * The fault suite's guest side (issue 13 §2): faults of QEMU, its sockets and the host around a REAL
 * QEMU guest watched by the compiled monitor (`eve-diag monitor`, dist/cli/main.js: `npm run build`
 * first). Each scenario boots the test guest with our table, starts the monitor with a config for it
 * and `--metrics 127.0.0.1:0`, does the fault, and scores what the monitor's JSON log and /metrics
 * showed (test/faults/scoreboard.ts). Every QEMU and monitor a scenario starts is stopped in its own
 * `finally`, so a failing scenario leaves nothing behind for the next one.
 *
 * Counting, the same for every scenario (`score`):
 *   crashes     the monitor exited before we stopped it, did not exit 0 on SIGTERM, wrote to stderr,
 *               or logged `worker failed` / `classification failed` / a line that is not JSON
 *   falseHangs  verdict lines guest-kernel-hung, guest-userspace-hung or guest-panicked: none of these
 *               faults hangs or panics the guest, so every such verdict is false
 *   visible     the scenario's own check of the log and of /metrics
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, rmdir, truncate, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Off, type DiagLayout } from '../../acpi/diag/layout.js';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { parseGpa2hva, ProcMemory } from '../../host-reader/memory/procmem.js';
import { QmpClient } from '../../host-reader/qmp/client.js';
import { RegionReader } from '../../host-reader/reader.js';
import { background, launchGuest, type Guest, type LaunchOptions } from '../helpers/guest.js';
import { startMonitor, type LogLine, type MonitorProcess } from '../helpers/monitor-cli.js';
import type { FaultRow, FaultScenario } from './scoreboard.js';

export const HANG_VERDICTS: ReadonlySet<string> = new Set(['guest-kernel-hung', 'guest-userspace-hung', 'guest-panicked']);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One scrape of the monitor's /metrics, parsed into `name{labels}` -> value. */
export class Scrape {
  constructor(readonly text: string) {}

  /** The value of the first series of `name` whose labels include all of `labels`; undefined if none. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    for (const line of this.text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const m = /^[^{\s]+(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
      if (m === null) continue;
      const have = new Map([...(m[1] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[2]);
    }
    return undefined;
  }

  /** The verdict whose eve_diag_verdict series is 1 for `app`. */
  verdict(app: string): string | undefined {
    for (const m of this.text.matchAll(/^eve_diag_verdict\{([^}]*)\} 1$/gm)) {
      const labels = m[1] ?? '';
      if (labels.includes(`app="${app}"`)) return /verdict="([^"]*)"/.exec(labels)?.[1];
    }
    return undefined;
  }

  /** eve_diag_probe_results_total of one scenario and outcome (0 when absent). */
  results(app: string, scenario: string, outcome: 'success' | 'failure' | 'unknown'): number {
    return this.value('eve_diag_probe_results_total', { app, scenario, outcome }) ?? 0;
  }
}

export interface RigOptions {
  launch?: LaunchOptions;
  /** Extra scenario YAML (each entry starting with `      - `), after run-state and kernel. */
  scenarios?: string;
  /** Transports besides qmp, consoleLog and layout (YAML flow entries, e.g. `console: /x`). */
  transports?: (g: Guest) => string;
  /** A top-level YAML block (e.g. `qmp: { connectTimeoutSeconds: 2 }`). */
  top?: string;
  /** Before the monitor starts (the guest is up). */
  beforeMonitor?: (guest: Guest) => Promise<void>;
  /** The diagnostic collectors (YAML flow list); default one qmp-state step. */
  collectors?: string;
}

/** A guest, the monitor watching it (app `vm1`), their files. */
export class Rig {
  readonly stderr: string[] = [];
  #stopped = false;
  #exitBeforeStop: string | undefined;
  exitCode: number | null | undefined;

  private constructor(
    readonly dir: string,
    public guest: Guest,
    readonly monitor: MonitorProcess,
    readonly metricsPort: number,
    readonly config: string,
  ) {
    monitor.child.stderr?.on('data', (d: Buffer) => this.stderr.push(d.toString()));
    monitor.child.on('exit', (code, signal) => {
      if (!this.#stopped) this.#exitBeforeStop = `exited with ${signal ?? `code ${code}`} before the scenario stopped it`;
    });
  }

  static async start(name: string, o: RigOptions = {}): Promise<Rig> {
    const dir = await mkdtemp(join(tmpdir(), `eve-diag-fault-${name}-`));
    let guest: Guest | undefined;
    let monitor: MonitorProcess | undefined;
    try {
      const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
      await writeFile(join(dir, 't.aml'), aml);
      await writeFile(join(dir, 't.json'), JSON.stringify(layout));
      guest = await launchGuest({ acpiTables: [join(dir, 't.aml')], append: 'quiet', ...o.launch });
      await o.beforeMonitor?.(guest);
      const config = join(dir, 'monitor.yaml');
      await writeFile(
        config,
        `spool: { dir: ${join(dir, 'spool')} }
${o.top ?? ''}
apps:
  - name: vm1
    transports: { qmp: ${guest.qmpPath}, consoleLog: ${guest.consoleLogPath}, consoleMux: true, layout: ${join(dir, 't.json')}${o.transports ? `, ${o.transports(guest)}` : ''} }
    scenarios:
      - { name: run-state, probe: { type: qmp-status }, periodSeconds: 1, timeoutSeconds: 1 }
      - { name: kernel, probe: { type: kernel-heartbeat }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 2 }
${o.scenarios ?? ''}
    diagnostics:
      cooldownSeconds: 600
      collectors: ${o.collectors ?? '[{ type: qmp-state, timeoutSeconds: 5 }]'}
`,
      );
      monitor = startMonitor(config);
      const listening = await monitor.waitFor((l) => l.msg === 'metrics listening', 15_000);
      return new Rig(dir, guest, monitor, Number(listening['port']), config);
    } catch (e) {
      monitor?.child.kill('SIGKILL');
      await guest?.stop();
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get pid(): number {
    return this.monitor.child.pid ?? -1;
  }

  verdictLines(from = 0): LogLine[] {
    return this.monitor.lines.slice(from).filter((l) => l.msg === 'verdict');
  }

  /** The verdicts in order, e.g. `unknown > running-healthy > vm-not-running`. */
  verdictTrail(from = 0): string {
    return this.verdictLines(from)
      .map((l) => String(l['verdict']))
      .join(' > ');
  }

  /** The first verdict line at or after line index `from` that `pred` accepts. */
  async waitVerdict(pred: (v: string, l: LogLine) => boolean, ms: number, from = 0): Promise<LogLine> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.monitor.lines.slice(from).find((l) => l.msg === 'verdict' && pred(String(l['verdict']), l));
      if (hit !== undefined) return hit;
      if (Date.now() > end) throw new Error(`no matching verdict in ${ms} ms; verdicts: ${this.verdictTrail()}`);
      if (this.monitor.child.exitCode !== null || this.monitor.child.signalCode !== null) throw new Error(`the monitor exited; verdicts: ${this.verdictTrail()}`);
      await sleep(100);
    }
  }

  async scrape(): Promise<Scrape> {
    const res = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
    return new Scrape(await res.text());
  }

  /** The monitor still runs (no exit we did not ask for). */
  get alive(): boolean {
    return this.#exitBeforeStop === undefined && this.monitor.child.exitCode === null && this.monitor.child.signalCode === null;
  }

  /** SIGTERM the monitor (SIGKILL after 10 s), stop the guest, remove the files. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      if (this.monitor.child.exitCode === null && this.monitor.child.signalCode === null) {
        this.monitor.child.kill('SIGTERM');
        const t = setTimeout(() => this.monitor.child.kill('SIGKILL'), 10_000);
        this.exitCode = await this.monitor.exited;
        clearTimeout(t);
      } else {
        this.exitCode = this.monitor.child.exitCode;
      }
    }
    await this.guest.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Crash and false-hang counts (after stop(): the exit on SIGTERM counts). A scenario that hangs the
   * guest itself passes the log line index it did so at: hang verdicts from there on are true ones.
   */
  counts(hangsTrueFrom = Infinity): { crashes: number; falseHangs: number; crashNotes: string[] } {
    const notes: string[] = [];
    if (this.#exitBeforeStop !== undefined) notes.push(this.#exitBeforeStop);
    else if (this.exitCode !== 0) notes.push(`exit code ${String(this.exitCode)} on SIGTERM`);
    const stderr = this.stderr.join('').trim();
    if (stderr !== '') notes.push(`stderr: ${stderr.slice(0, 200)}`);
    for (const l of this.monitor.lines) {
      if (l.msg === 'worker failed' || l.msg === 'classification failed' || l.msg.startsWith('(not JSON)')) notes.push(`${l.msg}: ${String(l['error'] ?? '').slice(0, 120)}`);
    }
    const falseHangs = this.monitor.lines.slice(0, Math.min(hangsTrueFrom, this.monitor.lines.length)).filter((l) => l.msg === 'verdict' && HANG_VERDICTS.has(String(l['verdict']))).length;
    return { crashes: notes.length, falseHangs, crashNotes: notes };
  }
}

interface Outcome {
  observed: string;
  pass: boolean;
  visible: boolean;
  /** The monitor log line index at which the scenario hung the guest itself (its hang verdicts are true). */
  hangsTrueFrom?: number;
}

/** Runs `body` on a fresh rig and scores it; the rig is stopped on every path. */
async function scored(name: string, fault: string, expected: string, o: RigOptions, body: (r: Rig) => Promise<Outcome>): Promise<FaultRow> {
  const rig = await Rig.start(name, o);
  let outcome: Outcome;
  try {
    outcome = await body(rig).catch((e: unknown) => ({ observed: `scenario error: ${String((e as Error).message ?? e).split('\n')[0]}`, pass: false, visible: false }));
  } finally {
    await rig.stop();
  }
  const c = rig.counts(outcome.hangsTrueFrom);
  const hangs = c.falseHangs > 0 ? `; hang verdicts: ${rig.verdictTrail()}` : '';
  const crashes = c.crashNotes.length > 0 ? `; crash: ${c.crashNotes.join('; ')}` : '';
  return { fault, expected, observed: `${outcome.observed}${hangs}${crashes}`, crashes: c.crashes, lost: 0, duplicates: 0, falseHangs: c.falseHangs, visible: outcome.visible, pass: outcome.pass };
}

/**
 * The verdict changes from line `from` on, for the observed column; with `t0` (ms since the epoch) each
 * carries its time relative to it, and a trouble verdict its reason.
 */
function trail(r: Rig, from = 0, t0?: number): string {
  const parts = r.verdictLines(from).map((l) => {
    const v = String(l['verdict']);
    const at = t0 === undefined ? '' : `@${((Date.parse(String(l['time'])) - t0) / 1000).toFixed(1)}s`;
    const why = v === 'running-healthy' || v === 'unknown' ? '' : ` (${String(l['reason']).slice(0, 90)})`;
    return `${v}${at}${why}`;
  });
  return parts.join(' > ') || '(no verdict change)';
}

// ---- 1. QEMU SIGKILLed mid-poll ------------------------------------------------------------------

const qemuKilled: FaultScenario = {
  name: 'qemu-sigkill',
  quick: true,
  guest: true,
  run: () =>
    scored('kill', 'QEMU SIGKILLed mid-poll', 'monitor stays up; vm-not-running (no QEMU on the QMP socket); no hang verdict', {}, async (r) => {
      await r.waitVerdict((v) => v === 'running-healthy', 60_000);
      const before = (await r.scrape()).results('vm1', 'run-state', 'failure');
      const from = r.monitor.lines.length;
      process.kill(r.guest.pid, 'SIGKILL');
      const gone = await r.waitVerdict((v) => v === 'vm-not-running', 20_000, from);
      await sleep(5000); // the monitor keeps polling a socket nobody serves: no crash, no other verdict
      const m = await r.scrape();
      const failures = m.results('vm1', 'run-state', 'failure') - before;
      const visible = /no QEMU/.test(String(gone['reason'])) && m.verdict('vm1') === 'vm-not-running' && failures > 0;
      return {
        observed: `${trail(r, from)} (${String(gone['reason'])}); /metrics verdict ${m.verdict('vm1')}, run-state failures +${failures}; monitor ${r.alive ? 'up' : 'DOWN'}`,
        pass: r.alive && m.verdict('vm1') === 'vm-not-running',
        visible,
      };
    }),
};

// ---- 2. QEMU SIGSTOPped 15 s ---------------------------------------------------------------------

const qemuStopped: FaultScenario = {
  name: 'qemu-sigstop',
  quick: true,
  guest: true,
  run: () =>
    scored('stop', 'QEMU SIGSTOPped 15 s (QMP stalls), then SIGCONT', 'never guest-kernel-hung (CONFIRM_MS: trouble needs a fresh run state); running-healthy again after SIGCONT', {}, async (r) => {
      await r.waitVerdict((v) => v === 'running-healthy', 60_000);
      const before = await r.scrape();
      const from = r.monitor.lines.length;
      const t0 = Date.now();
      process.kill(r.guest.pid, 'SIGSTOP');
      let during: Scrape;
      try {
        await sleep(13_000);
        during = await r.scrape();
        await sleep(2000);
      } finally {
        process.kill(r.guest.pid, 'SIGCONT');
      }
      const resumedAt = r.monitor.lines.length;
      const back = await r.waitVerdict((v) => v === 'running-healthy', 30_000, resumedAt).then(
        () => true,
        () => false,
      );
      const notOk = ['failure', 'unknown'] as const;
      const grew = notOk.map((o) => during.results('vm1', 'run-state', o) + during.results('vm1', 'kernel', o) - before.results('vm1', 'run-state', o) - before.results('vm1', 'kernel', o));
      const stalledLines = r.monitor.lines.slice(from, resumedAt).filter((l) => l.msg === 'scenario result' || l.msg === 'verdict');
      const visible = stalledLines.length > 0 && grew.some((n) => n > 0) && during.verdict('vm1') !== 'running-healthy';
      return {
        observed: `SIGSTOP@0s, SIGCONT@15s: ${trail(r, from, t0)}; /metrics verdict at 13 s ${during.verdict('vm1')}, probe failures +${grew[0]} unknown +${grew[1]}; after SIGCONT: ${back ? 'running-healthy' : 'NOT healthy'}`,
        pass: back,
        visible,
      };
    }),
};

// ---- 2b. QEMU SIGKILLed or SIGSTOPped mid-diagnostics -------------------------------------------

// Slow steps on purpose: a memory dump of the 512 MiB guest takes seconds on TCG, so the fault lands
// inside the run, not after it.
const MID_DIAG_COLLECTORS =
  '[{ type: qmp-state, timeoutSeconds: 5 }, { type: memory-dump, timeoutSeconds: 30 }, { type: hmp-registers, timeoutSeconds: 5 }, { type: console-capture, timeoutSeconds: 5 }]';

/** Files in the rig's spool whose name starts with `.tmp` (a half-written dump or bundle left behind). */
function spoolLeftovers(dir: string): string[] {
  const spool = join(dir, 'spool');
  return existsSync(spool) ? readdirSync(spool, { recursive: true, encoding: 'utf8' }).filter((f) => /(^|\/)\.tmp/.test(f)) : [];
}

function midDiagnostics(name: string, signal: 'SIGKILL' | 'SIGSTOP'): FaultScenario {
  const fault =
    signal === 'SIGKILL'
      ? 'QEMU SIGKILLed mid-diagnostics (the guest panicked; a memory dump under way)'
      : 'QEMU SIGSTOPped 15 s mid-diagnostics (the guest panicked; a memory dump under way), then SIGCONT';
  const expected =
    signal === 'SIGKILL'
      ? 'monitor up; the report written with the steps QEMU could not answer marked failed; no half-written file in the spool; vm-not-running'
      : 'monitor up; every step ends within its timeout; the report written; no half-written file in the spool';
  return {
    name,
    quick: false,
    guest: true,
    run: () =>
      scored(`mid${signal === 'SIGKILL' ? 'kill' : 'stop'}`, fault, expected, { collectors: MID_DIAG_COLLECTORS }, async (r) => {
        await r.waitVerdict((v) => v === 'running-healthy', 60_000);
        const hangsTrueFrom = r.monitor.lines.length;
        r.guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined);
        const started = await r.monitor.waitFor((l) => l.msg === 'diagnostics started', 60_000);
        // Inside the memory dump: the fault lands once QEMU is writing the dump's temporary file (a
        // fixed wait was too long once: a mostly empty 512 MiB guest dumped in under 1.5 s).
        const dumping = () => spoolLeftovers(r.dir).some((f) => /\.tmp-memory-/.test(f));
        for (let i = 0; i < 1000 && !dumping(); i++) await sleep(10);
        const caught = dumping();
        const t0 = Date.now();
        process.kill(r.guest.pid, signal);
        if (signal === 'SIGSTOP') {
          try {
            await sleep(15_000);
          } finally {
            process.kill(r.guest.pid, 'SIGCONT');
          }
        }
        const done = await r.monitor.waitFor((l) => l.msg === 'diagnostics done' || l.msg === 'diagnostics failed', 90_000);
        const tookS = (Date.now() - t0) / 1000;
        const bundle = String(done['report'] ?? '');
        const manifest = existsSync(join(bundle, 'manifest.json'))
          ? (JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8')) as { steps: { kind: string; ok: boolean; summary?: string; error?: string }[] })
          : undefined;
        const steps = manifest?.steps.map((st) => `${st.kind}:${st.ok ? 'ok' : `failed (${String(st.error ?? st.summary ?? '').slice(0, 70)})`}`).join(' ') ?? '(no manifest)';
        const failedSteps = manifest?.steps.filter((st) => !st.ok).length ?? 0;
        // The run-state after the fault (SIGKILL: no QEMU; SIGSTOP: the panicked guest again).
        const after = signal === 'SIGKILL' ? await r.waitVerdict((v) => v === 'vm-not-running', 30_000, hangsTrueFrom).then(() => 'vm-not-running', () => 'NOT vm-not-running') : '';
        await sleep(3000);
        const leftovers = spoolLeftovers(r.dir);
        const m = await r.scrape();
        return {
          observed: `trigger ${String(started['verdict'])}; ${signal} ${caught ? 'while QEMU wrote the dump' : 'with no dump file seen (the dump ended first?)'}; ${done.msg} ${tookS.toFixed(1)} s after it; steps ${steps}${after ? `; then ${after}` : ''}; spool leftovers ${leftovers.length}; /metrics verdict ${m.verdict('vm1')}`,
          pass: r.alive && done.msg === 'diagnostics done' && manifest !== undefined && leftovers.length === 0 && (signal === 'SIGSTOP' || after === 'vm-not-running'),
          visible: failedSteps > 0,
          hangsTrueFrom,
        };
      }),
  };
}

// ---- 3. QEMU restarted on the same sockets -------------------------------------------------------

const qemuRestarted: FaultScenario = {
  name: 'qemu-restart-same-paths',
  quick: false,
  guest: true,
  run: async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'eve-diag-fault-dom-'));
    try {
      return await scored(
        'restart',
        'guest stopped, a new QEMU on the same qmp/console paths (EVE restarting the app)',
        'vm-not-running while gone; reconnects, finds the table in the new QEMU (new pid), running-healthy; no hang verdict',
        { launch: { dir: sockets } },
        async (r) => {
          await r.waitVerdict((v) => v === 'running-healthy', 60_000);
          const firstPid = r.guest.pid;
          const from = r.monitor.lines.length;
          await r.guest.stop();
          await r.waitVerdict((v) => v === 'vm-not-running', 20_000, from);
          // The new QEMU truncates the log when it opens it; removed first so the ready line of the old one cannot match.
          await rm(r.guest.consoleLogPath, { force: true });
          const again = r.monitor.lines.length;
          r.guest = await launchGuest({ acpiTables: [join(r.dir, 't.aml')], append: 'quiet', dir: sockets });
          const ok = await r.waitVerdict((v) => v === 'running-healthy', 60_000, again).then(
            () => true,
            () => false,
          );
          const m = await r.scrape();
          return {
            observed: `${trail(r, from)}; QEMU pid ${firstPid} -> ${r.guest.pid}; /metrics verdict ${m.verdict('vm1')}, run-state failures ${m.results('vm1', 'run-state', 'failure')}, kernel failures ${m.results('vm1', 'kernel', 'failure')}, successes ${m.results('vm1', 'kernel', 'success')}`,
            pass: ok && m.verdict('vm1') === 'running-healthy',
            visible: r.verdictLines(from).some((l) => l['verdict'] === 'vm-not-running') && m.results('vm1', 'run-state', 'failure') + m.results('vm1', 'kernel', 'failure') > 0,
          };
        },
      );
    } finally {
      await rm(sockets, { recursive: true, force: true });
    }
  },
};

// ---- 4. QMP held by another client ---------------------------------------------------------------

/** A client that connects to `path`, reads QEMU's greeting and keeps the connection. */
async function holdSocket(path: string): Promise<{ socket: Socket; greeting: Promise<string> }> {
  const socket = connect(path);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  const greeting = new Promise<string>((resolve) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.includes('\n') || got.length > 4096) {
        socket.off('data', onData);
        resolve(got.slice(0, 200));
      }
    };
    socket.on('data', onData);
  });
  return { socket, greeting };
}

const qmpHeld: FaultScenario = {
  name: 'qmp-held',
  // Not run yet against a real guest (deadline): not in npm test until it was.
  quick: false,
  guest: true,
  run: async () => {
    let holder: Socket | undefined;
    try {
      return await scored(
        'qmpheld',
        'QMP socket held by another client from before the monitor starts, released after 15 s',
        'no hang verdict while held, the QMP trouble in the log and /metrics; running-healthy once released',
        {
          top: 'qmp: { connectTimeoutSeconds: 2 }',
          beforeMonitor: async (g) => {
            const h = await holdSocket(g.qmpPath);
            holder = h.socket;
            await h.greeting; // this client is the one QEMU serves
          },
        },
        async (r) => {
          await sleep(15_000);
          const during = await r.scrape();
          const heldLines = r.monitor.lines.filter((l) => l.msg === 'scenario result' || l.msg === 'verdict').map((l) => `${l.scenario ?? l.verdict}: ${String(l['detail'] ?? l['reason'] ?? '')}`);
          const from = r.monitor.lines.length;
          holder?.destroy();
          const ok = await r.waitVerdict((v) => v === 'running-healthy', 30_000, from).then(
            () => true,
            () => false,
          );
          const notOk = during.results('vm1', 'run-state', 'failure') + during.results('vm1', 'run-state', 'unknown');
          const qmpWords = heldLines.filter((l) => /QMP|greeting|query-status|timed out/i.test(l));
          return {
            observed: `while held: verdicts ${trail(r).split(' > ').slice(0, 3).join(' > ')}; /metrics verdict ${during.verdict('vm1')}, run-state not-ok ${notOk}, kernel successes ${during.results('vm1', 'kernel', 'success')}; log: ${qmpWords[0]?.slice(0, 120) ?? '(nothing about QMP)'}; released: ${ok ? 'running-healthy' : 'NOT healthy'}`,
            pass: ok && during.verdict('vm1') !== 'running-healthy',
            visible: qmpWords.length > 0 && notOk > 0,
          };
        },
      );
    } finally {
      holder?.destroy();
    }
  },
};

// ---- 5. The console socket held by another client ------------------------------------------------

const consoleHeld: FaultScenario = {
  name: 'console-held',
  quick: true,
  guest: true,
  run: async () => {
    let holder: Socket | undefined;
    try {
      return await scored(
        'conheld',
        'console socket held by another client (`eve app console`) while console-active probes it',
        'no crash; the console probe says unknown (the console is held); never guest-userspace-hung (the guest is fine)',
        {
          scenarios: '      - { name: console, probe: { type: console-active, params: { command: "uptime" } }, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 2 }',
          transports: (g) => `console: ${g.consolePath}`,
        },
        async (r) => {
          await r.waitVerdict((v) => v === 'running-healthy', 60_000);
          // The console answered once (running-healthy can come from QMP and the kernel beat alone):
          // then holding it is a change the probe must notice.
          await r.monitor.waitFor((l) => l.msg === 'scenario result' && l['scenario'] === 'console' && l['result'] === 'success', 60_000);
          const from = r.monitor.lines.length;
          const h = await holdSocket(r.guest.consolePath);
          holder = h.socket;
          await sleep(15_000);
          const m = await r.scrape();
          const lines = r.monitor.lines.slice(from).filter((l) => (l.msg === 'scenario result' || l.msg === 'scenario result unknown') && l['scenario'] === 'console');
          const said = lines.map((l) => String(l['detail'])).find((d) => /held|no connection|nothing received/.test(d));
          const others = [...new Set(lines.filter((l) => l['result'] === 'failure').map((l) => String(l['detail']).slice(0, 120)))];
          holder.destroy();
          return {
            observed: `held: ${trail(r, from)}; console: ${said?.slice(0, 100) ?? '(no console result)'}; /metrics verdict ${m.verdict('vm1')}, console unknown ${m.results('vm1', 'console', 'unknown')}, failures ${m.results('vm1', 'console', 'failure')}${others.length > 0 ? ` (${others.join(' | ')})` : ''}`,
            pass: r.alive && !r.verdictLines(from).some((l) => HANG_VERDICTS.has(String(l['verdict']))),
            visible: said !== undefined && m.results('vm1', 'console', 'unknown') > 0,
          };
        },
      );
    } finally {
      holder?.destroy();
    }
  },
};

// ---- 6. The console log rotated, truncated, deleted ----------------------------------------------

const MARK_LOOP = 'sh -c \'i=0; while true; do i=$((i+1)); echo "fault-mark $i" > /dev/ttyS0; sleep 1; done\'';

const consoleLogChurn: FaultScenario = {
  name: 'console-log-churn',
  quick: false,
  guest: true,
  run: () =>
    scored(
      'logchurn',
      'console log rotated (renamed + new file), truncated, deleted while log-marks reads it',
      'no crash; log-marks keeps finding the marks after rotate/truncate, or says why (a deleted log QEMU no longer writes)',
      {
        scenarios: '      - { name: marks, probe: { type: log-marks, params: { pattern: "fault-mark (\\\\d+)", withinPeriods: 3 } }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 3 }',
        beforeMonitor: async (g) => {
          await background(g, MARK_LOOP);
        },
      },
      async (r) => {
        await r.waitVerdict((v) => v === 'running-healthy', 60_000);
        // The marks probe past its baseline (a new mark seen): a log replaced before the probe's first
        // read is just the file it watches, and one nobody writes has no marks (a hang to the probe).
        await r.monitor.waitFor((l) => l.msg === 'scenario result' && l['scenario'] === 'marks' && l['result'] === 'success', 60_000);
        const log = r.guest.consoleLogPath;
        const phase = async (what: string, act: () => Promise<void>): Promise<string> => {
          const from = r.monitor.lines.length;
          const before = (await r.scrape()).results('vm1', 'marks', 'success');
          await act();
          await sleep(8000);
          const after = (await r.scrape()).results('vm1', 'marks', 'success');
          const res = r.monitor.lines
            .slice(from)
            .filter((l) => l.msg === 'scenario result' && l['scenario'] === 'marks')
            .map((l) => `${String(l['result'])}${l['result'] === 'failure' ? ` [${String(l['detail']).slice(0, 160)}]` : ''}`);
          return `${what}: marks ok +${after - before}${res.length ? ` (${res.join(',')})` : ''}`;
        };
        const rotated = await phase('rotated', async () => {
          await rename(log, `${log}.1`);
          await writeFile(log, '');
        });
        const truncated = await phase('truncated', () => truncate(`${log}.1`, 0));
        const deleted = await phase('deleted', () => rm(`${log}.1`, { force: true }));
        const m = await r.scrape();
        return {
          observed: `${rotated}; ${truncated}; ${deleted}; verdicts ${trail(r)}; /metrics marks failures ${m.results('vm1', 'marks', 'failure')}`,
          pass: r.alive,
          visible: true,
        };
      },
    ),
};

// ---- 7. A guest printing to the console at full speed ---------------------------------------------

function vmRssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const consoleFlood: FaultScenario = {
  name: 'console-flood',
  quick: false,
  guest: true,
  run: () =>
    scored(
      'flood',
      'guest prints to ttyS0 at full speed for 60 s (log-marks and console-passive reading the log)',
      'monitor RSS bounded (sampled each second), no crash, no hang verdict',
      {
        scenarios:
          '      - { name: marks, probe: { type: log-marks, params: { pattern: "fault-mark (\\\\d+)", withinPeriods: 5 } }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 3 }\n' +
          '      - { name: console-marks, probe: { type: console-passive, params: { pattern: "fault-mark (\\\\d+)", maxAgeSeconds: 5 } }, periodSeconds: 1, timeoutSeconds: 1, failureThreshold: 3 }',
        beforeMonitor: async (g) => {
          await background(g, MARK_LOOP);
        },
      },
      async (r) => {
        await r.waitVerdict((v) => v === 'running-healthy', 60_000);
        await sleep(3000);
        const base = vmRssKiB(r.pid);
        const from = r.monitor.lines.length;
        const yes = await background(r.guest, 'sh -c \'yes "flood flood flood flood flood flood flood flood" > /dev/ttyS0\'');
        const samples: number[] = [];
        for (let i = 0; i < 60; i++) {
          await sleep(1000);
          samples.push(vmRssKiB(r.pid));
        }
        const size = (() => {
          try {
            return readFileSync(r.guest.consoleLogPath).length;
          } catch {
            return 0;
          }
        })();
        await r.guest.run(`kill ${yes}`, 20_000).catch(() => undefined);
        const m = await r.scrape();
        const max = Math.max(...samples);
        const last10 = samples.slice(-10);
        const growth = Math.max(...last10) - Math.max(...samples.slice(10, 20));
        const bounded = max < base + 100 * 1024 && growth < 30 * 1024;
        return {
          observed: `RSS base ${Math.round(base / 1024)} MiB, max ${Math.round(max / 1024)} MiB, growth s10-20 -> s50-60 ${Math.round(growth / 1024)} MiB; console log ${Math.round(size / 1e6)} MB; verdicts ${trail(r, from)}; /metrics marks ok ${m.results('vm1', 'marks', 'success')}`,
          pass: bounded && r.alive,
          visible: m.value('eve_diag_process_resident_memory_bytes') !== undefined,
        };
      },
    ),
};

// ---- 8. A hostile guest: garbage in its region, a forged second table --------------------------

/**
 * Writes `bytes` at guest-physical `gpa` as the guest itself could (its RAM is its own): through
 * QEMU's /proc/<pid>/mem at the host address HMP `gpa2hva` gives. The scenario's own QMP socket.
 */
async function pokeGuest(qmp: QmpClient, pid: number, gpa: bigint, bytes: Uint8Array): Promise<void> {
  const { hva } = parseGpa2hva((await qmp.hmp(`gpa2hva 0x${gpa.toString(16)}`)).trim(), gpa);
  const fh = await open(`/proc/${pid}/mem`, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, Number(hva));
  } finally {
    await fh.close();
  }
}

/** 1 MiB at 128 MiB the guest kernel leaves alone (memmap=), where the forged table goes. */
const FORGE_GPA = 0x800_0000n;

const regionHostile: FaultScenario = {
  name: 'region-hostile',
  // Written at the end of a session and not yet run against a real guest: bench only until it was.
  quick: false,
  guest: true,
  run: async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'eve-diag-fault-hostile-'));
    const qmp2 = join(sockets, 'qmp2.sock');
    let qmp: QmpClient | undefined;
    let mem: ProcMemory | undefined;
    try {
      return await scored(
        'hostile',
        'a hostile guest: 10 s of garbage in its region (all but magic and nonce), then a forged second table (our header and nonce) kept beating while the real one is wiped, then a panic',
        'no crash; the garbage is failures/unknowns, not a crash; the forgery fools the monitor only while the guest runs: after the panic (the forger stops with the guest) a hang verdict',
        { launch: { append: 'quiet memmap=1M$0x8000000', extraArgs: ['-qmp', `unix:${qmp2},server=on,wait=off`] } },
        async (r) => {
          await r.waitVerdict((v) => v === 'running-healthy', 60_000);
          const q = (qmp = await QmpClient.connect({ path: qmp2 }, { timeoutMs: 5000 }));
          mem = await ProcMemory.open(q, { pid: r.guest.pid });
          const layout = JSON.parse(readFileSync(join(r.dir, 't.json'), 'utf8')) as DiagLayout;
          const table = (await new RegionReader(q, mem, layout).locate()).address;
          const region = table + BigInt(layout.region.offset);
          const clean = Buffer.from(await mem.read(table, layout.table.length));
          const results = (from: number) =>
            [...new Set(r.monitor.lines.slice(from).filter((l) => l.msg === 'scenario result' && l['scenario'] === 'kernel').map((l) => `${String(l['result'])}: ${String(l['detail']).slice(0, 60)}`))].join(' | ');
          const before = await r.scrape();
          const hangsTrueFrom = r.monitor.lines.length;

          // 1. Garbage over everything after the nonce, every 250 ms for 10 s.
          for (let i = 0; i < 40; i++) {
            await pokeGuest(q, r.guest.pid, region + BigInt(Off.kernelPeriodDs), randomBytes(layout.region.size - Off.kernelPeriodDs));
            await sleep(250);
          }
          const garbageTrail = `${trail(r, hangsTrueFrom)}; kernel ${results(hangsTrueFrom) || '(no change)'}`;
          const afterGarbage = await r.scrape();
          const garbageSeen = afterGarbage.results('vm1', 'kernel', 'failure') + afterGarbage.results('vm1', 'kernel', 'unknown') - before.results('vm1', 'kernel', 'failure') - before.results('vm1', 'kernel', 'unknown');

          // 2. The forgery: the clean table copied to FORGE_GPA, its beats advanced the way the AML
          //    does (every 500 ms: beats + 1, last Timer + 0.5 s, the interval in the ring), the real
          //    table's magic wiped so the monitor's next check misses it and scans again.
          const forged = Buffer.from(clean);
          const f = (k: keyof typeof Off) => layout.region.offset + Off[k];
          await pokeGuest(q, r.guest.pid, FORGE_GPA, forged);
          const forgeFrom = r.monitor.lines.length;
          await pokeGuest(q, r.guest.pid, region, Buffer.from('XXXXXXXX'));
          let beats = forged.readUInt32LE(f('kernelBeats'));
          let last = forged.readUInt32LE(f('kernelLast'));
          const ring = layout.ring.length;
          const beat = async () => {
            beats = (beats + 1) >>> 0;
            last = (last + 5_000_000) >>> 0;
            forged.writeUInt32LE(beats, f('kernelBeats'));
            forged.writeUInt32LE(last, f('kernelLast'));
            const slot = layout.ring.offset + 4 * (beats % ring);
            forged.writeUInt32LE(5_000_000, slot);
            await pokeGuest(q, r.guest.pid, FORGE_GPA + BigInt(f('kernelBeats')), forged.subarray(f('kernelBeats'), f('kernelLast') + 4));
            await pokeGuest(q, r.guest.pid, FORGE_GPA + BigInt(slot), forged.subarray(slot, slot + 4));
          };
          for (let i = 0; i < 30; i++) {
            await beat();
            await sleep(500);
          }
          const forgedTrail = `${trail(r, forgeFrom)}; kernel ${results(forgeFrom) || '(no change)'}`;
          const fooled = (await r.scrape()).verdict('vm1');

          // 3. The guest panics; the forger, the guest's own code, stops with it.
          const panicFrom = r.monitor.lines.length;
          r.guest.run('echo c > /proc/sysrq-trigger', 5000).catch(() => undefined);
          const t0 = Date.now();
          const hung = await r.waitVerdict((v) => HANG_VERDICTS.has(v), 30_000, panicFrom).then(
            (l) => `${String(l['verdict'])} after ${((Date.now() - t0) / 1000).toFixed(1)} s`,
            () => 'NO hang verdict in 30 s',
          );
          return {
            observed: `garbage: ${garbageTrail} (kernel failures+unknowns +${garbageSeen}); forged: ${forgedTrail}, /metrics verdict ${fooled}; panic: ${hung}`,
            pass: r.alive && !hung.startsWith('NO'),
            visible: garbageSeen > 0,
            hangsTrueFrom,
          };
        },
      );
    } finally {
      await mem?.close().catch(() => undefined);
      await qmp?.close().catch(() => undefined);
      await rm(sockets, { recursive: true, force: true });
    }
  },
};

// ---- 9. The vCPU thread starved (cgroup v1 cpu quota on that thread only) -------------------------

const CPU_CGROUP = '/sys/fs/cgroup/cpu';

function vcpuThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .filter((tid) => /^CPU \d+\//.test(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()));
}

const vcpuStarved: FaultScenario = {
  name: 'vcpu-starved',
  quick: false,
  guest: true,
  run: async () => {
    const group = join(CPU_CGROUP, `eve-diag-fault-${process.pid}`);
    try {
      return await scored(
        'starve',
        'the vCPU thread starved 30 s: cgroup v1 cpu quota 1 ms / 250 ms on the `CPU 0/TCG` thread only, the guest busy in userspace',
        'guest-starved or no hang verdict; never guest-kernel-hung; running-healthy after',
        // QEMU names its vCPU threads (`CPU 0/TCG`) only with debug-threads.
        { launch: { extraArgs: ['-name', 'vm1,debug-threads=on'] } },
        async (r) => {
          if (!existsSync(join(CPU_CGROUP, 'tasks'))) throw new Error(`${CPU_CGROUP}: no cgroup v1 cpu controller here`);
          await r.waitVerdict((v) => v === 'running-healthy', 60_000);
          const tids = vcpuThreads(r.guest.pid);
          if (tids.length === 0) throw new Error('no `CPU n/...` thread in QEMU');
          await mkdir(group);
          // An idle guest needs almost no CPU (1 ms in 100 kept its beats coming): a busy one wants all of it.
          await background(r.guest, "sh -c 'while :; do :; done'");
          await writeFile(join(group, 'cpu.cfs_period_us'), '250000');
          await writeFile(join(group, 'cpu.cfs_quota_us'), '1000');
          const from = r.monitor.lines.length;
          for (const t of tids) await writeFile(join(group, 'tasks'), String(t));
          await sleep(30_000);
          const during = await r.scrape();
          for (const t of tids) await writeFile(join(CPU_CGROUP, 'tasks'), String(t));
          const back = r.monitor.lines.length;
          const starvedSeen = r.verdictLines(from).length > 0 || during.results('vm1', 'kernel', 'failure') > 0;
          // Healthy again within 30 s (it may be already: the verdict flaps between starved and healthy).
          let ok = false;
          for (let i = 0; i < 30 && !ok; i++) {
            ok = (await r.scrape()).verdict('vm1') === 'running-healthy';
            if (!ok) await sleep(1000);
          }
          const kernelLines = [...new Set(r.monitor.lines.slice(from, back).filter((l) => l.msg === 'verdict').map((l) => String(l['reason']).slice(0, 140)))].join(' | ');
          return {
            observed: `starved: ${trail(r, from)}${kernelLines ? ` (${kernelLines})` : ''}; /metrics verdict then ${during.verdict('vm1')}, kernel failures ${during.results('vm1', 'kernel', 'failure')}; after: ${ok ? 'running-healthy' : 'NOT healthy'}`,
            pass: ok,
            visible: starvedSeen,
          };
        },
      );
    } finally {
      if (existsSync(group)) {
        // Threads still in it (QEMU killed first: none) go back to the root group before rmdir.
        for (const t of readFileSync(join(group, 'tasks'), 'utf8').split('\n').filter(Boolean)) await writeFile(join(CPU_CGROUP, 'tasks'), t).catch(() => undefined);
        await rmdir(group).catch(() => undefined);
      }
    }
  },
};

export const guestScenarios: FaultScenario[] = [qemuKilled, qemuStopped, midDiagnostics('qemu-sigkill-mid-diagnostics', 'SIGKILL'), midDiagnostics('qemu-sigstop-mid-diagnostics', 'SIGSTOP'), qemuRestarted, qmpHeld, consoleHeld, consoleLogChurn, consoleFlood, regionHostile, vcpuStarved];
