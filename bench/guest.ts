/**
 * A small QEMU launcher for the benchmarks (a bench must not import from test/): boots the test guest
 * (build/guest-image.ts) with TCG and the flags `eve-diag qemu-args` would print (our table, a QMP
 * socket for the monitor, an EVE-style mux console with a logfile), plus, on request, a second QMP
 * socket for the benchmark's own commands (QEMU serves one client per QMP socket and the monitor holds
 * its own).
 *
 * Every QEMU started here is tracked by pid: `stopAllBenchGuests()` stops them (SIGTERM, SIGKILL after
 * 3 s), a process 'exit' handler SIGKILLs what is left, and with util-linux `setpriv` QEMU gets
 * PR_SET_PDEATHSIG so it dies with a killed benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { buildGuestImage, GUEST_READY_LINE } from '../build/guest-image.js';
import { qemuArgv, qemuOptValue } from '../host-reader/qemu-args/index.js';
import { findOnPath } from '../util/which.js';

export interface BenchGuestOptions {
  /** The ACPI table file (`-acpitable`). */
  table: string;
  /** Appended to the kernel command line after `console=ttyS0`. */
  append?: string;
  memoryMiB?: number;
  /** Add a second QMP socket (`benchQmpPath`) for the benchmark's own commands. */
  benchQmp?: boolean;
  /** More QMP sockets (`extraQmpPaths`), e.g. one per monitor when several watch one VM. */
  extraQmp?: number;
  /** How long to wait for the ready line. Default 120 s. */
  bootTimeoutMs?: number;
}

export interface BenchGuest {
  readonly pid: number;
  /** Private 0700 directory holding the sockets and the console log; removed by stop(). */
  readonly dir: string;
  /** The QMP socket the monitor uses. */
  readonly qmpPath: string;
  /** The benchmark's own QMP socket (when `benchQmp`). */
  readonly benchQmpPath: string;
  /** The `extraQmp` sockets. */
  readonly extraQmpPaths: readonly string[];
  readonly consolePath: string;
  readonly consoleLogPath: string;
  /** Resolves when QEMU has exited, with how. */
  readonly exited: Promise<string>;
  /** Kills QEMU (SIGTERM, SIGKILL after 3 s), waits for it, removes `dir`. Idempotent. */
  stop(): Promise<void>;
}

const KILL_GRACE_MS = 3000;
const live = new Map<number, { child: ChildProcess; dir: string; stop: () => Promise<void> }>();
process.on('exit', () => {
  for (const [pid, g] of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(g.dir, { recursive: true, force: true });
  }
});

/** Stops every QEMU this process launched and has not stopped yet. */
export async function stopAllBenchGuests(): Promise<void> {
  await Promise.all([...live.values()].map((g) => g.stop()));
}

/** Boots the test guest; resolves once its /init printed the ready line on the console. */
export async function launchBenchGuest(o: BenchGuestOptions): Promise<BenchGuest> {
  const qemu = findOnPath('qemu-system-x86_64');
  if (qemu === undefined) throw new Error('qemu-system-x86_64 is not installed: apt-get install qemu-system-x86');
  const image = await buildGuestImage();
  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-bench-')); // mkdtemp(3) creates it 0700
  const paths = {
    qmpPath: join(dir, 'qmp.sock'),
    benchQmpPath: join(dir, 'bench-qmp.sock'),
    consolePath: join(dir, 'cons.sock'),
    consoleLogPath: join(dir, 'console.log'),
    extraQmpPaths: Array.from({ length: o.extraQmp ?? 0 }, (_, i) => join(dir, `qmp-${i + 1}.sock`)),
  };
  const args = [
    ...['-accel', 'tcg', '-M', 'q35', '-m', String(o.memoryMiB ?? 512), '-smp', '1'],
    ...['-display', 'none', '-no-user-config', '-nodefaults', '-no-reboot'],
    ...['-kernel', image.kernel, '-initrd', image.initrd, '-append', `console=ttyS0 ${o.append ?? ''}`.trim()],
    ...qemuArgv({ acpiTable: o.table, qmp: { path: paths.qmpPath }, console: { path: paths.consolePath, logfile: paths.consoleLogPath } }),
    ...(o.benchQmp === true ? ['-qmp', `unix:${qemuOptValue(paths.benchQmpPath)},server=on,wait=off`] : []),
    ...paths.extraQmpPaths.flatMap((q) => ['-qmp', `unix:${qemuOptValue(q)},server=on,wait=off`]),
  ];
  const setpriv = findOnPath('setpriv');
  const child =
    setpriv === undefined
      ? spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(setpriv, ['--pdeathsig', 'KILL', '--', qemu, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-4000)));
  let exitDetail: string | undefined;
  const exited = new Promise<string>((resolve) => {
    child.on('error', (e) => resolve((exitDetail ??= `failed to start: ${e.message}`)));
    child.on('exit', (code, sig) => resolve((exitDetail ??= sig === null ? `exited with code ${code}` : `killed by ${sig}`)));
  });
  const pid = child.pid ?? -1;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (exitDetail === undefined) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), KILL_GRACE_MS)));
        if (await Promise.race([exited.then(() => false), grace])) child.kill('SIGKILL');
        clearTimeout(timer);
        await exited;
      }
      live.delete(pid);
      await rm(dir, { recursive: true, force: true });
    })());
  if (pid > 0) live.set(pid, { child, dir, stop });
  const guest: BenchGuest = { pid, dir, ...paths, exited, stop };
  try {
    const tail = new LogTail(paths.consoleLogPath);
    const deadline = performance.now() + (o.bootTimeoutMs ?? 120_000);
    for (;;) {
      if ((await tail.poll()).includes(GUEST_READY_LINE)) break;
      if (exitDetail !== undefined) throw new Error(`QEMU ${exitDetail} before the guest was ready\n${stderr}`);
      if (performance.now() > deadline) throw new Error(`guest not ready within ${o.bootTimeoutMs ?? 120_000} ms\n${stderr}`);
      await sleep(50);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return guest;
}

/**
 * Reads a growing file (QEMU's console logfile) from where the previous poll stopped. `poll()`
 * returns the new text with the last `overlap` characters of the previous text in front, so a
 * pattern split across two polls still matches.
 */
export class LogTail {
  #offset = 0;
  #carry = '';
  constructor(
    readonly path: string,
    private readonly overlap = 64,
  ) {}

  async poll(): Promise<string> {
    let fh;
    try {
      fh = await open(this.path, 'r');
    } catch {
      return this.#carry; // not created yet
    }
    try {
      const { size } = await fh.stat();
      if (size <= this.#offset) return this.#carry;
      const buf = Buffer.alloc(size - this.#offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, this.#offset);
      this.#offset += bytesRead;
      const text = this.#carry + buf.subarray(0, bytesRead).toString('latin1');
      this.#carry = text.slice(-this.overlap);
      return text;
    } finally {
      await fh.close();
    }
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Writes `text` to the console socket, reads until it has been quiet for a while, disconnects. Resolves with the host time the write completed. */
export function consoleWrite(path: string, text: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let wroteAt: number | undefined;
    let quiet: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(quiet);
      clearTimeout(cap);
      s.destroy();
      if (wroteAt !== undefined) resolve(wroteAt);
      else reject(new Error(`console ${path}: closed before the write completed`));
    };
    const idle = () => {
      clearTimeout(quiet);
      quiet = setTimeout(finish, 500);
    };
    const cap = setTimeout(finish, 3000);
    s.on('error', (e) => {
      clearTimeout(quiet);
      clearTimeout(cap);
      reject(e);
    });
    s.on('data', idle);
    s.on('close', () => {
      if (wroteAt !== undefined) finish();
    });
    s.once('connect', () =>
      s.write(text, (e) => {
        if (e) return reject(e);
        wroteAt = performance.now();
        idle();
      }),
    );
  });
}
