import { describe, expect, test } from 'vitest';
import { capArtifacts, runDiagnostics, type DiagnosticStep, type StepResult } from '../../../monitor/diagnostics/runner.js';
import type { AppTarget, Collector, CollectorResult } from '../../../monitor/types.js';

const target: AppTarget = { name: 'vm1' };
type Opts = Parameters<Collector['collect']>[1];

function collector(kind: string, run: (opts: Opts) => Promise<CollectorResult>): Collector & { calls: Opts[] } {
  const calls: Opts[] = [];
  return {
    kind,
    calls,
    collect: (_t, opts) => {
      calls.push(opts);
      return run(opts);
    },
  };
}
const ok = (kind: string, data = 'x') =>
  collector(kind, () => Promise.resolve({ ok: true, summary: `${kind} fine`, artifacts: [{ name: `${kind}.txt`, mediaType: 'text/plain', data }] }));
const step = (c: Collector, timeoutMs = 1000, maxBytes = 1000): DiagnosticStep => ({ collector: c, timeoutMs, maxBytes });
const never = () => new Promise<never>(() => undefined);

describe('runDiagnostics', () => {
  test('runs the steps in order with their timeout and cap; results keep that order', async () => {
    const order: string[] = [];
    const a = collector('a', async () => {
      order.push('a');
      return { ok: true, summary: 'a', artifacts: [] };
    });
    const b = collector('b', async () => {
      order.push('b');
      return { ok: false, summary: 'b: no QMP', artifacts: [] };
    });
    const seen: StepResult[] = [];
    const run = await runDiagnostics(target, [step(a, 500, 10), step(b, 700, 20)], { onStep: (r) => seen.push(r) });
    expect(order).toEqual(['a', 'b']);
    expect(a.calls[0]).toMatchObject({ timeoutMs: 500, maxBytes: 10 });
    expect(b.calls[0]).toMatchObject({ timeoutMs: 700, maxBytes: 20 });
    expect(run.steps.map((s) => [s.index, s.kind, s.status, s.ok, s.summary])).toEqual([
      [0, 'a', 'done', true, 'a'],
      [1, 'b', 'done', false, 'b: no QMP'],
    ]);
    expect(seen).toEqual(run.steps);
    expect(run.app).toBe('vm1');
    expect(run.budgetExhausted).toBe(false);
  });

  test('a step that throws (a collector bug) is an error result; the next steps still run', async () => {
    const bad = collector('bad', () => Promise.reject(new TypeError('oops\x1b[31m')));
    const run = await runDiagnostics(target, [step(bad), step(ok('next'))]);
    expect(run.steps[0]).toMatchObject({ status: 'error', ok: false, summary: 'bad: collector error: oops' });
    expect(run.steps[1]).toMatchObject({ status: 'done', ok: true });
  });

  test('a step that ignores its signal cannot hold the run: timeout, then the grace period', async () => {
    const deaf = collector('deaf', never);
    const t0 = Date.now();
    const run = await runDiagnostics(target, [step(deaf, 50), step(ok('next'))], { graceMs: 50 });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(deaf.calls[0]?.signal.aborted).toBe(true);
    expect(run.steps[0]).toMatchObject({ status: 'timeout', ok: false, summary: 'deaf: timed out after 50 ms, nothing collected' });
    expect(run.steps[1]?.ok).toBe(true);
  });

  test('a step that stops on its signal hands back what it has: kept, marked timeout', async () => {
    const partial = collector(
      'sysrq',
      (opts) =>
        new Promise((resolve) =>
          opts.signal.addEventListener('abort', () =>
            resolve({ ok: true, summary: 'sysrq w done, t cut', artifacts: [{ name: 'sysrq-w.txt', mediaType: 'text/plain', data: 'w output' }] }),
          ),
        ),
    );
    const run = await runDiagnostics(target, [step(partial, 50)]);
    expect(run.steps[0]).toMatchObject({ status: 'timeout', ok: false, summary: 'sysrq w done, t cut (timed out after 50 ms)' });
    expect(run.steps[0]?.artifacts.map((a) => a.name)).toEqual(['sysrq-w.txt']);
  });

  test('the total budget cuts the last step short and skips the ones after', async () => {
    const slow = collector('slow', never);
    const cut = collector('cut', never);
    const skipped = ok('skipped');
    const run = await runDiagnostics(target, [step(slow, 100), step(cut, 1000), step(skipped)], { totalBudgetMs: 150, graceMs: 0 });
    expect(cut.calls[0]?.timeoutMs).toBeLessThanOrEqual(50);
    expect(run.steps.map((s) => s.status)).toEqual(['timeout', 'timeout', 'skipped']);
    expect(run.steps[2]?.summary).toBe('skipped: skipped, the total budget was used up');
    expect(skipped.calls).toHaveLength(0);
    expect(run.budgetExhausted).toBe(true);
  });

  test('aborting the run aborts the running step and skips the rest', async () => {
    const ac = new AbortController();
    const hang = collector('hang', (opts) => new Promise((_r, reject) => opts.signal.addEventListener('abort', () => reject(opts.signal.reason))));
    const later = ok('later');
    setTimeout(() => ac.abort(new Error('shutdown')), 30);
    const run = await runDiagnostics(target, [step(hang, 5000), step(later)], { signal: ac.signal });
    expect(run.steps.map((s) => s.status)).toEqual(['aborted', 'skipped']);
    expect(run.steps[1]?.summary).toMatch(/the run was aborted/);
    expect(later.calls).toHaveLength(0);
  });

  test("artifacts over the step's cap are cut (text) or dropped (others)", async () => {
    const big = collector('big', async () => ({
      ok: true,
      summary: 'big',
      artifacts: [
        { name: 'a.txt', mediaType: 'text/plain', data: 'a'.repeat(60) },
        { name: 'b.txt', mediaType: 'text/plain', data: 'b'.repeat(60) },
        { name: 'c.json', mediaType: 'application/json', data: '{"c": 1}' },
      ],
    }));
    const run = await runDiagnostics(target, [step(big, 1000, 100)]);
    const [a, b, c] = run.steps[0]?.artifacts ?? [];
    expect(a?.data).toHaveLength(60);
    expect(b).toMatchObject({ name: 'b.txt', truncated: true });
    expect(b?.data).toHaveLength(40);
    expect(c).toBeUndefined();
    expect(run.steps[0]?.summary).toBe('big; c.json dropped (8 bytes over the step\'s cap)');
  });

  test('an onStep that throws is ignored', async () => {
    const run = await runDiagnostics(target, [step(ok('a'))], {
      onStep: () => {
        throw new Error('log sink down');
      },
    });
    expect(run.steps[0]?.ok).toBe(true);
  });

  test('bad steps are programmer errors', async () => {
    await expect(runDiagnostics(target, [step(ok('a'), 0)])).rejects.toThrow(RangeError);
    await expect(runDiagnostics(target, [step(ok('a'), 10, -1)])).rejects.toThrow(RangeError);
    await expect(runDiagnostics(target, [{ collector: {} as Collector, timeoutMs: 1, maxBytes: 1 }])).rejects.toThrow(TypeError);
  });
});

describe('capArtifacts', () => {
  test('counts bytes, not characters', () => {
    const { artifacts } = capArtifacts([{ name: 'u.txt', mediaType: 'text/plain', data: 'é'.repeat(10) }], 11);
    expect(artifacts[0]?.data).toBe('é'.repeat(5));
  });
});
