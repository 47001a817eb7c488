import { describe, expect, test } from 'vitest';
import { Timeline, timelinePoint } from '../../monitor/timeline.js';

describe('Timeline', () => {
  test('keeps the newest samples in a fixed ring, oldest first', () => {
    const t = new Timeline(3);
    for (let i = 0; i < 5; i++) t.record({ at: Date.UTC(2026, 11, 1, 0, 0, i), scenario: 'kernel', probe: 'kernel-heartbeat', outcome: 'success', status: 'alive', beats: i, ageMs: 100 });
    expect(t.size).toBe(3);
    expect(t.samples().map((s) => s.beats)).toEqual([2, 3, 4]);
    expect(t.samples()[0]).toEqual({ at: '2026-12-01T00:00:02.000Z', scenario: 'kernel', probe: 'kernel-heartbeat', outcome: 'success', status: 'alive', beats: 2, ageMs: 100 });
  });

  test('a point without numbers or status has none in its sample; names are bounded', () => {
    const t = new Timeline(200);
    t.record({ at: 0, scenario: 'run-state', probe: 'qmp-status', outcome: 'failure', runState: 'paused' });
    expect(t.samples()[0]).toEqual({ at: '1970-01-01T00:00:00.000Z', scenario: 'run-state', probe: 'qmp-status', outcome: 'failure', runState: 'paused' });
    for (let i = 0; i < 100; i++) t.record({ at: i, scenario: `s${i}`, probe: 'p', outcome: 'unknown' });
    expect(t.samples().at(-1)?.scenario).toBe('?'); // past the name table's bound
  });

  test('timelinePoint keeps heartbeat and run-state results only', () => {
    expect(timelinePoint(5, 'k', 'kernel-heartbeat', 'failure', { status: 'stalled', beats: 12, ageMs: 3100.4, vm: { status: 'running' } })).toEqual({
      at: 5,
      scenario: 'k',
      probe: 'kernel-heartbeat',
      outcome: 'failure',
      status: 'stalled',
      beats: 12,
      ageMs: 3100.4,
      runState: 'running',
    });
    expect(timelinePoint(5, 'r', 'qmp-status', 'success', { status: 'running' })).toEqual({ at: 5, scenario: 'r', probe: 'qmp-status', outcome: 'success', runState: 'running' });
    expect(timelinePoint(5, 'w', 'http', 'success', {})).toBeUndefined();
  });
});
