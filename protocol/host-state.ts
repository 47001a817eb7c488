/**
 * `host-state.json`, the host-state diagnostic's artifact: the node's load, PSI pressure and memory,
 * and the VM's QEMU process with its vCPU threads. The monitor writes it, the controller's host-state
 * analyzer reads it.
 */

/** The `/proc/meminfo` keys kept, in kB. */
export const MEMINFO_KEYS = [
  'MemTotal',
  'MemFree',
  'MemAvailable',
  'Buffers',
  'Cached',
  'SwapTotal',
  'SwapFree',
  'Dirty',
  'Writeback',
  'Committed_AS',
  'AnonPages',
  'Shmem',
] as const;

export interface PressureLine {
  avg10: number;
  avg60: number;
  avg300: number;
  /** Total stall time, microseconds. */
  total: number;
}

export interface ThreadState {
  tid: number;
  comm: string;
  /** R running, S sleeping, D disk sleep, T stopped... */
  state: string;
  /** CPU the thread last ran on. */
  lastCpu: number | null;
  utimeMs: number;
  stimeMs: number;
  /** CPU use over the sampling interval (100 = one host CPU), when two samples were taken. */
  cpuPercent?: number;
}

export interface QemuProcessState {
  pid: number;
  /** How the process was found. */
  foundBy: 'target' | 'cmdline' | 'socket';
  comm: string;
  state: string;
  threads: number | null;
  rssKiB: number | null;
  utimeMs: number;
  stimeMs: number;
  vcpus: ThreadState[];
  /** How the vCPU threads were told apart: QMP `query-cpus-fast` thread ids, or thread names. */
  vcpuSource: 'qmp' | 'comm';
  /** Threads read (bounded by `maxThreads`). */
  threadsRead: number;
  sampleMs: number;
  /** Other processes that also matched. */
  otherCandidates?: number[];
}

export interface HostState {
  collectedAt: string;
  procRoot: string;
  loadavg: { load1: number; load5: number; load15: number; runnable: number; entities: number } | null;
  pressure: Record<'cpu' | 'memory' | 'io', { some?: PressureLine; full?: PressureLine } | null>;
  /** kB, as in /proc/meminfo. */
  meminfo: Partial<Record<(typeof MEMINFO_KEYS)[number], number>>;
  qemu: QemuProcessState | null;
  errors: string[];
}
