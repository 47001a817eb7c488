import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type * as Analyzers from '../../controller/analyzers/index.js';
import { repoRoot } from '../../util/repo-root.js';
import { bundleInput, FIXTURES } from '../helpers/fixtures.js';

/**
 * Custom analyzers, run as the controller runs them: module plugins in worker threads of their own
 * (the built dist/, since a worker loads JavaScript), commands as child processes. A plugin that
 * throws, loops, allocates forever or returns garbage is stopped and reported; the next one runs.
 */

// The worker thread loads dist/controller/analyzers/plugin-worker.js: use the built package.
const dist = (await import(pathToFileURL(join(repoRoot(), 'dist', 'controller', 'analyzers', 'index.js')).href)) as typeof Analyzers;
const EXAMPLE = join(repoRoot(), 'docs', 'analyzer-plugin-example.mjs');
const LIMITS = { timeoutMs: 3000, maxOldGenerationSizeMb: 32, maxOutputBytes: 64 * 1024 };

const CONSOLE = [
  '[   12.000000] cron-job[321]: segfault at 0 ip 000055d0c0ffee00 sp 00007ffd1234 error 4 in cron-job[55d0c0ffe000+1000]',
  '[   13.000000] traps: svc[400] general protection fault ip:7f00 sp:7ffd error:0 in libc.so.6',
  '[   14.000000] nothing else',
].join('\n');
const input: Analyzers.AnalysisInput = {
  node: 'n1',
  app: 'vm1',
  artifacts: [{ file: 'console.txt', name: 'console.txt', kind: 'console-capture', mediaType: 'text/plain', text: CONSOLE }],
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eve-diag-plugins-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function plugin(name: string, source: string): Promise<Analyzers.PluginSpec> {
  const file = join(dir, name);
  await writeFile(file, source);
  return { kind: 'module', name: `plugin:${name.replace(/\.m?js$/, '')}`, file };
}

describe('the example plugin in docs/', () => {
  test('finds the user-space crashes in a console, with line numbers', async () => {
    const run = await dist.runModulePlugin({ kind: 'module', name: 'plugin:example', file: EXAMPLE }, input, LIMITS);
    expect(run.error).toBeUndefined();
    expect(run.findings).toEqual([
      {
        analyzer: 'plugin:example',
        severity: 'warning',
        title: '2 user-space crashes in the guest: cron-job, svc',
        explanation: 'The guest kernel logged 2 crashes of user processes before the report was taken.',
        evidence: [
          { artifact: 'console.txt', lineStart: 1, lineEnd: 1, excerpt: CONSOLE.split('\n')[0] },
          { artifact: 'console.txt', lineStart: 2, lineEnd: 2, excerpt: CONSOLE.split('\n')[1] },
        ],
      },
    ]);
  });

  test('says nothing on a real captured panic with no user-space crash, next to the built-in findings', async () => {
    const report = await bundleInput(join(FIXTURES, 'debian-6.1', 'panic'));
    const findings = await dist.analyze(report, { plugins: [{ kind: 'module', name: 'plugin:example', file: EXAMPLE }], pluginLimits: LIMITS });
    expect(findings.some((f) => f.analyzer === 'kernel-log' && /panic/i.test(f.title))).toBe(true);
    expect(findings.filter((f) => f.analyzer === 'plugin:example')).toEqual([]);
  });
});

describe('a plugin that misbehaves is stopped and reported; the controller goes on', () => {
  test('throws', async () => {
    const p = await plugin('throws.mjs', 'export function analyze() { throw new TypeError("no such field"); }');
    const run = await dist.runModulePlugin(p, input, LIMITS);
    expect(run.error).toBe('threw: TypeError: no such field');
    expect(run.findings).toEqual([]);
  });

  test('loops forever: stopped at the time limit', async () => {
    const p = await plugin('loops.mjs', 'export function analyze() { for (;;) {} }');
    const run = await dist.runModulePlugin(p, input, { ...LIMITS, timeoutMs: 500 });
    expect(run.error).toBe('timed out after 500 ms (stopped)');
    expect(run.ms).toBeLessThan(5000);
  });

  test('allocates forever: stopped at the memory limit', async () => {
    const p = await plugin('hog.mjs', 'export function analyze() { const a = []; for (;;) a.push(new Array(1e5).fill({ x: Math.random() })); }');
    const run = await dist.runModulePlugin(p, input, { ...LIMITS, timeoutMs: 20_000 });
    expect(run.error).toBe('ran out of memory (limit 32 MB, stopped)');
  });

  test('returns garbage, exports nothing, never settles', async () => {
    const garbage = await dist.runModulePlugin(await plugin('garbage.mjs', 'export const analyze = () => [{ severity: "fatal", title: "x" }];'), input, LIMITS);
    expect(garbage.error).toBe('returned invalid findings: finding 0: severity must be one of critical, error, warning, info');
    const none = await dist.runModulePlugin(await plugin('none.mjs', 'export const x = 1;'), input, LIMITS);
    expect(none.error).toBe('threw: Error: plugin:none: exports no analyze(report, context) function');
    const pending = await dist.runModulePlugin(await plugin('pending.mjs', 'export const analyze = () => new Promise(() => {});'), input, { ...LIMITS, timeoutMs: 300 });
    expect(pending.error).toMatch(/^(timed out after 300 ms \(stopped\)|exited \(0\) without an answer)$/);
  });

  test('analyze(): a failed plugin becomes a warning finding, the next plugin still runs', async () => {
    const bad = await plugin('bad.mjs', 'export function analyze() { throw new Error("boom"); }');
    const good = await plugin('good.mjs', 'export async function analyze(r, c) { return [{ severity: "info", title: `${c.name} saw ${r.artifacts.length} artifact(s) of ${r.app}` }]; }');
    const errors: string[] = [];
    const findings = await dist.analyze(input, { plugins: [bad, good], pluginLimits: LIMITS, onPluginError: (n, e) => errors.push(`${n}: ${e}`) });
    expect(errors).toEqual(['plugin:bad: threw: Error: boom']);
    expect(findings.filter((f) => f.analyzer.startsWith('plugin:')).map((f) => [f.analyzer, f.severity, f.title])).toEqual([
      ['plugin:bad', 'warning', 'Analyzer plugin:bad threw'],
      ['plugin:good', 'info', 'plugin:good saw 1 artifact(s) of vm1'],
    ]);
  });

  test('pluginModules lists the .js/.mjs files of a directory, sorted; a missing directory is none', async () => {
    const sub = join(dir, 'listing');
    await import('node:fs/promises').then((fs) => fs.mkdir(sub));
    for (const f of ['b.mjs', 'a.js', 'notes.txt', '.hidden.mjs']) await writeFile(join(sub, f), '');
    expect((await dist.pluginModules(sub)).map((p) => p.name)).toEqual(['plugin:a', 'plugin:b']);
    expect(await dist.pluginModules(join(dir, 'missing'))).toEqual([]);
  });
});

describe('a command analyzer (report JSON on stdin, findings JSON on stdout)', () => {
  const node = (name: string, source: string) => writeFile(join(dir, name), source).then(() => ({ kind: 'command' as const, name: `command:${name}`, argv: [process.execPath, join(dir, name)] }));

  test('reads the report, prints findings', async () => {
    const p = await node(
      'count.cjs',
      'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => { const r = JSON.parse(s); console.log(JSON.stringify([{ severity: "info", title: `${r.node}/${r.app}: ${r.artifacts[0].text.split("\\n").length} lines` }])); });',
    );
    const run = await dist.runCommandPlugin(p, input, LIMITS);
    expect(run.error).toBeUndefined();
    expect(run.findings).toEqual([{ analyzer: 'command:count.cjs', severity: 'info', title: 'n1/vm1: 3 lines', explanation: '', evidence: [] }]);
  });

  test('an executable script of another language (sh) works the same way', async () => {
    const file = join(dir, 'sh-analyzer');
    await writeFile(file, '#!/bin/sh\ncat >/dev/null\necho \'[{"severity":"error","title":"from sh"}]\'\n');
    await chmod(file, 0o755);
    const run = await dist.runCommandPlugin({ kind: 'command', name: 'command:sh-analyzer', argv: [file] }, input, LIMITS);
    expect(run.findings.map((f) => f.title)).toEqual(['from sh']);
  });

  test('loops, floods stdout, fails, prints no JSON, is not there: each is an error, never a hang', async () => {
    expect((await dist.runCommandPlugin(await node('loop.cjs', 'for (;;) {}'), input, { ...LIMITS, timeoutMs: 500 })).error).toBe('timed out after 500 ms (killed)');
    expect((await dist.runCommandPlugin(await node('flood.cjs', 'const b = "x".repeat(65536); for (;;) process.stdout.write(b);'), input, LIMITS)).error).toBe(
      'printed more than 65536 bytes (killed)',
    );
    expect((await dist.runCommandPlugin(await node('fail.cjs', 'process.exit(3)'), input, LIMITS)).error).toBe('exited with 3');
    expect((await dist.runCommandPlugin(await node('text.cjs', 'console.log("hello")'), input, LIMITS)).error).toBe('printed no JSON');
    expect((await dist.runCommandPlugin({ kind: 'command', name: 'command:nope', argv: [join(dir, 'no-such-program')] }, input, LIMITS)).error).toMatch(/^cannot run .*no-such-program: .*ENOENT/);
  });
});
