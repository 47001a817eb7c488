/**
 * The worker thread a plugin analyzer runs in (plugins.ts): it imports the plugin module, calls its
 * `analyze(report, context)` once and posts the result. The parent bounds its memory
 * (resourceLimits) and its time (it terminates the worker), so a plugin that throws, loops or
 * allocates forever costs one worker, never the controller.
 */
import { parentPort, workerData } from 'node:worker_threads';

interface Job {
  url: string;
  name: string;
  input: unknown;
}

const { url, name, input } = workerData as Job;

async function run(): Promise<unknown> {
  const mod = (await import(url)) as { analyze?: unknown; default?: { analyze?: unknown } };
  const analyze = typeof mod.analyze === 'function' ? mod.analyze : mod.default?.analyze;
  if (typeof analyze !== 'function') throw new Error(`${name}: exports no analyze(report, context) function`);
  // The context: the plugin's own name (plugin:<file name>), as its findings are labelled.
  const findings: unknown = await (analyze as (r: unknown, c: unknown) => unknown)(input, { name });
  return { findings };
}

run().then(
  (r) => parentPort?.postMessage({ ok: true, ...(r as object) }),
  (e: unknown) => parentPort?.postMessage({ ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }),
);
