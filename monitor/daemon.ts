import { readFile } from 'node:fs/promises';
import { realClock, type Clock } from '../util/clock.js';
import type { Classification, HostPressure } from './classify.js';
import { ConfigError, type AppConfig, type CollectorConfig, type MonitorConfig } from './config.js';
import {
  ConsoleCaptureCollector,
  HmpRegistersCollector,
  ErstLogCollector,
  GdbStacksCollector,
  HostStateCollector,
  MemoryDumpCollector,
  NmiCollector,
  QmpStateCollector,
  runDiagnostics,
  ScreendumpCollector,
  SysrqCollector,
  type QmpConnector,
  type StepResult,
} from './diagnostics/index.js';
import { discoverEveApps } from './discovery.js';
import { bindLibvirtApps } from './libvirt-apps.js';
import { Manager, type LogRecord } from './manager.js';
import type { MonitorMetrics } from './metrics.js';
import { QmpLinks } from './probes/qmp-link.js';
import type { TimelineSample, WrittenBundle } from './report/index.js';
import { Spool } from './report/spool.js';
import { ControllerClient } from './controller-client.js';
import { Shipper } from './shipper.js';
import type { VerdictEvent } from '../protocol/controller-api.js';
import type { Collector, Verdict } from './types.js';
import { linkConnector } from './diagnostics/common.js';
import { VcpuPressureSampler } from './vcpu-pressure.js';

/** How often the daemon cleans the spool and checks its quota (besides before every write). */
export const SPOOL_MAINTAIN_MS = 10 * 60 * 1000;

/** Collector kinds a config may name (config validation uses this list). */
export const COLLECTOR_KINDS = ['console-capture', 'sysrq', 'qmp-state', 'hmp-registers', 'host-state', 'erst-log', 'gdb-stacks', 'nmi', 'memory-dump', 'screendump'] as const;

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
const bool = (v: unknown) => (typeof v === 'boolean' ? v : undefined);
const strs = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** A collector instance for one configured step. Throws TypeError for an unknown kind (a config bug). */
export function createCollector(c: CollectorConfig, qmpConnector: QmpConnector, ctx: { spoolDir?: string } = {}): Collector {
  const p = c.params;
  switch (c.type) {
    case 'console-capture':
      return new ConsoleCaptureCollector(defined({ name: str(p['name']) }));
    case 'sysrq': {
      const keys = str(p['keys']) ?? strs(p['keys']);
      const method = str(p['method']) as 'break' | 'send-key' | 'auto' | undefined;
      return new SysrqCollector(
        defined({ keys, method, allowUnsafe: bool(p['allowUnsafe']), fallbackToSendKey: bool(p['fallbackToSendKey']), quietMs: num(p['quietMs']), chardevId: str(p['chardevId']), qmpConnector }),
      );
    }
    case 'qmp-state':
      return new QmpStateCollector(defined({ commands: strs(p['commands']), qmpConnector }));
    case 'hmp-registers':
      return new HmpRegistersCollector(defined({ command: str(p['command']), qmpConnector }));
    case 'host-state':
      return new HostStateCollector(defined({ sampleMs: num(p['sampleMs']), qmpConnector }));
    case 'erst-log':
      return new ErstLogCollector(defined({ maxFileBytes: num(p['maxFileBytes']) }));
    case 'nmi':
      return new NmiCollector(defined({ captureMs: num(p['captureMs']), quietMs: num(p['quietMs']), headerTimeoutMs: num(p['headerTimeoutMs']), qmpConnector }));
    case 'memory-dump':
      return new MemoryDumpCollector(
        defined({ dir: str(p['dir']) ?? ctx.spoolDir, maxRamBytes: num(p['maxRamBytes']), format: str(p['format']) as 'auto' | 'kdump-zlib' | 'elf' | undefined, qmpConnector }),
      );
    case 'screendump':
      return new ScreendumpCollector(defined({ device: str(p['device']), head: num(p['head']), qmpConnector }));
    case 'gdb-stacks':
      return new GdbStacksCollector(defined({ maxCpus: num(p['maxCpus']), stackBytes: num(p['stackBytes']), maxFrames: num(p['maxFrames']), qmpConnector }));
    default:
      throw new TypeError(`unknown collector type ${JSON.stringify(c.type)} (known: ${COLLECTOR_KINDS.join(', ')})`);
  }
}

export interface DiagnoseOptions {
  qmpConnector: QmpConnector;
  spool: Spool;
  verdict: Verdict;
  evidence?: Record<string, unknown>;
  /** The heartbeat and run-state samples before the verdict, oldest first. */
  timeline?: readonly TimelineSample[];
  signal?: AbortSignal;
  onStep?: (s: StepResult) => void;
}

/** Run the app's diagnostic scenario once and write the report bundle into the spool. */
export async function diagnoseApp(app: AppConfig, o: DiagnoseOptions): Promise<WrittenBundle> {
  const steps = app.diagnostics.collectors.map((c) => ({ collector: createCollector(c, o.qmpConnector, { spoolDir: o.spool.dir }), timeoutMs: c.timeoutMs, maxBytes: c.maxBytes }));
  const run = await runDiagnostics(app.target, steps, { ...(o.signal ? { signal: o.signal } : {}), ...(o.onStep ? { onStep: o.onStep } : {}) });
  return o.spool.write({
    app: app.name,
    verdict: o.verdict,
    evidence: { ...(o.evidence ?? {}), diagnostics: { durationMs: run.durationMs, budgetExhausted: run.budgetExhausted } },
    ...(o.timeline !== undefined ? { timeline: o.timeline } : {}),
    steps: run.steps,
  });
}

/**
 * The shipper to the configured controller, its token (and CA) read from their files; a file that
 * cannot be read or holds no token is a ConfigError naming the field.
 */
export async function openShipper(c: NonNullable<MonitorConfig['controller']>, spool: Spool, log: (r: LogRecord) => void, metrics?: MonitorMetrics): Promise<Shipper> {
  const bad = (field: string, file: string, message: string, cause?: unknown) => new ConfigError(file, [{ file, path: `controller.${field}`, message }], { cause });
  const token = (
    await readFile(c.tokenFile, 'utf8').catch((e: unknown) => {
      throw bad('tokenFile', c.tokenFile, `cannot be read: ${(e as Error).message}`, e);
    })
  ).trim();
  if (!/^[A-Za-z0-9_-]{20,128}$/.test(token)) throw bad('tokenFile', c.tokenFile, 'holds no token (make one with: eve-diag controller token create --node NAME)');
  const ca =
    c.caFile === undefined
      ? undefined
      : await readFile(c.caFile).catch((e: unknown) => {
          throw bad('caFile', c.caFile as string, `cannot be read: ${(e as Error).message}`, e);
        });
  const client = new ControllerClient({ url: c.url, token, timeoutMs: c.timeoutMs, ...(ca ? { ca } : {}) });
  return new Shipper({ spool, client, log, ...(metrics ? { metrics } : {}) });
}

/** The verdict change the controller's fleet view shows, with the heartbeats as the app's probes saw them. */
export function verdictEvent(app: AppConfig, c: Classification): Omit<VerdictEvent, 'id'> {
  const beat = (probe: string) => {
    const ev = c.evidence.find((o) => o.probe === probe)?.last?.evidence;
    if (ev === undefined) return undefined;
    const out: { status?: string; beats?: number; ageMs?: number } = {};
    if (typeof ev['status'] === 'string') out.status = ev['status'];
    if (typeof ev['beats'] === 'number') out.beats = ev['beats'];
    if (typeof ev['ageMs'] === 'number') out.ageMs = Math.round(ev['ageMs']);
    return out;
  };
  const kernel = beat('kernel-heartbeat');
  const agent = beat('agent-heartbeat');
  return { app: app.name, verdict: c.verdict, reason: c.reason.slice(0, 2000), at: new Date().toISOString(), ...(kernel ? { kernel } : {}), ...(agent ? { agent } : {}) };
}

/** The configured spool, its evictions and clean-ups logged and counted. */
export function openSpool(config: MonitorConfig['spool'], log: (r: LogRecord) => void, metrics?: MonitorMetrics): Spool {
  return new Spool({
    dir: config.dir,
    quotaBytes: config.quotaBytes,
    maxBundleBytes: config.maxBundleBytes,
    events: {
      evicted: (e) => {
        metrics?.spoolEvictions.inc({ delivered: String(e.delivered) });
        if (e.delivered) log({ level: 'info', msg: 'spool: delivered report evicted', report: e.id, bytes: e.bytes });
        else log({ level: 'error', msg: 'spool: undelivered report dropped (quota)', report: e.id, bytes: e.bytes, quotaBytes: config.quotaBytes });
      },
      cleaned: (n) => log({ level: 'warn', msg: 'spool: removed temporary directories of a crashed writer', count: n }),
    },
  });
}

/** Host CPU pressure (PSI `some avg10`), when the kernel has PSI. */
export async function readHostPressure(procRoot = '/proc'): Promise<HostPressure | undefined> {
  const text = await readFile(`${procRoot}/pressure/cpu`, 'utf8').catch(() => undefined);
  const m = text === undefined ? null : /^some avg10=([\d.]+)/m.exec(text);
  return m ? { cpuSomeAvg10: Number(m[1]), detail: `PSI cpu some avg10=${m[1]}` } : undefined;
}

/** How long one read of /proc/pressure/cpu serves every classification (PSI avg10 is a 10 s average). */
export const HOST_PRESSURE_CACHE_MS = 1000;

/**
 * readHostPressure shared by all apps for HOST_PRESSURE_CACHE_MS: every probe result is classified,
 * and a file read per classification is most of the monitor's CPU with 1000 VMs.
 */
export function cachedHostPressure(clock: Clock, read: () => Promise<HostPressure | undefined> = () => readHostPressure()): () => Promise<HostPressure | undefined> {
  let last: { at: number; value: Promise<HostPressure | undefined> } | undefined;
  return () => {
    const now = clock.now();
    if (last === undefined || now - last.at >= HOST_PRESSURE_CACHE_MS) last = { at: now, value: read().catch(() => undefined) };
    return last.value;
  };
}

export interface MonitorRunOptions {
  log: (r: LogRecord) => void;
  metrics?: MonitorMetrics;
  clock?: Clock;
  /** How often EVE autodiscovery looks for VMs appearing and going away. Default 10 s. */
  rediscoverMs?: number;
  signal: AbortSignal;
}

/**
 * The daemon's body: bind the configured and discovered apps to workers, follow VMs appearing and
 * going away, run diagnostics into the spool on trouble; returns when `signal` aborts (SIGTERM).
 */
export async function runMonitor(config: MonitorConfig, o: MonitorRunOptions): Promise<void> {
  const clock = o.clock ?? realClock;
  const links = new QmpLinks({ connectTimeoutMs: config.qmp.connectTimeoutMs, ...(config.qmp.holdMs ? { holdMs: config.qmp.holdMs } : {}) });
  const connector = linkConnector(links);
  const spool = openSpool(config.spool, o.log, o.metrics);
  // One spool scan at a time: a burst of diagnoses (many VMs failing at once) asks for one more scan
  // after the running one, not one scan each (each lists every bundle: quadratic in the burst).
  let spoolScan: Promise<void> | undefined;
  let spoolRescan = false;
  const updateSpoolMetrics = async (): Promise<void> => {
    if (o.metrics === undefined) return;
    const m = o.metrics;
    if (spoolScan !== undefined) {
      spoolRescan = true;
      return spoolScan;
    }
    spoolScan = (async () => {
      do {
        spoolRescan = false;
        const u = await spool.usage().catch(() => undefined);
        if (u === undefined) continue;
        m.spoolBytes.set(u.bytes);
        m.spoolBundles.set({ state: 'delivered' }, u.delivered);
        m.spoolBundles.set({ state: 'undelivered' }, u.undelivered);
      } while (spoolRescan);
    })().finally(() => (spoolScan = undefined));
    return spoolScan;
  };
  // Start clean: temporaries of a crashed run, a spool over its quota.
  const maintain = async () => {
    await spool.maintain().catch((e: unknown) => o.log({ level: 'error', msg: 'spool maintenance failed', error: String((e as Error).message) }));
    await updateSpoolMetrics();
  };
  await maintain();
  let lastMaintain = clock.now();
  const shipper = config.controller === undefined ? undefined : await openShipper(config.controller, spool, o.log, o.metrics);
  const manager = new Manager({
    clock,
    links,
    log: o.log,
    ...(shipper ? { onVerdict: (app: AppConfig, c: Classification) => shipper.enqueueEvent(verdictEvent(app, c)) } : {}),
    ...(o.metrics ? { metrics: o.metrics } : {}),
    hostPressure: cachedHostPressure(clock),
    vcpuPressure: new VcpuPressureSampler({ clock }),
    diagnose: async ({ app, classification, timeline, signal }) => {
      const b = await diagnoseApp(app, {
        qmpConnector: connector,
        spool,
        verdict: classification.verdict,
        evidence: { reason: classification.reason, runState: classification.runState, observations: classification.evidence, host: classification.host },
        timeline,
        signal,
      });
      await updateSpoolMetrics();
      shipper?.kick();
      return b.dir;
    },
  });
  const libvirt = await bindLibvirtApps(config.apps, { timing: config.defaults.timing, log: o.log });
  const appsNow = async () => {
    try {
      const plan = await discoverEveApps(config);
      return [...libvirt.apps, ...plan.apps];
    } catch (e) {
      o.log({ level: 'warn', msg: 'EVE discovery failed', error: String((e as Error).message) });
      return libvirt.apps;
    }
  };
  shipper?.start();
  try {
    await manager.sync(await appsNow());
    o.log({ level: 'info', msg: 'monitor started', apps: manager.status().map((s) => s.app), ...(config.controller ? { controller: config.controller.url } : {}) });
    while (!o.signal.aborted) {
      await clock.sleep(o.rediscoverMs ?? 10_000, o.signal).catch(() => undefined);
      if (o.signal.aborted) break;
      if (config.eve.autodiscover) await manager.sync(await appsNow());
      if (clock.now() - lastMaintain >= SPOOL_MAINTAIN_MS) {
        lastMaintain = clock.now();
        await maintain();
      }
    }
  } finally {
    await manager.stop();
    await shipper?.stop();
    await links.closeAll();
    await libvirt.close();
    o.log({ level: 'info', msg: 'monitor stopped' });
  }
}
