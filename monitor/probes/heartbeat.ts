import type { DiagLayout } from '../../acpi/diag/layout.js';
import type { GuestMemory } from '../../host-reader/memory/guest-memory.js';
import { QmpError, type QmpClient } from '../../host-reader/qmp/index.js';
import { HeartbeatPoller, RegionReader, type Poll } from '../../host-reader/reader.js';
import type { AssessOptions, HeartbeatReport, HeartbeatStatus, SignalReport } from '../../host-reader/region/assess.js';
import { DEFAULT_MEMORY_PATH, loadLayout, openGuestMemory, ProcmemUnavailableError, type MemoryChoice, type MemoryPath } from '../../host-reader/session.js';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { deadline, deadlineResult, errnoCode, errorText, failure, raceSignal, unknown } from './common.js';
import type { QmpLink, QmpLinks } from './qmp-link.js';

/**
 * `kernel-heartbeat` and `agent-heartbeat`: the host reader's heartbeat poll (run state, the region
 * read out of guest RAM, the assessment) mapped to a probe result. The session (QMP link, guest
 * memory, region reader, poller with its baseline) is kept between runs and rebuilt lazily when the
 * QMP connection was replaced; the QMP connection is the VM's shared link (see qmp-link.ts).
 *
 * Mapping of the heartbeat status:
 *   alive, restarted             -> success (a restarted guest beats again; the evidence says so)
 *   stalled                      -> failure; `late` too with `failOn: 'late'`, else unknown
 *   no-agent (agent probe)       -> failure: the agent this scenario expects never beat
 *   paused                       -> unknown with evidence, never a failure (a paused VM is not hung)
 *   waiting, not-loaded, unknown -> unknown (grace after load, no table, or the first sample:
 *                                   liveness needs two samples, so the first run is a baseline)
 *   unavailable                  -> unknown: no beat since the load, past the grace (thermal.off=1,
 *                                   no ACPI thermal driver): never a hung verdict from it
 * QEMU gone (QMP refused) is a failure; a region that cannot be read while QMP answers is unknown.
 *
 * The table is located in the background on the first run (a scan of low RAM may outlast a short
 * probe timeout); the next run finds it cached.
 */

export interface HeartbeatParams {
  /**
   * How guest memory is read. Default `auto`: `procmem` (`/proc/<qemu pid>/mem`, no QMP round trip per
   * poll) where the monitor may read QEMU's memory, else `pmemsave`; the evidence says which and why.
   */
  memory?: MemoryPath;
  /** mem-path of the memory-backend-file, for `memory: 'file'`. */
  memPath?: string;
  /** procmem/auto: QEMU's pid (else `pidFile`, EVE's pidfile, or the QMP socket's owner). */
  pid?: number;
  /** procmem/auto: a file holding QEMU's pid (`-pidfile`). */
  pidFile?: string;
  /** Which status is a failure. Default `stalled` (`late` is then unknown). */
  failOn?: 'late' | 'stalled';
  assess?: AssessOptions;
  /**
   * How often to read the region, in ms, when more often than the scenario's period. Default: a
   * quarter of the beat's period (the layout's kernel period, the agent period), at least 100 ms. The
   * verdict comes at most the stall bound plus two of these after a hang.
   */
  pollMs?: number;
}

/** Table discoveries the monitor runs at once (the others wait; their probes say `locating` meanwhile). */
export const DISCOVERY_CONCURRENCY = 4;

/** The default poll interval is this share of the beat's period, and at least HEARTBEAT_POLL_MIN_MS. */
export const HEARTBEAT_POLLS_PER_PERIOD = 4;
export const HEARTBEAT_POLL_MIN_MS = 100;

export type HeartbeatSignal = 'kernel' | 'agent';

interface Session {
  generation: number;
  key: string;
  qmpPath: string;
  layoutPath: string;
  client: QmpClient;
  memory: GuestMemory;
  reader: RegionReader;
  poller: HeartbeatPoller;
  /** The memory path in use and why (`auto`'s choice). */
  memoryChoice: MemoryChoice;
  /** A background table discovery in progress. */
  locating?: Promise<void>;
  locatingSince?: number;
  /** Why the last discovery failed. */
  locateError?: Error;
  /** The table's address as evidence shows it (hex), for `addressOf`. */
  addressText?: string;
  addressOf?: bigint;
}

/** `0x...` of the table's address, formatted once per address. */
function addressText(s: Session, address: bigint): string {
  if (s.addressOf !== address || s.addressText === undefined) {
    s.addressOf = address;
    s.addressText = `0x${address.toString(16)}`;
  }
  return s.addressText;
}

export class HeartbeatProbe implements Probe {
  readonly kind: 'kernel-heartbeat' | 'agent-heartbeat';
  #link: QmpLink | undefined;
  #session: Session | undefined;
  #layouts = new Map<string, Promise<DiagLayout>>();
  /** The kernel period of the layout the last run read. */
  #kernelPeriodMs: number | undefined;

  constructor(
    readonly signal: HeartbeatSignal,
    private readonly links: QmpLinks,
    private readonly params: HeartbeatParams = {},
    /** Monotonic ms for the assessment's ages (tests inject one). */
    private readonly now: () => number = () => performance.now(),
    /**
     * Runs a table discovery (a scan of low RAM, 1 MiB per read): the monitor passes one limiter for
     * all its probes (DISCOVERY_CONCURRENCY), so 1000 VMs starting together do not scan, and hold
     * 1 MiB buffers, all at once. Default: at once.
     */
    private readonly discoveries: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn(),
  ) {
    this.kind = signal === 'kernel' ? 'kernel-heartbeat' : 'agent-heartbeat';
    if (params.memory === 'file' && params.memPath === undefined) throw new RangeError('memPath: required with memory "file"');
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    if (target.qmp === undefined) return unknown('no QMP socket configured');
    if (target.layout === undefined) return unknown('no layout configured (the table this VM loads: `eve-diag ssdt build` JSON)');
    let layout: DiagLayout;
    try {
      layout = await this.#layout(target.layout);
    } catch (e) {
      return unknown(`layout ${target.layout}: ${errorText(e)}`, { layoutError: errorText(e) });
    }
    this.#kernelPeriodMs = layout.kernel.periodMs;
    const d = deadline(opts.signal, opts.timeoutMs);
    const base = { signal: this.signal, qmp: target.qmp };
    try {
      const session = await this.#open(target.qmp, target.layout, layout, d.signal);
      Object.assign(base, { memory: session.memoryChoice.path, memoryNote: session.memoryChoice.note });
      if (session.reader.address === undefined) {
        // The first scan of low RAM may outlast a short timeout: it runs in the background, and a
        // run that ends while it goes on cannot tell yet (QEMU answers: the scan is making reads).
        session.locating ??= this.#locate(session);
        // Leave time for the poll once the scan is done; give up on waiting a little before the deadline.
        const wait = deadline(d.signal, Math.max(0, d.remainingMs() - Math.min(200, d.remainingMs() / 5)));
        try {
          await raceSignal(session.locating, wait.signal);
        } catch (e) {
          if (!wait.expired && !d.expired) throw e;
          const ms = Math.round(this.now() - (session.locatingSince ?? this.now()));
          return unknown(`${this.signal} heartbeat: locating the table in guest RAM (${ms} ms so far)`, { ...base, locating: true });
        } finally {
          wait.dispose();
        }
        if (session.reader.address === undefined) {
          const why = session.locateError?.message ?? 'not found';
          session.locateError = undefined;
          return unknown(`${this.signal} heartbeat: table not found in guest RAM: ${why}`, { ...base, readError: why });
        }
      }
      const poll = await session.poller.poll(d.signal);
      return this.#pollResult(session, poll, { ...base });
    } catch (e) {
      if (d.signal.aborted) return deadlineResult(d, opts.timeoutMs, `${this.signal} heartbeat`, base);
      await this.#drop();
      // memory: procmem asked for and not possible here: a configuration problem, not a dead VM.
      if (e instanceof ProcmemUnavailableError) return unknown(`${this.signal} heartbeat: ${e.message}`, { ...base, readError: e.message });
      const code = errnoCode(e);
      return failure(`QMP ${target.qmp}: ${errorText(e)}`, { ...base, qmpError: errorText(e), ...(code ? { errno: code } : {}) });
    } finally {
      d.dispose();
    }
  }

  /**
   * The steady poll, answered at once: the session of the last run is still current (same QMP
   * connection, socket and layout), the table's address is known, and the poller can read without
   * QMP (HeartbeatPoller.pollSync). Anything else (first run, a reconnect, an event, a status refresh,
   * a rescan, an error) is undefined and takes `run`.
   */
  runSync(target: AppTarget): ProbeResult | undefined {
    const s = this.#session;
    const link = this.#link;
    if (s === undefined || link === undefined || s.locating !== undefined || s.qmpPath !== target.qmp || s.layoutPath !== target.layout) return undefined;
    if (link.path !== s.qmpPath || link.generation !== s.generation || link.clientSync() !== s.client) return undefined;
    const poll = s.poller.pollSync(this.signal);
    if (poll === undefined) return undefined;
    return this.#pollResult(s, poll, { signal: this.signal, qmp: s.qmpPath, memory: s.memoryChoice.path, memoryNote: s.memoryChoice.note });
  }

  /** A poll's probe result; `base` (the evidence so far) is the caller's own and becomes the evidence. */
  #pollResult(s: Session, poll: Poll, base: Record<string, unknown>): ProbeResult {
    if (poll.snapshot) base.tableAddress = addressText(s, poll.snapshot.address);
    return this.#result(poll.report, base, poll.error);
  }

  /** params.pollMs, else a quarter of the beat's period (once a layout was read), at least 100 ms. */
  intervalMs(): number | undefined {
    if (this.params.pollMs !== undefined) return this.params.pollMs;
    const period = this.signal === 'kernel' ? this.#kernelPeriodMs : (this.params.assess?.agentPeriodMs ?? 1000);
    return period === undefined ? undefined : Math.max(HEARTBEAT_POLL_MIN_MS, period / HEARTBEAT_POLLS_PER_PERIOD);
  }

  async close(): Promise<void> {
    await this.#drop();
    const link = this.#link;
    this.#link = undefined;
    if (link !== undefined) await this.links.release(link);
  }

  #result(report: HeartbeatReport, base: Record<string, unknown>, readError: Error | undefined): ProbeResult {
    const sig: SignalReport = report[this.signal];
    const other: SignalReport = report[this.signal === 'kernel' ? 'agent' : 'kernel'];
    // Built key by key, no spreads: this runs per VM per poll (bench/fleet).
    const evidence: Record<string, unknown> = base;
    evidence.status = sig.status;
    pickInto(evidence, sig);
    evidence.vm = report.vm;
    evidence.restarted = report.restarted;
    if (report.restartReason !== undefined) evidence.restartReason = report.restartReason;
    if (report.kernel.jitter !== undefined) evidence.jitter = report.kernel.jitter;
    if (report.kernel.guestIntervalMs !== undefined) evidence.guestIntervalMs = report.kernel.guestIntervalMs;
    if (this.signal === 'kernel' && report.kernel.stallAfterMs !== undefined) evidence.stallAfterMs = Math.round(report.kernel.stallAfterMs);
    evidence[this.signal === 'kernel' ? 'agent' : 'kernel'] = pickInto({ status: other.status }, other);
    if (readError !== undefined) evidence.readError = readError.message;
    const detail = `${this.signal} ${sig.status}: ${sig.detail}`;
    const outcome = outcomeOf(sig.status, this.signal, this.params.failOn ?? 'stalled');
    return { outcome, detail, evidence };
  }

  async #layout(path: string): Promise<DiagLayout> {
    let p = this.#layouts.get(path);
    if (p === undefined) {
      p = loadLayout(path);
      this.#layouts.set(path, p);
      // A file that could not be read is tried again next run.
      p.catch(() => this.#layouts.delete(path));
    }
    return p;
  }

  async #open(qmpPath: string, layoutPath: string, layout: DiagLayout, signal: AbortSignal): Promise<Session> {
    if (this.#link?.path !== qmpPath) {
      await this.#drop();
      if (this.#link !== undefined) await this.links.release(this.#link);
      this.#link = this.links.acquire(qmpPath);
    }
    const link = this.#link;
    const client = await link.client(signal);
    const key = `${qmpPath}\0${layoutPath}\0${layout.nonce}`;
    const s = this.#session;
    if (s !== undefined && s.generation === link.generation && s.client === client && s.key === key) return s;
    // A new connection to the same QEMU (the link lets go of an EVE VM's qmp when idle, `holdMs`):
    // the same process's memory, table and beat history go on over it. A new QEMU process is a new session.
    const m = s?.memory;
    if (s !== undefined && s.key === key && s.locating === undefined && m?.rebind !== undefined && m.alive !== undefined && (await m.alive())) {
      m.rebind(client);
      s.poller.rebind(client);
      s.client = client;
      s.generation = link.generation;
      return s;
    }
    await this.#drop();
    const { memory, choice } = await this.#memory(client, qmpPath, signal);
    const reader = new RegionReader(client, memory, layout, this.now);
    const poller = new HeartbeatPoller(client, reader, this.params.assess ?? {}, this.now);
    const session: Session = { generation: link.generation, key, qmpPath, layoutPath, client, memory, reader, poller, memoryChoice: choice };
    this.#session = session;
    return session;
  }

  /**
   * One discovery, not bound to any run's signal (a scan cut short by a 1 s timeout would never
   * finish). A QMP failure rejects (the caller reports the dead target); a table not found resolves
   * with `locateError` set, and the next run scans again.
   */
  #locate(session: Session): Promise<void> {
    session.locatingSince = this.now();
    const p = this.discoveries(() => session.reader.locate()).then(
      () => undefined,
      (e: unknown) => {
        if (e instanceof QmpError) throw e;
        session.locateError = e as Error;
      },
    );
    const done = p.finally(() => {
      if (session.locating === done) session.locating = undefined;
    });
    done.catch(() => undefined);
    return done;
  }

  /** The session's guest memory (host-reader/session.ts openGuestMemory: `auto` falls back to pmemsave, saying why). */
  async #memory(client: QmpClient, label: string, signal: AbortSignal): Promise<{ memory: GuestMemory; choice: MemoryChoice }> {
    const p = this.params;
    return openGuestMemory(client, {
      memory: p.memory ?? DEFAULT_MEMORY_PATH,
      qmpPath: label,
      signal,
      ...(p.memPath !== undefined ? { memPath: p.memPath } : {}),
      ...(p.pid !== undefined ? { pid: p.pid } : {}),
      ...(p.pidFile !== undefined ? { pidFile: p.pidFile } : {}),
    });
  }

  async #drop(): Promise<void> {
    const s = this.#session;
    this.#session = undefined;
    if (s === undefined) return;
    s.poller.close();
    await s.memory.close?.().catch(() => undefined);
  }
}

/** The signal's facts, added to `o` (returned). */
function pickInto(o: Record<string, unknown>, r: SignalReport): Record<string, unknown> {
  o.expectedPeriodMs = r.expectedPeriodMs;
  o.detail = r.detail;
  if (r.beats !== undefined) o.beats = r.beats;
  if (r.delta !== undefined) o.delta = r.delta;
  if (r.ageMs !== undefined) o.ageMs = Math.round(r.ageMs);
  if (r.ratePerSec !== undefined) o.ratePerSec = r.ratePerSec;
  return o;
}

/** The status-to-outcome table (see the module comment). */
export function outcomeOf(status: HeartbeatStatus, signal: HeartbeatSignal, failOn: 'late' | 'stalled'): ProbeResult['outcome'] {
  switch (status) {
    case 'alive':
    case 'restarted':
      return 'success';
    case 'stalled':
      return 'failure';
    case 'late':
      return failOn === 'late' ? 'failure' : 'unknown';
    case 'no-agent':
      return signal === 'agent' ? 'failure' : 'unknown';
    case 'paused':
    case 'waiting':
    case 'unavailable':
    case 'not-loaded':
    case 'unknown':
      return 'unknown';
  }
}
