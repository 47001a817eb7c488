import { describe, expect, test } from 'vitest';
import { Ticker } from '../../monitor/ticker.js';
import { FakeClock } from '../../util/clock.js';

describe('Ticker: many callbacks, one timer', () => {
  test('runs each callback once, in time order, never early', async () => {
    const clock = new FakeClock();
    const t = new Ticker(clock, 0);
    const ran: [string, number][] = [];
    for (const [name, at] of [['c', 300], ['a', 100], ['b', 200], ['a2', 100]] as const) t.at(at, () => ran.push([name, clock.now()]));
    expect(clock.pending).toBe(1); // one sleep for all of them
    await clock.advance(99);
    expect(ran).toEqual([]);
    await clock.advance(1000);
    expect(ran).toEqual([['a', 100], ['a2', 100], ['b', 200], ['c', 300]]);
    expect(t.size).toBe(0);
    expect(clock.pending).toBe(0);
  });

  test('wake-ups at least minGapMs apart: callbacks due close together run together, at most that late', async () => {
    const clock = new FakeClock();
    const t = new Ticker(clock, 10);
    const ran: number[] = [];
    for (let i = 0; i < 100; i++) t.at(1000 + i, () => ran.push(clock.now()));
    await clock.advance(2000);
    expect(ran).toHaveLength(100);
    const wakes = [...new Set(ran)];
    expect(wakes).toEqual([1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070, 1080, 1090, 1100]);
    ran.forEach((at, i) => {
      expect(at).toBeGreaterThanOrEqual(1000 + i);
      expect(at - (1000 + i)).toBeLessThanOrEqual(10);
    });
  });

  test('an earlier entry rearms the sleep; a cancelled one never runs; a throw does not stop the others', async () => {
    const clock = new FakeClock();
    const errors: unknown[] = [];
    const t = new Ticker(clock, 0, (e) => errors.push(e));
    const ran: string[] = [];
    t.at(500, () => ran.push('late'));
    t.at(100, () => ran.push('early'));
    const gone = t.at(200, () => ran.push('cancelled'));
    t.at(300, () => {
      throw new Error('bug');
    });
    t.at(300, () => ran.push('after the throw'));
    t.cancel(gone);
    await clock.advance(150);
    expect(ran).toEqual(['early']);
    await clock.advance(1000);
    expect(ran).toEqual(['early', 'after the throw', 'late']);
    expect(errors).toHaveLength(1);
  });

  test('a callback that schedules itself in the past runs at the next wake-up, not in a loop', async () => {
    const clock = new FakeClock();
    const t = new Ticker(clock, 10);
    let runs = 0;
    const again = () => {
      runs++;
      if (runs < 5) t.at(0, again);
    };
    t.at(0, again);
    await clock.advance(0);
    expect(runs).toBe(1);
    await clock.advance(40);
    expect(runs).toBe(5);
  });

  test('minGapMs must be a finite number >= 0', () => {
    expect(() => new Ticker(new FakeClock(), -1)).toThrow(/minGapMs/);
    expect(() => new Ticker(new FakeClock(), Number.NaN)).toThrow(/minGapMs/);
  });
});
