/**
 * The guest agent's footprint inside a guest: boots the test guest with the host's Node and the agent
 * bundle (QEMU TCG, 1 vCPU, 1024 MiB, our SSDT so the heartbeat zone exists), runs the Node agent at
 * a 1 s heartbeat period (marks every 60 s, to syslog and the console) and the POSIX-sh heartbeat loop
 * beside it, and a Node process doing nothing but a 1 s timer (the floor for any Node agent), lets
 * them settle, then reads /proc/PID/stat twice over a window:
 *  - RSS: VmRSS (and VmHWM, the peak) from /proc/PID/status at the end of the window;
 *  - CPU share: (utime + stime) delta over the guest's /proc/uptime delta, in USER_HZ ticks (100 on
 *    x86); for the sh loop, plus cutime + cstime (its `sleep` children).
 * The same bundle also runs on the host over the same window (natively, against a fake zone, no
 * syslog), to show how much of the guest figure is TCG emulation (every guest instruction is
 * emulated, so guest CPU shares are several times what KVM or hardware would show).
 * Targets (the issue): RSS < 50 MB, CPU < 0.5 % at a 1 s period. Prints one table.
 *
 * Run (bench/ is not part of the build):
 *   npx esbuild bench/agent-footprint.ts --bundle --platform=node --format=esm --packages=external \
 *     --outfile=.cache/bench/agent-footprint.mjs --log-level=warning && node .cache/bench/agent-footprint.mjs [--seconds N]
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildDiagSsdt } from '../acpi/diag/ssdt.js';
import { buildAgentBundle } from '../build/agent-bundle.js';
import { buildGuestImage, GUEST_AGENT_PATH, GUEST_SH_AGENT_PATH } from '../build/guest-image.js';
import { installDir } from '../bake/assets.js';
import { AGENT_VERSION } from '../guest-agent/version.js';
import { launchGuest, stopAllGuests, type Guest } from '../test/helpers/guest.js';

export const COMMAND =
  'npx esbuild bench/agent-footprint.ts --bundle --platform=node --format=esm --packages=external ' +
  '--outfile=.cache/bench/agent-footprint.mjs --log-level=warning && node .cache/bench/agent-footprint.mjs';

const USER_HZ = 100; // /proc/PID/stat ticks on x86 Linux (sysconf(_SC_CLK_TCK))
const TARGET_RSS_MB = 50;
const TARGET_CPU_PCT = 0.5;

interface Sample {
  uptime: number;
  ticks: number;
  childTicks: number;
  rssKb: number;
  hwmKb: number;
}

/** Fields 14-17 of /proc/PID/stat (utime, stime, cutime, cstime), after the `(comm)` field. */
export function parseStatTicks(stat: string): { ticks: number; childTicks: number } {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): field N is rest[N - 3].
  const f = (n: number) => Number(rest[n - 3]);
  const ticks = f(14) + f(15);
  const childTicks = f(16) + f(17);
  if (!Number.isFinite(ticks) || !Number.isFinite(childTicks)) throw new Error(`cannot parse /proc/PID/stat: ${stat}`);
  return { ticks, childTicks };
}

function kb(status: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
  if (m === null) throw new Error(`no ${key} in /proc/PID/status`);
  return Number(m[1]);
}

async function sample(guest: Guest, pid: number): Promise<Sample> {
  // One command, so the uptime and the stat belong together.
  const out = await guest.run(`cat /proc/uptime; cat /proc/${pid}/stat; echo ===; cat /proc/${pid}/status`);
  const [head, status] = out.split('\n===\n');
  const lines = (head ?? '').split('\n').filter((l) => !l.startsWith('eve-diag mark'));
  const uptime = Number((lines[0] ?? '').split(' ')[0]);
  const stat = lines.find((l) => l.startsWith(`${pid} (`));
  if (stat === undefined || !Number.isFinite(uptime)) throw new Error(`unexpected output: ${out}`);
  return { uptime, ...parseStatTicks(stat), rssKb: kb(status ?? '', 'VmRSS'), hwmKb: kb(status ?? '', 'VmHWM') };
}

/** The same numbers for a host process (this machine's /proc; wall time from the host clock). */
function hostSample(pid: number): Sample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { uptime: performance.now() / 1000, ...parseStatTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')), rssKb: kb(status, 'VmRSS'), hwmKb: kb(status, 'VmHWM') };
}

async function pidOf(guest: Guest, cmd: string): Promise<number> {
  const out = await guest.run(`${cmd} </dev/null & echo "BGPID=$!"`);
  const m = /BGPID=(\d+)/.exec(out);
  if (m === null) throw new Error(`no pid: ${out}`);
  return Number(m[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '45' }, settle: { type: 'string', default: '15' }, help: { type: 'boolean' } } });
  if (values.help) {
    console.log(`usage: node .cache/bench/agent-footprint.mjs [--seconds N (window, default 45)] [--settle N (default 15)]\nbuild+run: ${COMMAND}`);
    return;
  }
  const windowS = Number(values.seconds);
  const settleS = Number(values.settle);
  if (!(windowS >= 10 && windowS <= 600) || !(settleS >= 0 && settleS <= 300)) throw new Error('--seconds 10..600, --settle 0..300');

  const dir = await mkdtemp(join(tmpdir(), 'eve-diag-bench-agent-'));
  try {
    const ssdt = buildDiagSsdt({ kernelPeriodMs: 1000 });
    const aml = join(dir, 'diag.aml');
    await writeFile(aml, ssdt.aml);
    const bundle = await buildAgentBundle({ outfile: join(dir, 'eve-diag-agent.js') });
    const sh = readFileSync(join(installDir(), 'eve-diag-agent.sh'), 'utf8');
    const image = await buildGuestImage({ node: true, agent: { bundle: bundle.code, sh } });
    const guest = await launchGuest({ acpiTables: [aml], memoryMiB: 1024, append: 'quiet', bootTimeoutMs: 180_000, extraArgs: ['-initrd', image.initrd] });
    await guest.run('mkdir -p /var/log && busybox syslogd -O /var/log/messages');
    const nodeVersion = (await guest.run('/usr/bin/node --version')).trim();
    type Four = readonly [Sample, Sample, Sample, Sample];
    let samples: { a: Four; b: Four } | undefined;
    const nodePid = await pidOf(guest, `/usr/bin/node ${GUEST_AGENT_PATH} --period 1 2>/tmp/agent.err`);
    const shPid = await pidOf(guest, `${GUEST_SH_AGENT_PATH} heartbeat --period 1 2>/tmp/hb.err`);
    const idlePid = await pidOf(guest, '/usr/bin/node -e "setInterval(() => {}, 1000)"');
    // The host row: a fake root with the zone (a plain file: no AML behind it), marks to a file.
    const root = join(dir, 'root');
    mkdirSync(join(root, 'sys/class/thermal/thermal_zone0/device'), { recursive: true });
    writeFileSync(join(root, 'sys/class/thermal/thermal_zone0/device/path'), '\\_TZ_.EDGA\n');
    writeFileSync(join(root, 'sys/class/thermal/thermal_zone0/temp'), '25000\n');
    writeFileSync(join(dir, 'console'), '');
    const host = spawn(process.execPath, [bundle.outfile, '--root', root, '--console', join(dir, 'console'), '--no-syslog'], { stdio: 'ignore' });
    try {
      await sleep(settleS * 1000);
      const take = async (): Promise<Four> => [await sample(guest, nodePid), await sample(guest, idlePid), await sample(guest, shPid), hostSample(host.pid as number)];
      const a = await take();
      await sleep(windowS * 1000);
      const b = await take();
      samples = { a, b };
    } finally {
      host.kill('SIGTERM');
    }
    if (samples === undefined) throw new Error('no samples');
    const { a, b } = samples;
    const errs = await guest.run('cat /tmp/agent.err /tmp/hb.err');
    await stopAllGuests();

    const rows = [
      { name: `guest: Node agent ${AGENT_VERSION} (${nodeVersion}, ${bundle.bytes} B bundle)`, a: a[0], b: b[0], children: false },
      { name: 'guest: Node doing nothing but a 1 s timer (floor)', a: a[1], b: b[1], children: false },
      { name: 'guest: POSIX-sh heartbeat (busybox ash)', a: a[2], b: b[2], children: true },
      { name: `host, native: the same Node agent (${process.version}, fake zone, no syslog)`, a: a[3], b: b[3], children: false },
    ].map((r) => {
      const secs = r.b.uptime - r.a.uptime;
      const ticks = r.b.ticks - r.a.ticks + (r.children ? r.b.childTicks - r.a.childTicks : 0);
      const cpuPct = (ticks / USER_HZ / secs) * 100;
      return { ...r, secs, cpuPct, rssMb: r.b.rssKb / 1024, hwmMb: r.b.hwmKb / 1024 };
    });
    const node = rows[0] as (typeof rows)[0];
    console.log(`guest agent footprint: QEMU TCG, 1 vCPU, 1024 MiB, Debian kernel, heartbeat period 1 s, marks every 60 s; window ${node.secs.toFixed(1)} s (guest uptime) after ${settleS} s settling`);
    console.log('');
    console.log('| agent | RSS (VmRSS) | peak RSS (VmHWM) | CPU (utime+stime) |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const r of rows) console.log(`| ${r.name} | ${r.rssMb.toFixed(1)} MB | ${r.hwmMb.toFixed(1)} MB | ${r.cpuPct.toFixed(3)} %${r.children ? ' (with its sleep children)' : ''} |`);
    console.log('');
    const ok = node.rssMb < TARGET_RSS_MB && node.cpuPct < TARGET_CPU_PCT;
    console.log(`targets for the Node agent: RSS < ${TARGET_RSS_MB} MB, CPU < ${TARGET_CPU_PCT} %: ${ok ? 'met' : 'NOT met'}`);
    console.log(`measured by: ${COMMAND} --seconds ${windowS}`);
    if (!/heartbeat: reading/.test(errs)) console.log(`warning: an agent did not report its zone:\n${errs}`);
  } finally {
    await stopAllGuests();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`agent-footprint: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
