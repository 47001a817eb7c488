import type { Command } from 'commander';
import { connectQmp } from '../monitor/diagnostics/index.js';
import { diagnoseApp, openSpool } from '../monitor/daemon.js';
import { discoverEveApps } from '../monitor/discovery.js';
import { bindLibvirtApps } from '../monitor/libvirt-apps.js';
import { VERDICTS } from '../monitor/metrics.js';
import type { Verdict } from '../monitor/types.js';
import { loadMonitorConfig } from './monitor.js';
import { UsageError } from './usage-error.js';

interface DiagnoseFlags {
  config: string;
  app: string;
  spool?: string;
  verdict: string;
  json?: boolean;
}

/**
 * `eve-diag diagnose --app NAME`: run the app's diagnostic scenario once, now, and write the report
 * bundle. It opens its own QMP connection: QEMU serves one QMP client at a time, so while a monitor
 * holds the VM's QMP socket this waits for it (give the monitor `qmp.holdSeconds`).
 */
export async function diagnose(flags: DiagnoseFlags, out: (s: string) => void, err: (s: string) => void): Promise<void> {
  if (!(VERDICTS as readonly string[]).includes(flags.verdict)) throw new UsageError('--verdict', flags.verdict, `one of ${VERDICTS.join(', ')}`);
  const config = await loadMonitorConfig(flags.config);
  const apps = [...config.apps, ...(await discoverEveApps(config)).apps];
  const named = apps.find((a) => a.name === flags.app);
  if (!named) throw new UsageError('--app', flags.app, `no such app in ${flags.config} (apps: ${apps.map((a) => a.name).join(', ') || 'none'})`);
  if (named.diagnostics.collectors.length === 0) throw new UsageError('--app', flags.app, 'its diagnostic scenario has no collectors');
  const n = named.diagnostics.collectors.length;
  const log = (r: { level: string; msg: string }) => err(`${r.level}: ${r.msg}`);
  const spool = openSpool({ ...config.spool, dir: flags.spool ?? config.spool.dir }, log);
  // A libvirt app's QMP socket is a bridge opened now (and closed after).
  const libvirt = await bindLibvirtApps([named], { timing: config.defaults.timing, log });
  const app = libvirt.apps[0];
  if (app === undefined) {
    await libvirt.close();
    throw new Error(`${flags.app}: cannot reach its libvirt domain (see above)`);
  }
  const b = await diagnoseApp(app, {
    qmpConnector: connectQmp,
    spool,
    verdict: flags.verdict as Verdict,
    evidence: { requestedBy: 'eve-diag diagnose' },
    onStep: (s) => err(`[${s.index + 1}/${n}] ${s.kind}: ${s.status}, ${s.durationMs} ms: ${s.summary}`),
  }).finally(() => libvirt.close());
  if (flags.json) out(JSON.stringify({ id: b.id, dir: b.dir, manifest: b.manifest }));
  else out(`report ${b.id} written to ${b.dir}`);
}

export function register(program: Command, out: (s: string) => void, err: (s: string) => void): void {
  program
    .command('diagnose')
    .description("run an app's diagnostic scenario once, now, and write the report bundle into the spool")
    .requiredOption('--config <file>', 'the monitor configuration')
    .requiredOption('--app <name>', 'the app (VM) as named in the configuration or found by EVE discovery')
    .option('--spool <dir>', 'write the bundle here instead of the configured spool')
    .option('--verdict <verdict>', 'the verdict to record in the report', 'unknown')
    .option('--json', 'print the bundle id, directory and manifest as JSON')
    .action(async (flags: DiagnoseFlags) => diagnose(flags, out, err));
}
