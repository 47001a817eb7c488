import type { HostState } from '../../protocol/host-state.js';
import type { Analyzer, AnalysisInput, Finding } from './types.js';

/**
 * The host side (the host-state collector's JSON): is the node itself the problem? A vCPU thread
 * that is runnable but got almost no CPU in the sample is starved by the host; PSI `some avg10`
 * above 40 % on CPU or 20 % on memory/I/O means the host is under pressure; a stopped QEMU (state T)
 * runs nothing at all.
 */
export const hostStateAnalyzer: Analyzer = {
  name: 'host-state',
  analyze(input: AnalysisInput): Finding[] {
    const out: Finding[] = [];
    for (const a of input.artifacts) {
      if (a.kind !== 'host-state' || a.mediaType !== 'application/json') continue;
      let h: HostState;
      try {
        h = JSON.parse(a.text) as HostState;
      } catch {
        continue;
      }
      if (typeof h !== 'object' || h === null) continue;
      const ev = [{ artifact: a.file, excerpt: a.text.slice(0, 1500) }];
      const q = h.qemu;
      if (q && typeof q === 'object') {
        if (q.state === 'T' || q.state === 't') {
          out.push({ analyzer: 'host-state', severity: 'critical', title: `QEMU (pid ${q.pid}) is stopped on the host`, explanation: 'The QEMU process is in state T (SIGSTOP or a debugger): the guest cannot run at all, whatever it does.', evidence: ev });
        }
        const vcpus = Array.isArray(q.vcpus) ? q.vcpus : [];
        const starved = vcpus.filter((v) => v.state === 'R' && typeof v.cpuPercent === 'number' && v.cpuPercent < 20);
        if (starved.length > 0) {
          out.push({
            analyzer: 'host-state',
            severity: 'error',
            title: `${starved.length} vCPU thread(s) runnable but starved of host CPU`,
            explanation: `${starved.map((v) => `${v.comm} ${v.cpuPercent}%`).join(', ')} over ${q.sampleMs} ms: the threads want to run and the host does not let them. The guest looks hung because it is not given time.`,
            evidence: ev,
          });
        }
        const blocked = vcpus.filter((v) => v.state === 'D');
        if (blocked.length > 0) {
          out.push({ analyzer: 'host-state', severity: 'warning', title: `${blocked.length} vCPU thread(s) in uninterruptible sleep on the host`, explanation: `${blocked.map((v) => v.comm).join(', ')} wait in the host kernel (I/O, memory): the host, not the guest, holds them.`, evidence: ev });
        }
      }
      const psi = h.pressure ?? {};
      const cpu = psi.cpu?.some?.avg10;
      const mem = psi.memory?.some?.avg10;
      const io = psi.io?.some?.avg10;
      if (typeof cpu === 'number' && cpu > 40) out.push({ analyzer: 'host-state', severity: 'warning', title: `Host CPU pressure ${cpu}% (PSI some avg10)`, explanation: 'Runnable tasks on the host waited for a CPU this share of the last 10 s: guests get less time than they ask for.', evidence: ev });
      if (typeof mem === 'number' && mem > 20) out.push({ analyzer: 'host-state', severity: 'warning', title: `Host memory pressure ${mem}% (PSI some avg10)`, explanation: 'Tasks on the host stalled on memory (reclaim, swap) this share of the last 10 s.', evidence: ev });
      if (typeof io === 'number' && io > 20) out.push({ analyzer: 'host-state', severity: 'warning', title: `Host I/O pressure ${io}% (PSI some avg10)`, explanation: 'Tasks on the host stalled on I/O this share of the last 10 s.', evidence: ev });
    }
    return out;
  },
};
