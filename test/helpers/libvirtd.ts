/**
 * A real libvirt daemon for tests: Debian's `libvirtd` (libvirt-daemon-system), started as user
 * `nobody` in session mode, so that every path it uses (its socket, state, the domains' pidfiles,
 * virtlogd, the QEMU capabilities cache) is under one temporary directory, and stopped by pid after
 * the test: the domains destroyed, then libvirtd, virtlogd and any QEMU left (their pidfiles, then any
 * process whose command line names the directory) killed. eve-diag, as root, connects to it with
 * `qemu:///session?socket=<dir>/run/libvirt/libvirt-sock`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NOBODY = 65534;

export interface Libvirtd {
  /** The temporary directory (owned by nobody): put the domains' files here. */
  dir: string;
  uri: string;
  readonly pid: number;
  /** Runs virsh against this daemon; rejects with its stderr on failure. */
  virsh(...args: string[]): Promise<string>;
  /** The daemon's own log (for failure messages). */
  log(): Promise<string>;
  /** Stops libvirtd (SIGTERM; its domains keep running) and starts it again on the same paths. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const live = new Set<Libvirtd>();

/** Stops every daemon this process started and has not stopped (afterAll). */
export async function stopAllLibvirtd(): Promise<void> {
  await Promise.all([...live].map((d) => d.stop()));
}

function run(file: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } }, (e, out, err) =>
      e ? reject(new Error(`${file} ${args.join(' ')}: ${err.trim() || e.message}`)) : resolve(out),
    );
  });
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (alive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

async function killPid(pid: number): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  if (!(await waitGone(pid, 5000))) {
    process.kill(pid, 'SIGKILL');
    await waitGone(pid, 5000);
  }
}

/** Processes whose command line mentions `dir` (QEMU's -pidfile, virtlogd's), for the last sweep. */
async function processesNaming(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    const cmd = await readFile(`/proc/${e}/cmdline`, 'latin1').catch(() => '');
    if (cmd.includes(dir)) out.push(Number(e));
  }
  return out;
}

export async function startLibvirtd(): Promise<Libvirtd> {
  if (!existsSync('/usr/sbin/libvirtd')) throw new Error('/usr/sbin/libvirtd missing: apt-get install libvirt-daemon-system (npm run setup)');
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-libvirtd-'));
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: dir,
    XDG_RUNTIME_DIR: join(dir, 'run'),
    XDG_CONFIG_HOME: join(dir, 'config'),
    XDG_CACHE_HOME: join(dir, 'cache'),
    XDG_DATA_HOME: join(dir, 'data'),
    LC_ALL: 'C',
  };
  for (const d of ['run', 'config', 'cache', 'data']) await mkdir(join(dir, d), { mode: d === 'run' ? 0o700 : 0o755 });
  for (const p of [dir, ...['run', 'config', 'cache', 'data'].map((d) => join(dir, d))]) await chown(p, NOBODY, NOBODY);
  const logFile = join(dir, 'libvirtd.log');
  const spawnDaemon = (): number => {
    const fd = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn('/usr/sbin/libvirtd', [], { uid: NOBODY, gid: NOBODY, env, stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    child.unref();
    return child.pid as number;
  };
  let pid = spawnDaemon();
  const socket = join(dir, 'run', 'libvirt', 'libvirt-sock');
  const uri = `qemu:///session?socket=${socket}`;
  const virsh = (...args: string[]) => run('virsh', ['-q', '-c', uri, ...args]);
  let stopped = false;
  // Ready when the socket answers (the first connection also probes QEMU's capabilities: seconds).
  const ready = async (): Promise<void> => {
    const end = Date.now() + 60_000;
    for (;;) {
      if (!alive(pid)) {
        const log = await d.log();
        await d.stop();
        throw new Error(`libvirtd exited at start:\n${log.slice(-2000)}`);
      }
      if (existsSync(socket) && (await virsh('list', '--all').then(() => true, () => false))) return;
      if (Date.now() > end) {
        const log = await d.log();
        await d.stop();
        throw new Error(`libvirtd not answering after 60 s:\n${log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const d: Libvirtd = {
    dir,
    uri,
    get pid() {
      return pid;
    },
    virsh,
    restart: async () => {
      await killPid(pid);
      pid = spawnDaemon();
      await ready();
    },
    log: () => readFile(logFile, 'utf8').catch(() => ''),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      live.delete(d);
      if (alive(pid)) {
        const names = (await virsh('list', '--name').catch(() => '')).split('\n').map((s) => s.trim()).filter((s) => s !== '');
        for (const n of names) await virsh('destroy', '--domain', n).catch(() => undefined);
      }
      await killPid(pid);
      const runDir = join(dir, 'run', 'libvirt');
      const pidFiles = [join(runDir, 'virtlogd.pid'), ...(await readdir(join(runDir, 'qemu', 'run')).catch(() => [] as string[])).filter((f) => f.endsWith('.pid')).map((f) => join(runDir, 'qemu', 'run', f))];
      for (const f of pidFiles) {
        const p = Number((await readFile(f, 'utf8').catch(() => '')).trim());
        if (Number.isInteger(p) && p > 1) await killPid(p);
      }
      for (const p of await processesNaming(dir)) await killPid(p);
      await rm(dir, { recursive: true, force: true });
    },
  };
  live.add(d);
  await ready();
  return d;
}
