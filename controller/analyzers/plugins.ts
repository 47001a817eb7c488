import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ByteBuffer } from '../../util/byte-buffer.js';
import { SEVERITIES } from '../store/store.js';
import { LIMITS, type AnalysisInput, type Finding } from './types.js';

/**
 * Custom analyzers, yours:
 *
 * - **plugins**: `.js`/`.mjs` ES modules in a configured directory, each exporting
 *   `analyze(report, context)` that returns (or resolves with) findings. Each run gets a worker thread
 *   of its own with memory limits (`maxOldGenerationSizeMb`) and a time limit: a plugin that throws,
 *   loops or allocates forever is stopped, and the report gets a warning finding saying so.
 * - **commands**: any program (argv, no shell), given the report as JSON on stdin, printing findings as
 *   JSON on stdout, within a time limit and an output cap.
 *
 * `report` is an AnalysisInput (types.ts): `{ node, app, manifest?, artifacts: [{file, name, kind,
 * mediaType, text}], logs? }`; a finding is `{ severity: critical|error|warning|info, title,
 * explanation, evidence: [{ artifact?, lineStart?, lineEnd?, excerpt? }] }` (its `analyzer` is set
 * here). docs/analyzer-plugin-example.mjs is an example with its test.
 */

export interface PluginLimits {
  timeoutMs: number;
  maxOldGenerationSizeMb: number;
  /** External commands: most bytes read from stdout. */
  maxOutputBytes: number;
}

export const DEFAULT_PLUGIN_LIMITS: PluginLimits = { timeoutMs: 5000, maxOldGenerationSizeMb: 64, maxOutputBytes: 1024 * 1024 };

export interface PluginSpec {
  kind: 'module' | 'command';
  name: string;
  /** Module: its file; command: argv. */
  file?: string;
  argv?: string[];
}

export interface PluginRun {
  findings: Finding[];
  /** Why the plugin produced nothing usable (it threw, timed out, ran out of memory, returned garbage). */
  error?: string;
  ms: number;
}

/** The plugin modules in `dir` (not recursive), by file name. */
export async function pluginModules(dir: string): Promise<PluginSpec[]> {
  const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[];
    throw e;
  });
  return names
    .filter((n) => ['.js', '.mjs'].includes(extname(n)) && !n.startsWith('.'))
    .sort()
    .map((n) => ({ kind: 'module', name: `plugin:${n.replace(/\.m?js$/, '')}`, file: resolve(join(dir, n)) }));
}

/** Checks and bounds what a plugin returned; a problem is an error string. */
export function validateFindings(name: string, v: unknown): { findings: Finding[] } | { error: string } {
  if (!Array.isArray(v)) return { error: 'analyze() must return an array of findings' };
  if (v.length > LIMITS.findingsPerAnalyzer) return { error: `more than ${LIMITS.findingsPerAnalyzer} findings` };
  const out: Finding[] = [];
  for (const [i, f] of v.entries()) {
    const o = f as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null) return { error: `finding ${i}: not an object` };
    if (!(SEVERITIES as readonly unknown[]).includes(o['severity'])) return { error: `finding ${i}: severity must be one of ${SEVERITIES.join(', ')}` };
    if (typeof o['title'] !== 'string' || o['title'] === '') return { error: `finding ${i}: title must be a non-empty string` };
    if (o['explanation'] !== undefined && typeof o['explanation'] !== 'string') return { error: `finding ${i}: explanation must be a string` };
    const ev = o['evidence'] ?? [];
    if (!Array.isArray(ev)) return { error: `finding ${i}: evidence must be an array` };
    const evidence = ev.slice(0, LIMITS.evidencePerFinding).map((e: unknown) => {
      const x = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
      const int = (k: string) => (Number.isSafeInteger(x[k]) && (x[k] as number) >= 0 ? (x[k] as number) : undefined);
      return {
        ...(typeof x['artifact'] === 'string' ? { artifact: (x['artifact'] as string).slice(0, 256) } : {}),
        ...(int('lineStart') !== undefined ? { lineStart: int('lineStart') } : {}),
        ...(int('lineEnd') !== undefined ? { lineEnd: int('lineEnd') } : {}),
        ...(typeof x['excerpt'] === 'string' ? { excerpt: (x['excerpt'] as string).slice(0, LIMITS.excerptChars) } : {}),
      };
    });
    out.push({
      analyzer: name,
      severity: o['severity'] as Finding['severity'],
      title: (o['title'] as string).slice(0, LIMITS.titleChars),
      explanation: ((o['explanation'] as string | undefined) ?? '').slice(0, LIMITS.explanationChars),
      evidence,
    });
  }
  return { findings: out };
}

/** Runs a module plugin in a worker thread of its own. Never rejects. */
export function runModulePlugin(p: PluginSpec, input: AnalysisInput, limits: PluginLimits = DEFAULT_PLUGIN_LIMITS): Promise<PluginRun> {
  const t0 = performance.now();
  const done = (r: Omit<PluginRun, 'ms'>): PluginRun => ({ ...r, ms: Math.round(performance.now() - t0) });
  return new Promise((resolvePromise) => {
    let settled = false;
    const finish = (r: Omit<PluginRun, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      worker.terminate().catch(() => undefined);
      resolvePromise(done(r));
    };
    const worker = new Worker(new URL('./plugin-worker.js', import.meta.url), {
      workerData: { url: pathToFileURL(p.file as string).href, name: p.name, input },
      resourceLimits: { maxOldGenerationSizeMb: limits.maxOldGenerationSizeMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: true,
      stderr: true,
    });
    // A plugin's console output is not ours to print; drain it.
    worker.stdout.resume();
    worker.stderr.resume();
    const timer = setTimeout(() => finish({ findings: [], error: `timed out after ${limits.timeoutMs} ms (stopped)` }), limits.timeoutMs);
    worker.once('message', (m: { ok: boolean; findings?: unknown; error?: string }) => {
      if (!m.ok) return finish({ findings: [], error: `threw: ${String(m.error).slice(0, 500)}` });
      const v = validateFindings(p.name, m.findings);
      finish('error' in v ? { findings: [], error: `returned invalid findings: ${v.error}` } : { findings: v.findings });
    });
    worker.once('error', (e: Error & { code?: string }) =>
      finish({ findings: [], error: e.code === 'ERR_WORKER_OUT_OF_MEMORY' ? `ran out of memory (limit ${limits.maxOldGenerationSizeMb} MB, stopped)` : `failed: ${e.message.slice(0, 500)}` }),
    );
    worker.once('exit', (code) => finish({ findings: [], error: `exited (${code}) without an answer` }));
  });
}

/** Runs an external analyzer command: the report JSON on stdin, findings JSON on stdout. Never rejects. */
export function runCommandPlugin(p: PluginSpec, input: AnalysisInput, limits: PluginLimits = DEFAULT_PLUGIN_LIMITS): Promise<PluginRun> {
  const t0 = performance.now();
  const argv = p.argv ?? [];
  return new Promise((resolvePromise) => {
    let settled = false;
    const out = new ByteBuffer(limits.maxOutputBytes);
    let over = false;
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['pipe', 'pipe', 'ignore'], detached: true });
    const kill = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const finish = (r: Omit<PluginRun, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      kill();
      resolvePromise({ ...r, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => finish({ findings: [], error: `timed out after ${limits.timeoutMs} ms (killed)` }), limits.timeoutMs);
    child.stdout.on('data', (b: Buffer) => {
      if (over || out.push(b)) return;
      over = true;
      finish({ findings: [], error: `printed more than ${limits.maxOutputBytes} bytes (killed)` });
    });
    child.once('error', (e) => finish({ findings: [], error: `cannot run ${argv[0]}: ${e.message}` }));
    child.once('close', (code) => {
      if (over) return;
      if (code !== 0) return finish({ findings: [], error: `exited with ${code}` });
      let v: unknown;
      try {
        v = JSON.parse(out.bytes().toString('utf8'));
      } catch {
        return finish({ findings: [], error: 'printed no JSON' });
      }
      const r = validateFindings(p.name, v);
      finish('error' in r ? { findings: [], error: `printed invalid findings: ${r.error}` } : { findings: r.findings });
    });
    child.stdin.on('error', () => undefined); // it may exit before reading
    child.stdin.end(JSON.stringify(input));
  });
}
