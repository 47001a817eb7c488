/**
 * Numeric flags of the benchmarks, checked the same way in each: a value that is not a number in the
 * range is `fail`ed with a message naming the flag and the value (each bench's `fail` prints its usage
 * and exits 2).
 */
export type Fail = (msg: string) => never;

/** An integer min..max, or `dflt` when the flag is absent. */
export function intFlag(fail: Fail, flag: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  return v.trim() !== '' && Number.isSafeInteger(n) && n >= min && n <= max ? n : fail(`--${flag}: an integer ${min}..${max} (got ${JSON.stringify(v)})`);
}

/** A finite number min..max, or `dflt` when the flag is absent. */
export function numberFlag(fail: Fail, flag: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  return v.trim() !== '' && Number.isFinite(n) && n >= min && n <= max ? n : fail(`--${flag}: a number ${min}..${max} (got ${JSON.stringify(v)})`);
}
