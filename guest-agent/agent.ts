import { runChecks as realRunChecks, type CheckResult, type CheckSpec } from './checks.js';
import { diskPeriodMs, type AgentConfig } from './config.js';
import { DiskWriter, randomInstance, readUptimeMs } from './disk.js';
import { Heartbeat } from './heartbeat.js';
import { errText, type Log } from './log.js';
import { Marks } from './marks.js';
import { readProcStats, type ProcStats } from './procstat.js';
import { openPort as realOpenPort, Responder, type Port } from './responder.js';
import { ConsoleSink, SyslogSink, type LineSink } from './sinks.js';
import { findZone as realFindZone, ZoneTempReader, type ZoneLookup } from './sysfs.js';
import { Ticker, type Clock } from './timing.js';
import { AGENT_VERSION } from './version.js';

/**
 * The agent: the duties (heartbeat, marks, responder, heartbeat disk) built from one configuration and
 * driven by tickers on an injected clock. `apply` swaps the configuration (SIGHUP) and keeps the mark
 * sequence (and the heartbeat disk's seq and instance).
 * Every I/O dependency can be replaced, so tests run the whole agent against fakes.
 */
export interface AgentDeps {
  clock: Clock;
  log: Log;
  version?: string;
  findZone?: (root: string, zone: string) => Promise<ZoneLookup>;
  readTemp?: (path: string) => Promise<string>;
  readStats?: (root: string) => Promise<ProcStats>;
  runChecks?: (specs: readonly CheckSpec[]) => Promise<CheckResult[]>;
  openPort?: (path: string) => Promise<Port>;
  /** The sinks for a configuration; default: syslog (when on) and the console (when set). */
  sinks?: (config: AgentConfig, log: Log) => LineSink[];
}

/** How long a missing responder port waits before it is opened again. */
export const RESPONDER_RETRY_MS = 30_000;
/** How long a missing or failing heartbeat disk waits before it is opened again. */
export const DISK_RETRY_MS = 10_000;

export function defaultSinks(config: AgentConfig, log: Log): LineSink[] {
  const sinks: LineSink[] = [];
  if (config.syslog) sinks.push(new SyslogSink({ log }));
  if (config.console !== null) sinks.push(new ConsoleSink(config.console, log));
  return sinks;
}

export class Agent {
  #config: AgentConfig | undefined;
  #heartbeat: Heartbeat | undefined;
  #marks: Marks | undefined;
  #responder: Responder | undefined;
  #tickers: Ticker[] = [];
  #zoneReader: ZoneTempReader | undefined;
  #seq = 0;
  #disk: DiskWriter | undefined;
  /** The heartbeat disk's last seq and this agent's instance, kept across reloads. */
  #diskSeq = 0n;
  readonly #diskInstance = randomInstance();

  constructor(private readonly deps: AgentDeps) {}

  get config(): AgentConfig | undefined {
    return this.#config;
  }
  get heartbeat(): Heartbeat | undefined {
    return this.#heartbeat;
  }
  get marks(): Marks | undefined {
    return this.#marks;
  }
  get responder(): Responder | undefined {
    return this.#responder;
  }
  get disk(): DiskWriter | undefined {
    return this.#disk;
  }

  /** Builds the duties for `config` (replacing any running ones) and starts them. */
  apply(config: AgentConfig): void {
    this.stop();
    this.#config = config;
    const { clock, log } = this.deps;
    const d = this.deps;
    const readStats = () => (d.readStats ?? readProcStats)(config.root);
    if (config.periodMs > 0) {
      const reader = new ZoneTempReader();
      this.#zoneReader = reader;
      const hb = new Heartbeat(
        { zone: config.zone, retryMs: config.zoneRetryMs },
        {
          findZone: (zone) => (d.findZone ?? realFindZone)(config.root, zone),
          readTemp: d.readTemp ?? ((path) => reader.read(path)),
          log,
        },
      );
      this.#heartbeat = hb;
      this.#tickers.push(new Ticker(clock, config.periodMs, (now) => hb.step(now), (e) => log.problem('heartbeat:bug', `heartbeat: ${errText(e)}`)));
    }
    if (config.markPeriodMs > 0) {
      const marks = new Marks(
        config.checks,
        {
          version: d.version ?? AGENT_VERSION,
          readStats,
          runChecks: d.runChecks ?? realRunChecks,
          sinks: (d.sinks ?? defaultSinks)(config, log),
          log,
        },
        this.#seq,
      );
      this.#marks = marks;
      this.#tickers.push(
        new Ticker(
          clock,
          config.markPeriodMs,
          () => marks.step(),
          (e) => log.problem('marks:bug', `marks: ${errText(e)}`),
        ),
      );
    }
    if (config.responder !== null) {
      this.#responder = new Responder(config.responder, RESPONDER_RETRY_MS, {
        openPort: d.openPort ?? realOpenPort,
        readStats,
        log,
        later: (fn, ms) => {
          const h = clock.setTimeout(fn, ms);
          return () => clock.clearTimeout(h);
        },
      });
      this.#responder.start().catch((e: unknown) => log.problem('responder:bug', `responder: ${errText(e)}`));
    }
    if (config.disk !== null) {
      const periodMs = diskPeriodMs(config);
      const disk = new DiskWriter(
        { path: config.disk.path, slots: config.disk.slots, periodMs, retryMs: DISK_RETRY_MS, instance: this.#diskInstance, lastSeq: this.#diskSeq },
        { log, uptimeMs: () => readUptimeMs(config.root) },
      );
      this.#disk = disk;
      this.#tickers.push(new Ticker(clock, periodMs, (now) => disk.step(now), (e) => log.problem('disk:bug', `disk heartbeat: ${errText(e)}`)));
    }
    for (const t of this.#tickers) t.start();
  }

  /** One mark now, outside the schedule (`--once`). */
  async markOnce(config: AgentConfig): Promise<string> {
    const d = this.deps;
    const marks = new Marks(
      config.checks,
      {
        version: d.version ?? AGENT_VERSION,
        readStats: () => (d.readStats ?? readProcStats)(config.root),
        runChecks: d.runChecks ?? realRunChecks,
        sinks: (d.sinks ?? defaultSinks)(config, d.log),
        log: d.log,
      },
      this.#seq,
    );
    const line = await marks.step();
    this.#seq = marks.seq;
    return line;
  }

  /** Stops every duty. In-flight steps finish on their own; nothing new starts. */
  stop(): void {
    // The sequence goes on in the next configuration (Marks numbers a mark when its step starts).
    if (this.#marks !== undefined) this.#seq = this.#marks.seq;
    for (const t of this.#tickers) t.stop();
    this.#tickers = [];
    this.#responder?.stop();
    this.#responder = undefined;
    if (this.#disk !== undefined) this.#diskSeq = this.#disk.seq;
    this.#disk?.close();
    this.#disk = undefined;
    this.#zoneReader?.close();
    this.#zoneReader = undefined;
    this.#heartbeat = undefined;
    this.#marks = undefined;
  }
}

/** The start message: what the agent is going to do. */
export function describeDuties(c: AgentConfig, source: string): string {
  const parts = [
    c.periodMs > 0 ? `heartbeat ${c.zone} every ${c.periodMs / 1000} s` : 'no heartbeat',
    c.markPeriodMs > 0
      ? `marks every ${c.markPeriodMs / 1000} s to ${[c.syslog ? 'syslog' : '', c.console ?? ''].filter((s) => s !== '').join(', ') || 'nowhere'}`
      : 'no marks',
  ];
  if (c.checks.length > 0) parts.push(`checks ${c.checks.map((k) => k.name).join(', ')}`);
  if (c.responder !== null) parts.push(`responder on ${c.responder}`);
  if (c.disk !== null) parts.push(`heartbeat disk ${c.disk.path} every ${diskPeriodMs(c) / 1000} s (${c.disk.slots} slots)`);
  return `${parts.join('; ')} (config: ${source})`;
}
