#!/usr/bin/env node
/**
 * The one installer of the Debian packages eve-diag's demo and tests need, used by `npm run demo`,
 * `npm test` and `.ci/run`:
 *
 *     node dist/build/setup.js demo|test [--dry-run] [--json]
 *
 * It asks dpkg what is installed and apt for nothing that is already there. As root it installs what
 * is missing (`apt-get update`, then `apt-get install --no-install-recommends`), printing each step;
 * `test` also lists bookworm-backports in apt's sources, pinned low (Pin-Priority 50: nothing is ever
 * installed or upgraded from it by itself), for the Linux 6.12 guest kernel (build/kernels.ts). As
 * another user it prints the one command to run as root and exits 1. `--dry-run` prints the plan.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BACKPORTS_PIN_FILE, BACKPORTS_SOURCES_FILE } from './kernels.js';
import { isMainModule } from '../util/main-module.js';

/** What each target needs, and why (the reason is printed with the plan). */
export const PACKAGES = {
  demo: {
    'qemu-system-x86': 'QEMU, to boot the demo VM',
    seabios: 'its firmware',
    'linux-image-amd64': 'the Debian kernel the VM boots',
    'busybox-static': 'the VM’s initramfs',
  },
  test: {
    'qemu-system-x86': 'QEMU for the real-guest tests',
    seabios: 'SeaBIOS firmware',
    ovmf: 'UEFI firmware (OVMF)',
    'acpica-tools': 'iasl, the oracle our AML is checked against',
    'linux-image-amd64': 'the Debian 6.1 kernel the test guests boot',
    'busybox-static': 'the test guests’ initramfs',
    cpio: 'reading the initramfs back in tests',
    'xz-utils': 'unpacking Linux 6.12’s .ko.xz modules',
    kmod: 'depmod, the module dependencies of a fetched guest kernel',
    dash: 'the POSIX-sh agent under dash',
    systemd: 'systemd-analyze verifies the agent’s units and the host’s (packaging/systemd)',
    'libguestfs-tools': 'guestfish and qemu-img for `bake image`',
    'postgresql-15': 'PostgreSQL 15, the controller’s shared store (a cluster per test run)',
    chromium: 'Chromium, the dashboard’s browser tests (driven by playwright-core)',
    makedumpfile: 'reads guest memory dumps back (makedumpfile --dump-dmesg) in the memory-dump guest test',
    gcc: 'builds the test guest’s static kexec tool (test/helpers/kexec.ts)',
    'libc6-dev': 'the static libc that tool links',
    'libvirt-daemon-system': 'libvirtd, run by the libvirt tests (session mode, on temporary paths)',
    'libvirt-daemon-driver-qemu': 'its QEMU driver',
    'libvirt-clients': 'virsh, through which eve-diag reaches a libvirt domain',
  },
} as const satisfies Record<string, Record<string, string>>;
export type SetupTarget = keyof typeof PACKAGES;

/** The apt source lines for bookworm-backports, and the pin that keeps it from upgrading anything. */
export const BACKPORTS_SOURCES = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;
export const BACKPORTS_PIN = `Package: *
Pin: release n=bookworm-backports
Pin-Priority: 50
`;

export interface MachineState {
  /** Packages dpkg has installed (status `ii`). */
  installed: ReadonlySet<string>;
  /** apt lists bookworm-backports already (ours or the user's own). */
  backports: boolean;
}

export interface SetupPlan {
  target: SetupTarget;
  missing: string[];
  addBackports: boolean;
  /** What root would run, in order (the files are written by this program, not by a shell). */
  steps: string[];
}

/** The packages of `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\n'` output that are installed. */
export function parseDpkgQuery(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const [pkg, status] = line.split('\t');
    // Multi-arch packages print as name:arch.
    if (pkg !== undefined && pkg !== '' && status?.startsWith('ii')) out.add(pkg.replace(/:[a-z0-9]+$/, ''));
  }
  return out;
}

/** Whether `apt-cache policy` output names the bookworm-backports suite. */
export function aptListsBackports(policy: string): boolean {
  return /\bn=bookworm-backports\b|\bbookworm-backports\/main\b/.test(policy);
}

/** What must happen on a machine in `state` for `target`. Pure. */
export function planSetup(target: SetupTarget, state: MachineState): SetupPlan {
  const missing = Object.keys(PACKAGES[target]).filter((p) => !state.installed.has(p));
  const addBackports = target === 'test' && !state.backports;
  const steps: string[] = [];
  if (addBackports) steps.push(`write ${BACKPORTS_SOURCES_FILE} (bookworm-backports) and ${BACKPORTS_PIN_FILE} (Pin-Priority 50)`);
  if (missing.length > 0 || addBackports) steps.push('apt-get update -q');
  if (missing.length > 0) steps.push(`apt-get install -y -q --no-install-recommends ${missing.join(' ')}`);
  return { target, missing, addBackports, steps };
}

function run(cmd: string, args: readonly string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((res) =>
    execFile(cmd, args, { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout) =>
      res({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 127, stdout }),
    ),
  );
}

/** This machine, as dpkg and apt see it. */
export async function machineState(target: SetupTarget): Promise<MachineState> {
  // dpkg-query exits 1 when some package is unknown; what it printed still counts.
  const q = await run('dpkg-query', ['-W', '-f', '${Package}\t${db:Status-Abbrev}\n', ...Object.keys(PACKAGES[target])]);
  if (q.code === 127) throw new Error('dpkg-query not found: eve-diag sets up Debian (or Debian-based) machines only');
  const policy = target === 'test' ? (await run('apt-cache', ['policy'])).stdout : '';
  // What apt lists, not whether our file exists: a sources file written but not yet `apt-get update`d does not count.
  return { installed: parseDpkgQuery(q.stdout), backports: target !== 'test' || aptListsBackports(policy) };
}

function runLoud(cmd: string, args: readonly string[], log: (s: string) => void): Promise<void> {
  log(`eve-diag setup: ${cmd} ${args.join(' ')}`);
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    child.once('error', rej);
    child.once('exit', (code, signal) => (code === 0 ? res() : rej(new Error(`${cmd} failed (${signal ?? `exit ${code}`})`))));
  });
}

export interface SetupIo {
  log: (s: string) => void;
  uid: number | undefined;
  /** How a user re-runs this as root. */
  rootCommand: string;
}

/** Carries out `plan`: returns the exit status (0 done or nothing to do, 1 not root or apt failed). */
export async function executeSetup(plan: SetupPlan, io: SetupIo): Promise<number> {
  const what = Object.entries(PACKAGES[plan.target]);
  if (plan.steps.length === 0) {
    io.log(`eve-diag setup (${plan.target}): ok, installed: ${what.map(([p]) => p).join(', ')}`);
    return 0;
  }
  const missingText = plan.missing.map((p) => `${p} (${(PACKAGES[plan.target] as Record<string, string>)[p]})`).join(', ');
  if (io.uid !== 0) {
    io.log(`eve-diag setup (${plan.target}): missing: ${missingText || 'none'}${plan.addBackports ? '; apt does not list bookworm-backports' : ''}`);
    io.log(`run as root:\n  ${io.rootCommand}`);
    return 1;
  }
  io.log(`eve-diag setup (${plan.target}): installing ${missingText || 'nothing'}${plan.addBackports ? '; adding bookworm-backports to apt (pinned at 50)' : ''}`);
  if (plan.addBackports) {
    await mkdir(dirname(BACKPORTS_SOURCES_FILE), { recursive: true });
    await writeFile(BACKPORTS_SOURCES_FILE, BACKPORTS_SOURCES);
    await mkdir(dirname(BACKPORTS_PIN_FILE), { recursive: true });
    await writeFile(BACKPORTS_PIN_FILE, BACKPORTS_PIN);
    io.log(`eve-diag setup: wrote ${BACKPORTS_SOURCES_FILE} and ${BACKPORTS_PIN_FILE}`);
  }
  try {
    await runLoud('apt-get', ['update', '-q'], io.log);
    if (plan.missing.length > 0) await runLoud('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...plan.missing], io.log);
  } catch (e) {
    io.log(`eve-diag setup: ${(e as Error).message}`);
    return 1;
  }
  io.log(`eve-diag setup (${plan.target}): done`);
  return 0;
}

/** `node dist/build/setup.js demo|test [--dry-run] [--json]`. Returns the exit status. */
export async function setupMain(argv: readonly string[], log: (s: string) => void = (s) => console.error(s)): Promise<number> {
  const target = argv.find((a) => !a.startsWith('--'));
  const flags = new Set(argv.filter((a) => a.startsWith('--')));
  const unknown = [...flags].filter((f) => f !== '--dry-run' && f !== '--json' && f !== '--help');
  if (flags.has('--help')) {
    log('usage: node dist/build/setup.js demo|test [--dry-run] [--json]\n  installs (as root) the Debian packages the demo or the tests need; --dry-run prints the plan only');
    return 0;
  }
  if (target === undefined || !(target in PACKAGES) || unknown.length > 0) {
    log(`eve-diag setup: ${unknown.length > 0 ? `unknown flag ${unknown[0]}` : `TARGET: demo or test (got ${JSON.stringify(target ?? '')})`}`);
    return 2;
  }
  const t = target as SetupTarget;
  const plan = planSetup(t, await machineState(t));
  if (flags.has('--json')) console.log(JSON.stringify(plan));
  if (flags.has('--dry-run')) {
    if (!flags.has('--json')) log(plan.steps.length === 0 ? `eve-diag setup (${t}): nothing to do` : `eve-diag setup (${t}) would:\n${plan.steps.map((s) => `  ${s}`).join('\n')}`);
    return 0;
  }
  const self = fileURLToPath(import.meta.url);
  return executeSetup(plan, { log, uid: process.getuid?.(), rootCommand: `sudo ${process.execPath} ${self} ${t}` });
}

const isEntry = isMainModule(import.meta.url);
if (isEntry) {
  setupMain(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      console.error(`eve-diag setup: ${(e as Error).message}`);
      process.exitCode = 1;
    },
  );
}
