import { excerpt, kernelLines, loose, type Analyzer, type AnalysisInput, type Finding, type TextArtifact } from './types.js';

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

// `+0x13f/0x340`, tolerating a doubled character (`+00x13f`: a garbled console line).
const FRAME = /^\s*(\? )?([A-Za-z_.$][\w.$]*)\++0+x+[0-9a-f]+\/+0+x+[0-9a-f]+(?: \[[\w-]+\])?\s*$/;
// `<TASK>>` has been seen: a busy serial console doubles characters now and then.
const TRACE_MARK = /^\s*<+\/?(TASK|IRQ|NMI|EOI|SOFTIRQ)>+\s*$/;
export const CALL_TRACE = new RegExp(`${loose('Call Trace:')}\\s*$`);
const REGISTER_LINE = /^\s*(R[A-Z0-9]{2}|RIP|Code|FS|CS|CR2|DR[0-9]):/;

/**
 * The call trace starting after line `at` ("Call Trace:"): its frames (reliable ones, not the `? `
 * guesses) and its last line. A line that is no frame ends it, unless a frame follows within two
 * lines (a line garbled on the console is skipped, not taken for the end).
 */
export function callTrace(lines: readonly string[], at: number, maxFrames = 48): { frames: string[]; end: number } {
  const frames: string[] = [];
  let i = at + 1;
  let last = at;
  for (; i < lines.length && i < at + 200; i++) {
    const l = lines[i] as string;
    if (TRACE_MARK.test(l)) {
      last = i;
      if (/<\/TASK>/.test(l)) break;
      continue;
    }
    const m = FRAME.exec(l);
    if (m === null) {
      // Register dumps (RIP:, RSP:...) interleave with traces in some oopses.
      if (REGISTER_LINE.test(l)) continue;
      const resumes = [1, 2].some((k) => FRAME.test(lines[i + k] ?? ''));
      if (resumes) continue;
      break;
    }
    last = i;
    if (m[1] === undefined && frames.length < maxFrames) frames.push(m[2] as string);
  }
  return { frames, end: Math.min(last, lines.length - 1) };
}

// `RIP: 0010:func+0x12/0x40`, tolerating doubled characters (`RIIP: 00010:`, `+00x0`) as FRAME does.
const RIP = new RegExp(`^\\s*${loose('RIP: 0010:')}([A-Za-z_.$][\\w.$]*\\++0+x+[0-9a-f]+\\/+0+x+[0-9a-f]+)`);
/** `RIP: 0010:func+0x12/0x40` in the lines of a report: where the CPU was (kernel mode only). */
function ripAfter(lines: readonly string[], from: number, window = 30): string | undefined {
  for (let i = from; i < lines.length && i < from + window; i++) {
    const m = RIP.exec(lines[i] as string);
    if (m) return m[1];
  }
  return undefined;
}

/** The first "Call Trace:" within `window` lines after `from`. */
function traceAfter(lines: readonly string[], from: number, window = 40): { frames: string[]; end: number } | undefined {
  for (let i = from; i < lines.length && i < from + window; i++) if (CALL_TRACE.test(lines[i] as string)) return callTrace(lines, i);
  return undefined;
}

/** What repeats of one kind of report share: how many, the longest time they gave, who they named. */
interface Aggregate {
  count: number;
  maxSeconds: number;
  members: string[];
}

interface Rule {
  re: RegExp;
  /** Reports with the same key are one finding (a hung task reported every check, a lockup every 2 s). */
  key: (m: RegExpExecArray) => string;
  /** Seconds the report gives, and who it names (for the aggregate). */
  seconds?: (m: RegExpExecArray) => number;
  member?: (m: RegExpExecArray) => string;
  finding: (m: RegExpExecArray, agg: Aggregate, lines: readonly string[], i: number) => Omit<Finding, 'analyzer' | 'evidence'>;
  trace?: boolean;
  blockEnd?: (lines: readonly string[], i: number) => number;
}

/** A frame's name with repeated characters collapsed: `__scheduule` (a garbled console line) is `_schedule`. */
export const collapseRepeats = (name: string): string => name.replace(/(.)\1+/g, '$1');

const SCHEDULER_NAMES = ['__schedule', 'schedule', 'schedule_timeout', 'schedule_hrtimeout_range', 'schedule_hrtimeout_range_clock', 'io_schedule', 'io_schedule_timeout', '__cond_resched', 'do_nanosleep', 'hrtimer_nanosleep'];
const SCHEDULER_SET = new Set(SCHEDULER_NAMES.map(collapseRepeats));
/** The scheduler's own frames, on top of every sleeping task's stack: not what it waits for. */
export function isSchedulerFrame(name: string): boolean {
  const c = collapseRepeats(name);
  return SCHEDULER_SET.has(c) || c.startsWith(collapseRepeats('preempt_schedule'));
}
/** The frames that print a stack (panic() calls dump_stack first): not where the trouble is. */
const PRINTING = /^(dump_stack(_lvl)?|__dump_stack|show_stack)$/;

function frameText(frames: readonly string[], rip: string | undefined): string {
  const shown = frames.slice(Math.max(0, frames.findIndex((f) => !isSchedulerFrame(f) && !PRINTING.test(f))));
  const where = rip === undefined ? '' : ` It was at ${rip}.`;
  return where + (frames.length === 0 || shown.length === 0 ? '' : ` Call trace: ${shown.slice(0, 12).join(' < ')}${shown.length > 12 ? ' < ...' : ''}.`);
}
const listOf = (items: readonly string[], max = 5) => `${items.slice(0, max).join(', ')}${items.length > max ? ` and ${items.length - max} more` : ''}`;

const RULES: Rule[] = [
  {
    // Not the closing `---[ end Kernel panic - not syncing: ... ]---` line.
    re: new RegExp(`^(?!---\\[ end )(?:.*\\s)?${loose('Kernel panic - not syncing:')} (.*)$`),
    key: (m) => `panic:${(m[1] as string).trim()}`,
    finding: (m) => ({
      severity: 'critical',
      title: `Kernel panic: ${(m[1] as string).trim() || 'no reason given'}`,
      explanation: 'The guest kernel panicked: it stopped running anything but its panic path, so the VM looks alive to QEMU but does no work until it is reset.',
    }),
    trace: true,
    blockEnd: (lines, i) => {
      for (let k = i; k < lines.length && k < i + 200; k++) if (/---\[ end Kernel panic/.test(lines[k] as string)) return k;
      return Math.min(lines.length - 1, i + 40);
    },
  },
  {
    re: /(?:^|\s)(BUG: (?!soft lockup)(.*)|Oops: (.*)|general protection fault(.*)|kernel BUG at (.*)|invalid opcode: \d+ \[#\d+\](.*))$/,
    key: (m) => `oops:${(m[1] as string).trim()}`,
    finding: (m) => ({
      severity: 'error',
      title: `Kernel oops: ${(m[1] as string).trim().slice(0, 160)}`,
      explanation: 'The guest kernel hit a bug (an oops): the task that triggered it was killed, and the kernel may be left in an inconsistent state; with panic_on_oops it panics.',
    }),
    trace: true,
  },
  {
    re: new RegExp(`${loose('INFO: task ')}(.+):(\\d+) ${loose('blocked for more than')} (\\d+) ${loose('seconds.')}`),
    // Every hung task of the log in one finding: the detector reports each one at each check.
    key: () => 'hung',
    seconds: (m) => Number(m[3]),
    member: (m) => `${m[1]} (pid ${m[2]})`,
    finding: (_m, agg) => ({
      severity: 'error',
      title: `${agg.members.length === 1 ? 'Hung task' : `${agg.members.length} hung tasks`}: ${listOf(agg.members)} blocked for more than ${agg.maxSeconds} s`,
      explanation: `${agg.members.length === 1 ? 'A task' : 'Tasks'} stayed in uninterruptible sleep (D state) past the hung-task timeout (${agg.count} report${agg.count === 1 ? '' : 's'}): waiting for I/O or a lock that does not come. The stack says what it waits on.`,
    }),
    trace: true,
  },
  {
    re: new RegExp(`${loose('BUG: soft lockup - CPU#')}(\\d+) ${loose('stuck for')} (\\d+)s+!+ \\[+(.+?):(\\d+)\\]`),
    key: (m) => `soft:${m[1]}:${m[4]}`,
    seconds: (m) => Number(m[2]),
    finding: (m, agg) => ({
      severity: 'critical',
      title: `Soft lockup: CPU ${m[1]} stuck for ${agg.maxSeconds} s in ${m[3]} (pid ${m[4]})`,
      explanation: `A CPU ran kernel code without scheduling for longer than the soft-lockup threshold (${agg.count} report${agg.count === 1 ? '' : 's'}): a loop in the kernel that never yields. The trace shows where it spins.`,
    }),
    trace: true,
  },
  {
    re: new RegExp(`${loose('Watchdog detected hard LOCKUP on cpu ')}(\\d+)`),
    key: (m) => `hard:${m[1]}`,
    finding: (m) => ({
      severity: 'critical',
      title: `Hard lockup on CPU ${m[1]}`,
      explanation: 'A CPU stopped taking interrupts (the NMI watchdog saw no timer interrupt for its threshold): it spins with interrupts off.',
    }),
    trace: true,
  },
  {
    re: /rcu: INFO: (\w+) (detected stalls on CPUs\/tasks|self-detected stall on CPU)/,
    key: (m) => `rcu:${m[1]}:${m[2]}`,
    finding: (m, _agg, lines, i) => {
      const cpus: string[] = [];
      for (let k = i + 1; k < lines.length && k < i + 16; k++) {
        const c = /^rcu:\s+(\d+)-/.exec(lines[k] as string);
        if (c) cpus.push(c[1] as string);
      }
      return {
        severity: 'error',
        title: `RCU stall (${m[1]}, ${m[2] === 'self-detected stall on CPU' ? 'self-detected' : 'detected'})${cpus.length > 0 ? ` on CPU ${cpus.join(', ')}` : ''}`,
        explanation: 'RCU grace periods stopped completing: some CPU has not passed a quiescent state for the stall timeout, typically a CPU spinning with interrupts or preemption off.',
      };
    },
    trace: true,
  },
  {
    re: new RegExp(`${loose('Out of memory')}(?: \\(oom_kill_allocating_task\\))?: ${loose('Killed process ')}(\\d+) \\((.+?)\\) ${loose('total-vm:')}(\\d+)kB, ${loose('anon-rss:')}(\\d+)kB`),
    key: (m) => `oom:${m[1]}`,
    finding: (m) => ({
      severity: 'error',
      title: `OOM kill: ${m[2]} (pid ${m[1]}), ${Math.round(Number(m[4]) / 1024)} MiB resident`,
      explanation: `The guest ran out of memory and the kernel killed ${m[2]} (total-vm ${m[3]} kB, anon-rss ${m[4]} kB) to free it. The lines before it show the memory state.`,
    }),
    blockEnd: (_lines, i) => i,
  },
];

/** Where the OOM report starts: the "invoked oom-killer" line a little before the kill line. */
function oomStart(lines: readonly string[], i: number): number {
  for (let k = i; k >= 0 && k > i - 200; k--) if (/invoked oom-killer:/.test(lines[k] as string)) return k;
  return i;
}

interface Open {
  rule: Rule;
  m: RegExpExecArray;
  line: number;
  agg: Aggregate;
  evidence: Finding['evidence'];
  frames: string[];
  rip: string | undefined;
}

/** Findings of one text (kernel log as printed), in the order their first report appears. */
export function analyzeKernelText(text: string, source: Pick<TextArtifact, 'file'>): Finding[] {
  const lines = kernelLines(text);
  const open = new Map<string, Open>();
  let lastOops = -100;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    for (const rule of RULES) {
      const m = rule.re.exec(l);
      if (m === null) continue;
      const isOops = rule.key(m).startsWith('oops:');
      // "BUG: kernel NULL pointer dereference" is followed by "Oops: 0002 [#1]": one oops, one finding.
      if (isOops) {
        const near = i - lastOops < 10;
        lastOops = i;
        if (near) break;
      }
      const key = rule.key(m);
      let o = open.get(key);
      if (o === undefined) {
        const trace = rule.trace ? traceAfter(lines, i) : undefined;
        const start = key.startsWith('oom:') ? oomStart(lines, i) : i;
        const end = rule.blockEnd?.(lines, i) ?? trace?.end ?? Math.min(lines.length - 1, i + 20);
        o = { rule, m, line: i, agg: { count: 0, maxSeconds: 0, members: [] }, evidence: [{ artifact: source.file, lineStart: start + 1, lineEnd: end + 1, excerpt: excerpt(lines, start, end, 60) }], frames: trace?.frames ?? [], rip: rule.trace ? ripAfter(lines, i) : undefined };
        open.set(key, o);
      } else {
        if (o.evidence.length < 3 && rule.member !== undefined && !o.agg.members.includes(rule.member(m))) {
          // Another member (another hung task): its block too, up to three.
          const trace = rule.trace ? traceAfter(lines, i) : undefined;
          const end = trace?.end ?? Math.min(lines.length - 1, i + 20);
          o.evidence.push({ artifact: source.file, lineStart: i + 1, lineEnd: end + 1, excerpt: excerpt(lines, i, end, 60) });
        }
        // A repeat fills in what the first report lost (a console that dropped or garbled its lines):
        // a lockup is reported every few seconds from the same place.
        if (rule.trace && o.frames.length === 0) o.frames = traceAfter(lines, i)?.frames ?? [];
        if (rule.trace && o.rip === undefined) o.rip = ripAfter(lines, i);
      }
      o.agg.count++;
      if (rule.seconds) o.agg.maxSeconds = Math.max(o.agg.maxSeconds, rule.seconds(m));
      const who = rule.member?.(m);
      if (who !== undefined && !o.agg.members.includes(who) && o.agg.members.length < 1000) o.agg.members.push(who);
      break;
    }
  }
  return [...open.values()].map((o) => {
    const f = o.rule.finding(o.m, o.agg, lines, o.line);
    return { analyzer: 'kernel-log', severity: f.severity, title: f.title, explanation: f.explanation + frameText(o.frames, o.rip), evidence: o.evidence };
  });
}

/** Artifacts that carry the kernel log: the console capture, the pstore (ERST) log. */
const KERNEL_TEXT_KINDS = new Set(['console-capture', 'erst-log']);
/** Slices of the console log (SysRq and NMI captures): analyzed only when there is no whole one. */
const SLICE_KINDS = new Set(['sysrq', 'nmi']);

export const kernelLogAnalyzer: Analyzer = {
  name: 'kernel-log',
  analyze(input: AnalysisInput): Finding[] {
    const text = input.artifacts.filter((a) => a.mediaType === 'text/plain');
    const whole = text.some((a) => a.kind === 'console-capture');
    const out: Finding[] = [];
    for (const a of text) if (KERNEL_TEXT_KINDS.has(a.kind) || (!whole && SLICE_KINDS.has(a.kind))) out.push(...analyzeKernelText(a.text, a));
    // The same panic in the console and in the pstore log: keep the first of each title.
    const seen = new Set<string>();
    return out.filter((f) => (seen.has(f.title) ? false : (seen.add(f.title), true)));
  },
};
