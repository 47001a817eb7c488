import { readdir, stat } from 'node:fs/promises';
import { eveDomPaths } from '../host-reader/eve.js';
import { defaultScenarios, eveDomTarget, withPidFile, type AppConfig, type MonitorConfig } from './config.js';
import type { AppTarget } from './types.js';

/**
 * EVE autodiscovery: EVE runs each app VM with its sockets in `/run/hypervisor/kvm/<dom>/` (`qmp`,
 * `cons`; DESIGN, "EVE facts"). Every directory there with a `qmp` is a VM; each one that the
 * configuration neither names (an app whose `name` or `eveDom` is the domain) nor excludes gets a
 * default binding: QEMU's run state, the kernel heartbeat when a layout is configured for it
 * (`eve.layouts[dom]`, else `eve.layout`), and the console marks when it has a `cons`.
 *
 * `planDiscovery` is pure over a listing; `listEveDomains` is the thin reader that makes one.
 */

export interface DomainEntry {
  /** Directory name: EVE's domain name (`<uuid>.<version>.<n>`). */
  name: string;
  hasQmp: boolean;
  hasCons: boolean;
}

export interface DiscoveryPlan {
  apps: AppConfig[];
  /** Domains seen but not bound, and why. */
  skipped: { dom: string; reason: 'configured' | 'excluded' | 'no-qmp' }[];
}

/** `*` matches any run of characters; everything else is literal. */
export function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return re.test(name);
}

/** Default bindings for the domains in `listing` (pure). */
export function planDiscovery(listing: readonly DomainEntry[], config: Pick<MonitorConfig, 'eve' | 'apps' | 'defaults'>): DiscoveryPlan {
  const named = new Set<string>();
  for (const a of config.apps) {
    named.add(a.name);
    if (a.eveDom !== undefined) named.add(a.eveDom);
  }
  const plan: DiscoveryPlan = { apps: [], skipped: [] };
  for (const d of [...listing].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!d.hasQmp) {
      plan.skipped.push({ dom: d.name, reason: 'no-qmp' });
      continue;
    }
    if (named.has(d.name)) {
      plan.skipped.push({ dom: d.name, reason: 'configured' });
      continue;
    }
    if (config.eve.exclude.some((p) => globMatch(p, d.name))) {
      plan.skipped.push({ dom: d.name, reason: 'excluded' });
      continue;
    }
    const paths = eveDomTarget(config.eve.root, d.name);
    const target: AppTarget = { name: d.name, qmp: paths.qmp };
    if (d.hasCons) Object.assign(target, { console: paths.console, consoleLog: paths.consoleLog, consoleMux: true });
    const layout = config.eve.layouts[d.name] ?? config.eve.layout;
    if (layout !== undefined) target.layout = layout;
    // EVE starts QEMU with `-pidfile <dom>/pid`: the heartbeat's procmem path reads the pid there (and
    // checks that pid holds the QMP socket) before walking every process's fds for the socket's owner.
    const pidFile = eveDomPaths(d.name, config.eve.root).pidfile;
    const scenarios = withPidFile(defaultScenarios(target, config.defaults.timing), pidFile);
    plan.apps.push({
      name: d.name,
      eveDom: d.name,
      target,
      scenarios,
      diagnostics: config.eve.diagnostics,
      origin: 'eve',
    });
  }
  return plan;
}

/** Most directories looked at under the root (a sanity bound, EVE runs tens of VMs). */
export const MAX_DOMAINS = 4096;

/** The VM directories under `root`; a missing root is an empty listing (not an EVE node, or no VM yet). */
export async function listEveDomains(root: string): Promise<DomainEntry[]> {
  let names: string[];
  try {
    names = (await readdir(root, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw e;
  }
  const exists = (p: string) =>
    stat(p).then(
      () => true,
      () => false,
    );
  return Promise.all(
    names.slice(0, MAX_DOMAINS).map(async (name) => {
      const p = eveDomPaths(name, root);
      const [hasQmp, hasCons] = await Promise.all([exists(p.qmp), exists(p.console)]);
      return { name, hasQmp, hasCons };
    }),
  );
}

/** Lists the root and plans the bindings; nothing when autodiscovery is off. */
export async function discoverEveApps(config: Pick<MonitorConfig, 'eve' | 'apps' | 'defaults'>): Promise<DiscoveryPlan> {
  if (!config.eve.autodiscover) return { apps: [], skipped: [] };
  return planDiscovery(await listEveDomains(config.eve.root), config);
}
