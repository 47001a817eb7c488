import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { findZone, readZoneTemp, ZoneTempReader, type SysfsFs } from '../../guest-agent/sysfs.js';
import { FakeRoot } from './fake-tree.js';

let roots: FakeRoot[] = [];
const fakeRoot = () => {
  const r = new FakeRoot();
  roots.push(r);
  return r;
};
afterEach(() => {
  for (const r of roots) r.cleanup();
  roots = [];
});

describe('findZone over a fake sysfs', () => {
  it('finds the zone by its ACPI path, whatever its number', async () => {
    const r = fakeRoot();
    r.addZone(0, '\\_TZ_.EDGK');
    r.addZone(1, '\\_SB_.CPU0');
    const temp = r.addZone(12, '\\_TZ_.EDGA');
    const z = await findZone(r.root, '\\_TZ.EDGA');
    expect(z).toEqual({ found: true, zone: '\\_TZ_.EDGA', dir: r.zoneDir(12), temp });
  });

  it('zone absent: says which zones it saw', async () => {
    const r = fakeRoot();
    r.addZone(0, '\\_TZ_.EDGK');
    const z = await findZone(r.root, '\\_TZ_.EDGA');
    expect(z.found).toBe(false);
    if (!z.found) expect(z.reason).toMatch(/no thermal zone \\_TZ_\.EDGA .*zones seen: \\_TZ_\.EDGK.*SSDT loaded/);
  });

  it('no thermal class at all (thermal.off=1): a reason, not a throw', async () => {
    const z = await findZone(fakeRoot().root, '\\_TZ_.EDGA');
    expect(z).toMatchObject({ found: false });
    if (!z.found) expect(z.reason).toMatch(/cannot list .*sys\/class\/thermal \(ENOENT\).*thermal\.off=1/);
  });

  it('an empty thermal class: no ACPI thermal zones', async () => {
    const r = fakeRoot();
    r.emptyThermalClass();
    const z = await findZone(r.root, '\\_TZ_.EDGA');
    if (z.found) throw new Error('found');
    expect(z.reason).toContain('no ACPI thermal zones');
  });

  it('skips zones whose device/path is missing or unreadable, and foreign entries', async () => {
    const r = fakeRoot();
    r.addZone(0, '\\_TZ_.EDGK');
    mkdirSync(join(r.zoneDir(1)), { recursive: true }); // no device/path (not an ACPI zone)
    mkdirSync(join(r.zoneDir(2), 'device', 'path'), { recursive: true }); // unreadable: a directory
    mkdirSync(join(r.root, 'sys/class/thermal/cooling_device0'), { recursive: true });
    const temp = r.addZone(3, '\\_TZ_.EDGA');
    expect(await findZone(r.root, '\\_TZ_.EDGA')).toMatchObject({ found: true, temp });
  });

  it('examines zones in numeric order and takes the first match', async () => {
    const r = fakeRoot();
    r.addZone(10, '\\_TZ_.EDGA');
    r.addZone(9, '\\_TZ_.EDGA');
    expect(await findZone(r.root, '\\_TZ_.EDGA')).toMatchObject({ dir: r.zoneDir(9) });
  });

  it('a bad path to look for is a reason', async () => {
    expect(await findZone('/', 'EDGA')).toMatchObject({ found: false, reason: expect.stringContaining('not an ACPI path') });
  });

  it('bounds what it reads from a hostile tree (injected fs)', async () => {
    const reads: string[] = [];
    const fs: SysfsFs = {
      readdir: async () => Array.from({ length: 5000 }, (_, i) => `thermal_zone${i}`),
      readFile: async (p) => {
        reads.push(p);
        return 'X'.repeat(10_000);
      },
    };
    const z = await findZone('/r', '\\_TZ_.EDGA', fs);
    expect(z.found).toBe(false);
    expect(reads.length).toBe(1024);
    if (!z.found) expect(z.reason.length).toBeLessThan(4000);
  });
});

describe('readZoneTemp', () => {
  it('reads the value; a missing or unreadable file rejects', async () => {
    const r = fakeRoot();
    const temp = r.addZone(0, '\\_TZ_.EDGA');
    await expect(readZoneTemp(temp)).resolves.toBe('25000');
    writeFileSync(temp, '9'.repeat(100));
    await expect(readZoneTemp(temp)).resolves.toBe('9'.repeat(32));
    r.breakTemp(0);
    await expect(readZoneTemp(temp)).rejects.toMatchObject({ code: 'EISDIR' });
    r.removeZone(0);
    await expect(readZoneTemp(temp)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('ZoneTempReader (one fd, a pread at offset 0 per read)', () => {
  it('reads from offset 0 every time, so each read sees the value anew', async () => {
    const r = fakeRoot();
    const temp = r.addZone(0, '\\_TZ_.EDGA');
    const reader = new ZoneTempReader();
    try {
      expect(await reader.read(temp)).toBe('25000');
      writeFileSync(temp, '26000\n'); // same inode, rewritten
      expect(await reader.read(temp)).toBe('26000');
      expect(await reader.read(temp)).toBe('26000');
    } finally {
      reader.close();
    }
  });

  it('a failed read closes the fd and the next read opens the path again; a new path replaces the old', async () => {
    const r = fakeRoot();
    const temp = r.addZone(0, '\\_TZ_.EDGA');
    const other = r.addZone(1, '\\_TZ_.EDGB', '1\n');
    const reader = new ZoneTempReader();
    try {
      r.breakTemp(0);
      await expect(reader.read(temp)).rejects.toMatchObject({ code: 'EISDIR' });
      r.removeZone(0);
      r.addZone(0, '\\_TZ_.EDGA', '27000\n');
      expect(await reader.read(temp)).toBe('27000');
      expect(await reader.read(other)).toBe('1');
      await expect(reader.read(join(r.root, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await reader.read(other)).toBe('1');
    } finally {
      reader.close();
      reader.close(); // idempotent
    }
  });
});
