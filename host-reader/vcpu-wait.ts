import { readdir } from 'node:fs/promises';
import { readBounded } from './qemu-pid.js';

/**
 * How long QEMU's threads waited for a CPU: `/proc/<pid>/task/<tid>/schedstat` is three numbers, the
 * time the thread ran, the time it was runnable but waiting on a run queue (both ns, since the thread
 * started) and the number of timeslices. A vCPU thread the host starves (a cgroup CPU quota, host
 * load) waits; a guest that is hung with interrupts off keeps its vCPU thread running; an idle or
 * panicked guest's vCPU thread sleeps and does neither. So the share of wall time the most-waiting
 * thread spent waiting over a window says whether the host, not the guest, stopped the beats.
 *
 * The wait time of a throttled cgroup counts when the thread next runs (the scheduler adds the delay
 * on arrival): a window of a few hundred ms under a 100 ms CFS period sees it.
 */

export interface ThreadWaits {
  /** Monotonic ms when the threads were read. */
  at: number;
  /** tid -> ns spent runnable and waiting, since the thread started. */
  waits: Map<number, bigint>;
}

/** QEMU has a few threads per vCPU and I/O worker; a process with more is not read further. */
export const MAX_THREADS = 1024;
const SCHEDSTAT_MAX = 128;

/** `<run ns> <wait ns> <slices>`: the wait, or undefined for anything else. */
export function parseSchedstat(text: string): bigint | undefined {
  const m = /^(\d{1,20}) (\d{1,20}) (\d{1,20})\n?$/.exec(text);
  return m === null ? undefined : BigInt(m[2] as string);
}

/**
 * One reading of every thread of `pid` (at most MAX_THREADS). Rejects when the process is gone (its
 * task directory cannot be listed); a thread that exits meanwhile is left out.
 */
export async function readThreadWaits(pid: number, procRoot = '/proc', now: () => number = () => performance.now()): Promise<ThreadWaits> {
  const dir = `${procRoot}/${pid}/task`;
  const tids = (await readdir(dir)).filter((t) => /^\d{1,7}$/.test(t)).slice(0, MAX_THREADS);
  const at = now();
  const waits = new Map<number, bigint>();
  for (const t of tids) {
    const text = await readBounded(`${dir}/${t}/schedstat`, SCHEDSTAT_MAX).then(
      (b) => b.toString('latin1'),
      () => undefined,
    );
    const w = text === undefined ? undefined : parseSchedstat(text);
    if (w !== undefined) waits.set(Number(t), w);
  }
  return { at, waits };
}

export interface WaitRatio {
  /** The largest share of the window one thread spent waiting for a CPU, 0..1. */
  ratio: number;
  tid: number;
  windowMs: number;
}

/** The most-waiting thread between two readings of the same process; undefined with no window or no common thread. */
export function maxWaitRatio(a: ThreadWaits, b: ThreadWaits): WaitRatio | undefined {
  const windowMs = b.at - a.at;
  if (!(windowMs > 0)) return undefined;
  let best: WaitRatio | undefined;
  for (const [tid, w] of b.waits) {
    const before = a.waits.get(tid);
    if (before === undefined || w < before) continue;
    const ratio = Math.min(1, Number(w - before) / 1e6 / windowMs);
    if (best === undefined || ratio > best.ratio) best = { ratio, tid, windowMs };
  }
  return best;
}
