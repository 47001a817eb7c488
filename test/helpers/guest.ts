/**
 * Real-guest launcher for integration tests: boots the test guest (build/guest-image.ts) in QEMU with TCG,
 * with a QMP socket and a mux console socket plus logfile laid out like EVE's (DESIGN, "EVE facts").
 *
 * Every launched QEMU is tracked: `stopAllGuests()` in afterAll, a process 'exit' handler as a backstop,
 * and (when util-linux `setpriv` is present) PR_SET_PDEATHSIG so QEMU dies with a killed test worker.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildGuestImage, GUEST_READY_LINE, type GuestFile } from '../../build/guest-image.js';
import type { GuestKernel } from '../../build/kernels.js';
import { hostQemu, type QemuBuild } from '../../build/qemus.js';
import { findOnPath } from '../../util/which.js';
import { qemuOptValue } from '../../host-reader/qemu-args/index.js';
import { eveDomPaths } from '../../host-reader/eve.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { EVE_DM_ARGS, eveIni } from './eve-node.js';

export interface LaunchOptions {
  /** The guest kernel (build/kernels.ts: `guestKernel('debian-6.12')`); default the newest host kernel. */
  kernel?: GuestKernel;
  /** `-M`: `pc-q35-3.1` is EVE's. Default q35. */
  machine?: 'q35' | 'pc' | 'pc-q35-3.1';
  /** The QEMU to run (build/qemus.ts: `guestQemu('debian-10.0')`); default the host's. */
  qemu?: QemuBuild;
  firmware?: 'seabios' | 'ovmf';
  memoryMiB?: number;
  /** vCPUs (`-smp`). Default 1. */
  cpus?: number;
  /** Kernel modules the image carries and /init loads (build/guest-image.ts). */
  modules?: string[];
  /** Extra files in the image (build/guest-image.ts `files`). */
  files?: GuestFile[];
  /** Files passed with `-acpitable file=...`, in order. */
  acpiTables?: string[];
  /** Appended to the kernel command line after `console=ttyS0`. */
  append?: string;
  extraArgs?: string[];
  name?: string;
  /** Let the guest reboot (default false: `-no-reboot`, a reboot request ends QEMU). */
  reboot?: boolean;
  /** How long to wait for the ready line; default 60 s (SeaBIOS) or 120 s (OVMF). */
  bootTimeoutMs?: number;
  /**
   * Lay the VM out as an EVE node does (test/helpers/eve-node.ts): `<root>/<dom>/{qmp,listener.qmp,cons,pid}`
   * from an EVE-shaped `-readconfig` ini and EVE's fixed arguments (`-S`: started with QMP `cont` over
   * `qmp`), machine `pc-q35-3.1` unless `machine` says otherwise. The console goes to QEMU's stdout as
   * EVE's `logfile=/dev/fd/1` does; the launcher copies it to `consoleLogPath` in its private `dir`,
   * not under `root`: on EVE there is no console log on disk.
   */
  eve?: { root: string; dom: string };
  /**
   * An existing directory for the sockets and the console log instead of a new temporary one (a
   * second QEMU on the same paths: EVE restarting an app). stop() leaves it in place.
   */
  dir?: string;
}

export interface Guest {
  readonly pid: number;
  /** `uname -r` of the kernel it booted. */
  readonly kernelRelease: string;
  /** Private 0700 directory holding the sockets, the console log and the OVMF variable store. */
  readonly dir: string;
  readonly qmpPath: string;
  readonly consolePath: string;
  readonly consoleLogPath: string;
  /**
   * Polls the console logfile (never the socket; DESIGN fact 8) from char offset `since` until `re` matches,
   * and resolves with the match. Kernel messages that split a line are removed first (removeInjectedPrintk).
   */
  waitForConsole(re: RegExp, timeoutMs: number, since?: number): Promise<string>;
  /**
   * Runs one shell command on ttyS0 and resolves with what it printed (CRs removed, last newline dropped).
   * The console is shared with the kernel: printk lines printed meanwhile land in the output too (boot with
   * `append: 'quiet'` when comparing outputs exactly). Commands run one at a time, in call order.
   */
  run(cmd: string, timeoutMs?: number): Promise<string>;
  /** The whole console log so far. */
  consoleText(): string;
  /** Kills QEMU (SIGTERM, SIGKILL after 3 s), waits for it, removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
// Not anchored at the line start: OVMF leaves terminal escapes (clear screen) before it with `quiet`.
const READY_RE = new RegExp(`${GUEST_READY_LINE}\\r?$`, 'm');
const KILL_GRACE_MS = 3000;
const TAIL_CHARS = 4000;

const live = new Set<QemuGuest>();
process.on('exit', () => {
  for (const g of live) g.killNow();
});

/** Stops every guest this process launched and has not stopped yet. */
export async function stopAllGuests(): Promise<void> {
  await Promise.all([...live].map((g) => g.stop()));
}

/** Boots the test guest and resolves once its /init printed the ready line. */
export async function launchGuest(opts: LaunchOptions = {}): Promise<Guest> {
  const build = opts.qemu ?? hostQemu();
  const qemu = build.binary;
  const firmware = opts.firmware ?? 'seabios';
  if (firmware === 'ovmf' && !(existsSync(OVMF_CODE) && existsSync(OVMF_VARS))) {
    throw new Error(`${OVMF_CODE} or ${OVMF_VARS} missing: apt-get install ovmf`);
  }
  const image = await buildGuestImage({
    ...(opts.kernel !== undefined ? { kernel: opts.kernel } : {}),
    ...(opts.modules !== undefined ? { modules: opts.modules } : {}),
    ...(opts.files !== undefined ? { files: opts.files } : {}),
  });
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'eve-diag-guest-'))); // mkdtemp(3) creates it 0700
  const ownsDir = opts.dir === undefined;
  const eve = opts.eve === undefined ? undefined : eveDomPaths(opts.eve.dom, opts.eve.root);
  const paths = {
    qmpPath: eve?.qmp ?? join(dir, 'qmp.sock'),
    consolePath: eve?.console ?? join(dir, 'cons.sock'),
    consoleLogPath: join(dir, 'console.log'),
  };
  const ovmfVars = join(dir, 'OVMF_VARS.fd'); // private copy: the firmware writes its variables
  let layoutArgs: string[];
  if (eve !== undefined) {
    await mkdir(eve.dir, { recursive: true, mode: 0o700 });
    const ini = join(dir, 'eve-qemu.ini');
    await writeFile(ini, eveIni({ paths: eve, machine: opts.machine ?? 'pc-q35-3.1', memoryMiB: opts.memoryMiB ?? 512, cpus: opts.cpus ?? 1 }));
    layoutArgs = ['-accel', 'tcg', ...EVE_DM_ARGS, '-readconfig', ini, '-pidfile', eve.pidfile];
  } else {
    layoutArgs = [
      ...['-accel', 'tcg', '-M', opts.machine ?? 'q35', '-m', String(opts.memoryMiB ?? 512), '-smp', String(opts.cpus ?? 1)],
      ...['-display', 'none', '-no-user-config', '-nodefaults'],
      ...['-qmp', `unix:${qemuOptValue(paths.qmpPath)},server=on,wait=off`],
      '-chardev',
      `socket,id=cons,path=${qemuOptValue(paths.consolePath)},server=on,wait=off,logfile=${qemuOptValue(paths.consoleLogPath)},mux=on`,
      ...['-serial', 'chardev:cons'],
    ];
  }
  const args = [
    ...build.args,
    ...layoutArgs,
    ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', `console=ttyS0 ${opts.append ?? ''}`.trim()],
    ...(opts.reboot === true ? [] : ['-no-reboot']),
    ...(opts.name === undefined ? [] : ['-name', `guest=${qemuOptValue(opts.name)}`]),
    ...(opts.acpiTables ?? []).flatMap((t) => ['-acpitable', `file=${qemuOptValue(t)}`]),
    ...(firmware === 'ovmf'
      ? [
          ...['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${qemuOptValue(OVMF_CODE)}`],
          ...['-drive', `if=pflash,format=raw,unit=1,file=${qemuOptValue(ovmfVars)}`],
        ]
      : []),
    ...(opts.extraArgs ?? []),
  ];
  if (firmware === 'ovmf') {
    await copyFile(OVMF_VARS, ovmfVars).catch(async (err: unknown) => {
      if (ownsDir) await rm(dir, { recursive: true, force: true });
      throw err;
    });
  }

  // PR_SET_PDEATHSIG: QEMU gets SIGKILL when this process dies without running its 'exit' handler (a
  // test worker killed on timeout). setpriv (util-linux) execs QEMU, so the child's pid is QEMU's.
  const setpriv = findOnPath('setpriv');
  // EVE's console logfile is QEMU's stdout (`/dev/fd/1`, a containerd FIFO there): here a file in the
  // launcher's private dir, opened anew by QEMU through /dev/fd/1 (a pipe from spawn is a socket, which
  // /dev/fd cannot open).
  const stdout = eve !== undefined ? openSync(paths.consoleLogPath, 'a', 0o600) : 'ignore';
  const stdio: StdioOptions = ['ignore', stdout, 'pipe'];
  const child =
    setpriv === undefined
      ? spawn(qemu, args, { stdio, env: { ...process.env, ...build.env } })
      : spawn(setpriv, ['--pdeathsig', 'KILL', '--', qemu, ...args], { stdio, env: { ...process.env, ...build.env } });
  if (typeof stdout === 'number') closeSync(stdout);
  const guest = new QemuGuest(child, dir, paths, image.release, ownsDir);
  live.add(guest);
  try {
    if (eve !== undefined) await guest.eveCont(10_000);
    await guest.waitForConsole(READY_RE, opts.bootTimeoutMs ?? (firmware === 'ovmf' ? 120_000 : 60_000));
  } catch (err) {
    await guest.stop();
    throw err;
  }
  return guest;
}

class QemuGuest implements Guest {
  readonly qmpPath: string;
  readonly consolePath: string;
  readonly consoleLogPath: string;
  private stderrTail = '';
  private exitDetail: string | undefined; // set once QEMU has exited or failed to start
  private readonly exited: Promise<void>;
  private stopping: Promise<void> | undefined;
  private socket: Socket | undefined;
  private received = ''; // console socket output while a run() is pending
  private readonly wakers = new Set<() => void>();
  private runQueue: Promise<unknown> = Promise.resolve();
  private seq = 0;

  constructor(
    private readonly child: ChildProcess,
    readonly dir: string,
    paths: { qmpPath: string; consolePath: string; consoleLogPath: string },
    readonly kernelRelease: string,
    private readonly ownsDir = true,
  ) {
    ({ qmpPath: this.qmpPath, consolePath: this.consolePath, consoleLogPath: this.consoleLogPath } = paths);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-TAIL_CHARS);
    });
    this.exited = new Promise((resolve) => {
      child.on('error', (err) => {
        this.exitDetail ??= `failed to start: ${err.message}`;
        resolve();
      });
      child.on('exit', (code, signal) => {
        this.exitDetail ??= signal === null ? `exited with code ${code}` : `killed by ${signal}`;
        resolve();
      });
    });
    this.exited.then(
      () => this.wake(),
      () => this.wake(),
    );
  }

  /** EVE starts QEMU with -S and sends `cont` once the VM is set up: the same, over its per-command socket. */
  async eveCont(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const q = await QmpClient.connect({ path: this.qmpPath }, { timeoutMs: 2000 });
        try {
          await q.cont();
        } finally {
          await q.close();
        }
        return;
      } catch (e) {
        if (this.exitDetail !== undefined) throw this.failure(`QEMU ${this.exitDetail} before EVE's cont`);
        if (Date.now() > deadline) throw Object.assign(this.failure(`EVE's cont over ${this.qmpPath} failed for ${timeoutMs} ms`), { cause: e });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  consoleText(): string {
    try {
      return readFileSync(this.consoleLogPath, 'utf8');
    } catch {
      return '';
    }
  }

  async waitForConsole(re: RegExp, timeoutMs: number, since = 0): Promise<string> {
    const once = new RegExp(re.source, re.flags.replace(/[gy]/g, '')); // no lastIndex state
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = once.exec(removeInjectedPrintk(this.consoleText().slice(since)));
      if (m !== null) return m[0];
      if (this.exitDetail !== undefined) throw this.failure(`QEMU ${this.exitDetail} before the console matched ${re}`);
      if (Date.now() > deadline) throw this.failure(`console did not match ${re} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  run(cmd: string, timeoutMs = 20_000): Promise<string> {
    // One command at a time: the markers of two commands must not interleave.
    const result = this.runQueue.then(() => this.runNow(cmd, timeoutMs));
    this.runQueue = result.catch(() => undefined);
    return result;
  }

  private async runNow(cmd: string, timeoutMs: number): Promise<string> {
    const socket = await this.connectConsole();
    const n = ++this.seq;
    this.received = '';
    // The typed text `$((40+2))` never matches the printed `@@42-`, even if the tty still echoes input.
    // Under TCG the UART sometimes sends a byte twice (`ffolio_wait_bit_common`, `[    4.0887456]`,
    // seen in full runs): a marker is matched with any of its characters doubled.
    const printed = new RegExp(`${stutterTolerant(`@@42-${n}-begin`)}\\r?\\n([\\s\\S]*?)${stutterTolerant(`@@42-${n}-end`)}\\r?\\n`);
    socket.write(`echo @@$((40+2))-${n}-begin\n${cmd}\necho @@$((40+2))-${n}-end\n`);
    const m = await this.waitReceived(printed, timeoutMs, `run(${JSON.stringify(cmd)})`);
    return (m[1] ?? '').replace(/\r/g, '').replace(/\n$/, '');
  }

  private waitReceived(re: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        // A kernel message (an oops on another vCPU) can land inside the end marker's line.
        const m = re.exec(this.received) ?? re.exec(removeInjectedPrintk(this.received));
        const err =
          m !== null
            ? undefined
            : this.exitDetail !== undefined
              ? this.failure(`${what}: QEMU ${this.exitDetail}`)
              : this.socket === undefined
                ? this.failure(`${what}: console socket closed`)
                : undefined;
        if (m === null && err === undefined) return;
        clearTimeout(timer);
        this.wakers.delete(check);
        if (m !== null) resolve(m);
        else reject(err);
      };
      const timer = setTimeout(() => {
        this.wakers.delete(check);
        reject(this.failure(`${what} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.wakers.add(check);
      check();
    });
  }

  /** The one console connection, opened on first use and read continuously until stop(). */
  private async connectConsole(): Promise<Socket> {
    if (this.socket !== undefined) return this.socket;
    if (this.exitDetail !== undefined) throw this.failure(`QEMU ${this.exitDetail}`);
    const socket = connect(this.consolePath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve).once('error', (err) => reject(this.failure(`cannot connect to ${this.consolePath}: ${err.message}`)));
    });
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => {
      if (this.wakers.size === 0) return; // only a pending run() needs the output
      // Lines before the last newline are final; injections can only start in the last, open one.
      const open = this.received.lastIndexOf('\n') + 1;
      this.received = this.received.slice(0, open) + removeInjectedPrintk(this.received.slice(open) + s);
      this.wake();
    });
    socket.on('error', () => undefined); // 'close' follows
    socket.on('close', () => {
      this.socket = undefined;
      this.wake();
    });
    this.socket = socket;
    return socket;
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  private failure(msg: string): Error {
    const stderr = this.stderrTail.trim();
    const log = this.consoleText().slice(-TAIL_CHARS).trim();
    return new Error(`guest ${this.pid}: ${msg}\n--- QEMU stderr (tail) ---\n${stderr}\n--- console (tail) ---\n${log}`);
  }

  stop(): Promise<void> {
    return (this.stopping ??= this.stopNow());
  }

  private async stopNow(): Promise<void> {
    this.socket?.destroy();
    if (this.exitDetail === undefined) {
      this.child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), KILL_GRACE_MS)));
      if (await Promise.race([this.exited.then(() => false), graceOver])) this.child.kill('SIGKILL');
      clearTimeout(timer);
      await this.exited;
    }
    live.delete(this);
    if (this.ownsDir) await rm(this.dir, { recursive: true, force: true });
  }

  /** Synchronous last resort for the process 'exit' handler. */
  killNow(): void {
    if (this.exitDetail === undefined) this.child.kill('SIGKILL');
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

// A kernel console message that starts in the middle of a line, up to its end: printk writes to the UART
// directly, between the bytes of a line the tty is sending (seen here: the TSC clocksource switch landed
// inside a run() marker). Needs printk timestamps (Debian's default, CONFIG_PRINTK_TIME=y). A `[` before it is
// not a line: under TCG the UART sometimes sends a byte twice (`[[    4.27] RSP: ...`, seen on 6.12), and taking
// that for a split line removed every kernel line after it, each now preceded by the stray `[`.
const INJECTED_PRINTK = /(?<=[^\n[])\[ *\d+\.\d{6}\] [^\n]*\n/g;

/**
 * Removes kernel messages injected into the middle of a console line, rejoining the line. Messages that start
 * at a line start are left alone: they cannot split a line, and `dmesg` prints lines just like them.
 */
export function removeInjectedPrintk(text: string): string {
  // Repeat: after one injected message goes, the next one (which followed a newline) is mid-line.
  for (let prev = ''; prev !== text; ) [prev, text] = [text, text.replace(INJECTED_PRINTK, '')];
  return text;
}

/**
 * A regular expression source matching `text` with any of its characters repeated, as the TCG UART
 * sometimes sends a byte twice. For markers and for expected console text in assertions.
 */
export function stutterTolerant(text: string): string {
  return [...text].map((c) => `${c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')}+`).join('');
}

/** Escapes a value inside a QEMU `key=value,...` option: a comma is written twice. */

let backgroundSeq = 0;
/**
 * Runs `cmd` in the background in the guest, in a session of its own, and returns its pid. Not a job
 * of the console's shell: when that shell went away (seen in CI: the test's shell exited and init
 * started another), the kernel sent the orphaned job SIGHUP and SIGCONT, and a SIGSTOPped agent ran
 * on. In its own session the shell's fate is not the agent's.
 */
export async function background(guest: Guest, cmd: string): Promise<number> {
  const n = ++backgroundSeq;
  const out = await guest.run(
    `cat > /tmp/bg-${n}.sh <<'EOF_BG'\necho $$ > /tmp/bg-${n}.pid\nexec ${cmd} </dev/null\nEOF_BG\n` +
      `setsid sh /tmp/bg-${n}.sh </dev/null >/dev/null 2>&1 &\n` +
      `i=0; while [ ! -s /tmp/bg-${n}.pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo "BGPID=$(cat /tmp/bg-${n}.pid)"`,
  );
  const m = /BGPID=(\d+)/.exec(out);
  if (m === null) throw new Error(`no pid from ${JSON.stringify(cmd)}: ${out}`);
  return Number(m[1]);
}
