import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, describeDuties } from '../../guest-agent/agent.js';
import { DEFAULT_CONFIG, describeConfig, diskPeriodMs, loadConfig, parseFlags, validateFile, type AgentConfig } from '../../guest-agent/config.js';
import { Log } from '../../guest-agent/log.js';
import { DISK_SECTOR, scanDiskRing } from '../../protocol/heartbeat-disk.js';
import { FakeClock } from './fake-clock.js';

/** The heartbeat disk duty in the configuration (file, flag, errors) and in the agent (fake clock, temp file). */

describe('disk configuration', () => {
  it('off by default; an object, a path, null / "none"', () => {
    expect(DEFAULT_CONFIG.disk).toBeNull();
    expect(validateFile({ disk: { path: '/dev/vdb' } }, 'f').disk).toEqual({ path: '/dev/vdb', slots: 8 });
    expect(validateFile({ disk: { path: '/dev/vdb', slots: 64, periodSeconds: 0.5 } }, 'f').disk).toEqual({ path: '/dev/vdb', slots: 64, periodMs: 500 });
    expect(validateFile({ disk: '/dev/vdc' }, 'f').disk).toEqual({ path: '/dev/vdc', slots: 8 });
    expect(validateFile({ disk: null }, 'f').disk).toBeNull();
    expect(validateFile({ disk: 'none' }, 'f').disk).toBeNull();
  });

  it.each([
    [{ disk: 'vdb' }, 'f: disk: an absolute path, or null / "none" for off (got "vdb")'],
    [{ disk: 3 }, 'f: disk: an object like {"path": "/dev/vdb"}, a path, or null / "none" for off (got 3)'],
    [{ disk: [] }, 'f: disk: an object like {"path": "/dev/vdb"}, a path, or null / "none" for off (got [])'],
    [{ disk: {} }, 'f: disk.path: an absolute path'],
    [{ disk: { path: 'dev/vdb' } }, 'f: disk.path: an absolute path (got "dev/vdb")'],
    [{ disk: { path: '/dev/vdb', slots: 0 } }, 'f: disk.slots: an integer between 1 and 4096 (got 0)'],
    [{ disk: { path: '/dev/vdb', slots: 4097 } }, 'f: disk.slots: an integer between 1 and 4096 (got 4097)'],
    [{ disk: { path: '/dev/vdb', slots: 2.5 } }, 'f: disk.slots: an integer between 1 and 4096 (got 2.5)'],
    [{ disk: { path: '/dev/vdb', slots: '8' } }, 'f: disk.slots: an integer between 1 and 4096 (got "8")'],
    [{ disk: { path: '/dev/vdb', periodSeconds: 0 } }, 'f: disk.periodSeconds: seconds between 0.1 and 3600 (got 0)'],
    [{ disk: { path: '/dev/vdb', periodSeconds: 'x' } }, 'f: disk.periodSeconds: seconds between 0.1 and 3600 (got "x")'],
    [{ disk: { path: '/dev/vdb', offset: 4 } }, 'f: disk.offset: unknown key (expected path, slots, periodSeconds)'],
  ])('%j -> %s', (json, message) => {
    expect(() => validateFile(json, 'f')).toThrow(message);
  });

  it('--disk PATH|none; the flag wins over the file; describeConfig reads back', async () => {
    expect(parseFlags(['--disk', '/dev/vdb']).values.disk).toBe('/dev/vdb');
    expect(() => parseFlags(['--disk', 'vdb'])).toThrow('--disk: an absolute path, or null / "none" for off (got "vdb")');
    const file = async () => JSON.stringify({ disk: { path: '/dev/vdb', slots: 16, periodSeconds: 2 } });
    expect((await loadConfig(parseFlags(['--config', '/a.json']), file)).config.disk).toEqual({ path: '/dev/vdb', slots: 16, periodMs: 2000 });
    expect((await loadConfig(parseFlags(['--config', '/a.json', '--disk', 'none']), file)).config.disk).toBeNull();
    const { config } = await loadConfig(parseFlags(['--config', '/a.json']), file);
    expect(describeConfig(config).disk).toEqual({ path: '/dev/vdb', slots: 16, periodSeconds: 2 });
    expect({ ...DEFAULT_CONFIG, ...validateFile(describeConfig(config), 'x') }).toEqual(config);
    expect(describeConfig(DEFAULT_CONFIG).disk).toBeNull();
  });

  it('the period: its own, else the heartbeat period, else 1 s', () => {
    const c = (disk: AgentConfig['disk'], periodMs: number) => ({ ...DEFAULT_CONFIG, disk, periodMs });
    expect(diskPeriodMs(c({ path: '/d', slots: 8, periodMs: 250 }, 2000))).toBe(250);
    expect(diskPeriodMs(c({ path: '/d', slots: 8 }, 2000))).toBe(2000);
    expect(diskPeriodMs(c({ path: '/d', slots: 8 }, 0))).toBe(1000);
    expect(describeDuties(c({ path: '/dev/vdb', slots: 8 }, 0), 'x')).toBe('no heartbeat; marks every 60 s to syslog, /dev/console; heartbeat disk /dev/vdb every 1 s (8 slots) (config: x)');
  });
});

describe('Agent with a heartbeat disk (fake clock, temp file)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eve-diag-disk-agent-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function setup() {
    const clock = new FakeClock();
    const logs: string[] = [];
    const agent = new Agent({
      clock,
      log: new Log((l) => logs.push(l)),
      findZone: async () => ({ found: false, reason: 'no zone' }),
      readStats: async () => ({ uptime: '1.00', load: '0.00', memAvail: '1kB' }),
      sinks: () => [],
    });
    /** Advance the clock one step at a time, letting the disk writer's real I/O finish after each. */
    const advance = async (ms: number, step = 100) => {
      for (let done = 0; done < ms; done += step) {
        await clock.advance(Math.min(step, ms - done));
        while (agent.disk?.busy === true) await new Promise((r) => setTimeout(r, 1));
      }
    };
    return { clock, logs, agent, advance };
  }

  const config = (over: Partial<AgentConfig>): AgentConfig => ({ ...DEFAULT_CONFIG, markPeriodMs: 0, console: null, syslog: false, ...over });

  it('writes at the heartbeat period by default, at its own when set; a reload keeps seq and instance', async () => {
    const path = join(dir, 'hb.img');
    await writeFile(path, Buffer.alloc(16 * DISK_SECTOR));
    const { agent, advance, logs, clock } = setup();
    agent.apply(config({ periodMs: 500, disk: { path, slots: 16 } }));
    await advance(2050); // t = 0, 500, 1000, 1500, 2000
    expect(agent.disk?.writes).toBe(5);
    let scan = scanDiskRing(await readFile(path), 16);
    expect(scan.newest).toMatchObject({ seq: 5n, periodMs: 500, slots: 16 });
    const instance = scan.newest?.instance;
    expect(logs).toContain(`disk heartbeat: writing ${path} (16 slots, every 0.5 s) from seq 1`);

    agent.apply(config({ periodMs: 0, disk: { path, slots: 16, periodMs: 2000 } })); // SIGHUP
    await advance(4050); // t = +0, +2000, +4000
    scan = scanDiskRing(await readFile(path), 16);
    expect(scan.newest).toMatchObject({ seq: 8n, periodMs: 2000, instance });
    expect(scan.valid).toBe(8);

    agent.stop();
    expect(clock.pending).toBe(0);
    await advance(5000);
    expect(scanDiskRing(await readFile(path), 16).newest?.seq).toBe(8n);
  });

  it('a missing disk does not stop the other duties; it is looked for every 10 s', async () => {
    const path = join(dir, 'later.img');
    const { agent, advance, logs } = setup();
    agent.apply(config({ periodMs: 1000, zoneRetryMs: 30_000, disk: { path, slots: 8 } }));
    await advance(12_000);
    expect(logs.filter((l) => l.startsWith('disk heartbeat paused'))).toEqual([`disk heartbeat paused: cannot open ${path}: ENOENT; trying again every 10 s`]);
    expect(logs.filter((l) => l.startsWith('heartbeat paused'))).toHaveLength(1);
    await writeFile(path, Buffer.alloc(8 * DISK_SECTOR));
    await advance(9_000); // the retry at t=20000
    expect(logs.at(-1)).toBe(`disk heartbeat resumed: writing ${path} (8 slots, every 1 s) from seq 1`);
    expect(agent.disk?.status).toBe('ok');
    agent.stop();
  });
});
