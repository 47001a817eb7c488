/**
 * The fuzz suite's budget, shared by its files: seeded, 300 cases per property in `npm test`;
 * FUZZ_RUNS=N and FUZZ_SEED=S change it (`bash bench/run.sh fuzz` runs it longer).
 */
export const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
export const SEED = Number(process.env['FUZZ_SEED'] ?? 20261203);
export const params = { numRuns: RUNS, seed: SEED };
/** A decoder that takes longer than this on one input is a hang (generous: a loaded CI machine). */
export const SLOW_MS = 2000;

/** `f()`, failing when it took longer than SLOW_MS. */
export function timed<T>(f: () => T): T {
  const t0 = performance.now();
  const r = f();
  const ms = performance.now() - t0;
  if (ms > SLOW_MS) throw new Error(`took ${ms.toFixed(0)} ms`);
  return r;
}
