import { parseMark } from '../../protocol/mark.js';
import { analyzeKernelText } from './kernel-log.js';
import type { Analyzer, AnalysisInput, Finding } from './types.js';

/**
 * The seed's first iteration, done by the controller: an app's log stream (EVE app logs, which carry
 * the VM's console) must keep showing the cron/logger marks (protocol/mark.ts); marks missing for more
 * than `missedPeriods` of their own period, while other lines still arrive or time passes, say the
 * guest's userspace stopped. Kernel panic, oops, hung-task, lockup and OOM lines in the stream are
 * findings too (eden's panic test, done here).
 */
export interface AppLogsOptions {
  missedPeriods?: number;
  /** The analysis time (tests); default now. */
  now?: () => number;
}

export function appLogsAnalyzer(o: AppLogsOptions = {}): Analyzer {
  const missed = o.missedPeriods ?? 3;
  return {
    name: 'app-logs',
    analyze(input: AnalysisInput): Finding[] {
      const logs = input.logs ?? [];
      if (logs.length === 0) return [];
      const out: Finding[] = [];
      const file = `logs of ${input.app}`;
      const marks = logs.map((l, i) => ({ i, at: Date.parse(l.at), mark: parseMark(l.content) })).filter((m) => m.mark !== undefined && !Number.isNaN(m.at));
      if (marks.length >= 2) {
        const gaps = marks
          .slice(1)
          .map((m, k) => m.at - (marks[k] as { at: number }).at)
          .filter((g) => g > 0)
          .sort((a, b) => a - b);
        const period = gaps[Math.floor(gaps.length / 2)];
        const last = marks[marks.length - 1] as { i: number; at: number };
        const newest = Math.max(...logs.map((l) => Date.parse(l.at)).filter((t) => !Number.isNaN(t)), (o.now ?? Date.now)());
        const silent = newest - last.at;
        if (period !== undefined && period > 0 && silent > missed * period) {
          out.push({
            analyzer: 'app-logs',
            severity: 'error',
            title: `Marks stopped: none for ${Math.round(silent / 1000)} s (period ${Math.round(period / 1000)} s)`,
            explanation: `The guest agent's marks (cron/logger) came every ${Math.round(period / 1000)} s and the last one was at ${new Date(last.at).toISOString()}: more than ${missed} periods ago. Userspace in the guest stopped, or its logs stopped reaching the controller.`,
            evidence: [{ artifact: file, lineStart: last.i + 1, lineEnd: last.i + 1, excerpt: logs[last.i]?.content ?? '' }],
          });
        }
      }
      // The console in the app logs is kernel log text too.
      out.push(...analyzeKernelText(logs.map((l) => l.content).join('\n'), { file }).map((f) => ({ ...f, analyzer: 'app-logs' })));
      return out;
    },
  };
}
