import { afterEach, describe, expect, it, vi } from 'vitest';
import { Heartbeat } from '../../guest-agent/heartbeat.js';
import { Log } from '../../guest-agent/log.js';
import { findZone, readZoneTemp } from '../../guest-agent/sysfs.js';
import { Ticker } from '../../guest-agent/timing.js';
import { FakeClock } from './fake-clock.js';
import { FakeRoot } from './fake-tree.js';

let root: FakeRoot;
afterEach(() => root?.cleanup());

function setup(retryMs = 30_000) {
  root = new FakeRoot();
  const logs: string[] = [];
  const reads: string[] = [];
  const hb = new Heartbeat(
    { zone: '\\_TZ_.EDGA', retryMs },
    {
      findZone: (zone) => findZone(root.root, zone),
      readTemp: async (p) => {
        reads.push(p);
        return readZoneTemp(p);
      },
      log: new Log((l) => logs.push(l)),
    },
  );
  return { hb, logs, reads };
}

describe('Heartbeat.step (times made up, a fake sysfs)', () => {
  it('zone present: one read per step', async () => {
    const { hb, logs, reads } = setup();
    const temp = root.addZone(1, '\\_TZ_.EDGA');
    for (let t = 0; t < 5000; t += 1000) expect(await hb.step(t)).toBe('ok');
    expect(reads).toEqual(Array(5).fill(temp));
    expect(hb.beats).toBe(5);
    expect(logs).toEqual([`heartbeat: reading ${temp} (\\_TZ_.EDGA)`]);
  });

  it('zone absent: says so once, keeps looking every retry period, not every step', async () => {
    const { hb, logs } = setup(30_000);
    root.addZone(0, '\\_TZ_.EDGK');
    const lookups = vi.fn();
    const orig = hb['deps'].findZone;
    hb['deps'].findZone = async (z: string) => {
      lookups();
      return orig(z);
    };
    for (let t = 0; t <= 65_000; t += 1000) expect(await hb.step(t)).toBe('missing');
    expect(lookups).toHaveBeenCalledTimes(3); // t = 0, 30 s, 60 s
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/^heartbeat paused: no thermal zone \\_TZ_\.EDGA .*; looking again every 30 s$/);
    expect(hb.beats).toBe(0);
  });

  it('zone appearing later (table loaded late): found at the next lookup, recovery logged once', async () => {
    const { hb, logs, reads } = setup(30_000);
    expect(await hb.step(0)).toBe('missing');
    const temp = root.addZone(4, '\\_TZ_.EDGA');
    expect(await hb.step(10_000)).toBe('missing'); // not looked for yet
    expect(await hb.step(30_000)).toBe('ok');
    expect(await hb.step(31_000)).toBe('ok');
    expect(reads).toEqual([temp, temp]);
    expect(logs).toHaveLength(2);
    expect(logs[1]).toBe(`heartbeat resumed: reading ${temp} (\\_TZ_.EDGA)`);
  });

  it('temp becomes unreadable: back to looking, logged once; recovers', async () => {
    const { hb, logs } = setup(5000);
    root.addZone(2, '\\_TZ_.EDGA');
    expect(await hb.step(0)).toBe('ok');
    root.breakTemp(2);
    expect(await hb.step(1000)).toBe('error');
    expect(logs[1]).toMatch(/^heartbeat paused: cannot read .*thermal_zone2\/temp \(EISDIR\); looking for \\_TZ_\.EDGA again every 5 s$/);
    // Still broken at the next lookup: found by path, read fails again, same message, not repeated.
    expect(await hb.step(6000)).toBe('error');
    expect(logs).toHaveLength(2);
    root.removeZone(2);
    root.addZone(7, '\\_TZ_.EDGA');
    expect(await hb.step(12_000)).toBe('ok');
    expect(logs[2]).toMatch(/^heartbeat resumed: reading .*thermal_zone7\/temp/);
    expect(hb.beats).toBe(2);
  });

  it('a zone that disappears (module unloaded): looked up again, its absence logged once', async () => {
    const { hb, logs } = setup(30_000);
    root.addZone(1, '\\_TZ_.EDGA');
    await hb.step(0);
    root.removeZone(1);
    expect(await hb.step(1000)).toBe('error');
    expect(await hb.step(31_000)).toBe('missing');
    expect(await hb.step(61_000)).toBe('missing');
    expect(logs.filter((l) => l.includes('paused'))).toHaveLength(2); // cannot read, then no zone
  });
});

describe('Ticker (fake clock)', () => {
  it('steps every period, starting at the initial delay', async () => {
    const clock = new FakeClock();
    const at: number[] = [];
    const t = new Ticker(clock, 1000, (now) => void at.push(now));
    t.start(0);
    await clock.advance(3500);
    expect(at).toEqual([0, 1000, 2000, 3000]);
    t.stop();
    await clock.advance(5000);
    expect(at).toHaveLength(4);
    expect(clock.pending).toBe(0);
  });

  it('never runs two steps at once; a slow step skips missed ticks instead of bursting', async () => {
    const clock = new FakeClock();
    const at: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const t = new Ticker(clock, 1000, async (now) => {
      at.push(now);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      // The step at 1000 takes 2.5 s of fake time.
      if (now === 1000) await new Promise<void>((r) => clock.setTimeout(r, 2500));
      inFlight--;
    });
    t.start();
    await clock.advance(6000);
    expect(maxInFlight).toBe(1);
    expect(at).toEqual([0, 1000, 4000, 5000, 6000]);
    t.stop();
  });

  it('a step that throws is reported and the ticker goes on', async () => {
    const clock = new FakeClock();
    const errors: unknown[] = [];
    let n = 0;
    const t = new Ticker(
      clock,
      500,
      () => {
        n++;
        throw new Error('boom');
      },
      (e) => errors.push(e),
    );
    t.start();
    await clock.advance(1000);
    expect(n).toBe(3);
    expect(errors).toHaveLength(3);
    t.stop();
  });

  it('rejects a non-positive period', () => {
    expect(() => new Ticker(new FakeClock(), 0, () => undefined)).toThrow(/periodMs/);
  });
});
