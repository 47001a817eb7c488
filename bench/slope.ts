/**
 * Growth trends of a resource sampled over time (bench/soak.ts: the monitor's RSS, V8 heap, open file
 * descriptors): the ordinary least-squares slope of value on time, and a verdict on whether the slope,
 * projected over 24 hours, is a growth worth a look. Pure: no clock, no I/O.
 */

export interface TimedSample {
  /** Seconds since any fixed origin. */
  readonly tS: number;
  readonly value: number;
}

/**
 * The least-squares line `value = intercept + slope * tS` (slope per second), and the standard error
 * of the slope (sqrt(residual variance / Sxx), NaN with 2 samples: a line through 2 points has no residual).
 */
export function leastSquares(samples: readonly TimedSample[]): { slope: number; intercept: number; slopeSe: number } {
  if (samples.length < 2) throw new RangeError(`leastSquares: at least 2 samples (got ${samples.length})`);
  for (const [i, s] of samples.entries()) {
    if (!Number.isFinite(s.tS)) throw new RangeError(`leastSquares: samples[${i}].tS is not a finite number (got ${String(s.tS)})`);
    if (!Number.isFinite(s.value)) throw new RangeError(`leastSquares: samples[${i}].value is not a finite number (got ${String(s.value)})`);
  }
  const n = samples.length;
  const mt = samples.reduce((a, s) => a + s.tS, 0) / n;
  const mv = samples.reduce((a, s) => a + s.value, 0) / n;
  // Centred sums: no cancellation when tS is large (seconds since the epoch) and the span small.
  let sxx = 0;
  let sxy = 0;
  for (const s of samples) {
    sxx += (s.tS - mt) * (s.tS - mt);
    sxy += (s.tS - mt) * (s.value - mv);
  }
  if (sxx === 0) throw new RangeError(`leastSquares: every sample has the same time (${mt} s): no slope`);
  const slope = sxy / sxx;
  const intercept = mv - slope * mt;
  let sse = 0;
  for (const s of samples) sse += (s.value - intercept - slope * s.tS) ** 2;
  const slopeSe = n > 2 ? Math.sqrt(sse / (n - 2) / sxx) : NaN;
  return { slope, intercept, slopeSe };
}

/** When a projected growth is a trend: more than `relative` of the mean, and more than `absolute` (units of the value). */
export interface GrowthThreshold {
  relative: number;
  absolute: number;
}

export interface Trend {
  n: number;
  /** Seconds from the first sample to the last. */
  spanS: number;
  first: number;
  last: number;
  max: number;
  mean: number;
  /** Least-squares slope, units per hour. */
  slopePerHour: number;
  /** slopePerHour x 24. */
  projected24h: number;
  /** Two standard errors of the slope, projected over 24 h (NaN with 2 samples): the noise in projected24h. */
  noise24h: number;
  /** max(relative x mean, absolute): a projected 24 h growth below it is no trend. */
  threshold: number;
  /** projected24h >= threshold. */
  growing: boolean;
  /**
   * Whether the verdict stands against the noise: the whole of projected24h +- noise24h is on one side
   * of the threshold. A short run of a GC'd heap is often not (its sawtooth dwarfs a slow slope).
   */
  conclusive: boolean;
}

const HOUR_S = 3600;

export function trend(samples: readonly TimedSample[], t: GrowthThreshold): Trend {
  if (!(Number.isFinite(t.relative) && t.relative >= 0)) throw new RangeError(`trend: threshold.relative must be a finite number >= 0 (got ${String(t.relative)})`);
  if (!(Number.isFinite(t.absolute) && t.absolute >= 0)) throw new RangeError(`trend: threshold.absolute must be a finite number >= 0 (got ${String(t.absolute)})`);
  const { slope, slopeSe } = leastSquares(samples); // validates the samples
  const values = samples.map((s) => s.value);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const ts = samples.map((s) => s.tS);
  const slopePerHour = slope * HOUR_S;
  const projected24h = slopePerHour * 24;
  const threshold = Math.max(t.relative * Math.abs(mean), t.absolute);
  const noise24h = 2 * slopeSe * HOUR_S * 24;
  const growing = projected24h >= threshold;
  return {
    n: samples.length,
    spanS: Math.max(...ts) - Math.min(...ts),
    first: values[0] as number,
    last: values[values.length - 1] as number,
    max: Math.max(...values),
    mean,
    slopePerHour,
    projected24h,
    noise24h,
    threshold,
    growing,
    conclusive: growing ? projected24h - noise24h >= threshold : projected24h + noise24h < threshold,
  };
}
