import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildDiagSsdt } from '../../../acpi/diag/ssdt.js';
import { decodeRegion, type DecodedRegion } from '../../../host-reader/region/decode.js';
import {
  assessHeartbeat,
  delta32,
  jitterOf,
  type AssessOptions,
  type AssessState,
  type HeartbeatReport,
  type HeartbeatStatus,
} from '../../../host-reader/region/assess.js';
import { MS, regionOf, simulateBeat } from './sim.js';

const NONCE = '00000000cafef00d';
const PERIOD = 1000;

/** What a step changes in the region (everything else carries over from the previous step). */
interface Patch {
  k?: number; // kernel beats
  kl?: number; // kernel last Timer
  a?: number; // agent beats
  load?: number;
  lt?: number; // load Timer
  nonce?: string;
}

interface Step extends Patch {
  t: number; // host ms
  vm?: string; // QMP status; anything but 'running' is not running
  missing?: string; // no sample this time (read failed)
  reset?: boolean; // QMP RESET seen
  kernel?: HeartbeatStatus;
  agent?: HeartbeatStatus;
  restarted?: boolean;
}

interface Case {
  name: string;
  options?: AssessOptions;
  start?: Patch;
  /** The kernel intervals the ring recorded, in ms (default: none recorded). */
  ringMs?: number[];
  steps: Step[];
}

function region(p: Required<Patch>, ringMs: number[] = []): DecodedRegion {
  return {
    version: 1,
    headerSize: 64,
    regionSize: 96,
    nonce: p.nonce,
    kernelPeriodDs: PERIOD / 100,
    ringLength: 8,
    loadCount: p.load,
    loadTimer: p.lt,
    kernel: { beats: p.k, last: p.kl },
    agent: { beats: p.a, last: 0 },
    armed: 1,
    pad: 0,
    ring: Array.from({ length: 8 }, (_, i) => (ringMs[i] ?? 0) * MS),
  };
}

function run(c: Case): HeartbeatReport[] {
  let cur: Required<Patch> = { k: 0, kl: 0, a: 0, load: 1, lt: 5000, nonce: NONCE, ...c.start };
  let state: AssessState | undefined;
  const reports: HeartbeatReport[] = [];
  for (const [i, s] of c.steps.entries()) {
    cur = { ...cur, ...Object.fromEntries(Object.entries(s).filter(([k]) => k in cur)) };
    const vm = { running: (s.vm ?? 'running') === 'running', status: s.vm ?? 'running' };
    const out = assessHeartbeat(
      {
        previous: state,
        sample: s.missing !== undefined ? undefined : region(cur, c.ringMs),
        ...(s.missing !== undefined ? { sampleError: s.missing } : {}),
        now: s.t,
        kernelPeriodMs: PERIOD,
        vm,
        ...(s.reset !== undefined ? { resetSeen: s.reset } : {}),
      },
      c.options,
    );
    state = out.state;
    const r = out.report;
    reports.push(r);
    const where = `${c.name}: step ${i} (t=${s.t}): ${r.kernel.detail} / ${r.agent.detail}`;
    if (s.kernel !== undefined) expect(r.kernel.status, where).toBe(s.kernel);
    if (s.agent !== undefined) expect(r.agent.status, where).toBe(s.agent);
    expect(r.restarted, where).toBe(s.restarted ?? false);
    if (r.kernel.status === 'paused' || r.agent.status === 'paused') expect(vm.running, where).toBe(false);
  }
  return reports;
}

const cases: Case[] = [
  {
    name: 'alive when the kernel counter advances every period',
    steps: [
      { t: 0, k: 10, kernel: 'unknown' }, // one sample shows no change yet
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 2000, k: 12, kernel: 'alive' },
      { t: 2500, kernel: 'alive' },
    ],
  },
  {
    name: 'kernel: late beyond a period and 2 Timer steps, stalled at the bound (nothing recorded: period + 8 ms + a period of slack)',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 2008, kernel: 'alive' }, // exactly a period and two 4 ms steps
      { t: 2009, kernel: 'late' },
      { t: 3007, kernel: 'late' },
      { t: 3008, kernel: 'stalled' }, // 1000 + 8 + 1000
      { t: 60_000, kernel: 'stalled' },
      { t: 61_000, k: 12, kernel: 'alive' },
    ],
  },
  {
    name: 'a steady ring keeps the bound at the period',
    ringMs: [1000, 1004, 996, 1000, 1000, 1004, 1000, 1000],
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 3011, kernel: 'late' },
      { t: 3012, kernel: 'stalled' }, // E = the longest, 1004, + 8 + 1000
    ],
  },
  {
    name: 'recorded intervals widen the bound (one beat took 1.6 s)',
    ringMs: [1000, 1600, 1000, 1000, 1000, 1000, 1000, 1000],
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 3607, kernel: 'late' },
      { t: 3608, kernel: 'stalled' }, // 1600 + 8 + 1000
    ],
  },
  {
    name: 'the two short intervals of boot (the zone read at registration) do not widen the bound',
    ringMs: [4, 4, 1024, 1024, 1024, 1024, 1024, 1024],
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 3031, kernel: 'late' },
      { t: 3032, kernel: 'stalled' }, // 1024 + 8 + 1000
    ],
  },
  {
    name: 'a ring of huge intervals (a hostile guest) cannot push the bound past 2 periods',
    ringMs: [100_000, 100_000, 100_000, 100_000, 100_000, 100_000, 100_000, 100_000],
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 4007, kernel: 'late' },
      { t: 4008, kernel: 'stalled' }, // 2000 + 8 + 1000
    ],
  },
  {
    name: 'configurable thresholds: stallSlack for the kernel, periods for the agent',
    options: { stallSlack: 0.25, lateAfterPeriods: 2, stallAfterPeriods: 5 },
    steps: [
      { t: 0, k: 1, a: 1 },
      { t: 1000, k: 2, a: 2, kernel: 'alive', agent: 'alive' },
      { t: 2257, kernel: 'late', agent: 'alive' },
      { t: 2258, kernel: 'stalled' }, // 1000 + 8 + 250
      { t: 3000, agent: 'alive' },
      { t: 3001, agent: 'late' },
      { t: 5999, agent: 'late' },
      { t: 6000, agent: 'stalled' },
    ],
  },
  {
    name: 'a paused VM is paused, never late or stalled, and ages restart at the resume',
    steps: [
      { t: 0, k: 10, a: 3 },
      { t: 1000, k: 11, a: 4, kernel: 'alive', agent: 'alive' },
      { t: 5000, vm: 'paused', kernel: 'paused', agent: 'paused' },
      { t: 100_000, vm: 'paused', kernel: 'paused', agent: 'paused' },
      { t: 200_000, vm: 'paused', missing: 'pmemsave timed out', kernel: 'paused', agent: 'paused' },
      { t: 201_000, kernel: 'alive', agent: 'alive' }, // resumed: no new beat yet, but no time has run
      { t: 202_100, kernel: 'late', agent: 'alive' },
      { t: 202_501, kernel: 'late', agent: 'late' },
      { t: 203_008, kernel: 'stalled', agent: 'late' },
      { t: 204_000, kernel: 'stalled', agent: 'stalled' },
    ],
  },
  {
    name: 'every not-running QMP state is paused',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 10_000, vm: 'guest-panicked', kernel: 'paused', agent: 'paused' },
      { t: 20_000, vm: 'shutdown', kernel: 'paused' },
      { t: 30_000, vm: 'internal-error', kernel: 'paused' },
      { t: 40_000, vm: 'prelaunch', kernel: 'paused' },
    ],
  },
  {
    name: 'wrap-around of the kernel counter at 2^32 is progress',
    steps: [
      { t: 0, k: 0xffff_fffe },
      { t: 1000, k: 0xffff_ffff, kernel: 'alive' },
      { t: 2000, k: 1, kernel: 'alive' },
      { t: 3000, k: 2, kernel: 'alive' },
    ],
  },
  {
    name: 'wrap of the agent counter to exactly 0 is a beat, not no-agent',
    steps: [
      { t: 0, k: 5, a: 0xffff_fffe, agent: 'unknown' },
      { t: 1000, k: 6, a: 0xffff_ffff, agent: 'alive' },
      { t: 2000, k: 7, a: 0, agent: 'alive' },
      { t: 3000, k: 8, a: 1, agent: 'alive' },
    ],
  },
  {
    name: 'reboot: the counters go back -> restarted once, then a new baseline',
    steps: [
      { t: 0, k: 500, a: 400 },
      { t: 1000, k: 501, a: 401, kernel: 'alive', agent: 'alive' },
      { t: 2000, k: 3, a: 0, kernel: 'restarted', agent: 'restarted', restarted: true },
      { t: 3000, k: 4, kernel: 'alive', agent: 'no-agent' },
      { t: 4000, k: 5, a: 1, kernel: 'alive', agent: 'alive' }, // 0 -> 1 is a beat seen
      { t: 5000, k: 6, a: 2, kernel: 'alive', agent: 'alive' },
    ],
  },
  {
    name: 'reboot seen only in the agent counter',
    steps: [
      { t: 0, k: 10, a: 50 },
      { t: 1000, k: 11, a: 51 },
      { t: 2000, k: 12, a: 2, restarted: true, kernel: 'restarted' },
    ],
  },
  {
    name: 'kexec: the load count goes 1 -> 2 while the beats continue',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 2000, k: 12, load: 2, lt: 99_999, kernel: 'restarted', restarted: true },
      { t: 3000, k: 13, kernel: 'alive' },
    ],
  },
  {
    name: 'a new nonce is a different table',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, nonce: '1111111111111111', restarted: true },
      { t: 2000, k: 12, kernel: 'alive' },
    ],
  },
  {
    name: 'reset and reload between two samples: same count, new load Timer',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11 },
      { t: 60_000, k: 70, lt: 6000, restarted: true },
    ],
  },
  {
    name: 'a QMP RESET the region cannot show',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11 },
      { t: 60_000, k: 70, reset: true, restarted: true, kernel: 'restarted' },
      { t: 61_000, k: 71, kernel: 'alive' },
    ],
  },
  {
    name: 'a restart seen while paused is reported, the status stays paused',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 2000, k: 0, load: 0, lt: 0, vm: 'paused', restarted: true, kernel: 'paused', agent: 'paused' },
      { t: 3000, vm: 'paused', kernel: 'paused' },
    ],
  },
  {
    name: 'the pristine table, then its first load, is not a restart',
    start: { load: 0, lt: 0 },
    steps: [
      { t: 0, kernel: 'not-loaded', agent: 'not-loaded' },
      { t: 1000, kernel: 'not-loaded', agent: 'not-loaded' },
      { t: 2000, load: 1, lt: 3_000_000, kernel: 'waiting', agent: 'no-agent' },
      { t: 3000, k: 1, kernel: 'alive', agent: 'no-agent' },
    ],
  },
  {
    name: 'loaded but never beating (thermal.off=1): waiting within the grace, then unavailable (never stalled)',
    steps: [
      { t: 0, kernel: 'waiting', agent: 'no-agent' },
      { t: 59_999, kernel: 'waiting' },
      { t: 60_000, kernel: 'unavailable', agent: 'no-agent' },
      { t: 600_000, kernel: 'unavailable' },
      { t: 601_000, k: 1, kernel: 'alive' },
    ],
  },
  {
    name: 'grace option',
    options: { graceMs: 5000 },
    steps: [
      { t: 0, kernel: 'waiting' },
      { t: 5000, kernel: 'unavailable' },
    ],
  },
  {
    name: 'agent: no-agent until its first beat, then the 1 s default period',
    steps: [
      { t: 0, k: 1, agent: 'no-agent' },
      { t: 1000, k: 2, agent: 'no-agent' },
      { t: 2000, k: 3, a: 1, agent: 'alive' },
      { t: 3000, k: 4, a: 2, agent: 'alive' },
      { t: 4501, k: 5, agent: 'late', kernel: 'alive' },
      { t: 6000, k: 6, agent: 'stalled', kernel: 'alive' },
    ],
  },
  {
    name: 'agent period option',
    options: { agentPeriodMs: 10_000 },
    steps: [
      { t: 0, k: 1, a: 1 },
      { t: 1000, k: 2, a: 2, agent: 'alive' },
      { t: 16_000, k: 17, agent: 'alive' },
      { t: 16_001, agent: 'late' },
      { t: 31_000, agent: 'stalled' },
    ],
  },
  {
    name: 'a failed read is unknown and keeps the baseline',
    steps: [
      { t: 0, k: 10 },
      { t: 1000, k: 11, kernel: 'alive' },
      { t: 2000, missing: 'QMP disconnected', kernel: 'unknown', agent: 'unknown' },
      { t: 10_000, missing: 'QMP disconnected', kernel: 'unknown' },
      { t: 11_000, k: 12, kernel: 'alive' },
    ],
  },
];

describe('assessHeartbeat', () => {
  it.each(cases)('$name', (c) => {
    run(c);
  });

  it('takes counter deltas modulo 2^32', () => {
    const r = run({
      name: 'wrap deltas',
      steps: [{ t: 0, k: 0xffff_fff0 }, { t: 1000, k: 0x10 }],
    });
    expect(r[1]?.kernel.delta).toBe(0x20);
    expect(delta32(0xffff_ffff, 0)).toBe(1);
    expect(delta32(5, 3)).toBe(0xffff_fffe);
  });

  it('measures the rate over the host-time window, across a wrap', () => {
    const steps: Step[] = [];
    for (let i = 0; i <= 10; i++) steps.push({ t: i * 2000, k: (0xffff_fffa + 2 * i) >>> 0, a: 5 * i + 1 });
    const r = run({ name: 'rate', steps });
    const last = r[r.length - 1] as HeartbeatReport;
    expect(last.kernel.ratePerSec).toBeCloseTo(1, 9);
    expect(last.kernel.rateWindowMs).toBe(20_000);
    expect(last.agent.ratePerSec).toBeCloseTo(2.5, 9);
  });

  it('limits the rate window to windowMs (keeping the sample at its start)', () => {
    const steps: Step[] = [];
    for (let i = 0; i <= 20; i++) steps.push({ t: i * 1000, k: i < 10 ? i * 10 : 90 + (i - 9) });
    const r = run({ name: 'window', options: { windowMs: 5000 }, steps });
    const last = r[r.length - 1] as HeartbeatReport;
    expect(last.kernel.rateWindowMs).toBe(5000);
    expect(last.kernel.ratePerSec).toBeCloseTo(1, 9);
  });

  it('keeps the same rate window as spreading and shifting it would (random sampling, seeded)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 150 }), fc.integer({ min: 2, max: 20 }), (gaps, maxSamples) => {
        const options = { windowMs: 5000, windowMaxSamples: maxSamples };
        let state: AssessState | undefined;
        let model: { at: number; kernel: number; agent: number }[] = [];
        let t = 0;
        for (const [i, gap] of gaps.entries()) {
          t += gap;
          const sample = region({ k: i + 1, kl: 0, a: 0, load: 1, lt: 1, nonce: NONCE });
          state = assessHeartbeat({ previous: state, sample, now: t, kernelPeriodMs: PERIOD, vm: { running: true } }, options).state;
          model = i === 0 ? [{ at: t, kernel: i + 1, agent: 0 }] : [...model, { at: t, kernel: i + 1, agent: 0 }];
          while (model.length > 2 && (model[1] as { at: number }).at <= t - 5000) model.shift();
          while (model.length > maxSamples) model.shift();
          expect(state?.window.points()).toEqual(model);
        }
      }),
      { seed: 11, numRuns: 200 },
    );
  });

  it('leaves a kept state as it was: assessing again from an older state gives the same window (the buffer is shared)', () => {
    const options = { windowMs: 60_000, windowMaxSamples: 4 };
    const states: (AssessState | undefined)[] = [undefined];
    for (let i = 0; i < 12; i++) {
      const sample = region({ k: i + 1, kl: 0, a: 0, load: 1, lt: 1, nonce: NONCE });
      states.push(assessHeartbeat({ previous: states[i], sample, now: 1000 * (i + 1), kernelPeriodMs: PERIOD, vm: { running: true } }, options).state);
    }
    const before = states.map((st) => st?.window.points());
    // A branch from state 5 writes a different sample where state 6 wrote its own.
    const branch = assessHeartbeat({ previous: states[5], sample: region({ k: 99, kl: 0, a: 0, load: 1, lt: 1, nonce: NONCE }), now: 5500, kernelPeriodMs: PERIOD, vm: { running: true } }, options).state;
    expect(branch?.window.points().map((p) => p.kernel)).toEqual([3, 4, 5, 99]);
    expect(states.map((st) => st?.window.points())).toEqual(before);
    expect(states[12]?.window.points().map((p) => p.kernel)).toEqual([9, 10, 11, 12]);
  });

  it('does not count paused time in the rate', () => {
    const r = run({
      name: 'rate pause',
      steps: [
        { t: 0, k: 1 },
        { t: 1000, k: 2 },
        { t: 2000, vm: 'paused' },
        { t: 60_000, vm: 'paused' },
        { t: 61_000, k: 2 },
        { t: 62_000, k: 3 },
        { t: 63_000, k: 4 },
      ],
    });
    expect(r[6]?.kernel.ratePerSec).toBeCloseTo(1, 9);
    expect(r[6]?.kernel.rateWindowMs).toBe(2000);
  });

  it('computes the guest interval across a Timer wrap (2^32 x 100 ns)', () => {
    const before = 0xffff_ffff - 3 * MS; // 3 ms before the wrap
    const r = run({
      name: 'timer wrap',
      steps: [
        { t: 0, k: 100, kl: before },
        { t: 2000, k: 102, kl: (before + 2008 * MS) >>> 0, kernel: 'alive' },
      ],
    });
    expect(r[1]?.kernel.guestIntervalMs).toBeCloseTo(1004, 6);
    expect(r[1]?.restarted).toBe(false);
  });

  it('leaves out the guest interval when the host gap may hide a Timer wrap', () => {
    const r = run({ name: 'long gap', steps: [{ t: 0, k: 1, kl: 5 }, { t: 500_000, k: 400, kl: 10 }] });
    expect(r[1]?.kernel.guestIntervalMs).toBeUndefined();
  });

  it('reports jitter from the ring of a simulated guest (4 ms Timer steps)', () => {
    const { aml, layout } = buildDiagSsdt({ nonce: 0xcafef00dn, ringLength: 8, kernelPeriodMs: 1000 });
    const t = aml.slice();
    simulateBeat(t, layout, 'load', 1 * MS);
    // HZ=250 jiffies: intervals are multiples of 4 ms around the 1 s period.
    const intervals = [1000, 1004, 996, 1000, 1000, 1008, 1000, 1000, 1000, 1004]; // 10 > ring of 8
    let timer = 0xffff_ffff - 2500 * MS; // the guest Timer wraps during the run
    simulateBeat(t, layout, 'kernel', timer);
    for (const ms of intervals) {
      timer = (timer + ms * MS) >>> 0;
      simulateBeat(t, layout, 'kernel', timer);
    }
    const d = decodeRegion(regionOf(t, layout), { nonce: layout.nonce });
    if (!d.ok) throw new Error(d.reason);
    const j = jitterOf(d.region);
    const kept = intervals.slice(-8);
    const mean = kept.reduce((a, b) => a + b, 0) / 8;
    expect(j).toMatchObject({ count: 8, minMs: 996, maxMs: 1008, p95Ms: 1008, resolutionMs: 4 });
    expect(j?.meanMs).toBeCloseTo(mean, 9);
    expect(j?.stddevMs).toBeCloseTo(Math.sqrt(kept.reduce((a, b) => a + (b - mean) ** 2, 0) / 8), 9);

    const out = assessHeartbeat({ previous: undefined, sample: d.region, now: 0, kernelPeriodMs: 1000, vm: { running: true } });
    expect(out.report.kernel.jitter?.count).toBe(8);
    expect(out.report.kernel.beats).toBe(11);
  });

  it('notes recorded intervals far above the period (thermal.tzp override)', () => {
    const base: DecodedRegion = {
      version: 1,
      headerSize: 64,
      regionSize: 80,
      nonce: NONCE,
      kernelPeriodDs: 10,
      ringLength: 4,
      loadCount: 1,
      loadTimer: 1,
      kernel: { beats: 5, last: 0 },
      agent: { beats: 0, last: 0 },
      armed: 1,
      pad: 0,
      ring: [10_000 * MS, 10_000 * MS, 10_000 * MS, 10_000 * MS],
    };
    const a = assessHeartbeat({ previous: undefined, sample: base, now: 0, vm: { running: true } });
    const b = assessHeartbeat({ previous: a.state, sample: { ...base, kernel: { beats: 6, last: 0 } }, now: 1000, vm: { running: true } });
    expect(b.report.kernel.expectedPeriodMs).toBe(1000); // from the region's kernelPeriodDs
    expect(b.report.kernel.detail).toMatch(/thermal\.tzp/);
  });

  it('rejects invalid options and a clock that goes back (programmer errors)', () => {
    const sample = region({ k: 1, kl: 0, a: 0, load: 1, lt: 1, nonce: NONCE });
    const vm = { running: true };
    expect(() => assessHeartbeat({ previous: undefined, sample, now: 0, vm }, { stallAfterPeriods: 1 })).toThrow(RangeError);
    expect(() => assessHeartbeat({ previous: undefined, sample, now: 0, vm }, { agentPeriodMs: 0 })).toThrow(/agentPeriodMs/);
    expect(() => assessHeartbeat({ previous: undefined, sample, now: 0, vm }, { stallSlack: -0.1 })).toThrow(/stallSlack/);
    expect(() => assessHeartbeat({ previous: undefined, sample, now: 0, vm }, { stallSlack: Number.NaN })).toThrow(/stallSlack/);
    expect(() => assessHeartbeat({ previous: undefined, sample, now: Number.NaN, vm })).toThrow(/now/);
    expect(() => assessHeartbeat({ previous: undefined, sample, now: 0, vm, kernelPeriodMs: -1 })).toThrow(/kernelPeriodMs/);
    const first = assessHeartbeat({ previous: undefined, sample, now: 1000, vm });
    expect(() => assessHeartbeat({ previous: first.state, sample, now: 999, vm })).toThrow(/monotonic/);
  });

  it('without any sample yet, returns no state', () => {
    const out = assessHeartbeat({ previous: undefined, sample: undefined, sampleError: 'table not found', now: 0, vm: { running: true } });
    expect(out.state).toBeUndefined();
    expect(out.report.kernel).toMatchObject({ status: 'unknown', detail: 'no sample: table not found' });
  });
});
