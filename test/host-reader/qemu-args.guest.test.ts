/**
 * The launch flags from host-reader/qemu-args in a real QEMU (7.2, TCG) booting the test guest: the argv
 * form (taken from the JSON format) and the -readconfig form. The guest launcher's own QMP and console stay
 * as they are (it drives the guest on ttyS0); ours come second: our console is ttyS1 in the guest.
 * Every path lives in a directory whose name has a space and a comma, so QEMU's comma escaping is exercised.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { renderJson, renderReadconfig, type QemuArgsSpec } from '../../host-reader/qemu-args/index.js';
import { QmpClient } from '../../host-reader/qmp/index.js';
import { expectCleanDmesg } from '../helpers/dmesg.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

let dir: string;
let table: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag qa,'));
  table = join(dir, 'ssdt.aml');
  await writeFile(table, buildDiagSsdt({ nonce: 0x9e_a965n }).aml);
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

let guest: Guest | undefined;
let qmp: QmpClient | undefined;
afterEach(async () => {
  await qmp?.close().catch(() => undefined);
  await guest?.stop();
  qmp = guest = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fresh subdirectory of `dir` per boot, so sockets and files of two boots never mix. */
async function bootDir(name: string): Promise<string> {
  const d = join(dir, name);
  await mkdir(d);
  return d;
}

function fullSpec(d: string, style: 'mon' | 'qmp'): QemuArgsSpec {
  return {
    acpiTable: table,
    qmp: { path: join(d, 'q,mp.sock'), style },
    console: { path: join(d, 'cons.sock'), logfile: join(d, 'cons,1.log') },
    pvpanic: true,
    erst: { path: join(d, 'erst,nvram') },
    gdb: { path: join(d, 'gdb.sock') },
  };
}

/** The ACPI paths of our two zones as the guest's sysfs prints them (DESIGN fact 2), sorted. */
const ZONES = ['\\_TZ_.EDGA', '\\_TZ_.EDGK'];

/** ACPI paths of the guest's thermal zones, sorted. */
async function zonePaths(g: Guest): Promise<string[]> {
  const out = await g.run('cat /sys/class/thermal/thermal_zone*/device/path');
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '').sort();
}

/** What a POSIX shell makes of `line`: how a user pastes the flags listed in the readconfig comment. */
function shellWords(line: string): string[] {
  return execFileSync('sh', ['-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' }).split('\0').slice(0, -1);
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Our console: the guest writes to ttyS1; the chardev logfile (read passively, fact 8) grows by that line. */
async function checkConsoleLog(g: Guest, logfile: string, previous: string): Promise<void> {
  const before = (await stat(logfile)).size;
  const marker = `evediag-ttyS1-${Date.now()}`;
  await g.run(`echo ${marker} > /dev/ttyS1`);
  const text = await waitFor('marker in the console log', 10_000, async () => {
    const t = await readFile(logfile, 'utf8');
    return t.includes(marker) ? t : undefined;
  });
  expect((await stat(logfile)).size).toBeGreaterThan(before);
  expect(text.startsWith(previous), 'logappend=on keeps what was there').toBe(true);
}

/**
 * The gdbstub on our socket: a client connecting stops the VM (QEMU's gdbstub does that on open), `?` reports
 * the stop signal, and detaching lets the VM run again.
 */
async function checkGdbstub(path: string, q: QmpClient): Promise<void> {
  const sock = connect(path);
  let received = '';
  sock.setEncoding('utf8').on('data', (s: string) => (received += s));
  await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
  try {
    await waitFor('VM stopped by the gdb connection', 10_000, async () => ((await q.queryStatus()).running ? undefined : true));
    sock.write('$?#3f');
    await waitFor('gdbstub stop reply', 10_000, async () => (/\$[ST][0-9a-f]{2}/.test(received) ? true : undefined));
    sock.write('+$D#44');
    await waitFor('gdbstub detach reply', 10_000, async () => (received.includes('$OK#9a') ? true : undefined));
    await waitFor('VM running after detach', 10_000, async () => ((await q.queryStatus()).running ? true : undefined));
  } finally {
    sock.destroy();
  }
}

/** pvpanic is announced in the DSDT as QEMU0001; ERST is found and registered by the guest kernel. */
async function checkPvpanicAndErst(g: Guest, erstFile: string): Promise<void> {
  expect(await g.run('ls /sys/bus/acpi/devices/ | grep -c QEMU0001')).toBe('1');
  expect(await g.run('dmesg | grep -c "ERST: Error Record Serialization Table (ERST) support is initialized"')).toBe('1');
  expect((await stat(erstFile)).size).toBe(0x10000);
  // The table, pvpanic, ERST and the second serial port together: no firmware complaint.
  await expectCleanDmesg(g);
}

describe('qemu-args in a real QEMU', () => {
  test.each(['mon', 'qmp'] as const)('argv form (from the JSON format), QMP style %s: zones, QMP, console, pvpanic, ERST, gdbstub', async (style) => {
    const d = await bootDir(`argv-${style}`);
    const spec = fullSpec(d, style);
    const previous = 'a line from an earlier boot\n';
    await writeFile(spec.console?.logfile as string, previous);
    const argv = JSON.parse(renderJson(spec)) as string[];
    expect(argv).toContain(`file=${table.replaceAll(',', ',,')}`);
    guest = await launchGuest({ extraArgs: argv, append: 'quiet' });

    expect(await zonePaths(guest)).toEqual(ZONES);
    qmp = await QmpClient.connect({ path: spec.qmp?.path as string });
    expect(await qmp.queryStatus()).toMatchObject({ running: true, status: 'running' });
    await checkConsoleLog(guest, spec.console?.logfile as string, previous);
    await checkPvpanicAndErst(guest, spec.erst?.path as string);
    await checkGdbstub(spec.gdb?.path as string, qmp);
    expect(await guest.run('echo still-alive')).toBe('still-alive');
  });

  test('readconfig form: -readconfig FILE plus the flags its comment lists', async () => {
    const d = await bootDir('readconfig');
    const spec = fullSpec(d, 'qmp');
    await writeFile(spec.console?.logfile as string, '');
    const fragment = renderReadconfig(spec);
    const ini = join(d, 'eve-diag, qemu.ini');
    await writeFile(ini, fragment.text);

    // What the comment tells a user to keep on the command line, pasted into a shell.
    const listed = fragment.text
      .split('\n')
      .filter((l) => l.startsWith('#   -'))
      .flatMap((l) => shellWords(l.slice(1)));
    expect(listed).toEqual(fragment.argv);
    expect(listed.filter((w) => w.startsWith('-'))).toEqual(['-acpitable', '-gdb']);

    guest = await launchGuest({ extraArgs: ['-readconfig', ini, ...listed], append: 'quiet' });
    expect(await zonePaths(guest)).toEqual(ZONES);
    qmp = await QmpClient.connect({ path: spec.qmp?.path as string });
    expect(await qmp.queryStatus()).toMatchObject({ running: true, status: 'running' });
    await checkConsoleLog(guest, spec.console?.logfile as string, '');
    await checkPvpanicAndErst(guest, spec.erst?.path as string);
    await checkGdbstub(spec.gdb?.path as string, qmp);
  });

  // Why -acpitable stays on the command line: QEMU 7.2 parses an [acpi] section but never loads its table.
  // If a QEMU version starts loading it, this fails: then the readconfig form can carry the table too.
  test('an [acpi] section in -readconfig loads no table', async () => {
    const d = await bootDir('acpi-section');
    const ini = join(d, 'acpi.ini');
    await writeFile(ini, `[acpi]\n  file = "${table}"\n`);
    guest = await launchGuest({ extraArgs: ['-readconfig', ini], append: 'quiet' });
    expect(await guest.run('ls /sys/class/thermal | grep -c thermal_zone; true')).toBe('0');
  });
});
