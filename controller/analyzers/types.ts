import type { ReportManifest } from '../../protocol/report-manifest.js';
import type { Finding, FindingEvidence, LogLine, Severity } from '../store/store.js';

/**
 * An analyzer reads one report (its manifest and artifacts) or one app's log lines and returns
 * findings: a severity, a title, a short explanation and the evidence (artifact, line range,
 * excerpt). Built-in analyzers are pure functions of their input; plugins (plugins.ts) get the same
 * input as JSON and run isolated.
 */

export interface TextArtifact {
  /** File name in the bundle. */
  file: string;
  /** The collector's name for it (console.txt, sysrq-t.txt...). */
  name: string;
  /** The collector kind (console-capture, sysrq, hmp-registers, host-state, erst-log...). */
  kind: string;
  mediaType: string;
  text: string;
}

export interface AnalysisInput {
  node: string;
  app: string;
  /** Absent for an app-logs analysis. */
  manifest?: ReportManifest;
  /** The report's text and JSON artifacts (bounded per artifact). */
  artifacts: TextArtifact[];
  /** The app's recent log lines (an app-logs analysis). */
  logs?: LogLine[];
}

export interface Analyzer {
  readonly name: string;
  analyze(input: AnalysisInput): Finding[];
}

export type { Finding, FindingEvidence, Severity };

export const LIMITS = {
  findingsPerAnalyzer: 50,
  titleChars: 200,
  explanationChars: 2000,
  evidencePerFinding: 20,
  excerptChars: 4000,
} as const;

/** A finding cut to the limits (every string bounded), for built-in and plugin findings alike. */
export function boundFinding(f: Finding): Finding {
  return {
    analyzer: f.analyzer.slice(0, 64),
    severity: f.severity,
    title: f.title.slice(0, LIMITS.titleChars),
    explanation: f.explanation.slice(0, LIMITS.explanationChars),
    evidence: f.evidence.slice(0, LIMITS.evidencePerFinding).map((e) => ({
      ...(e.artifact !== undefined ? { artifact: String(e.artifact).slice(0, 256) } : {}),
      ...(e.lineStart !== undefined ? { lineStart: e.lineStart } : {}),
      ...(e.lineEnd !== undefined ? { lineEnd: e.lineEnd } : {}),
      ...(e.excerpt !== undefined ? { excerpt: String(e.excerpt).slice(0, LIMITS.excerptChars) } : {}),
    })),
  };
}

/**
 * Lines of `text` with the kernel's printk timestamp (`[   12.345678] `) and a syslog-ish prefix
 * removed. A busy serial console doubles a character now and then (seen in real captures:
 * `[    9.3367933]`, `]]`), so the timestamp is matched loosely.
 */
export function kernelLines(text: string): string[] {
  return text.split(/\r?\n/).map((l) => l.replace(/^.{0,64}?\[+\s*\d+\.+\d+\]+\s?/, ''));
}

/**
 * A literal phrase as regular-expression source that also matches it with any character doubled
 * (`blocked for more thaan`, `Call Traace:`, `statte:D`: real captures from a busy serial console).
 */
export function loose(phrase: string): string {
  return [...phrase].map((c) => `${c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')}+`).join('');
}

/** `lines[from..to]` (0-based, inclusive) as an excerpt, at most `max` lines. */
export function excerpt(lines: readonly string[], from: number, to: number, max = 40): string {
  const end = Math.min(to, from + max - 1);
  const cut = end < to ? `\n... (${to - end} more lines)` : '';
  return lines.slice(from, end + 1).join('\n') + cut;
}
