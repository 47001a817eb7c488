import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildDiagSsdt } from '../../acpi/diag/ssdt.js';
import { runCli } from '../helpers/cli.js';
import { launchGuest, stopAllGuests, type Guest } from '../helpers/guest.js';

let dir: string;
let guest: Guest;
let layoutFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-readcli-'));
  const { aml, layout } = buildDiagSsdt({ kernelPeriodMs: 500 });
  await writeFile(join(dir, 't.aml'), aml);
  layoutFile = join(dir, 't.json');
  await writeFile(layoutFile, JSON.stringify(layout));
  // The guest reads the agent zone every second, like the agent would.
  guest = await launchGuest({
    acpiTables: [join(dir, 't.aml')],
    append: 'quiet eve_diag.scenario=read-agent-zone eve_diag.zone_path=/sys/class/thermal/thermal_zone1/temp eve_diag.period=1',
  });
});
afterAll(async () => {
  await stopAllGuests();
  await rm(dir, { recursive: true, force: true });
});

describe('eve-diag read / watch against a real guest', () => {
  test('read --json: table found, kernel alive, agent alive', async () => {
    const r = await runCli('read', '--qmp', guest.qmpPath, '--layout', layoutFile, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.vm).toMatchObject({ running: true, status: 'running' });
    expect(j.table.address).toMatch(/^0x[0-9a-f]+$/);
    expect(j.table.checksumOk).toBe(true);
    expect(j.kernel.status).toBe('alive');
    expect(j.discovery.reads).toBeGreaterThan(0);
    // auto picked procmem here (root): the pid is QEMU's, found as the QMP socket's owner.
    expect(j.memory).toMatchObject({ path: 'procmem', pid: guest.pid });
    const forced = JSON.parse((await runCli('read', '--qmp', guest.qmpPath, '--layout', layoutFile, '--json', '--once', '--memory', 'procmem', '--pid', String(guest.pid))).out);
    expect(forced.memory).toMatchObject({ path: 'procmem', pid: guest.pid });
    expect(forced.table.address).toBe(j.table.address);
  });

  test('read through xp gives the same table address; text output names the statuses', async () => {
    const a = JSON.parse((await runCli('read', '--qmp', guest.qmpPath, '--layout', layoutFile, '--json', '--once')).out);
    const b = await runCli('read', '--qmp', guest.qmpPath, '--layout', layoutFile, '--memory', 'xp');
    expect(b.code).toBe(0);
    expect(b.out).toContain(`table     ${a.table.address}`);
    expect(b.out).toMatch(/kernel {2}alive/);
  });

  test('watch --json --count 4: one line per poll, agent heartbeat seen', async () => {
    const r = await runCli('watch', '--qmp', guest.qmpPath, '--layout', layoutFile, '--json', '--count', '4', '--interval', '700');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(4);
    expect(lines[3].kernel.status).toBe('alive');
    expect(lines[3].region.agentBeats).toBeGreaterThan(lines[0].region.agentBeats);
  });

  test('a socket that is not there: exit 1 with a clean message', async () => {
    const r = await runCli('read', '--qmp', join(dir, 'nope.sock'), '--layout', layoutFile);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nope\.sock/);
  });
});
