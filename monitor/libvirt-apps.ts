/**
 * Binds the config's libvirt apps to their domains when the monitor starts: each gets a QMP bridge
 * (host-reader/libvirt), the heartbeats read QEMU's pid from libvirt's pidfile, and the console log
 * is the one the domain XML names unless the app gives one. Apps that named no scenario get the
 * default ones for what is now known. The XML is read once: a domain redefined with another console
 * log later keeps the first.
 */
import { openLibvirtTarget, type LibvirtTarget, type OpenLibvirtOptions } from '../host-reader/libvirt/index.js';
import type { LibvirtDomainRef } from '../host-reader/libvirt/domain-ref.js';
import { defaultScenarios, withPidFile, type AppConfig } from './config.js';
import type { LogRecord } from './manager.js';
import type { ScenarioTiming } from './types.js';

export interface LibvirtBinding {
  /** Every app, the libvirt ones with their targets bound; an app whose bridge could not open is left out (logged). */
  apps: AppConfig[];
  close(): Promise<void>;
}

export interface BindLibvirtOptions {
  timing: ScenarioTiming;
  log: (r: LogRecord) => void;
  /** Default openLibvirtTarget (tests give a fake link through it). */
  open?: (ref: LibvirtDomainRef, o: OpenLibvirtOptions) => Promise<LibvirtTarget>;
}

export async function bindLibvirtApps(apps: readonly AppConfig[], o: BindLibvirtOptions): Promise<LibvirtBinding> {
  const open = o.open ?? openLibvirtTarget;
  const opened: LibvirtTarget[] = [];
  const out: AppConfig[] = [];
  for (const app of apps) {
    if (app.libvirt === undefined) {
      out.push(app);
      continue;
    }
    const { ref } = app.libvirt;
    let lv: LibvirtTarget;
    try {
      lv = await open(ref, { log: (level, msg) => o.log({ level, msg, app: app.name }) });
    } catch (e) {
      o.log({ level: 'error', msg: 'libvirt: cannot open the QMP bridge; the app is not watched', app: app.name, domain: ref.domain, error: String((e as Error).message) });
      continue;
    }
    opened.push(lv);
    if (lv.xmlError !== undefined) o.log({ level: 'warn', msg: 'libvirt: cannot read the domain XML (no console log from it)', app: app.name, domain: ref.domain, error: lv.xmlError });
    const target = { ...app.target, qmp: lv.qmpPath, ...(app.target.consoleLog === undefined && lv.consoleLog !== undefined ? { consoleLog: lv.consoleLog } : {}) };
    const scenarios = withPidFile(app.libvirt.defaultScenarios ? defaultScenarios(target, o.timing) : app.scenarios, lv.pidFile);
    o.log({ level: 'info', msg: 'libvirt: domain bound', app: app.name, domain: ref.domain, uri: ref.uri, pidFile: lv.pidFile, consoleLog: target.consoleLog ?? null, scenarios: scenarios.map((s) => s.name) });
    out.push({ ...app, target, scenarios });
  }
  return { apps: out, close: async () => void (await Promise.all(opened.map((t) => t.close()))) };
}
