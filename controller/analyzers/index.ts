import { appLogsAnalyzer } from './app-logs.js';
import { hostStateAnalyzer } from './host-state.js';
import { kernelLogAnalyzer } from './kernel-log.js';
import { runCommandPlugin, runModulePlugin, type PluginLimits, type PluginSpec } from './plugins.js';
import { registersAnalyzer } from './registers.js';
import { sysrqAnalyzer } from './sysrq.js';
import { boundFinding, LIMITS, type Analyzer, type AnalysisInput, type Finding } from './types.js';

export { reportInput, TEXT_MEDIA_TYPES, MAX_ANALYZED_ARTIFACT_BYTES } from './input.js';
export { parseRegisters } from './registers.js';
export { parseSysrqTasks } from './sysrq.js';
export { analyzeKernelText, callTrace } from './kernel-log.js';
export { pluginModules, runCommandPlugin, runModulePlugin, validateFindings, DEFAULT_PLUGIN_LIMITS, type PluginLimits, type PluginSpec } from './plugins.js';
export type { Analyzer, AnalysisInput, TextArtifact } from './types.js';

/** The built-in analyzers of a report; the app-logs one runs on an app's log lines instead. */
export const REPORT_ANALYZERS: readonly Analyzer[] = [kernelLogAnalyzer, sysrqAnalyzer, registersAnalyzer, hostStateAnalyzer];

export interface AnalyzeOptions {
  plugins?: readonly PluginSpec[];
  pluginLimits?: PluginLimits;
  /** Reports a plugin that failed (it also becomes a warning finding). */
  onPluginError?: (name: string, error: string) => void;
  now?: () => number;
}

/**
 * Every analyzer on one input: the built-ins (a throw in one is reported as its finding, the others
 * go on), then each plugin, isolated. Findings come back bounded.
 */
export async function analyze(input: AnalysisInput, o: AnalyzeOptions = {}): Promise<Finding[]> {
  const builtins = input.logs !== undefined ? [appLogsAnalyzer(o.now ? { now: o.now } : {})] : REPORT_ANALYZERS;
  const out: Finding[] = [];
  for (const a of builtins) {
    try {
      out.push(...a.analyze(input).slice(0, LIMITS.findingsPerAnalyzer));
    } catch (e) {
      out.push({ analyzer: a.name, severity: 'warning', title: `Analyzer ${a.name} failed`, explanation: String((e as Error)?.message ?? e), evidence: [] });
    }
  }
  for (const p of o.plugins ?? []) {
    const run = p.kind === 'module' ? await runModulePlugin(p, input, o.pluginLimits) : await runCommandPlugin(p, input, o.pluginLimits);
    if (run.error !== undefined) {
      o.onPluginError?.(p.name, run.error);
      out.push({ analyzer: p.name, severity: 'warning', title: `Analyzer ${p.name} ${run.error.split(':')[0]}`, explanation: `The custom analyzer ${p.name} ${run.error}; its findings are missing from this report.`, evidence: [] });
    }
    out.push(...run.findings);
  }
  return out.map(boundFinding);
}
