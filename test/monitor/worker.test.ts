import { describe, expect, test } from 'vitest';
import { FakeClock } from '../../util/clock.js';
import type { Probe, ProbeOutcome, ProbeResult } from '../../monitor/types.js';
import { initialState, runProbe, step, Worker, type WorkerResult, type WorkerUpdate } from '../../monitor/worker.js';

const r = (outcome: ProbeOutcome): ProbeResult => ({ outcome, detail: outcome });
const S = 'success' as const;
const F = 'failure' as const;
const U = 'unknown' as const;

describe('step: thresholds and hold', () => {
  test.each<[string, { failureThreshold: number; successThreshold: number }, ProbeOutcome[], WorkerResult[]]>([
    ['one success is enough by default', { failureThreshold: 3, successThreshold: 1 }, [S], ['success']],
    ['failure needs 3 in a row', { failureThreshold: 3, successThreshold: 1 }, [F, F, F], ['unknown', 'unknown', 'failure']],
    ['a success resets the failure count', { failureThreshold: 3, successThreshold: 1 }, [F, F, S, F, F], ['unknown', 'unknown', 'success', 'success', 'success']],
    ['unknown neither counts nor resets', { failureThreshold: 2, successThreshold: 1 }, [F, U, F], ['unknown', 'unknown', 'failure']],
    ['hold after failure until successThreshold successes', { failureThreshold: 1, successThreshold: 3 }, [F, S, S, F, S, S, S], ['failure', 'failure', 'failure', 'failure', 'failure', 'failure', 'success']],
    ['failureThreshold 1 flips at once', { failureThreshold: 1, successThreshold: 1 }, [S, F, S], ['success', 'failure', 'success']],
  ])('%s', (_name, timing, outcomes, expected) => {
    let st = initialState(0);
    const got: WorkerResult[] = [];
    outcomes.forEach((o, i) => {
      st = step(st, r(o), timing, i).state;
      got.push(st.result);
    });
    expect(got).toEqual(expected);
  });

  test('changed is reported once per transition, with since', () => {
    const t = { failureThreshold: 2, successThreshold: 1 };
    let s = initialState(0);
    const changes: number[] = [];
    [S, F, F, F, S].forEach((o, i) => {
      const x = step(s, r(o), t, i * 10);
      s = x.state;
      if (x.changed) changes.push(i);
    });
    expect(changes).toEqual([0, 2, 4]);
    expect(s.since).toBe(40);
    expect(s.probes).toBe(5);
  });
});

function fakeProbe(script: Array<ProbeOutcome | 'hang' | 'throw'>): Probe & { calls: number } {
  const p = {
    kind: 'fake',
    calls: 0,
    run(_t: unknown, o: { signal: AbortSignal }): Promise<ProbeResult> {
      const what = script[Math.min(p.calls++, script.length - 1)] as ProbeOutcome | 'hang' | 'throw';
      if (what === 'hang') return new Promise((_res, rej) => o.signal.addEventListener('abort', () => rej(o.signal.reason)));
      if (what === 'throw') return Promise.reject(new Error('bug'));
      return Promise.resolve(r(what));
    },
  };
  return p;
}

describe('runProbe', () => {
  test('a probe that overruns its timeout is a failure', async () => {
    const clock = new FakeClock();
    const pending = runProbe(fakeProbe(['hang']), { name: 'a' }, 1000, clock, new AbortController().signal);
    await clock.advance(1000);
    expect(await pending).toMatchObject({ outcome: 'failure', detail: 'timed out after 1000 ms' });
  });
  test('a probe that ignores its signal still ends at the timeout', async () => {
    const clock = new FakeClock();
    const deaf: Probe = { kind: 'deaf', run: () => new Promise(() => undefined) };
    const pending = runProbe(deaf, { name: 'a' }, 500, clock, new AbortController().signal);
    await clock.advance(500);
    expect(await pending).toMatchObject({ outcome: 'failure', detail: 'timed out after 500 ms' });
  });
  test('a probe that throws is broken: unknown, with the error', async () => {
    const res = await runProbe(fakeProbe(['throw']), { name: 'a' }, 1000, new FakeClock(), new AbortController().signal);
    expect(res).toMatchObject({ outcome: 'unknown', detail: 'probe error: bug' });
  });
});

describe('Worker timing with a fake clock', () => {
  test('jittered start + initial delay, then one probe per period; stops on abort', async () => {
    const clock = new FakeClock();
    const updates: WorkerUpdate[] = [];
    const probe = fakeProbe([S, S, F, F, F]);
    const w = new Worker({ name: 'vm1' }, 'kernel', probe, { periodMs: 1000, timeoutMs: 100, initialDelayMs: 5000, failureThreshold: 3, successThreshold: 1 }, clock, (u) => updates.push(u), () => 0.5);
    const ac = new AbortController();
    const done = w.run(ac.signal);
    await clock.advance(5499);
    expect(probe.calls).toBe(0);
    await clock.advance(1); // 5000 + 0.5 * 1000
    expect(probe.calls).toBe(1);
    await clock.advance(4000);
    expect(probe.calls).toBe(5);
    expect(updates.map((u) => u.state.result)).toEqual(['success', 'success', 'success', 'success', 'failure']);
    expect(updates.filter((u) => u.changed).map((u) => u.state.result)).toEqual(['success', 'failure']);
    ac.abort();
    await done;
    await clock.advance(10_000);
    expect(probe.calls).toBe(5);
  });

  test('a probe that asks for a shorter interval is run at it (never below 50 ms); a longer or invalid one is the period', async () => {
    const runs = async (hint: number | undefined): Promise<number> => {
      const clock = new FakeClock();
      const probe = Object.assign(fakeProbe([S]), { intervalMs: () => hint });
      const w = new Worker({ name: 'vm1' }, 'hb', probe, { periodMs: 1000, timeoutMs: 100, initialDelayMs: 0, failureThreshold: 1, successThreshold: 1 }, clock, () => undefined, () => 0);
      const ac = new AbortController();
      const done = w.run(ac.signal);
      await clock.advance(1999);
      ac.abort();
      await done;
      return probe.calls;
    };
    expect(await runs(250)).toBe(8); // 0, 250, ..., 1750
    expect(await runs(10)).toBe(40); // clamped to 50 ms
    expect(await runs(5000)).toBe(2);
    expect(await runs(Number.NaN)).toBe(2);
    expect(await runs(undefined)).toBe(2);
  });

  test('a probe that ignores its signal is never run twice at once: the worker counts failures until it returns', async () => {
    const clock = new FakeClock();
    const updates: WorkerUpdate[] = [];
    let running = 0;
    let most = 0;
    let release: (() => void) | undefined;
    const probe: Probe & { calls: number } = {
      kind: 'deaf',
      calls: 0,
      run() {
        probe.calls++;
        most = Math.max(most, ++running);
        // Ignores its signal: returns only when the test says so.
        return new Promise<ProbeResult>((res) => {
          release = () => {
            running--;
            res(r(S));
          };
        });
      },
    };
    const w = new Worker({ name: 'vm1' }, 'deaf', probe, { periodMs: 1000, timeoutMs: 200, initialDelayMs: 0, failureThreshold: 2, successThreshold: 1 }, clock, (u) => updates.push(u), () => 0);
    const ac = new AbortController();
    const done = w.run(ac.signal);
    await clock.advance(4500);
    expect(probe.calls).toBe(1);
    expect(most).toBe(1);
    expect(updates.map((u) => u.state.last?.detail)).toEqual([
      'timed out after 200 ms',
      'the previous probe run has not returned after 1000 ms (it ignores its timeout); not starting another',
      'the previous probe run has not returned after 2000 ms (it ignores its timeout); not starting another',
      'the previous probe run has not returned after 3000 ms (it ignores its timeout); not starting another',
      'the previous probe run has not returned after 4000 ms (it ignores its timeout); not starting another',
    ]);
    expect(w.state.result).toBe('failure');
    release?.();
    for (let i = 0; i < 5; i++) await Promise.resolve();
    await clock.advance(1000);
    expect(probe.calls).toBe(2); // a new run once the old one returned
    expect(most).toBe(1);
    ac.abort();
    release?.();
    await done;
  });
});


describe('Worker with a probe that can answer at once (Probe.runSync)', () => {
  const timing = { periodMs: 1000, timeoutMs: 100, initialDelayMs: 0, failureThreshold: 1, successThreshold: 1 };
  function syncProbe(answers: Array<ProbeResult | undefined | 'throw' | 'slow'>, clock: FakeClock) {
    const p = {
      kind: 'sync',
      runs: 0,
      syncCalls: 0,
      run: () => (p.runs++, Promise.resolve(r(U))),
      runSync: (): ProbeResult | undefined => {
        const a = answers[Math.min(p.syncCalls++, answers.length - 1)];
        if (a === 'throw') throw new Error('sync bug');
        if (a === 'slow') {
          clock.advance(150).catch(() => undefined); // the read took longer than the timeout (no sleeper: time moves at once)
          return r(S);
        }
        return a;
      },
    };
    return p;
  }

  test('its answer is used and run() is not called; undefined falls back to run()', async () => {
    const clock = new FakeClock();
    const p = syncProbe([r(S), undefined, r(F)], clock);
    const w = new Worker({ name: 'a' }, 'k', p, timing, clock, () => undefined, () => 0);
    const s = new AbortController().signal;
    expect((await w.probeOnce(s)).state.last?.outcome).toBe(S);
    expect(p.runs).toBe(0);
    expect((await w.probeOnce(s)).state.last?.outcome).toBe(U);
    expect(p.runs).toBe(1);
    expect((await w.probeOnce(s)).state).toMatchObject({ result: 'failure', last: { outcome: F } });
    expect(p.runs).toBe(1);
  });

  test('a throw is unknown with the error; an answer later than the timeout is a timeout', async () => {
    const clock = new FakeClock();
    const p = syncProbe(['throw', 'slow'], clock);
    const w = new Worker({ name: 'a' }, 'k', p, timing, clock, () => undefined, () => 0);
    const s = new AbortController().signal;
    expect((await w.probeOnce(s)).state.last).toMatchObject({ outcome: U, detail: 'probe error: sync bug' });
    expect((await w.probeOnce(s)).state.last).toMatchObject({ outcome: F, detail: 'timed out after 100 ms' });
    expect(p.runs).toBe(0);
  });
});
