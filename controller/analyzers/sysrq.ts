import { CALL_TRACE, callTrace, collapseRepeats, isSchedulerFrame } from './kernel-log.js';
import { excerpt, kernelLines, loose, type Analyzer, type AnalysisInput, type Finding } from './types.js';

/**
 * SysRq `t` (every task) and `w` (blocked tasks) output, parsed into tasks, their states and stacks:
 *
 *   task:sh              state:D stack:0     pid:95    ppid:1      flags:0x00004002     (6.1)
 *   task:sh              state:D stack:0     pid:95    tgid:95   ppid:1      flags:...  (6.12)
 *   Call Trace:
 *    <TASK>
 *    __schedule+0x34d/0x9e0
 *    ...
 *
 * The findings: how many tasks are in which state, and for blocked (D) tasks the stacks most of them
 * share (the frames below the scheduler's own), which is usually what the guest waits on.
 */

export interface SysrqTask {
  name: string;
  state: string;
  pid: number;
  ppid: number;
  frames: string[];
  line: number;
}

const TASK = new RegExp(`^${loose('task:')}(.{1,16}?)\\s+${loose('state:')}(\\S)\\S*\\s+${loose('stack:')}\\s*\\d+\\s+${loose('pid:')}\\s*(\\d+)\\s+(?:${loose('tgid:')}\\s*\\d+\\s+)?${loose('ppid:')}\\s*(\\d+)`);
/** Kernel threads are children of kthreadd (pid 2), or kthreadd itself. */
const isKernelThread = (t: SysrqTask) => t.pid === 2 || t.ppid === 2;
/** Frames every sleeping task has (the scheduler's, the syscall entry's): not what tells one wait from another. */
const COMMON = new Set(['do_syscall_64', 'entry_SYSCALL_64_after_hwframe', 'kthread'].map(collapseRepeats));
const COMMON_PREFIXES = ['__x64_sys_', 'ret_from_fork'].map(collapseRepeats);
/** Compared with repeated characters collapsed, so a garbled console line still matches. */
const isCommon = (f: string) => {
  const c = collapseRepeats(f);
  return isSchedulerFrame(f) || COMMON.has(c) || COMMON_PREFIXES.some((p) => c.startsWith(p));
};

export function parseSysrqTasks(text: string, maxTasks = 5000): SysrqTask[] {
  const lines = kernelLines(text);
  const tasks: SysrqTask[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < lines.length && tasks.length < maxTasks; i++) {
    const m = TASK.exec((lines[i] as string).trim());
    if (m === null) continue;
    let frames: string[] = [];
    for (let k = i + 1; k < lines.length && k < i + 4; k++) {
      if (CALL_TRACE.test(lines[k] as string)) {
        frames = callTrace(lines, k).frames;
        break;
      }
    }
    const pid = Number(m[3]);
    // A capture may go on past the dump (a hung-task report that names the same task): first one wins.
    if (seen.has(pid)) continue;
    seen.add(pid);
    tasks.push({ name: (m[1] as string).trim(), state: m[2] as string, pid, ppid: Number(m[4]), frames, line: i + 1 });
  }
  return tasks;
}

const STATE_NAMES: Record<string, string> = { R: 'running', S: 'sleeping', D: 'blocked (D)', T: 'stopped', t: 'traced', I: 'idle', Z: 'zombie', X: 'dead' };

export const sysrqAnalyzer: Analyzer = {
  name: 'sysrq-tasks',
  analyze(input: AnalysisInput): Finding[] {
    const out: Finding[] = [];
    for (const a of input.artifacts) {
      if (a.kind !== 'sysrq' || !/task:/.test(a.text)) continue;
      const tasks = parseSysrqTasks(a.text);
      if (tasks.length === 0) continue;
      const counts = new Map<string, number>();
      for (const t of tasks) counts.set(t.state, (counts.get(t.state) ?? 0) + 1);
      const summary = [...counts.entries()].sort((x, y) => y[1] - x[1]).map(([s, n]) => `${n} ${STATE_NAMES[s] ?? s}`).join(', ');
      const blocked = tasks.filter((t) => t.state === 'D');
      const user = tasks.filter((t) => !isKernelThread(t));
      const stopped = user.filter((t) => t.state === 'T');
      if (blocked.length > 0) {
        // Group the blocked tasks by what they wait in: the first frames below the scheduler. A busy
        // serial console doubles characters now and then (folioo_wait_writeback, seen in real
        // captures): the grouping key ignores repeated characters, the most common spelling is shown.
        const groups = new Map<string, { members: SysrqTask[]; spellings: Map<string, number> }>();
        for (const t of blocked) {
          const shown = t.frames.filter((f) => !isCommon(f)).slice(0, 4).join(' < ') || '(no stack)';
          const key = collapseRepeats(shown);
          const g = groups.get(key) ?? { members: [], spellings: new Map<string, number>() };
          g.members.push(t);
          g.spellings.set(shown, (g.spellings.get(shown) ?? 0) + 1);
          groups.set(key, g);
        }
        const top = [...groups.values()].sort((x, y) => y.members.length - x.members.length)[0] as { members: SysrqTask[]; spellings: Map<string, number> };
        const members = top.members;
        const stack = [...top.spellings.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] as string;
        out.push({
          analyzer: 'sysrq-tasks',
          severity: 'error',
          title: `${blocked.length} task(s) blocked in D state; ${members.length} wait in ${stack}`,
          explanation: `SysRq ${a.name}: ${summary}. Blocked tasks: ${blocked.slice(0, 12).map((t) => `${t.name}:${t.pid}`).join(', ')}${blocked.length > 12 ? ', ...' : ''}. The stack most of them share is where the guest is stuck.`,
          evidence: members.slice(0, 3).map((t) => ({ artifact: a.file, lineStart: t.line, lineEnd: t.line + t.frames.length + 3, excerpt: `task:${t.name} state:D pid:${t.pid}\n${t.frames.join('\n')}` })),
        });
      }
      // Most of userspace stopped (kill -STOP, a debugger): the guest is alive but does nothing.
      if (stopped.length > 0 && stopped.length * 2 >= user.length) {
        out.push({
          analyzer: 'sysrq-tasks',
          severity: 'warning',
          title: `${stopped.length} of ${user.length} user tasks stopped (T state)`,
          explanation: `SysRq ${a.name}: ${summary}. Stopped tasks do nothing until they get SIGCONT: ${stopped.slice(0, 12).map((t) => `${t.name}:${t.pid}`).join(', ')}${stopped.length > 12 ? ', ...' : ''}.`,
          evidence: [{ artifact: a.file, lineStart: stopped[0]?.line ?? 1, lineEnd: (stopped[0]?.line ?? 1) + 2, excerpt: stopped.slice(0, 8).map((t) => `task:${t.name} state:T pid:${t.pid}`).join('\n') }],
        });
      }
      out.push({
        analyzer: 'sysrq-tasks',
        severity: 'info',
        title: `Task states (SysRq ${a.name}): ${summary}`,
        explanation: `${tasks.length} tasks in the SysRq dump.`,
        evidence: [{ artifact: a.file, lineStart: tasks[0]?.line ?? 1, lineEnd: tasks[tasks.length - 1]?.line ?? 1, excerpt: excerpt(kernelLines(a.text), (tasks[0]?.line ?? 1) - 1, (tasks[0]?.line ?? 1) + 12, 14) }],
      });
    }
    return out;
  },
};
