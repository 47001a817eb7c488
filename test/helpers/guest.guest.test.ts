import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectCleanDmesg } from './dmesg.js';
import { launchGuest, removeInjectedPrintk, stopAllGuests, type Guest, type LaunchOptions } from './guest.js';

afterAll(stopAllGuests);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function boot(opts: LaunchOptions): Promise<Guest> {
  const t0 = Date.now();
  const guest = await launchGuest(opts);
  console.log(`${opts.machine}+${opts.firmware}: ready in ${Date.now() - t0} ms`);
  return guest;
}

describe.each([
  { machine: 'q35', firmware: 'seabios' },
  { machine: 'q35', firmware: 'ovmf' },
  { machine: 'pc', firmware: 'seabios' },
] as const)('$machine + $firmware', (opts) => {
  it('boots to the shell, runs commands, stops', async () => {
    const guest = await boot(opts);
    // Whole-line matches: late boot messages from the kernel may share the console with the output.
    expect(await guest.run('uname -r')).toMatch(new RegExp(`^${escapeRe(guest.kernelRelease)}$`, 'm'));
    expect(await guest.run('cat /proc/sys/kernel/sysrq')).toMatch(/^1$/m);
    // With no table of ours the guest's log is clean too: a complaint seen with our table is ours.
    await expectCleanDmesg(guest);
    expect(removeInjectedPrintk(guest.consoleText())).toMatch(/^EVE-DIAG-GUEST-READY\r?$/m);

    await guest.stop();
    expect(alive(guest.pid)).toBe(false);
    expect(existsSync(guest.dir)).toBe(false);
    await guest.stop(); // idempotent
  });
});

describe('run', () => {
  it('separates the output of consecutive and concurrent commands', async () => {
    // quiet: no KERN_INFO boot messages in the middle of the outputs compared exactly here.
    const guest = await boot({ machine: 'q35', firmware: 'seabios', append: 'quiet' });
    expect(await guest.run('true')).toBe('');
    expect(await guest.run('printf no-newline')).toBe('no-newline');
    expect(await guest.run('echo a; echo b >&2; echo c')).toBe('a\nb\nc');
    const [x, y] = await Promise.all([guest.run('echo x'), guest.run('sleep 1; echo y')]);
    expect([x, y]).toEqual(['x', 'y']);
    // The shell survives exit: /init starts another one.
    await guest.run('exit', 3000).catch(() => undefined); // its markers die with it
    expect(await guest.run('echo back', 10_000)).toBe('back');
    await guest.stop();
  });

  it('times out with the console tail when the guest does not answer', async () => {
    const guest = await boot({ machine: 'q35', firmware: 'seabios', append: 'eve_diag.scenario=stop-userspace eve_diag.delay=1' });
    await new Promise((r) => setTimeout(r, 2000));
    await expect(guest.run('echo hello', 3000)).rejects.toThrow(/timed out after 3000 ms[\s\S]*--- console \(tail\) ---/);
    await guest.stop();
  });
});

describe('launch options', () => {
  it('passes -acpitable files (commas in paths escaped) and a name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'acpitable,test-'));
    try {
      const table = join(dir, 'ssdt,1.aml');
      writeFileSync(table, emptySsdt('EVEDTEST'));
      // quiet: the table's bytes are compared exactly, and a late KERN_INFO message (the TSC clocksource
      // switch, seen in CI) would land in the output.
      const guest = await boot({ machine: 'q35', firmware: 'seabios', acpiTables: [table], name: 'eve,diag', append: 'quiet' });
      const found = await guest.run('grep -l EVEDTEST /sys/firmware/acpi/tables/SSDT*');
      expect(found).toMatch(/^\/sys\/firmware\/acpi\/tables\/SSDT\d*$/m);
      const path = /^\/sys\S+$/m.exec(found)?.[0] ?? '';
      expect(await guest.run(`od -An -tx1 -v ${path} | tr -d ' \\n'`)).toBe(emptySsdt('EVEDTEST').toString('hex'));
      await guest.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ends QEMU on a guest reboot by default, reboots with reboot: true', async () => {
    const once = await boot({ machine: 'q35', firmware: 'seabios' });
    await once.run('reboot -f', 2000).catch(() => undefined);
    await expect.poll(() => alive(once.pid), { timeout: 20_000 }).toBe(false);
    await once.stop();

    const twice = await boot({ machine: 'q35', firmware: 'seabios', reboot: true });
    const since = twice.consoleText().length;
    await twice.run('reboot -f', 2000).catch(() => undefined);
    await twice.waitForConsole(/^EVE-DIAG-GUEST-READY\r?$/m, 60_000, since);
    expect(alive(twice.pid)).toBe(true);
    await twice.stop();
  });
});

/** An SSDT with no AML: just the 36-byte header (ACPI 6.5, 5.2.6), checksum included. */
function emptySsdt(oemTableId: string): Buffer {
  const t = Buffer.alloc(36);
  t.write('SSDT', 0, 'latin1');
  t.writeUInt32LE(36, 4); // Length
  t.writeUInt8(2, 8); // Revision
  t.write('EVEDIA', 10, 'latin1'); // OEMID
  t.write(oemTableId.padEnd(8), 16, 'latin1'); // OEM Table ID
  t.writeUInt32LE(1, 24); // OEM Revision
  t.write('EVED', 28, 'latin1'); // Creator ID
  t.writeUInt32LE(1, 32); // Creator Revision
  t.writeUInt8((256 - (t.reduce((a, b) => a + b, 0) % 256)) % 256, 9); // Checksum: bytes sum to 0
  return t;
}

describe('scenarios', () => {
  it('panic: the kernel panics after the delay', async () => {
    const guest = await boot({ machine: 'q35', firmware: 'seabios', append: 'eve_diag.scenario=panic eve_diag.delay=1' });
    await guest.waitForConsole(/Kernel panic - not syncing: sysrq triggered crash/, 30_000);
    await guest.stop();
  });
});

// Pure, but kept here beside the launcher's real-guest tests.
describe('removeInjectedPrintk', () => {
  const msg = (t: string) => `[    2.419830] ${t}\r\n`;

  it('rejoins a line split by kernel messages', () => {
    // As captured from a q35 guest: the clocksource switch inside a run() marker line.
    expect(removeInjectedPrintk(`@@42-6-begin${msg('clocksource: Switched to clocksource tsc')}\r\nline-5\r\n`)).toBe(
      '@@42-6-begin\r\nline-5\r\n',
    );
    expect(removeInjectedPrintk(`@@42-6-be${msg('a')}${msg('b')}gin\r\n`)).toBe('@@42-6-begin\r\n');
  });

  it('keeps kernel lines that start a line, as dmesg prints them', () => {
    const dmesg = `${msg('a')}${msg('b')}x [ 1.5] y\r\n`;
    expect(removeInjectedPrintk(dmesg)).toBe(dmesg);
  });

  it('keeps a kernel line whose bracket the UART sent twice, and the lines after it', () => {
    // As captured from a 6.12 guest's oops: one `[[` took the whole oops with it.
    const oops = `${msg('Code: 04 48')}[${msg('RSP: 0018')}${msg('Call Trace:')}${msg('---[ end trace 0000000000000000 ]---')}`;
    expect(removeInjectedPrintk(oops)).toBe(oops);
  });
});

describe('launchGuest failures', () => {
  it('rejects with the QEMU stderr tail when QEMU exits early, and cleans up', async () => {
    const ours = () => readdirSync(tmpdir()).filter((n) => n.startsWith('eve-diag-guest-'));
    const before = ours();
    await expect(launchGuest({ extraArgs: ['-no-such-option'] })).rejects.toThrow(
      /QEMU exited with code 1[\s\S]*QEMU stderr[\s\S]*-no-such-option: invalid option/,
    );
    expect(ours()).toEqual(before);
  });
});
