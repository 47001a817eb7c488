/**
 * What reading the region costs through each guest-memory path: QMP `pmemsave`, HMP `xp`, and the file
 * behind a `memory-backend-file` (share=on). Boots one test guest (q35 + SeaBIOS, RAM in a /dev/shm file
 * so that all three paths work on it), then per path:
 *  - discovery: RegionReader.locate() (HMP `info mtree -f`, then the downward scan from the top of low
 *    RAM), and a scan that finds nothing (a nonce no table has) for the throughput of a full scan;
 *  - per poll: RegionReader.read() on the cached address (one read of the table: verify + decode), wall
 *    time and this process's CPU time per poll, and QEMU's CPU time (/proc/PID/stat) per poll net of
 *    what the idle guest burns anyway.
 * Prints one table, the paths side by side with ratios. Run: `bash bench/run.sh [--polls N] ...`.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { FileBackedMemory } from '../host-reader/memory/file-backed.js';
import type { GuestMemory } from '../host-reader/memory/guest-memory.js';
import { PmemsaveMemory } from '../host-reader/memory/pmemsave.js';
import { ProcMemory } from '../host-reader/memory/procmem.js';
import { XpMemory } from '../host-reader/memory/xp.js';
import { QmpClient } from '../host-reader/qmp/index.js';
import { RegionReader } from '../host-reader/reader.js';
import { discoverTable, identityFromLayout, parseMtreeLowRam, TableNotFoundError, type MtreeRam } from '../host-reader/region/discover.js';
import { launchGuest, stopAllGuests } from '../test/helpers/guest.js';
import { intFlag } from './flags.js';

const USAGE = `usage: bash bench/run.sh [--polls N] [--xp-polls N] [--discoveries N] [--xp-scan-mib N] [--memory-mib N]
  --polls N         reads per path on the cached address (default 200)
  --xp-polls N      reads through xp (default: --polls)
  --discoveries N   locate() runs per path (default 5; xp: at most 3)
  --xp-scan-mib N   MiB the no-match scan covers through xp (default 4; the other paths scan all low RAM)
  --memory-mib N    guest RAM (default 512)
  --rounds N        interleaved batches of the side-by-side per-read table (default 4)`;

interface Options {
  polls: number;
  xpPolls: number;
  discoveries: number;
  xpScanMiB: number;
  memoryMiB: number;
  rounds: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      polls: { type: 'string' },
      'xp-polls': { type: 'string' },
      discoveries: { type: 'string' },
      'xp-scan-mib': { type: 'string' },
      'memory-mib': { type: 'string' },
      rounds: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }
  const fail = (msg: string): never => {
    console.error(`${msg}\n${USAGE}`);
    process.exit(2);
  };
  const int = (flag: string, v: string | undefined, dflt: number, min: number, max: number) => intFlag(fail, flag, v, dflt, min, max);
  const polls = int('polls', values.polls, 200, 10, 100_000);
  return {
    polls,
    xpPolls: int('xp-polls', values['xp-polls'], polls, 10, 100_000),
    discoveries: int('discoveries', values.discoveries, 5, 1, 100),
    xpScanMiB: int('xp-scan-mib', values['xp-scan-mib'], 4, 1, 1024),
    memoryMiB: int('memory-mib', values['memory-mib'], 512, 128, 2048),
    rounds: int('rounds', values.rounds, 4, 1, 100),
  };
}

// --- measurement helpers -----------------------------------------------------------------------------

const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isSafeInteger(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of `pid` in ms (proc(5): fields 14 and 15, counted after the `(comm)` field). */
function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // rest[0] is field 3 (state)
  const ticks = Number(rest[11]) + Number(rest[12]);
  if (!Number.isFinite(ticks)) throw new Error(`cannot parse /proc/${pid}/stat: ${JSON.stringify(stat.slice(0, 120))}`);
  return (ticks * 1000) / CLK_TCK;
}

/**
 * QEMU's CPU time in ms, all threads: the sum of `se.sum_exec_runtime` (ns precision) over
 * /proc/PID/task/TID/sched when the kernel has them (CONFIG_SCHED_DEBUG), else /proc/PID/stat in clock
 * ticks (10 ms: too coarse for a batch of 1 ms reads). Threads that exit in between are lost either way.
 */
function qemuCpuMs(pid: number): number {
  if (!preciseQemuCpu) return procCpuMs(pid);
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/sched`, 'utf8');
    } catch {
      continue; // the thread exited
    }
    const m = /^se\.sum_exec_runtime\s*:\s*([0-9.]+)$/m.exec(text);
    if (m === null) throw new Error(`no se.sum_exec_runtime in /proc/${pid}/task/${tid}/sched`);
    total += Number(m[1]);
  }
  return total;
}

const preciseQemuCpu = (() => {
  try {
    return /^se\.sum_exec_runtime\s*:/m.test(readFileSync(`/proc/${process.pid}/task/${process.pid}/sched`, 'utf8'));
  } catch {
    return false;
  }
})();

/** This process's user + system CPU in ms. */
function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

interface Stats {
  n: number;
  mean: number;
  p50: number;
  p95: number;
}

function stats(xs: readonly number[]): Stats {
  if (xs.length === 0) return { n: 0, mean: NaN, p50: NaN, p95: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const rank = (q: number) => s[Math.max(0, Math.ceil(q * s.length) - 1)] as number; // nearest rank
  return { n: s.length, mean: s.reduce((a, b) => a + b, 0) / s.length, p50: rank(0.5), p95: rank(0.95) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- the benchmark -----------------------------------------------------------------------------------

interface PathResult {
  path: string;
  locate: { wallMs: Stats; scanMs: Stats; selfCpuMs: Stats; reads: number; scannedBytes: number; address: bigint };
  fullScan: { scannedBytes: number; reads: number; ms: number; mibPerSec: number; qemuCpuMs: number; selfCpuMs: number };
  poll: { wallMs: Stats; selfCpuMs: Stats; qemuCpuMsPerPoll: number; qemuCpuMsRaw: number; seconds: number };
}

async function measurePath(
  path: string,
  memory: GuestMemory,
  qmp: QmpClient,
  qemuPid: number,
  layout: ReturnType<typeof buildDiagSsdt>['layout'],
  mtree: MtreeRam,
  idleQemuMsPerSec: number,
  o: { polls: number; discoveries: number; scanBytes: bigint },
): Promise<PathResult> {
  const reader = new RegionReader(qmp, memory, layout);

  // Discovery as a reader does it after a start or a reset: info mtree -f, scan down from the top.
  const locateWall: number[] = [];
  const locateScan: number[] = [];
  const locateCpu: number[] = [];
  let last: Awaited<ReturnType<RegionReader['locate']>> | undefined;
  for (let i = 0; i < o.discoveries; i++) {
    reader.invalidate();
    const c0 = selfCpuMs();
    const t0 = performance.now();
    last = await reader.locate();
    locateWall.push(performance.now() - t0);
    locateCpu.push(selfCpuMs() - c0);
    locateScan.push(last.ms);
  }
  if (last === undefined) throw new Error('no discovery ran');

  // A scan that matches nothing: what a rescan costs when the table is not (yet) there.
  const wrong = { ...identityFromLayout(layout), nonce: (BigInt(`0x${layout.nonce}`) ^ 1n).toString(16).padStart(16, '0') };
  const q0 = qemuCpuMs(qemuPid);
  const c0 = selfCpuMs();
  let fullScan: PathResult['fullScan'];
  try {
    await discoverTable(memory, wrong, { lowRamTop: mtree.lowRamTop, ranges: mtree.lowRanges, maxScanBytes: o.scanBytes });
    throw new Error(`${path}: a table with nonce ${wrong.nonce} was found`);
  } catch (e) {
    if (!(e instanceof TableNotFoundError)) throw e;
    fullScan = {
      scannedBytes: e.scannedBytes,
      reads: e.reads,
      ms: e.ms,
      mibPerSec: e.scannedBytes / (1024 * 1024) / (e.ms / 1000),
      qemuCpuMs: qemuCpuMs(qemuPid) - q0,
      selfCpuMs: selfCpuMs() - c0,
    };
  }

  // Per poll: read() on the cached address (verify + sample in one read of the table).
  await reader.read();
  for (let i = 0; i < 10; i++) await reader.read(); // warm-up
  const wall: number[] = [];
  const cpu: number[] = [];
  const qemu0 = qemuCpuMs(qemuPid);
  const start = performance.now();
  for (let i = 0; i < o.polls; i++) {
    const c = selfCpuMs();
    const t = performance.now();
    const s = await reader.read();
    wall.push(performance.now() - t);
    cpu.push(selfCpuMs() - c);
    if (s.discovery !== undefined) throw new Error(`${path}: read ${i} rescanned: the cached address stopped verifying`);
  }
  const seconds = (performance.now() - start) / 1000;
  const qemuRaw = qemuCpuMs(qemuPid) - qemu0;
  return {
    path,
    locate: {
      wallMs: stats(locateWall),
      scanMs: stats(locateScan),
      selfCpuMs: stats(locateCpu),
      reads: last.reads,
      scannedBytes: last.scannedBytes,
      address: last.address,
    },
    fullScan,
    poll: {
      wallMs: stats(wall),
      selfCpuMs: stats(cpu),
      qemuCpuMsRaw: qemuRaw / o.polls,
      qemuCpuMsPerPoll: Math.max(0, qemuRaw - idleQemuMsPerSec * seconds) / o.polls,
      seconds,
    },
  };
}

// --- the naive client: the yardstick for pmemsave ---------------------------------------------------

/**
 * The least a pmemsave reader can do, written here on purpose without the QMP client: one raw socket,
 * the capabilities handshake, then per read one `pmemsave` command (no id), wait for the `return` line,
 * readFileSync, unlinkSync. Events are skipped; an error reply rejects. One read at a time.
 */
class NaivePmemsave {
  #pending = '';
  #waiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #greeted = false;
  #onGreeting: (() => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#pending += chunk;
      for (let nl = this.#pending.indexOf('\n'); nl !== -1; nl = this.#pending.indexOf('\n')) {
        const line = this.#pending.slice(0, nl);
        this.#pending = this.#pending.slice(nl + 1);
        this.#line(line);
      }
    });
    socket.on('error', (e) => this.#waiter?.reject(e));
  }

  static async connect(path: string): Promise<NaivePmemsave> {
    const socket = createConnection(path);
    const client = new NaivePmemsave(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve).once('error', reject);
    });
    await new Promise<void>((resolve) => {
      if (client.#greeted) resolve();
      else client.#onGreeting = resolve;
    });
    await client.#command('{"execute":"qmp_capabilities"}\n');
    return client;
  }

  #line(line: string): void {
    if (!this.#greeted) {
      this.#greeted = true;
      this.#onGreeting?.();
      return;
    }
    if (line.startsWith('{"event"')) return;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (line.startsWith('{"return"')) waiter?.resolve();
    else waiter?.reject(new Error(`naive client: ${line.slice(0, 200)}`));
  }

  #command(json: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.socket.write(json);
    });
  }

  async read(addr: bigint, size: number, file: string): Promise<Buffer> {
    await this.#command(`{"execute":"pmemsave","arguments":{"val":${addr},"size":${size},"filename":${JSON.stringify(file)}}}\n`);
    const data = readFileSync(file);
    unlinkSync(file);
    return data;
  }

  close(): void {
    this.socket.destroy();
  }
}

// --- per read, side by side ---------------------------------------------------------------------------

interface ReadPath {
  name: string;
  polls: number;
  read: () => Promise<unknown>;
}

interface ReadCost {
  name: string;
  wallMs: Stats;
  selfCpuMs: Stats;
  /** QEMU CPU per read, raw and net of what the idle guest burns in the same time. */
  qemuCpuMsRaw: number;
  qemuCpuMs: number;
}

/**
 * Every path's reads in `rounds` interleaved batches (the order rotating each round), so that the
 * load of a shared machine drifts over all of them alike: the ratios between paths are what counts.
 */
async function measureReads(paths: readonly ReadPath[], qemuPid: number, idleQemuMsPerSec: number, rounds: number): Promise<ReadCost[]> {
  const acc = paths.map(() => ({ wall: [] as number[], cpu: [] as number[], qemuMs: 0, seconds: 0 }));
  for (const p of paths) for (let i = 0; i < 10; i++) await p.read(); // warm-up
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < paths.length; k++) {
      const index = (k + round) % paths.length;
      const p = paths[index] as ReadPath;
      const a = acc[index] as (typeof acc)[number];
      const n = Math.ceil(p.polls / rounds);
      const q0 = qemuCpuMs(qemuPid);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const c = selfCpuMs();
        const t = performance.now();
        await p.read();
        a.wall.push(performance.now() - t);
        a.cpu.push(selfCpuMs() - c);
      }
      a.seconds += (performance.now() - t0) / 1000;
      a.qemuMs += qemuCpuMs(qemuPid) - q0;
    }
  }
  return paths.map((p, i) => {
    const a = acc[i] as (typeof acc)[number];
    return {
      name: p.name,
      wallMs: stats(a.wall),
      selfCpuMs: stats(a.cpu),
      qemuCpuMsRaw: a.qemuMs / a.wall.length,
      qemuCpuMs: Math.max(0, a.qemuMs - idleQemuMsPerSec * a.seconds) / a.wall.length,
    };
  });
}

function printReadTable(costs: readonly ReadCost[], title: string): void {
  const naive = costs.find((c) => c.name === 'naive');
  const rows: string[][] = [
    ['path', 'reads', 'wall ms mean', 'p50', 'our CPU ms mean', 'p50', 'QEMU CPU ms', 'wall/naive', 'our CPU/naive', 'QEMU/naive'],
  ];
  for (const c of costs) {
    rows.push([
      c.name,
      String(c.wallMs.n),
      num(c.wallMs.mean),
      num(c.wallMs.p50),
      num(c.selfCpuMs.mean),
      num(c.selfCpuMs.p50),
      num(c.qemuCpuMs),
      naive ? ratio(c.wallMs.mean, naive.wallMs.mean) : '-',
      naive ? ratio(c.selfCpuMs.mean, naive.selfCpuMs.mean) : '-',
      naive ? ratio(c.qemuCpuMs, naive.qemuCpuMs) : '-',
    ]);
  }
  const widths = (rows[0] as string[]).map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length)));
  console.log('');
  console.log(title);
  for (const r of rows) console.log(r.map((x, col) => (col === 0 ? x.padEnd(widths[0] ?? 0) : x.padStart(widths[col] ?? 0))).join('  '));
}

// --- output ------------------------------------------------------------------------------------------

function num(v: number, digits?: number): string {
  if (!Number.isFinite(v)) return '-';
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3);
  return v.toFixed(d);
}

function ratio(a: number, b: number): string {
  if (!(Number.isFinite(a) && Number.isFinite(b) && a > 0 && b > 0)) return '-';
  const r = a / b;
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toPrecision(2)}x`;
}

function printTable(results: readonly PathResult[], header: string[]): void {
  const [pm, xp, fb] = results as [PathResult, PathResult, PathResult];
  const rows: string[][] = [['', pm.path, xp.path, fb.path, `${pm.path}/${fb.path}`, `${xp.path}/${fb.path}`, `${xp.path}/${pm.path}`]];
  const line = (label: string, f: (r: PathResult) => number, digits?: number, ratios = true) =>
    rows.push([
      label,
      num(f(pm), digits),
      num(f(xp), digits),
      num(f(fb), digits),
      ...(ratios ? [ratio(f(pm), f(fb)), ratio(f(xp), f(fb)), ratio(f(xp), f(pm))] : ['', '', '']),
    ]);
  const section = (title: string) => rows.push([title, '', '', '', '', '', '']);

  section(`discovery: locate() = info mtree -f + scan down from the top (${pm.locate.wallMs.n}/${xp.locate.wallMs.n}/${fb.locate.wallMs.n} runs)`);
  line('  wall ms, mean', (r) => r.locate.wallMs.mean);
  line('  wall ms, p50', (r) => r.locate.wallMs.p50);
  line('  wall ms, p95', (r) => r.locate.wallMs.p95);
  line('  scan only ms, mean', (r) => r.locate.scanMs.mean);
  line('  reads', (r) => r.locate.reads, 0);
  line('  KiB scanned', (r) => r.locate.scannedBytes / 1024, 0);
  line('  this process CPU ms, mean', (r) => r.locate.selfCpuMs.mean);
  section('no-match scan of low RAM (rescan cost when the table is absent)');
  line('  MiB scanned (xp: a sample)', (r) => r.fullScan.scannedBytes / (1024 * 1024), 0, false);
  line('  reads', (r) => r.fullScan.reads, 0, false);
  line('  wall ms', (r) => r.fullScan.ms, undefined, false);
  line('  wall ms per MiB', (r) => r.fullScan.ms / (r.fullScan.scannedBytes / (1024 * 1024)));
  line('  MiB/s', (r) => r.fullScan.mibPerSec);
  line('  this process CPU ms per MiB', (r) => r.fullScan.selfCpuMs / (r.fullScan.scannedBytes / (1024 * 1024)));
  line('  QEMU CPU ms per MiB', (r) => r.fullScan.qemuCpuMs / (r.fullScan.scannedBytes / (1024 * 1024)));
  section(`per poll: read() on the cached address (${pm.poll.wallMs.n}/${xp.poll.wallMs.n}/${fb.poll.wallMs.n} polls, back to back)`);
  line('  wall ms, mean', (r) => r.poll.wallMs.mean);
  line('  wall ms, p50', (r) => r.poll.wallMs.p50);
  line('  wall ms, p95', (r) => r.poll.wallMs.p95);
  line('  this process CPU ms, mean', (r) => r.poll.selfCpuMs.mean);
  line('  this process CPU ms, p50', (r) => r.poll.selfCpuMs.p50);
  line('  this process CPU ms, p95', (r) => r.poll.selfCpuMs.p95);
  line('  QEMU CPU ms/poll, raw', (r) => r.poll.qemuCpuMsRaw);
  line('  QEMU CPU ms/poll, net of idle', (r) => r.poll.qemuCpuMsPerPoll);
  line('  polls/s', (r) => r.poll.wallMs.n / r.poll.seconds, 0);

  const isSection = (r: string[]) => r[0] !== '' && !(r[0] ?? '').startsWith(' ');
  const cells = rows.filter((r) => !isSection(r));
  const widths = rows[0]?.map((_, c) => Math.max(...cells.map((r) => (r[c] ?? '').length))) ?? [];
  for (const h of header) console.log(h);
  console.log('');
  for (const r of rows) {
    console.log(isSection(r) ? r[0] : r.map((x, c) => (c === 0 ? x.padEnd(widths[0] ?? 0) : x.padStart(widths[c] ?? 0))).join('  ').trimEnd());
  }
}

// --- main --------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const command = ['bash', 'bench/run.sh', ...process.argv.slice(2)].join(' ');
  const shm = `/dev/shm/eve-diag-bench-${process.pid}-${Date.now().toString(36)}`;
  const tableFile = join(tmpdir(), `eve-diag-bench-${process.pid}.aml`);
  const toClose: GuestMemory[] = [];
  let qmp: QmpClient | undefined;
  let naive: NaivePmemsave | undefined;
  // The naive client's own QMP socket (QEMU serves one client per socket) and file directory.
  const naiveDir = await mkdtemp(join(tmpdir(), 'eve-diag-bench-naive-'));
  const naiveQmpPath = join(naiveDir, 'qmp.sock');
  const cleanup = async () => {
    for (const m of toClose) await m.close?.().catch(() => undefined);
    await qmp?.close().catch(() => undefined);
    naive?.close();
    await stopAllGuests();
    await rm(shm, { force: true });
    await rm(tableFile, { force: true });
    await rm(naiveDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143)).catch(() => undefined);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const { aml, layout } = buildDiagSsdt({ nonce: 0xbe4c_0000_0000_0001n, kernelPeriodMs: 1000 });
    await writeFile(tableFile, aml);
    const bootStart = performance.now();
    const guest = await launchGuest({
      machine: 'q35',
      firmware: 'seabios',
      memoryMiB: o.memoryMiB,
      acpiTables: [tableFile],
      append: 'quiet',
      extraArgs: ['-M', 'q35,memory-backend=mem0', '-object', `memory-backend-file,id=mem0,size=${o.memoryMiB}M,mem-path=${shm},share=on`,
        ...['-qmp', `unix:${naiveQmpPath},server=on,wait=off`],
      ],
    });
    const bootMs = performance.now() - bootStart;
    qmp = await QmpClient.connect({ path: guest.qmpPath });
    const mtree = parseMtreeLowRam(await qmp.hmp('info mtree -f'));
    const pmem = await PmemsaveMemory.open(qmp);
    toClose.push(pmem);
    const xp = new XpMemory(qmp);
    toClose.push(xp);
    const file = await FileBackedMemory.open(
      shm,
      mtree.ranges.map((r) => ({ guestAddr: r.start, size: r.end - r.start, fileOffset: r.offset })),
    );
    toClose.push(file);

    // What the idle guest costs QEMU anyway (TCG timer ticks), to subtract from the poll batches.
    await sleep(2000); // let the boot settle
    const idle0 = qemuCpuMs(guest.pid);
    const idleT0 = performance.now();
    await sleep(3000);
    const idleQemuMsPerSec = (qemuCpuMs(guest.pid) - idle0) / ((performance.now() - idleT0) / 1000);

    const allLowRam = mtree.lowRanges.reduce((s, r) => s + (r.end - r.start), 0n);
    const results: PathResult[] = [];
    results.push(
      await measurePath('pmemsave', pmem, qmp, guest.pid, layout, mtree, idleQemuMsPerSec, {
        polls: o.polls,
        discoveries: o.discoveries,
        scanBytes: allLowRam,
      }),
    );
    results.push(
      await measurePath('xp', xp, qmp, guest.pid, layout, mtree, idleQemuMsPerSec, {
        polls: o.xpPolls,
        discoveries: Math.min(o.discoveries, 3),
        scanBytes: BigInt(o.xpScanMiB) * 1024n * 1024n,
      }),
    );
    results.push(
      await measurePath('file-backed', file, qmp, guest.pid, layout, mtree, idleQemuMsPerSec, {
        polls: o.polls,
        discoveries: o.discoveries,
        scanBytes: allLowRam,
      }),
    );
    const addresses = new Set(results.map((r) => r.locate.address));
    if (addresses.size !== 1) throw new Error(`the paths found different addresses: ${[...addresses].map((a) => `0x${a.toString(16)}`).join(', ')}`);
    const address = results[0]?.locate.address ?? 0n;

    // Per read, side by side with the naive client, interleaved.
    naive = await NaivePmemsave.connect(naiveQmpPath);
    const naiveFile = join(naiveDir, 'table.bin');
    const naiveClient = naive;
    const checked = (name: string, reader: RegionReader) => async () => {
      const s = await reader.read();
      if (s.discovery !== undefined) throw new Error(`${name}: a read rescanned: the cached address stopped verifying`);
    };
    const procmem = await ProcMemory.open(qmp, { pid: guest.pid });
    toClose.push(procmem);
    const readers = new Map<string, RegionReader>();
    for (const [name, memory] of [['procmem', procmem], ['pmemsave', pmem], ['xp', xp], ['file-backed', file]] as const) {
      const reader = new RegionReader(qmp, memory, layout);
      const found = await reader.locate();
      if (found.address !== address) throw new Error(`${name} found the table at 0x${found.address.toString(16)}, not 0x${address.toString(16)}`);
      readers.set(name, reader);
    }
    const readPaths: ReadPath[] = [
      { name: 'procmem', polls: o.polls, read: checked('procmem', readers.get('procmem') as RegionReader) },
      { name: 'pmemsave', polls: o.polls, read: checked('pmemsave', readers.get('pmemsave') as RegionReader) },
      { name: 'xp', polls: o.xpPolls, read: checked('xp', readers.get('xp') as RegionReader) },
      { name: 'file-backed', polls: o.polls, read: checked('file-backed', readers.get('file-backed') as RegionReader) },
      { name: 'naive', polls: o.polls, read: () => naiveClient.read(address, layout.table.length, naiveFile) },
    ];
    const costs = await measureReads(readPaths, guest.pid, idleQemuMsPerSec, o.rounds);

    printTable(results, [
      `eve-diag host reader: cost per memory-access path`,
      `command: ${command}`,
      `host: ${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}, QEMU ${qmp.version ? `${qmp.version.major}.${qmp.version.minor}.${qmp.version.micro}` : '?'} (TCG)`,
      `guest: q35 + SeaBIOS, ${o.memoryMiB} MiB in ${shm} (share=on), booted in ${(bootMs / 1000).toFixed(1)} s; ` +
        `low RAM top 0x${mtree.lowRamTop.toString(16)}, table (${layout.table.length} B) at 0x${address.toString(16)}, ` +
        `${(mtree.lowRamTop - address) / 1024n} KiB below the top`,
      `idle QEMU CPU: ${idleQemuMsPerSec.toFixed(1)} ms/s (subtracted for "net of idle"); QEMU CPU from ${preciseQemuCpu ? "se.sum_exec_runtime of its threads (ns)" : `clock ticks of ${1000 / CLK_TCK} ms`}`,
    ]);
    printReadTable(
      costs,
      `per read of the ${layout.table.length}-byte table, side by side (${o.rounds} interleaved rounds; our CPU: this process; ` +
        `QEMU CPU net of idle, from ${preciseQemuCpu ? 'se.sum_exec_runtime of its threads' : 'clock ticks'}; ` +
        `naive: one pmemsave on a raw socket + readFileSync + unlinkSync)`,
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
