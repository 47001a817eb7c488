import { LogfileTail, logfileSize, readLogfile } from '../../host-reader/console/logfile-reader.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, formatBytes, textArtifact, type QmpConnector, type QmpLease } from './common.js';

/**
 * An NMI (QMP `inject-nmi`), and what the guest kernel printed on its console in the seconds after (read
 * from the console logfile from where it ended before the NMI, like the SysRq collector), as `nmi.txt`.
 * An NMI is taken even with interrupts masked, so it can make a kernel that no SysRq key reaches speak.
 * QEMU 7.2 raises LINT1 (NMI) on every vCPU, but Linux masks LINT1 on all CPUs but the boot CPU: the NMI
 * is taken by CPU 0 only (seen on Debian 6.1 with 2 vCPUs: /proc/interrupts NMI 1 0). What the kernel
 * does with it is its configuration (sysctls, which bake can set: bake/assets.ts NmiSysctls):
 *
 *  - by default (Linux x86, no NMI source claiming it) an *unknown* NMI: `Uhhuh. NMI received for
 *    unknown reason 30 on CPU 0.`, `Dazed and confused, but trying to continue`, and the guest runs on;
 *  - `kernel.unknown_nmi_panic=1`: `Kernel panic - not syncing: NMI: Not continuing` (with kdump in the
 *    guest: a vmcore; with pvpanic: the host sees the panic); `kernel.panic_on_unrecovered_nmi=1` and
 *    `kernel.panic_on_io_nmi=1` panic on the memory-parity and I/O-check NMIs (a QMP NMI is neither);
 *  - `kernel.panic_print=64` (bit 6): the panic also prints every CPU's backtrace (NMI IPIs, which do
 *    reach the other CPUs), so a hard-locked CPU 1 shows where it spins;
 *  - with the hard-lockup detector (`kernel.nmi_watchdog=1`, perf NMIs: needs a vPMU, so not under TCG:
 *    "NMI watchdog: Perf NMI watchdog permanently disabled") a CPU stuck with interrupts off reports
 *    itself (`kernel.hardlockup_panic=1`: and panics); the SysRq `l` key asks every CPU for a backtrace.
 *
 * Disruptive (a panic, when the guest is set to): off unless configured.
 */

/** What the kernel says about an NMI it cannot attribute (arch/x86/kernel/nmi.c). */
export const UNKNOWN_NMI_RE = /Uhhuh\. NMI received for unknown reason [0-9a-f]+ on CPU \d+/;
const DAZED_RE = /Dazed and confused, but trying to continue/;
const PANIC_RE = /Kernel panic - not syncing[^\r\n]*/;
const BACKTRACE_RE = /NMI backtrace for cpu \d+|Call Trace:/;
/** The first line the kernel prints for an NMI, whatever it makes of it. */
const ANY_NMI_RE = /NMI|Kernel panic - not syncing/;

export interface NmiCollectorOptions {
  /** How long to wait for the kernel's first line about the NMI. Default 3000 ms. */
  headerTimeoutMs?: number;
  /** The output has settled when the logfile did not grow for this long. Default 500 ms. */
  quietMs?: number;
  /** Longest capture after the NMI, whatever comes. Default 5000 ms (and the step's timeout). */
  captureMs?: number;
  /** Artifact name. Default `nmi.txt`. */
  name?: string;
  pollMs?: number;
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

/** What the captured text says the kernel did with the NMI. */
export function describeNmiOutput(text: string): string {
  const panic = PANIC_RE.exec(text);
  if (panic !== null) return `the kernel panicked (${panic[0].trim()})${/NMI backtrace for cpu \d+/.test(text) ? ', with NMI backtraces' : ''}`;
  const parts: string[] = [];
  if (UNKNOWN_NMI_RE.test(text)) parts.push(DAZED_RE.test(text) ? 'unknown NMI, the kernel carried on (Dazed and confused)' : 'unknown NMI');
  if (BACKTRACE_RE.test(text)) parts.push('with a backtrace');
  if (parts.length === 0) return ANY_NMI_RE.test(text) ? 'NMI output' : 'no NMI line';
  return parts.join(', ');
}

export class NmiCollector implements Collector {
  readonly kind = 'nmi';
  readonly #o: NmiCollectorOptions;
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: NmiCollectorOptions = {}) {
    for (const k of ['headerTimeoutMs', 'quietMs', 'captureMs', 'pollMs'] as const) {
      const v = options[k];
      if (v !== undefined && !(v > 0)) throw new RangeError(`NmiCollector: ${k} must be > 0, got ${String(v)}`);
    }
    this.#o = options;
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.qmp === undefined) return failed('nmi: the app has no QMP socket');
    const log = target.consoleLog;
    if (log === undefined) return failed('nmi: the app has no console logfile to capture the output from');
    if (opts.signal.aborted) return failed('nmi: aborted before it started');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    let lease: QmpLease | undefined;
    try {
      lease = await this.#connect(target.qmp, { timeoutMs: deadline.cap(5000), signal: opts.signal });
      const start = await logfileSize(log);
      const tail = new LogfileTail(log, { from: start, clock: this.#clock, pollMs: this.#o.pollMs ?? 50 });
      await lease.qmp.execute('inject-nmi', undefined, { timeoutMs: deadline.cap(5000), signal: opts.signal });
      await lease.release();
      lease = undefined;

      const capture = new Deadline(Math.min(this.#o.captureMs ?? 5000, deadline.remaining()), this.#clock);
      let header = true;
      try {
        await tail.waitFor(ANY_NMI_RE, { timeoutMs: capture.cap(this.#o.headerTimeoutMs ?? 3000), signal: opts.signal });
      } catch {
        header = false;
      }
      let settled = false;
      if (header) {
        settled = await tail
          .waitQuiet({ quietMs: this.#o.quietMs ?? 500, timeoutMs: capture.cap(Infinity), signal: opts.signal })
          .then((q) => q.quiet)
          .catch(() => false);
      }
      const read = await readLogfile(log, { from: start, maxBytes: opts.maxBytes * 2, keep: 'head' });
      const artifact = textArtifact(this.#o.name ?? 'nmi.txt', read.data, opts.maxBytes, 'head', read.remaining > 0);
      const text = artifact.data as string;
      const size = formatBytes(Buffer.byteLength(text, 'utf8'));
      if (!header) return failed(`nmi: injected; no kernel line about it on the console (${size} captured)`, [artifact]);
      const what = describeNmiOutput(text);
      return { ok: true, summary: `nmi: injected; ${what}; ${size}${artifact.truncated === true ? ', truncated' : ''}${settled ? '' : ', still printing'}`, artifacts: [artifact] };
    } catch (error) {
      return failed(`nmi: ${describeError(error)}`);
    } finally {
      await lease?.release();
    }
  }
}
