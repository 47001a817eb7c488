import type { Analyzer, AnalysisInput, Finding } from './types.js';

/**
 * `info registers -a` (the hmp-registers collector): where each vCPU was when diagnostics ran.
 * QEMU prints per vCPU `CPU#N`, then `RIP=... RFL=... [flags] CPL=n ... HLT=n`. Each vCPU is:
 *   halted            HLT=1: idle in the guest's idle loop (or parked after a panic)
 *   user              CPL=3: running user code
 *   kernel            CPL=0, not halted; with interrupts off (RFL bit 9 clear) it cannot be
 *                     preempted or take a timer: the signature of a hard lockup
 */

export interface VcpuState {
  cpu: number;
  rip: string;
  halted: boolean;
  cpl: number;
  interrupts: boolean;
  mode: 'halted' | 'user' | 'kernel' | 'kernel, interrupts off';
}

export function parseRegisters(text: string, maxCpus = 1024): VcpuState[] {
  const out: VcpuState[] = [];
  const sections = text.split(/^(?=CPU#\d+)/m);
  for (const s of sections) {
    if (out.length >= maxCpus) break;
    const cpu = /^CPU#(\d+)/.exec(s);
    const rip = /\bRIP=([0-9a-f]{8,16})\b/.exec(s);
    const rfl = /\bRFL=([0-9a-f]{1,16})\b/.exec(s);
    const cpl = /\bCPL=(\d)\b/.exec(s);
    const hlt = /\bHLT=(\d)\b/.exec(s);
    if (cpu === null || rip === null || rfl === null || cpl === null) continue;
    const halted = hlt?.[1] === '1';
    const interrupts = (Number.parseInt(rfl[1] as string, 16) & 0x200) !== 0;
    const level = Number(cpl[1]);
    const mode: VcpuState['mode'] = halted ? 'halted' : level === 3 ? 'user' : interrupts ? 'kernel' : 'kernel, interrupts off';
    out.push({ cpu: Number(cpu[1]), rip: rip[1] as string, halted, cpl: level, interrupts, mode });
  }
  return out;
}

export const registersAnalyzer: Analyzer = {
  name: 'registers',
  analyze(input: AnalysisInput): Finding[] {
    const out: Finding[] = [];
    for (const a of input.artifacts) {
      if (a.kind !== 'hmp-registers') continue;
      const cpus = parseRegisters(a.text);
      if (cpus.length === 0) continue;
      const list = cpus.map((c) => `CPU ${c.cpu} ${c.mode} at RIP ${c.rip}`).join('; ');
      const spinning = cpus.filter((c) => c.mode === 'kernel, interrupts off');
      const evidence = [{ artifact: a.file, excerpt: cpus.map((c) => `CPU#${c.cpu} RIP=${c.rip} CPL=${c.cpl} IF=${c.interrupts ? 1 : 0} HLT=${c.halted ? 1 : 0}`).join('\n') }];
      if (spinning.length > 0) {
        out.push({
          analyzer: 'registers',
          severity: 'warning',
          title: `vCPU ${spinning.map((c) => c.cpu).join(', ')} in the kernel with interrupts off when sampled`,
          explanation: `A vCPU running kernel code with interrupts disabled takes no timer and cannot be preempted: if it stays there, it is a hard lockup. One sample cannot tell (the kernel turns interrupts off briefly all the time, to print to the console among others); the kernel log or repeated samples can. ${list}.`,
          evidence,
        });
      } else {
        const all = cpus.every((c) => c.halted);
        out.push({
          analyzer: 'registers',
          severity: 'info',
          title: all ? `All ${cpus.length} vCPU(s) halted` : `vCPUs: ${cpus.map((c) => c.mode).join(', ')}`,
          explanation: `${list}.${all && input.manifest?.verdict === 'guest-kernel-hung' ? ' Halted vCPUs with a kernel that stopped beating: the kernel parked them (after a panic, or every task is waiting).' : ''}`,
          evidence,
        });
      }
    }
    return out;
  },
};
