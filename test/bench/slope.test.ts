import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { leastSquares, trend, type TimedSample } from '../../bench/slope.js';

const at = (pairs: [number, number][]): TimedSample[] => pairs.map(([tS, value]) => ({ tS, value }));

describe('leastSquares', () => {
  test('three points worked by hand: (0,1) (1,3) (2,2) -> slope 1/2, intercept 3/2', () => {
    // mean t 1, mean v 2; Sxy = (-1)(-1) + 0 + (1)(0) = 1; Sxx = 2.
    const l = leastSquares(at([[0, 1], [1, 3], [2, 2]]));
    expect(l.slope).toBeCloseTo(0.5, 12);
    expect(l.intercept).toBeCloseTo(1.5, 12);
    // Residuals -0.5, 1, -0.5: SSE 1.5; SE = sqrt(1.5 / (3 - 2) / 2).
    expect(l.slopeSe).toBeCloseTo(Math.sqrt(0.75), 12);
    expect(leastSquares(at([[0, 1], [1, 3]])).slopeSe).toBeNaN();
  });

  test('an exact line is found again, at epoch-sized times too (no cancellation)', () => {
    const t0 = 1_796_000_000; // seconds since the epoch, late 2026
    const line = Array.from({ length: 181 }, (_, k) => ({ tS: t0 + k * 10, value: 150e6 + 2500 * k * 10 }));
    const l = leastSquares(line);
    expect(l.slope).toBeCloseTo(2500, 6);
  });

  test('a sawtooth around a constant (GC-like) has a slope near 0, a ramp under it its ramp', () => {
    const saw = Array.from({ length: 360 }, (_, k) => ({ tS: k * 10, value: 100 + (k % 6) * 5 }));
    // A whole number of periods: the sawtooth's own least-squares slope is small against the ramp's.
    expect(Math.abs(leastSquares(saw).slope)).toBeLessThan(0.01);
    const ramped = saw.map((s) => ({ tS: s.tS, value: s.value + 0.05 * s.tS }));
    expect(leastSquares(ramped).slope).toBeCloseTo(0.05 + leastSquares(saw).slope, 9);
  });

  test('shifting time or value does not change the slope; scaling the value scales it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 100_000 }), fc.double({ min: -1e6, max: 1e6, noNaN: true })), { minLength: 2, maxLength: 50 }),
        fc.integer({ min: -1e6, max: 1e6 }),
        fc.double({ min: -1e3, max: 1e3, noNaN: true }),
        fc.double({ min: 0.5, max: 4, noNaN: true }),
        (pairs, dt, dv, k) => {
          fc.pre(new Set(pairs.map((p) => p[0])).size >= 2);
          const s = leastSquares(at(pairs)).slope;
          const moved = leastSquares(at(pairs.map(([t, v]) => [t + dt, v + dv]))).slope;
          const scaled = leastSquares(at(pairs.map(([t, v]) => [t, v * k]))).slope;
          const tol = 1e-6 * (1 + Math.abs(s) * 10);
          expect(Math.abs(moved - s)).toBeLessThan(tol);
          expect(Math.abs(scaled - k * s)).toBeLessThan(tol * k);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('too few samples, one time only, or a non-finite number is a RangeError naming the sample', () => {
    expect(() => leastSquares(at([[0, 1]]))).toThrow(/at least 2 samples \(got 1\)/);
    expect(() => leastSquares(at([[5, 1], [5, 2]]))).toThrow(/same time \(5 s\)/);
    expect(() => leastSquares(at([[0, 1], [1, NaN]]))).toThrow(/samples\[1\]\.value .* \(got NaN\)/);
    expect(() => leastSquares(at([[Infinity, 1], [1, 2]]))).toThrow(/samples\[0\]\.tS .* \(got Infinity\)/);
  });
});

describe('trend', () => {
  // 30 minutes of samples every 10 s.
  const series = (f: (tS: number) => number) => Array.from({ length: 181 }, (_, k) => ({ tS: k * 10, value: f(k * 10) }));

  test('first, last, max, mean and the slope per hour and per 24 h', () => {
    const t = trend(series((s) => 100 + s / 360), { relative: 0.1, absolute: 0 }); // +10 per hour
    expect(t.n).toBe(181);
    expect(t.spanS).toBe(1800);
    expect(t.first).toBe(100);
    expect(t.last).toBeCloseTo(105, 9);
    expect(t.max).toBeCloseTo(105, 9);
    expect(t.mean).toBeCloseTo(102.5, 9);
    expect(t.slopePerHour).toBeCloseTo(10, 9);
    expect(t.projected24h).toBeCloseTo(240, 9);
    expect(t.threshold).toBeCloseTo(10.25, 9);
    expect(t.growing).toBe(true);
    expect(t.noise24h).toBeLessThan(1e-6); // an exact line has no noise
    expect(t.conclusive).toBe(true);
  });

  test('noise that spans the threshold makes the verdict inconclusive; less noise (or a longer run) does not', () => {
    // A flat 100 with a +-10 alternation: projected growth ~0, below a 10 % threshold, but the
    // alternation over 3 minutes leaves the slope uncertain by far more than 10 per 24 h.
    const noisy = (minutes: number, amp: number) => Array.from({ length: minutes * 6 + 1 }, (_, k) => ({ tS: k * 10, value: 100 + (k % 2 === 0 ? amp : -amp) }));
    const short = trend(noisy(3, 10), { relative: 0.1, absolute: 0 });
    expect(short.growing).toBe(false);
    expect(short.noise24h).toBeGreaterThan(short.threshold);
    expect(short.conclusive).toBe(false);
    const long = trend(noisy(24 * 60, 10), { relative: 0.1, absolute: 0 });
    expect(long.growing).toBe(false);
    expect(long.conclusive).toBe(true);
    expect(trend(noisy(3, 0.001), { relative: 0.1, absolute: 0 }).conclusive).toBe(true);
  });

  test('the verdict turns at the threshold: max(relative x mean, absolute)', () => {
    // mean 1000 -> relative threshold 100 per 24 h; a flat series plus a ramp of r per 24 h.
    const ramp = (per24h: number) => series((s) => 1000 - per24h / 2 / 48 + (per24h * s) / 86_400);
    expect(trend(ramp(90), { relative: 0.1, absolute: 0 }).growing).toBe(false);
    expect(trend(ramp(110), { relative: 0.1, absolute: 0 }).growing).toBe(true);
    // The absolute floor wins when it is larger.
    expect(trend(ramp(110), { relative: 0.1, absolute: 200 }).growing).toBe(false);
    expect(trend(ramp(210), { relative: 0.1, absolute: 200 }).growing).toBe(true);
    // A shrinking series is no growth.
    expect(trend(ramp(-500), { relative: 0.1, absolute: 0 }).growing).toBe(false);
  });

  test('a constant series (open fds) is no trend, even with a zero threshold', () => {
    const t = trend(series(() => 23), { relative: 0, absolute: 0.5 });
    expect(t.slopePerHour).toBe(0);
    expect(t.growing).toBe(false);
    expect(t.conclusive).toBe(true);
  });

  test('a bad threshold is a RangeError naming the field and value', () => {
    expect(() => trend(series(() => 1), { relative: -0.1, absolute: 0 })).toThrow(/threshold\.relative .* \(got -0\.1\)/);
    expect(() => trend(series(() => 1), { relative: 0.1, absolute: NaN })).toThrow(/threshold\.absolute .* \(got NaN\)/);
  });
});
