import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, copyFile, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { INSTALL_PATHS, setCronJob, setExecStart, withNmiSysctls, type InstallAssets, type NmiSysctls } from './assets.js';
import { cronSchedule } from './cloud-init.js';
import { DEFAULT_AGENT_ZONE } from '../protocol/acpi-path.js';
import { findOnPath } from '../util/which.js';

/**
 * `eve-diag bake image`: writes the guest agent and its service into an existing disk image, offline,
 * with libguestfs (`guestfish`, Debian's `libguestfs-tools`). Nothing runs inside the guest: the
 * agent, its configuration, the unit or init script, the enabling symlinks (what `systemctl enable`
 * / `rc-update add` / `update-rc.d` would make) and the sysctl drop-in are plain files and links.
 *
 * All changes go into a qcow2 overlay over the image in one guestfish session; only when that session
 * has ended cleanly does `qemu-img commit` copy the changed clusters into the image. A failure before
 * that leaves the image untouched.
 *
 * The pure part (init detection, the plan of files and links, the guestfish commands) is separate from
 * the part that runs the tools, so it can be tested without libguestfs.
 */

export type InitSystem = 'systemd' | 'openrc' | 'sysvinit';
export const INIT_SYSTEMS: readonly InitSystem[] = ['systemd', 'openrc', 'sysvinit'];
export type ImageFormat = 'raw' | 'qcow2';
export const IMAGE_FORMATS: readonly ImageFormat[] = ['raw', 'qcow2'];

/** Where things go, beyond INSTALL_PATHS (which `bake cloud-init` shares). */
export const IMAGE_PATHS = {
  ...INSTALL_PATHS,
  initScript: '/etc/init.d/eve-diag-agent',
  systemdWants: '/etc/systemd/system/multi-user.target.wants',
  openrcConf: '/etc/conf.d/eve-diag-agent',
  openrcDefault: '/etc/runlevels/default/eve-diag-agent',
  sysvinitDefaults: '/etc/default/eve-diag-agent',
  crontabRoot: '/etc/crontabs/root',
} as const;

/** libguestfs needs these here (DESIGN fact 11: KVM guests hang, the appliance aborts without TCG). */
export const LIBGUESTFS_ENV_DEFAULTS = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' } as const;

/** The environment for libguestfs tools: the caller's, with the defaults above where it sets nothing. */
export function libguestfsEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const [k, v] of Object.entries(LIBGUESTFS_ENV_DEFAULTS)) if (out[k] === undefined) out[k] = v;
  return out;
}

// ---- what the image holds ---------------------------------------------------------------------------

/** What the probe found on a mounted filesystem (all answers of guestfish tests that cannot fail). */
export interface ImageFacts {
  etc: boolean;
  /** `/sbin/init`: a symlink (target in sbinInitTarget), something else that exists, or nothing. */
  sbinInit: 'symlink' | 'file' | 'missing';
  sbinInitTarget?: string;
  /** `/lib/systemd/systemd` or `/usr/lib/systemd/systemd`. */
  systemd: boolean;
  /** `/sbin/openrc`. */
  openrc: boolean;
  /** `/etc/init.d` */
  initD: boolean;
  /** `/etc/rc2.d` (sysvinit runlevel directories). */
  rcDirs: boolean;
  /** `/etc/cron.d`, `/etc/crontabs` (busybox/cronie per-user tables). */
  cronD: boolean;
  crontabs: boolean;
  /** `/etc/crontabs/root` when it exists. */
  crontabRoot?: string;
  /** The Node binary the service runs. */
  node: boolean;
}

/** One guestfish test per fact; `true`/`false` on stdout. */
export function probeCommands(nodePath: string): Record<string, string> {
  return {
    etc: 'is-dir /etc followsymlinks:true',
    initLink: 'is-symlink /sbin/init',
    initFile: 'is-file /sbin/init followsymlinks:true',
    systemdLib: 'is-file /lib/systemd/systemd followsymlinks:true',
    systemdUsr: 'is-file /usr/lib/systemd/systemd followsymlinks:true',
    openrc: 'is-file /sbin/openrc followsymlinks:true',
    initD: 'is-dir /etc/init.d followsymlinks:true',
    rcDirs: 'is-dir /etc/rc2.d followsymlinks:true',
    cronD: 'is-dir /etc/cron.d followsymlinks:true',
    crontabs: 'is-dir /etc/crontabs followsymlinks:true',
    crontabRoot: 'is-file /etc/crontabs/root followsymlinks:true',
    node: `is-file ${gfQuote(nodePath)} followsymlinks:true`,
  };
}

/** Something that runs guestfish commands in one session and returns each command's stdout. */
export interface GuestfsRunner {
  run(commands: string[], timeoutMs?: number): Promise<string[]>;
}

function bool(what: string, s: string | undefined): boolean {
  if (s === 'true') return true;
  if (s === 'false') return false;
  throw new Error(`guestfish: expected true or false from \`${what}\`, got ${JSON.stringify(s)}`);
}

/** Probes the filesystem mounted at / (two round trips). */
export async function probeMounted(gf: GuestfsRunner, nodePath: string): Promise<ImageFacts> {
  const cmds = probeCommands(nodePath);
  const keys = Object.keys(cmds);
  const outs = await gf.run(Object.values(cmds));
  const r: Record<string, boolean> = {};
  keys.forEach((k, i) => (r[k] = bool(cmds[k] as string, outs[i])));
  const facts: ImageFacts = {
    etc: r.etc === true,
    sbinInit: r.initLink === true ? 'symlink' : r.initFile === true ? 'file' : 'missing',
    systemd: r.systemdLib === true || r.systemdUsr === true,
    openrc: r.openrc === true,
    initD: r.initD === true,
    rcDirs: r.rcDirs === true,
    cronD: r.cronD === true,
    crontabs: r.crontabs === true,
    node: r.node === true,
  };
  const more: string[] = [];
  if (facts.sbinInit === 'symlink') more.push('readlink /sbin/init');
  if (r.crontabRoot === true) more.push(`cat ${IMAGE_PATHS.crontabRoot}`);
  if (more.length > 0) {
    const o = await gf.run(more);
    let i = 0;
    if (facts.sbinInit === 'symlink') facts.sbinInitTarget = o[i++];
    if (r.crontabRoot === true) facts.crontabRoot = o[i++] ?? '';
  }
  return facts;
}

/** A filesystem that looks like a Linux root: /etc and some init. */
export function looksLikeRoot(f: ImageFacts): boolean {
  return f.etc && (f.sbinInit !== 'missing' || f.systemd || f.openrc || f.initD);
}

/**
 * Which init the image boots. `/sbin/init` decides when it names one (a symlink to `.../systemd` or
 * `openrc-init`); a real `/sbin/init` binary is sysvinit (with OpenRC on top when `/sbin/openrc` is
 * there: Gentoo, Devuan), even when systemd is installed beside it (Debian's sysvinit-core). Otherwise
 * (no `/sbin/init`, or busybox's) systemd if its binary is there, else OpenRC (Alpine), else sysvinit
 * when `/etc/init.d` exists.
 */
export function detectInit(f: ImageFacts): { init: InitSystem; why: string } | undefined {
  const target = f.sbinInitTarget;
  if (f.sbinInit === 'symlink' && target !== undefined) {
    const base = posix.basename(target);
    if (base === 'systemd') return { init: 'systemd', why: `/sbin/init -> ${target}` };
    if (base === 'openrc-init') return { init: 'openrc', why: `/sbin/init -> ${target}` };
  }
  if (f.sbinInit === 'file') {
    if (f.openrc) return { init: 'openrc', why: '/sbin/init is a binary, /sbin/openrc is there' };
    if (f.initD) return { init: 'sysvinit', why: '/sbin/init is a binary, /etc/init.d is there' };
  }
  if (f.systemd) return { init: 'systemd', why: 'systemd is in /lib/systemd or /usr/lib/systemd' };
  if (f.openrc) return { init: 'openrc', why: '/sbin/openrc is there' };
  if (f.initD) return { init: 'sysvinit', why: 'no systemd or OpenRC, /etc/init.d is there' };
  return undefined;
}

// ---- the plan -------------------------------------------------------------------------------------

export type ImageOp =
  | { op: 'remove'; path: string }
  /** Remove whatever matches (guestfish `glob`), e.g. old runlevel links with another number. */
  | { op: 'remove-glob'; pattern: string }
  | { op: 'mkdir'; path: string }
  | { op: 'file'; path: string; content: string; mode: number }
  | { op: 'symlink'; path: string; target: string };

export interface ImagePlan {
  ops: ImageOp[];
  /** Things the user should know (printed as warnings). */
  warnings: string[];
}

export interface ImagePlanOptions {
  mode: 'node' | 'sh';
  init: InitSystem;
  assets: InstallAssets;
  /** The bundle's text (node mode). */
  bundle?: string;
  periodS: number;
  markPeriodS: number;
  nodePath: string;
  facts: ImageFacts;
  /** NMI sysctls to add to the drop-in; none by default. */
  nmiSysctls?: NmiSysctls;
}

const SYSV_START = ['2', '3', '4', '5'];
const SYSV_STOP = ['0', '1', '6'];
const MARK_JOB = /eve-diag-agent\.sh mark/;

/** The existing crontab without our line, plus `line` when given; undefined when nothing is left. */
export function mergeCrontab(existing: string | undefined, line: string | undefined): string | undefined {
  const kept = (existing ?? '').split('\n').filter((l) => !MARK_JOB.test(l));
  while (kept.length > 0 && kept[kept.length - 1] === '') kept.pop();
  if (line !== undefined) kept.push(line);
  return kept.length === 0 ? undefined : `${kept.join('\n')}\n`;
}

/** The files and links to write, in order; directories first, the enabling links last. */
export function planImageInstall(o: ImagePlanOptions): ImagePlan {
  const P = IMAGE_PATHS;
  const removes: ImageOp[] = [];
  const files: Array<Extract<ImageOp, { op: 'file' }>> = [];
  const links: Array<Extract<ImageOp, { op: 'symlink' }>> = [];
  const warnings: string[] = [];
  const file = (path: string, content: string, mode = 0o644) => files.push({ op: 'file', path, content, mode });

  // The agent itself, and what the other mode left behind (one heartbeat per guest, or the host's
  // count doubles).
  if (o.mode === 'node') {
    if (o.bundle === undefined) throw new Error('node mode needs the agent bundle');
    file(P.agent, o.bundle, 0o755);
    const config = { zone: DEFAULT_AGENT_ZONE, period: o.periodS, markPeriod: o.markPeriodS, syslog: true, console: '/dev/console', responder: null, checks: [] };
    file(P.config, `${JSON.stringify(config, null, 2)}\n`);
    removes.push({ op: 'remove', path: P.shAgent });
    if (!o.facts.node) {
      warnings.push(`the image has no ${o.nodePath}: the agent starts once Node >= 18 is installed there (or bake with --sh)`);
    }
  } else {
    file(P.shAgent, o.assets.shAgent, 0o755);
    removes.push({ op: 'remove', path: P.agent });
  }

  // The service, enabled the way systemctl / rc-update / update-rc.d would.
  const shArgs = `--period ${o.periodS}`;
  const initConf = (what: string) =>
    [
      `# eve-diag guest agent settings, read by ${P.initScript} (written by eve-diag bake image).`,
      `# ${what}`,
      `EVE_DIAG_NODE=${o.nodePath}`,
      `EVE_DIAG_ARGS="${o.mode === 'sh' ? shArgs : ''}"`,
      '',
    ].join('\n');
  const confWhat =
    o.mode === 'node'
      ? `The Node agent (${P.agent}) reads ${P.config}.`
      : `The POSIX-sh heartbeat (${P.shAgent}); marks come from cron.`;
  switch (o.init) {
    case 'systemd': {
      const [unit, other] = o.mode === 'node' ? ['eve-diag-agent.service', 'eve-diag-heartbeat.service'] : ['eve-diag-heartbeat.service', 'eve-diag-agent.service'];
      const unitPath = `/etc/systemd/system/${unit}`;
      if (o.mode === 'node') file(unitPath, setExecStart(o.assets.unit, `${o.nodePath} ${P.agent}`));
      else file(unitPath, setExecStart(o.assets.shUnit, `${P.shAgent} heartbeat ${shArgs}`));
      removes.push({ op: 'remove', path: `${P.systemdWants}/${other}` }, { op: 'remove', path: `/etc/systemd/system/${other}` });
      links.push({ op: 'symlink', path: `${P.systemdWants}/${unit}`, target: unitPath });
      break;
    }
    case 'openrc':
      file(P.initScript, o.assets.openrc, 0o755);
      file(P.openrcConf, initConf(confWhat));
      links.push({ op: 'symlink', path: P.openrcDefault, target: P.initScript });
      break;
    case 'sysvinit':
      file(P.initScript, o.assets.sysvinit, 0o755);
      file(P.sysvinitDefaults, initConf(confWhat));
      removes.push({ op: 'remove-glob', pattern: '/etc/rc[0-6S].d/[SK][0-9][0-9]eve-diag-agent' });
      for (const l of SYSV_START) links.push({ op: 'symlink', path: `/etc/rc${l}.d/S20eve-diag-agent`, target: '../init.d/eve-diag-agent' });
      for (const l of SYSV_STOP) links.push({ op: 'symlink', path: `/etc/rc${l}.d/K01eve-diag-agent`, target: '../init.d/eve-diag-agent' });
      if (!o.facts.rcDirs) {
        warnings.push('the image has no /etc/rc2.d: the runlevel links are made, but its init may not run them (busybox init runs only /etc/init.d/rcS)');
      }
      break;
  }

  // Marks: cron for the sh agent (/etc/cron.d, or busybox's /etc/crontabs/root where that is the
  // image's cron); the Node agent makes its own, so its mode removes the cron line.
  const useCrontabs = !o.facts.cronD && o.facts.crontabs;
  if (o.mode === 'sh') {
    const schedule = cronSchedule(o.markPeriodS);
    if (schedule === undefined) throw new RangeError(`markPeriodS: ${o.markPeriodS} s cannot be a cron schedule`);
    if (useCrontabs) {
      file(P.crontabRoot, mergeCrontab(o.facts.crontabRoot, `${schedule} ${P.shAgent} mark`) as string, 0o600);
    } else {
      file(P.cron, setCronJob(o.assets.cron, `${schedule} root ${P.shAgent} mark`));
      if (!o.facts.cronD) warnings.push('the image has no /etc/cron.d or /etc/crontabs: marks need a cron daemon reading /etc/cron.d');
    }
  } else {
    removes.push({ op: 'remove', path: P.cron });
    if (o.facts.crontabRoot !== undefined && MARK_JOB.test(o.facts.crontabRoot)) {
      const rest = mergeCrontab(o.facts.crontabRoot, undefined);
      if (rest === undefined) removes.push({ op: 'remove', path: P.crontabRoot });
      else file(P.crontabRoot, rest, 0o600);
    }
  }

  file(P.sysctl, withNmiSysctls(o.assets.sysctl, o.nmiSysctls));

  const dirs: ImageOp[] = [];
  const seen = new Set<string>();
  for (const x of [...files, ...links]) {
    const d = posix.dirname(x.path);
    if (!seen.has(d)) {
      seen.add(d);
      dirs.push({ op: 'mkdir', path: d });
    }
  }
  return { ops: [...removes, ...dirs, ...files, ...links], warnings };
}

/** One line per file or link, for the summary on stdout. */
export function describePlan(plan: ImagePlan): string[] {
  return plan.ops.flatMap((o) => {
    if (o.op === 'file') return [`${o.path} 0${o.mode.toString(8)}`];
    if (o.op === 'symlink') return [`${o.path} -> ${o.target}`];
    return [];
  });
}

/** The largest System.map taken from an image (host-reader's parser reads no more either). */
const SYSTEM_MAP_MAX_BYTES = 64 * 1024 * 1024;

/** Sorts `System.map-6.1.0-27-amd64` after `System.map-6.1.0-9-amd64`. */
const byVersion = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });

/**
 * The newest /boot/System.map-* of the mounted image, checked (SymbolTable.parse: bounded, Debian's
 * placeholder refused) and written to `out` (through a temporary file and a rename). A missing or
 * unusable map is a reason, not an error: the bake itself succeeded.
 */
async function captureSystemMap(gf: GuestfsRunner, work: string, out: string, check: ((data: Buffer) => number) | undefined): Promise<SystemMapCapture> {
  const [listed = ''] = await gf.run(['glob-expand /boot/System.map-*']);
  const maps = listed.split('\n').filter((l) => /^\/boot\/System\.map-[\w.+~-]{1,200}$/.test(l)).sort(byVersion);
  const from = maps[maps.length - 1];
  if (from === undefined) return { error: 'the image has no /boot/System.map-*' };
  const [size = ''] = await gf.run([`filesize ${gfQuote(from)}`]);
  if (!/^\d+$/.test(size.trim()) || Number(size) > SYSTEM_MAP_MAX_BYTES) return { error: `${from} has ${size.trim()} bytes, more than the ${SYSTEM_MAP_MAX_BYTES} read` };
  const local = join(work, 'System.map');
  await gf.run([`download ${gfQuote(from)} ${gfQuote(local)}`]);
  let textSymbols = 0;
  try {
    const data = await readFile(local);
    textSymbols = check === undefined ? data.toString('latin1').split('\n').filter((l) => / [Tt] /.test(l)).length : check(data);
  } catch (e) {
    return { error: `${from}: ${(e as Error).message}` };
  }
  const tmp = `${out}.tmp-${process.pid}`;
  await copyFile(local, tmp);
  await rename(tmp, out);
  return { path: out, from, textSymbols };
}

/** A guestfish argument: plain when it can be, else double-quoted with backslash escapes. */
export function gfQuote(s: string): string {
  if (/^[A-Za-z0-9_.,+:=/@%-]+$/.test(s)) return s;
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n')}"`;
}

/** The guestfish commands for a plan; `local(i)` is the host file holding ops[i]'s content. */
export function guestfishCommands(ops: ImageOp[], local: (i: number) => string): string[] {
  return ops.flatMap((o, i) => {
    switch (o.op) {
      case 'remove':
        return [`rm-f ${gfQuote(o.path)}`];
      case 'remove-glob':
        return [`glob rm-f ${o.pattern}`];
      case 'mkdir':
        return [`mkdir-p ${gfQuote(o.path)}`];
      case 'file':
        return [`upload ${gfQuote(local(i))} ${gfQuote(o.path)}`, `chmod 0${o.mode.toString(8)} ${gfQuote(o.path)}`];
      case 'symlink':
        return [`ln-sf ${gfQuote(o.target)} ${gfQuote(o.path)}`];
    }
  });
}

// ---- disks and filesystems ---------------------------------------------------------------------------

/** Filesystem types a Linux root can have (others, swap, vfat, unknown, are not tried). */
export const ROOT_FS_TYPES = new Set(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'f2fs', 'jfs', 'reiserfs']);

/** A bad input found while looking at the image (the CLI reports it naming the flag, exit 2). */
export class BakeInputError extends Error {
  override name = 'BakeInputError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

const lines = (s: string | undefined) => (s ?? '').split('\n').filter((l) => l !== '');

/**
 * The filesystems of the disk: partitions (or the whole disk when it has none), then logical volumes
 * and MD arrays when a partition holds their members. Like guestfish's `list-filesystems`, which
 * takes about 3 s under TCG scanning for LVM, MD and Windows dynamic disks even when there are none.
 */
export async function listFilesystems(gf: GuestfsRunner): Promise<Array<{ device: string; type: string }>> {
  const [devs, parts] = (await gf.run(['list-devices', 'list-partitions'])).map(lines) as [string[], string[]];
  const typed = async (devices: string[]) => {
    const types = await gf.run(devices.map((d) => `-vfs-type ${gfQuote(d)}`));
    return devices.map((device, i) => ({ device, type: types[i] === undefined || types[i] === '' ? 'unknown' : (types[i] as string) }));
  };
  const fss = await typed([...parts, ...devs.filter((d) => !parts.some((p) => p.startsWith(d)))]);
  const more: string[] = [];
  if (fss.some((f) => f.type === 'LVM2_member')) more.push(...lines((await gf.run(['lvs']))[0]));
  if (fss.some((f) => f.type === 'linux_raid_member')) more.push(...lines((await gf.run(['list-md-devices']))[0]));
  return [...fss, ...(more.length > 0 ? await typed(more) : [])];
}

/**
 * Finds the root filesystem and mounts it read-write at /: partition N (`/dev/sdaN`) or, with
 * 'auto', the one filesystem that looks like a root (several: an error listing them).
 */
export async function mountRoot(gf: GuestfsRunner, partition: number | 'auto', nodePath: string): Promise<{ device: string; type: string; facts: ImageFacts }> {
  const fss = await listFilesystems(gf);
  const list = fss.map((f) => `${f.device} ${f.type}`).join(', ') || 'none';
  const tryMount = async (device: string, ro: boolean): Promise<boolean> => {
    const [, mounts] = await gf.run([`-${ro ? 'mount-ro' : 'mount'} ${gfQuote(device)} /`, 'mounts']);
    return (mounts ?? '').split('\n').includes(device);
  };
  if (partition !== 'auto') {
    const device = `/dev/sda${partition}`;
    const fs = fss.find((f) => f.device === device);
    if (fs === undefined) throw new BakeInputError('--partition', partition, `the image has no filesystem on ${device} (filesystems: ${list})`);
    if (!(await tryMount(device, false))) throw new BakeInputError('--partition', partition, `${device} (${fs.type}) cannot be mounted`);
    const facts = await probeMounted(gf, nodePath);
    if (!looksLikeRoot(facts)) {
      await gf.run(['umount-all']);
      throw new BakeInputError('--partition', partition, `${device} (${fs.type}) is not a root filesystem (no /etc, no init)`);
    }
    return { ...fs, facts };
  }
  const roots: Array<{ device: string; type: string; facts: ImageFacts }> = [];
  for (const fs of fss.filter((f) => ROOT_FS_TYPES.has(f.type))) {
    if (!(await tryMount(fs.device, true))) continue;
    const facts = await probeMounted(gf, nodePath);
    await gf.run(['umount-all']);
    if (looksLikeRoot(facts)) roots.push({ ...fs, facts });
  }
  const only = roots[0];
  if (only === undefined) throw new BakeInputError('--partition', 'auto', `no root filesystem (with /etc and an init) found in the image (filesystems: ${list}); pass --partition N`);
  if (roots.length > 1) {
    throw new BakeInputError('--partition', 'auto', `several root filesystems: ${roots.map((r) => r.device).join(', ')}; pass --partition N`);
  }
  if (!(await tryMount(only.device, false))) throw new Error(`cannot mount ${only.device} read-write`);
  return only;
}

/** `qemu-img info --output=json`. */
export function parseQemuImgInfo(json: string): { format: string; virtualSize: number } {
  const j = JSON.parse(json) as { format?: unknown; 'virtual-size'?: unknown };
  if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number') throw new Error(`qemu-img info: unexpected output ${json.slice(0, 200)}`);
  return { format: j.format, virtualSize: j['virtual-size'] };
}

// ---- running the tools ---------------------------------------------------------------------------


/** The last `lines` lines of a tool's stderr, for error messages. */
export function tail(text: string, lines = 12): string {
  const l = text.trimEnd().split('\n');
  return l.slice(-lines).join('\n');
}

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(bin: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ExecResult> {
  return new Promise((res, rej) => {
    const c = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', (e) => {
      clearTimeout(t);
      rej(e);
    });
    c.on('close', (code) => {
      clearTimeout(t);
      res({ code, stdout, stderr });
    });
  });
}

/** libguestfs's advice printed after every launch failure: it hides the actual error in a tail. */
const BOILERPLATE = [
  /^This usually means the libguestfs appliance/,
  /^Do:$/,
  /^\s*export LIBGUESTFS_DEBUG=1/,
  /^and run the command again\./,
  /^\s*https?:\/\/libguestfs\.org\/guestfs-faq/,
  /^You can also run 'libguestfs-test-tool'/,
  /^into a bug report or message to the libguestfs mailing list/,
];

/** guestfish's stderr without its script line numbers and without the boilerplate above. */
export function guestfishStderr(text: string): string {
  return text
    .replace(/^\*stdin\*:[0-9]+: /gm, '')
    .split('\n')
    .filter((l) => !BOILERPLATE.some((re) => re.test(l)))
    .join('\n');
}

/** Thrown when guestfish fails: the message ends with its stderr tail. */
export class LibguestfsError extends Error {
  override name = 'LibguestfsError';
}

/**
 * One guestfish process fed commands on stdin. guestfish flushes each command's output, so after
 * every command an `echo MARK` splits the output. A failing command ends guestfish (exit 1) when it
 * reads a script: the pending `run` rejects with the stderr tail. Commands starting with `-` do not
 * fail. Each output is the command's stdout less the newline guestfish ends every result with (so
 * `cat` gives the file's exact text). If this process dies, guestfish reads EOF and its recovery
 * process kills the appliance.
 */
export class GuestfishSession implements GuestfsRunner {
  private out = '';
  private err = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly mark = `__eve_diag_${randomBytes(6).toString('hex')}`;
  private seq = 0;
  private readonly child;
  private readonly exited: Promise<void>;

  constructor(bin: string, args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(bin, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => {
      this.out += d;
      this.wake();
    });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.err = (this.err + d).slice(-16_384);
    });
    this.child.stdin.on('error', () => {}); // EPIPE after guestfish exits: reported through `exit`
    this.exited = new Promise((res) => {
      this.child.on('error', (e) => {
        this.err += `\n${e.message}`;
        this.exit = { code: null, signal: null };
        this.wake();
        res();
      });
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        this.wake();
        res();
      });
    });
  }

  private wake(): void {
    for (const l of [...this.listeners]) l();
  }

  stderr(): string {
    return this.err;
  }

  private failure(what: string): LibguestfsError {
    const how = this.exit?.signal ? `killed by ${this.exit.signal}` : `exit ${this.exit?.code ?? '?'}`;
    const t = tail(guestfishStderr(this.err));
    return new LibguestfsError(`guestfish failed (${how}) ${what}${t === '' ? '' : `:\n${t}`}\n(LIBGUESTFS_DEBUG=1 shows the appliance's log)`);
  }

  run(commands: string[], timeoutMs = 120_000): Promise<string[]> {
    const marks = commands.map(() => `${this.mark}_${this.seq++}`);
    const last = `${marks[marks.length - 1]}\n`;
    return new Promise((res, rej) => {
      if (commands.length === 0) return res([]);
      const done = () => {
        this.listeners.delete(check);
        clearTimeout(timer);
      };
      const check = () => {
        const end = this.out.indexOf(last);
        if (end >= 0) {
          const text = this.out.slice(0, end + last.length);
          this.out = this.out.slice(end + last.length);
          done();
          const outs: string[] = [];
          let from = 0;
          for (const m of marks) {
            const at = text.indexOf(`${m}\n`, from);
            outs.push(text.slice(from, at).replace(/\n$/, ''));
            from = at + m.length + 1;
          }
          res(outs);
        } else if (this.exit !== undefined) {
          done();
          const failed = commands[marks.filter((m) => this.out.includes(`${m}\n`)).length] ?? commands[0];
          rej(this.failure(`at \`${failed}\``));
        }
      };
      const timer = setTimeout(() => {
        done();
        this.kill();
        rej(new LibguestfsError(`guestfish did not answer \`${commands[0]}\` within ${timeoutMs / 1000} s${tail(this.err) === '' ? '' : `:\n${tail(this.err)}`}`));
      }, timeoutMs);
      this.listeners.add(check);
      this.child.stdin.write(commands.map((c, i) => `${c}\necho ${marks[i]}\n`).join(''));
      check();
    });
  }

  /** Ends the session (EOF on stdin) and waits for guestfish to exit 0. */
  async close(timeoutMs = 120_000): Promise<void> {
    this.child.stdin.end();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((res) => (timer = setTimeout(() => res(true), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.kill();
      throw new LibguestfsError(`guestfish did not exit within ${timeoutMs / 1000} s`);
    }
    if (this.exit?.code !== 0) throw this.failure('at the end of the session');
  }

  kill(): void {
    if (this.exit === undefined) this.child.kill('SIGKILL');
  }

  async killAndWait(): Promise<void> {
    this.kill();
    await this.exited;
  }
}

// ---- the whole bake -----------------------------------------------------------------------------------

export interface BakeImageOptions {
  image: string;
  /** undefined: qemu-img probes it. */
  format?: ImageFormat;
  mode: 'node' | 'sh';
  /** undefined: detect. */
  init?: InitSystem;
  partition: number | 'auto';
  periodS: number;
  markPeriodS: number;
  nodePath: string;
  /** NMI sysctls to set in the image; none by default. */
  nmiSysctls?: NmiSysctls;
  /** Copy the image's kernel System.map (the newest /boot/System.map-*) here, for gdb-stacks. */
  systemMapOut?: string;
  /**
   * Checks a System.map's bytes (the CLI passes host-reader's parser: bounded, Debian's placeholder
   * refused): how many text symbols it has, or a throw saying why it is no use.
   */
  checkSystemMap?: (data: Buffer) => number;
  /** Reads the bundle (node mode); called once the image has passed its checks. */
  readBundle?: () => Promise<string>;
  assets: InstallAssets;
  env?: NodeJS.ProcessEnv;
  progress?: (line: string) => void;
}

/** What `systemMapOut` found: the copied map, or why there is none. */
export type SystemMapCapture = { path: string; from: string; textSymbols: number } | { error: string };

export interface BakeImageResult {
  /** Set when `systemMapOut` was asked. */
  systemMap?: SystemMapCapture;
  format: ImageFormat;
  device: string;
  fsType: string;
  init: InitSystem;
  initWhy: string;
  plan: ImagePlan;
  /** Milliseconds: appliance launch, whole bake. */
  launchMs: number;
  totalMs: number;
}

const MIB = 1024 * 1024;

/** Checks the image path itself; returns its absolute path. */
export async function checkImagePath(image: string): Promise<string> {
  const abs = resolve(image);
  let st;
  try {
    st = await stat(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new BakeInputError('--image', image, code === 'ENOENT' ? 'the image does not exist' : `cannot read the image (${code ?? (e as Error).message})`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new BakeInputError('--image', image, 'is not a disk image file (nor a block device)');
  try {
    await access(abs, fsConstants.R_OK | fsConstants.W_OK);
  } catch (e) {
    throw new BakeInputError('--image', image, `the image is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return abs;
}

export const MISSING_TOOLS_HINT = 'install libguestfs: apt-get install libguestfs-tools (it brings guestfish and qemu-img)';

export async function bakeImage(o: BakeImageOptions): Promise<BakeImageResult> {
  const t0 = Date.now();
  const progress = o.progress ?? (() => {});
  const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const env = libguestfsEnv(o.env ?? process.env);
  const abs = await checkImagePath(o.image);
  const guestfish = findOnPath('guestfish', env.PATH);
  const qemuImg = findOnPath('qemu-img', env.PATH);
  const missing = [guestfish === undefined ? 'guestfish' : '', qemuImg === undefined ? 'qemu-img' : ''].filter((x) => x !== '');
  if (guestfish === undefined || qemuImg === undefined) throw new Error(`${missing.join(' and ')} not found on PATH: ${MISSING_TOOLS_HINT}`);

  // The format, and whether a running VM holds the image (QEMU's lock makes qemu-img fail).
  const info = await exec(qemuImg, ['info', '--output=json', ...(o.format !== undefined ? ['-f', o.format] : []), abs], env, 60_000);
  if (info.code !== 0) {
    const why = tail(info.stderr, 3);
    if (/lock/i.test(why)) throw new BakeInputError('--image', o.image, `the image is in use (a running QEMU holds its lock): stop the VM first (${why})`);
    if (o.format !== undefined) throw new BakeInputError('--format', o.format, `qemu-img cannot read the image as ${o.format}: ${why}`);
    throw new BakeInputError('--image', o.image, `qemu-img cannot read the image: ${why}`);
  }
  const { format, virtualSize } = parseQemuImgInfo(info.stdout);
  if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
    throw new BakeInputError('--image', o.image, `unknown or unsupported image format "${format}" (raw or qcow2; pass --format to say which)`);
  }
  // qemu-img info does not take QEMU's lock on a raw image; opening it read-write (and writing
  // nothing) does.
  const qemuIo = findOnPath('qemu-io', env.PATH);
  if (qemuIo !== undefined) {
    const open = await exec(qemuIo, ['-f', format, '-c', 'quit', abs], env, 60_000);
    if (open.code !== 0) {
      const why = tail(open.stderr, 2).replace(/\n/g, ' ');
      if (/lock/i.test(why)) throw new BakeInputError('--image', o.image, `the image is in use (a running QEMU holds its lock): stop the VM first (${why})`);
      throw new BakeInputError('--image', o.image, `cannot open the image read-write: ${why}`);
    }
  }
  const bundle = o.mode === 'node' ? await o.readBundle?.() : undefined;
  progress(`${o.image}: ${format}, ${virtualSize >= MIB ? `${Math.round(virtualSize / MIB)} MiB` : `${virtualSize} bytes`}`);

  const work = await mkdtemp(join(tmpdir(), 'eve-diag-bake-image-'));
  let gf: GuestfishSession | undefined;
  try {
    // Every write goes into this overlay; the image changes only at the commit below.
    const overlay = join(work, 'overlay.qcow2');
    const mk = await exec(qemuImg, ['create', '-q', '-f', 'qcow2', '-F', format, '-b', abs, overlay], env, 60_000);
    if (mk.code !== 0) throw new Error(`qemu-img create (the overlay) failed:\n${tail(mk.stderr)}`);

    progress(`starting the libguestfs appliance (${env.LIBGUESTFS_BACKEND_SETTINGS ?? 'default backend settings'}; 15-40 s, the first run builds it: about 10 s more)`);
    const tl = Date.now();
    gf = new GuestfishSession(guestfish, ['--rw', '--format=qcow2', '-a', overlay], env);
    await gf.run(['run'], 600_000);
    const launchMs = Date.now() - tl;
    progress(`appliance up in ${secs(launchMs)}`);

    const root = await mountRoot(gf, o.partition, o.nodePath);
    const detected = detectInit(root.facts);
    const init = o.init ?? detected?.init;
    if (init === undefined) throw new BakeInputError('--init', 'auto', `cannot tell the init system of ${root.device}: no systemd, /sbin/openrc or /etc/init.d; pass --init systemd|openrc|sysvinit`);
    const initWhy = o.init !== undefined ? 'from --init' : (detected?.why ?? '');
    progress(`root filesystem ${root.device} (${root.type}), init ${init} (${initWhy})`);

    const plan = planImageInstall({ mode: o.mode, init, assets: o.assets, bundle, periodS: o.periodS, markPeriodS: o.markPeriodS, nodePath: o.nodePath, facts: root.facts, ...(o.nmiSysctls ? { nmiSysctls: o.nmiSysctls } : {}) });
    for (const w of plan.warnings) progress(`warning: ${w}`);
    const local = (i: number) => join(work, `op${i}`);
    await Promise.all(plan.ops.map((op, i) => (op.op === 'file' ? writeFile(local(i), op.content) : undefined)));
    const nFiles = plan.ops.filter((x) => x.op === 'file').length;
    const nLinks = plan.ops.filter((x) => x.op === 'symlink').length;
    progress(`writing ${nFiles} files and ${nLinks} link${nLinks === 1 ? '' : 's'} (${o.mode === 'node' ? 'Node agent' : 'POSIX-sh agent'}, ${init})`);
    await gf.run(guestfishCommands(plan.ops, local));
    const systemMap = o.systemMapOut === undefined ? undefined : await captureSystemMap(gf, work, o.systemMapOut, o.checkSystemMap);
    if (systemMap !== undefined) progress('error' in systemMap ? `warning: no System.map captured: ${systemMap.error}` : `System.map ${systemMap.from} (${systemMap.textSymbols} text symbols) copied to ${systemMap.path}`);
    await gf.run(['umount-all', 'shutdown'], 300_000);
    await gf.close();
    gf = undefined;

    progress(`saving the changes into ${o.image}`);
    const commit = await exec(qemuImg, ['commit', '-q', '-d', overlay], env, 600_000);
    if (commit.code !== 0) throw new Error(`qemu-img commit failed: ${o.image} may be partly modified:\n${tail(commit.stderr)}`);
    const totalMs = Date.now() - t0;
    progress(`done in ${secs(totalMs)}`);
    return { ...(systemMap ? { systemMap } : {}), format: format as ImageFormat, device: root.device, fsType: root.type, init, initWhy, plan, launchMs, totalMs };
  } catch (e) {
    if (e instanceof LibguestfsError) throw new LibguestfsError(`${e.message}\n(${o.image} is unchanged)`, { cause: e });
    throw e;
  } finally {
    if (gf !== undefined) await gf.killAndWait();
    await rm(work, { recursive: true, force: true });
  }
}

