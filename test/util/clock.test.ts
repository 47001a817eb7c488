import { getEventListeners } from 'node:events';
import { describe, expect, test } from 'vitest';
import { FakeClock, realClock } from '../../util/clock.js';

describe('clocks', () => {
  test('FakeClock: a woken sleep leaves no abort listener on its signal; an aborted one rejects', async () => {
    const clock = new FakeClock();
    const ac = new AbortController();
    for (let i = 0; i < 20; i++) {
      const p = clock.sleep(100, ac.signal);
      await clock.advance(100);
      await p;
    }
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
    const p = clock.sleep(100, ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
    expect(clock.pending).toBe(0);
  });

  test('realClock: the same', async () => {
    const ac = new AbortController();
    for (let i = 0; i < 20; i++) await realClock.sleep(1, ac.signal);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });
});
