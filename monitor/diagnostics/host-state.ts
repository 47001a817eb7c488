import { open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { MEMINFO_KEYS, type HostState, type PressureLine, type QemuProcessState, type ThreadState } from '../../protocol/host-state.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, jsonArtifact, withQmp, type QmpConnector } from './common.js';

/** An app target that may also say which process runs its QEMU. */
export interface HostAppTarget extends AppTarget {
  /** The QEMU process id, when the caller knows it (else it is looked for by the QMP socket). */
  pid?: number;
}

export interface HostStateOptions {
  /** Where procfs is mounted (tests pass a fake tree). Default `/proc`. */
  procRoot?: string;
  /** Two samples of the vCPU threads' CPU time this far apart give their CPU use. Default 500 ms; 0: one sample. */
  sampleMs?: number;
  /** At most this many /proc entries are looked at when searching for QEMU. Default 65536. */
  maxProcesses?: number;
  /** At most this many threads of the QEMU process are read. Default 1024. */
  maxThreads?: number;
  /** At most this many fds per process are looked at in the socket search. Default 4096. */
  maxFdsPerProcess?: number;
  /** Artifact name. Default `host-state.json`. */
  name?: string;
  /** Ask QMP `query-cpus-fast` which threads are the vCPUs (default true when the app has QMP). */
  useQmp?: boolean;
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

/** `sysconf(_SC_CLK_TCK)`: the unit of utime/stime in /proc/PID/stat; USER_HZ is 100 on every Linux arch. */
const CLK_TCK = 100;
const MAX_PROC_FILE_BYTES = 64 * 1024;
/**
 * With `-name ...,debug-threads=on` QEMU names its vCPU threads `CPU N/KVM`, `CPU N/TCG` (MTTCG) or
 * `ALL CPUs/TCG` (single-threaded TCG); without it every thread is `qemu-system-x86` (checked with QEMU
 * 7.2), and only QMP `query-cpus-fast` (`thread-id`) tells which threads are the vCPUs.
 */
const VCPU_COMM = /^(?:CPU \d+|ALL CPUs)\/[A-Za-z]+$/;

/**
 * The host side of a hang: is the host itself starved (load, PSI stall times, memory), and is the VM's
 * QEMU running its vCPUs (each vCPU thread's state and CPU time, sampled twice to get its CPU use)? The
 * QEMU process is the target's `pid`, else the process whose command line names the QMP socket, else the
 * process holding the QMP socket (its inode from /proc/net/unix, found among /proc/PID/fd): EVE starts
 * QEMU with `-readconfig`, so the path is not always on the command line. Every scan is bounded.
 */
export class HostStateCollector implements Collector {
  readonly kind = 'host-state';
  readonly #root: string;
  readonly #sampleMs: number;
  readonly #maxProcesses: number;
  readonly #maxThreads: number;
  readonly #maxFds: number;
  readonly #name: string;
  readonly #useQmp: boolean;
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: HostStateOptions = {}) {
    this.#useQmp = options.useQmp ?? true;
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#root = options.procRoot ?? '/proc';
    this.#sampleMs = options.sampleMs ?? 500;
    this.#maxProcesses = options.maxProcesses ?? 65536;
    this.#maxThreads = options.maxThreads ?? 1024;
    this.#maxFds = options.maxFdsPerProcess ?? 4096;
    this.#name = options.name ?? 'host-state.json';
    this.#clock = options.clock ?? realClock;
    for (const [k, v] of Object.entries({ sampleMs: this.#sampleMs, maxProcesses: this.#maxProcesses, maxThreads: this.#maxThreads, maxFdsPerProcess: this.#maxFds })) {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`HostStateCollector: ${k} must be an integer >= 0, got ${String(v)}`);
    }
  }

  async collect(target: HostAppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    const errors: string[] = [];
    const state: HostState = {
      collectedAt: new Date().toISOString(),
      procRoot: this.#root,
      loadavg: null,
      pressure: { cpu: null, memory: null, io: null },
      meminfo: {},
      qemu: null,
      errors,
    };
    try {
      state.loadavg = parseLoadavg(await this.#read('loadavg'));
    } catch (error) {
      errors.push(`loadavg: ${describeError(error)}`);
    }
    for (const kind of ['cpu', 'memory', 'io'] as const) {
      // Absent without CONFIG_PSI or with psi=0: null, not an error.
      state.pressure[kind] = parsePressure(await this.#read(`pressure/${kind}`).catch(() => undefined));
    }
    try {
      state.meminfo = parseMeminfo(await this.#read('meminfo'));
    } catch (error) {
      errors.push(`meminfo: ${describeError(error)}`);
    }

    const lookFor = target.pid !== undefined || target.qmp !== undefined;
    try {
      const found = await this.#findQemu(target, deadline, opts.signal);
      if (found !== undefined) {
        const vcpuTids = await this.#vcpuThreadIds(target, deadline, opts.signal).catch((error: unknown) => {
          errors.push(`query-cpus-fast: ${describeError(error)}`);
          return undefined;
        });
        state.qemu = await this.#qemuState(found, vcpuTids, deadline, opts.signal);
      }
      else if (lookFor) errors.push(target.pid !== undefined ? `QEMU pid ${target.pid} is not running` : `no process found for the QMP socket ${target.qmp as string}`);
    } catch (error) {
      errors.push(`qemu: ${describeError(error)}`);
    }

    const artifact = jsonArtifact(this.#name, state, opts.maxBytes);
    const summary = summarize(state, lookFor);
    const ok = state.loadavg !== null && (!lookFor || state.qemu !== null);
    return ok ? { ok, summary, artifacts: [artifact] } : failed(summary, [artifact]);
  }

  async #findQemu(
    target: HostAppTarget,
    deadline: Deadline,
    signal: AbortSignal,
  ): Promise<{ pid: number; foundBy: QemuProcessState['foundBy']; others: number[] } | undefined> {
    if (target.pid !== undefined) {
      if (!Number.isSafeInteger(target.pid) || target.pid < 1) throw new RangeError(`pid must be a positive integer, got ${String(target.pid)}`);
      const alive = await this.#read(`${target.pid}/stat`).then(
        () => true,
        () => false,
      );
      return alive ? { pid: target.pid, foundBy: 'target', others: [] } : undefined;
    }
    if (target.qmp === undefined) return undefined;
    const pids = await this.#pids();
    const qmp = target.qmp;
    // QEMU doubles commas inside option values.
    const needles = [...new Set([qmp, qmp.replaceAll(',', ',,')])];
    const byCmdline: { pid: number; qemu: boolean }[] = [];
    for (const pid of pids) {
      if (signal.aborted || deadline.expired) throw new Error('time is up while scanning command lines');
      const cmdline = await this.#read(`${pid}/cmdline`).catch(() => undefined);
      if (cmdline === undefined) continue;
      const args = cmdline.split('\0');
      if (args.some((a) => needles.some((n) => containsPath(a, n)))) {
        byCmdline.push({ pid, qemu: /qemu/i.test(args[0] ?? '') });
      }
    }
    const pick = (list: { pid: number; qemu: boolean }[]) => list.find((c) => c.qemu) ?? list[0];
    const chosen = pick(byCmdline);
    if (chosen !== undefined) {
      return { pid: chosen.pid, foundBy: 'cmdline', others: byCmdline.filter((c) => c !== chosen).map((c) => c.pid) };
    }
    // The socket's inodes (the listener and its accepted connections carry the path).
    const unix = await this.#read('net/unix').catch(() => '');
    const inodes = new Set<string>();
    for (const line of unix.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length >= 8 && fields.slice(7).join(' ') === qmp && fields[6] !== undefined) inodes.add(fields[6]);
    }
    if (inodes.size === 0) return undefined;
    const bySocket: { pid: number; qemu: boolean }[] = [];
    for (const pid of pids) {
      if (signal.aborted || deadline.expired) throw new Error('time is up while scanning open sockets');
      const fds = await readdir(join(this.#root, String(pid), 'fd')).catch(() => [] as string[]);
      for (const fd of fds.slice(0, this.#maxFds)) {
        const link = await readlink(join(this.#root, String(pid), 'fd', fd)).catch(() => '');
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m?.[1] !== undefined && inodes.has(m[1])) {
          const comm = (await this.#read(`${pid}/comm`).catch(() => '')).trim();
          bySocket.push({ pid, qemu: /qemu/i.test(comm) });
          break;
        }
      }
    }
    const owner = pick(bySocket);
    return owner === undefined ? undefined : { pid: owner.pid, foundBy: 'socket', others: bySocket.filter((c) => c !== owner).map((c) => c.pid) };
  }

  /** The vCPU thread ids QEMU reports (`query-cpus-fast`), or undefined without QMP. */
  async #vcpuThreadIds(target: HostAppTarget, deadline: Deadline, signal: AbortSignal): Promise<Set<number> | undefined> {
    if (!this.#useQmp || target.qmp === undefined) return undefined;
    const timeoutMs = deadline.cap(2000);
    const cpus = await withQmp(this.#connect, target.qmp, { timeoutMs, signal }, (qmp) =>
      qmp.execute('query-cpus-fast', undefined, { timeoutMs, signal }),
    );
    if (!Array.isArray(cpus)) throw new Error('query-cpus-fast did not return a list');
    const tids = new Set<number>();
    for (const cpu of cpus as unknown[]) {
      const tid = typeof cpu === 'object' && cpu !== null ? (cpu as { 'thread-id'?: unknown })['thread-id'] : undefined;
      if (typeof tid === 'number' && Number.isSafeInteger(tid) && tid > 0) tids.add(tid);
    }
    return tids;
  }

  async #qemuState(
    found: { pid: number; foundBy: QemuProcessState['foundBy']; others: number[] },
    vcpuTids: Set<number> | undefined,
    deadline: Deadline,
    signal: AbortSignal,
  ): Promise<QemuProcessState> {
    const { pid } = found;
    const stat = parseStat(await this.#read(`${pid}/stat`));
    const status = await this.#read(`${pid}/status`).catch(() => '');
    const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    const tids = (await readdir(join(this.#root, String(pid), 'task')).catch(() => [] as string[]))
      .filter((t) => /^\d+$/.test(t))
      .map(Number)
      .sort((a, b) => a - b)
      .slice(0, this.#maxThreads);
    const first = new Map<number, ThreadState>();
    for (const tid of tids) {
      if (signal.aborted || deadline.expired) break;
      const thread = await this.#thread(pid, tid);
      if (thread !== undefined && (vcpuTids === undefined ? VCPU_COMM.test(thread.comm) : vcpuTids.has(tid))) first.set(tid, thread);
    }
    let vcpus = [...first.values()];
    // Sleep for the second sample only when time is left for it (and for reading the threads again).
    const sampleMs = this.#sampleMs > 0 && deadline.remaining() > this.#sampleMs * 2 && first.size > 0 ? this.#sampleMs : 0;
    if (sampleMs > 0) {
      const t0 = this.#clock.now();
      await this.#clock.sleep(sampleMs, signal).catch(() => undefined);
      const elapsedMs = Math.max(1, this.#clock.now() - t0);
      vcpus = [];
      for (const [tid, before] of first) {
        const after = await this.#thread(pid, tid);
        if (after === undefined) continue;
        const usedMs = after.utimeMs + after.stimeMs - (before.utimeMs + before.stimeMs);
        // A thread runs on one CPU at most; /proc counts in 10 ms ticks and a timer may fire a little
        // early, so the raw ratio can exceed 100 % (100.1 % seen in a test): that excess is noise.
        vcpus.push({ ...after, cpuPercent: Math.min(100, Math.round((usedMs / elapsedMs) * 1000) / 10) });
      }
    }
    const result: QemuProcessState = {
      pid,
      foundBy: found.foundBy,
      comm: stat.comm,
      state: stat.state,
      threads: stat.threads,
      rssKiB: rss?.[1] === undefined ? null : Number(rss[1]),
      utimeMs: stat.utimeMs,
      stimeMs: stat.stimeMs,
      vcpus,
      vcpuSource: vcpuTids === undefined ? 'comm' : 'qmp',
      threadsRead: tids.length,
      sampleMs,
    };
    if (found.others.length > 0) result.otherCandidates = found.others.slice(0, 16);
    return result;
  }

  async #thread(pid: number, tid: number): Promise<ThreadState | undefined> {
    try {
      const stat = parseStat(await this.#read(`${pid}/task/${tid}/stat`));
      const comm = (await this.#read(`${pid}/task/${tid}/comm`).catch(() => stat.comm)).replace(/\n$/, '');
      return { tid, comm, state: stat.state, lastCpu: stat.processor, utimeMs: stat.utimeMs, stimeMs: stat.stimeMs };
    } catch {
      return undefined; // the thread exited
    }
  }

  /** Numeric entries of the proc root, at most `maxProcesses`. */
  async #pids(): Promise<number[]> {
    const names = await readdir(this.#root);
    const pids: number[] = [];
    for (const n of names) {
      if (pids.length >= this.#maxProcesses) break;
      if (/^\d+$/.test(n)) pids.push(Number(n));
    }
    return pids;
  }

  /** A proc file, at most 64 KiB (proc files report size 0: read until EOF). */
  async #read(rel: string): Promise<string> {
    const handle = await open(join(this.#root, rel), 'r');
    try {
      const buffer = Buffer.alloc(MAX_PROC_FILE_BYTES);
      let got = 0;
      while (got < buffer.length) {
        const { bytesRead } = await handle.read(buffer, got, buffer.length - got, null);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buffer.subarray(0, got).toString('utf8');
    } finally {
      await handle.close().catch(() => undefined);
    }
  }
}

/** Whether `arg` holds `path` as a whole value (followed by the end or an option separator). */
function containsPath(arg: string, path: string): boolean {
  for (let i = arg.indexOf(path); i !== -1; i = arg.indexOf(path, i + 1)) {
    const after = arg[i + path.length];
    const before = i === 0 ? undefined : arg[i - 1];
    if ((after === undefined || after === ',') && (before === undefined || before === ':' || before === '=')) return true;
  }
  return false;
}

/** `/proc/loadavg`: `0.52 0.58 0.59 2/345 12345`. */
export function parseLoadavg(text: string): HostState['loadavg'] {
  const m = /^(\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+)\/(\d+)/.exec(text);
  if (m === null) throw new Error(`unexpected /proc/loadavg: ${JSON.stringify(text.slice(0, 80))}`);
  return { load1: Number(m[1]), load5: Number(m[2]), load15: Number(m[3]), runnable: Number(m[4]), entities: Number(m[5]) };
}

/** `/proc/pressure/*`: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and, except for cpu on old kernels, `full ...`. */
export function parsePressure(text: string | undefined): { some?: PressureLine; full?: PressureLine } | null {
  if (text === undefined) return null;
  const out: { some?: PressureLine; full?: PressureLine } = {};
  for (const line of text.split('\n')) {
    const m = /^(some|full) avg10=(\d+(?:\.\d+)?) avg60=(\d+(?:\.\d+)?) avg300=(\d+(?:\.\d+)?) total=(\d+)$/.exec(line.trim());
    if (m === null) continue;
    out[m[1] as 'some' | 'full'] = { avg10: Number(m[2]), avg60: Number(m[3]), avg300: Number(m[4]), total: Number(m[5]) };
  }
  return out.some === undefined && out.full === undefined ? null : out;
}

/** The `MEMINFO_KEYS` of `/proc/meminfo`, in kB. */
export function parseMeminfo(text: string): HostState['meminfo'] {
  const out: HostState['meminfo'] = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_()0-9]+):\s+(\d+)/.exec(line);
    if (m !== null && (MEMINFO_KEYS as readonly string[]).includes(m[1] as string)) out[m[1] as (typeof MEMINFO_KEYS)[number]] = Number(m[2]);
  }
  return out;
}

/**
 * `/proc/PID/stat` (proc(5)). The comm field is in parentheses and may hold spaces and `)`, so fields are
 * counted from the last `)`.
 */
export function parseStat(text: string): {
  comm: string;
  state: string;
  utimeMs: number;
  stimeMs: number;
  threads: number | null;
  processor: number | null;
} {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open === -1 || close < open) throw new Error(`unexpected stat: ${JSON.stringify(text.slice(0, 80))}`);
  const fields = text.slice(close + 2).trim().split(' ');
  // fields[0] is field 3 (state): field n is fields[n - 3].
  const num = (n: number): number | null => {
    const v = fields[n - 3];
    return v === undefined || !/^-?\d+$/.test(v) ? null : Number(v);
  };
  const utime = num(14);
  const stime = num(15);
  if (fields[0] === undefined || utime === null || stime === null) throw new Error(`unexpected stat: ${JSON.stringify(text.slice(0, 80))}`);
  return {
    comm: text.slice(open + 1, close),
    state: fields[0],
    utimeMs: (utime * 1000) / CLK_TCK,
    stimeMs: (stime * 1000) / CLK_TCK,
    threads: num(20),
    processor: num(39),
  };
}

function summarize(state: HostState, lookFor: boolean): string {
  const parts: string[] = [];
  if (state.loadavg !== null) parts.push(`load ${state.loadavg.load1} ${state.loadavg.load5} ${state.loadavg.load15}`);
  const cpu = state.pressure.cpu?.some;
  if (cpu !== undefined) parts.push(`cpu pressure ${cpu.avg10}%`);
  const mem = state.pressure.memory?.some;
  if (mem !== undefined) parts.push(`memory pressure ${mem.avg10}%`);
  const { MemAvailable: avail, MemTotal: total } = state.meminfo;
  if (avail !== undefined && total !== undefined) parts.push(`mem available ${Math.round(avail / 1024)} of ${Math.round(total / 1024)} MiB`);
  const q = state.qemu;
  if (q !== null) {
    const vcpus = q.vcpus.map((t) => `${t.comm} ${t.state}${t.cpuPercent === undefined ? '' : ` ${t.cpuPercent}%`}`).join(', ');
    parts.push(`qemu pid ${q.pid} (${q.foundBy}) ${q.state}, ${q.vcpus.length} vCPU thread${q.vcpus.length === 1 ? '' : 's'}${vcpus === '' ? '' : `: ${vcpus}`}`);
  } else if (lookFor) {
    parts.push('qemu not found');
  }
  if (state.errors.length > 0) parts.push(`errors: ${state.errors.join('; ')}`);
  return `host: ${parts.join(', ')}`;
}
