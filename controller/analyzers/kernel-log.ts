import { excerpt, kernelLines, type Analyzer, type AnalysisInput, type Finding, type TextArtifact } from './types.js';

/**
 * The guest kernel's own words for trouble, in whatever text carries its log: the console capture,
 * the ERST/pstore dmesg, a SysRq capture, the app logs (EVE ships the console as app logs). Each kind
 * becomes one finding with the evidence: the block's lines and, where the kernel printed one, the
 * call trace (function names, not addresses: they are what a kernel engineer reads first).
 *
 *   Kernel panic - not syncing: REASON                      critical
 *   BUG: ... / Oops: ... / general protection fault         error (an oops, often before a panic)
 *   INFO: task NAME:PID blocked for more than N seconds.    error (hung task)
 *   watchdog: BUG: soft lockup - CPU#N stuck for Ns! [T]    critical
 *   NMI watchdog: Watchdog detected hard LOCKUP on cpu N    critical
 *   rcu: INFO: rcu_* detected stalls on CPUs/tasks:         error (RCU stall)
 *   Out of memory: Killed process PID (NAME) ...            error (OOM kill)
 */

const FRAME = /^\s*(\? )?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+\/0x[0-9a-f]+(?: \[[\w-]+\])?\s*$/;
const TRACE_MARK = /^\s*<\/?(TASK|IRQ|NMI|EOI|SOFTIRQ)>\s*$/;

/** The call trace starting after line `at` ("Call Trace:"): its frames (reliable ones) and its last line. */
export function callTrace(lines: readonly string[], at: number, maxFrames = 48): { frames: string[]; end: number } {
  const frames: string[] = [];
  let i = at + 1;
  for (; i < lines.length && i < at + 200; i++) {
    const l = lines[i] as string;
    if (TRACE_MARK.test(l)) {
      if (/<\/TASK>/.test(l)) break;
      continue;
    }
    const m = FRAME.exec(l);
    if (m === null) {
      // Register dumps (RIP:, RSP:...) interleave with traces in some oopses; a blank line or another
      // record ends it.
      if (/^\s*(R[A-Z0-9]{2}|RIP|Code):/.test(l)) continue;
      i--;
      break;
    }
    if (m[1] === undefined && frames.length < maxFrames) frames.push(m[2] as string);
  }
  return { frames, end: Math.min(i, lines.length - 1) };
}

/** The first "Call Trace:" within `window` lines after `from`. */
function traceAfter(lines: readonly string[], from: number, window = 40): { frames: string[]; end: number } | undefined {
  for (let i = from; i < lines.length && i < from + window; i++) if (/Call Trace:\s*$/.test(lines[i] as string)) return callTrace(lines, i);
  return undefined;
}

interface Rule {
  re: RegExp;
  finding: (m: RegExpExecArray, lines: readonly string[], i: number) => Omit<Finding, 'analyzer' | 'evidence'> & { trace?: boolean; blockEnd?: (lines: readonly string[], i: number) => number };
}

const frameText = (frames: readonly string[]) => (frames.length === 0 ? '' : ` Call trace: ${frames.slice(0, 12).join(' < ')}${frames.length > 12 ? ' < ...' : ''}.`);

const RULES: Rule[] = [
  {
    re: /Kernel panic - not syncing: (.*)$/,
    finding: (m) => ({
      severity: 'critical',
      title: `Kernel panic: ${(m[1] as string).trim() || 'no reason given'}`,
      explanation: 'The guest kernel panicked: it stopped running anything but its panic path, so the VM looks alive to QEMU but does no work until it is reset.',
      trace: true,
      blockEnd: (lines, i) => {
        for (let k = i; k < lines.length && k < i + 200; k++) if (/---\[ end Kernel panic/.test(lines[k] as string)) return k;
        return Math.min(lines.length - 1, i + 40);
      },
    }),
  },
  {
    re: /(?:^|\s)(BUG: (?!soft lockup)(.*)|Oops: (.*)|general protection fault(.*)|kernel BUG at (.*))$/,
    finding: (m) => ({
      severity: 'error',
      title: `Kernel oops: ${(m[1] as string).trim().slice(0, 160)}`,
      explanation: 'The guest kernel hit a bug (an oops): the task that triggered it was killed, and the kernel may be left in an inconsistent state; with panic_on_oops it panics.',
      trace: true,
    }),
  },
  {
    re: /INFO: task (.+):(\d+) blocked for more than (\d+) seconds\./,
    finding: (m) => ({
      severity: 'error',
      title: `Hung task: ${m[1]} (pid ${m[2]}) blocked for more than ${m[3]} s`,
      explanation: 'A task stayed in uninterruptible sleep (D state) past the hung-task timeout: it waits for I/O or a lock that does not come. Its stack says what it waits on.',
      trace: true,
    }),
  },
  {
    re: /BUG: soft lockup - CPU#(\d+) stuck for (\d+)s! \[(.+?):(\d+)\]/,
    finding: (m) => ({
      severity: 'critical',
      title: `Soft lockup: CPU ${m[1]} stuck for ${m[2]} s in ${m[3]} (pid ${m[4]})`,
      explanation: 'A CPU ran kernel code without scheduling for longer than the soft-lockup threshold: a loop in the kernel that never yields. The trace shows where it spins.',
      trace: true,
    }),
  },
  {
    re: /Watchdog detected hard LOCKUP on cpu (\d+)/,
    finding: (m) => ({
      severity: 'critical',
      title: `Hard lockup on CPU ${m[1]}`,
      explanation: 'A CPU stopped taking interrupts (the NMI watchdog saw no timer interrupt for its threshold): it spins with interrupts off.',
      trace: true,
    }),
  },
  {
    re: /rcu: INFO: (\w+) (detected stalls on CPUs\/tasks|self-detected stall on CPU)/,
    finding: (m, lines, i) => {
      const cpus: string[] = [];
      for (let k = i + 1; k < lines.length && k < i + 16; k++) {
        const c = /^rcu:\s+(\d+)-/.exec(lines[k] as string);
        if (c) cpus.push(c[1] as string);
      }
      return {
        severity: 'error',
        title: `RCU stall (${m[1]}, ${m[2] === 'self-detected stall on CPU' ? 'self-detected' : 'detected'})${cpus.length > 0 ? ` on CPU ${cpus.join(', ')}` : ''}`,
        explanation: 'RCU grace periods stopped completing: some CPU has not passed a quiescent state for the stall timeout, typically a CPU spinning with interrupts or preemption off.',
        trace: true,
      };
    },
  },
  {
    re: /Out of memory(?: \(oom_kill_allocating_task\))?: Killed process (\d+) \((.+?)\) total-vm:(\d+)kB, anon-rss:(\d+)kB/,
    finding: (m) => ({
      severity: 'error',
      title: `OOM kill: ${m[2]} (pid ${m[1]}), ${Math.round(Number(m[4]) / 1024)} MiB resident`,
      explanation: `The guest ran out of memory and the kernel killed ${m[2]} (total-vm ${m[3]} kB, anon-rss ${m[4]} kB) to free it. The lines before it show the memory state.`,
      blockEnd: (_lines, i) => i,
    }),
  },
];

/** Where the OOM report starts: the "invoked oom-killer" line a little before the kill line. */
function oomStart(lines: readonly string[], i: number): number {
  for (let k = i; k >= 0 && k > i - 200; k--) if (/invoked oom-killer:/.test(lines[k] as string)) return k;
  return i;
}

/** Findings of one text (kernel log as printed). */
export function analyzeKernelText(text: string, source: Pick<TextArtifact, 'file'>): Finding[] {
  const lines = kernelLines(text);
  const out: Finding[] = [];
  const seen = new Set<string>();
  let lastOops = -100;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    for (const rule of RULES) {
      const m = rule.re.exec(l);
      if (m === null) continue;
      const f = rule.finding(m, lines, i);
      // "BUG: kernel NULL pointer dereference" is followed by "Oops: 0002 [#1]": one oops, one finding.
      if (f.title.startsWith('Kernel oops')) {
        if (i - lastOops < 10) break;
        lastOops = i;
      }
      // One finding per distinct title (a repeated lockup report is the same finding).
      if (seen.has(f.title)) break;
      seen.add(f.title);
      const trace = f.trace ? traceAfter(lines, i) : undefined;
      const start = f.title.startsWith('OOM kill') ? oomStart(lines, i) : i;
      const end = f.blockEnd?.(lines, i) ?? trace?.end ?? Math.min(lines.length - 1, i + 20);
      out.push({
        analyzer: 'kernel-log',
        severity: f.severity,
        title: f.title,
        explanation: f.explanation + frameText(trace?.frames ?? []),
        evidence: [{ artifact: source.file, lineStart: start + 1, lineEnd: end + 1, excerpt: excerpt(lines, start, end, 60) }],
      });
      break;
    }
  }
  return out;
}

/** Artifacts that carry kernel log text. */
const KERNEL_TEXT_KINDS = new Set(['console-capture', 'erst-log', 'sysrq', 'nmi']);

export const kernelLogAnalyzer: Analyzer = {
  name: 'kernel-log',
  analyze(input: AnalysisInput): Finding[] {
    const out: Finding[] = [];
    for (const a of input.artifacts) if (KERNEL_TEXT_KINDS.has(a.kind) && a.mediaType === 'text/plain') out.push(...analyzeKernelText(a.text, a));
    // The same panic in the console and in the pstore log: keep the first of each title.
    const seen = new Set<string>();
    return out.filter((f) => (seen.has(f.title) ? false : (seen.add(f.title), true)));
  },
};
