import { ConsoleBusyError } from '../../host-reader/console/errors.js';
import { LogfileTail, logfileSize, readLogfile } from '../../host-reader/console/logfile-reader.js';
import {
  checkSysrqKey,
  findConsoleChardev,
  SYSRQ_DISABLED,
  SYSRQ_HEADER,
  sysrqByBreak,
  sysrqBySendKey,
  type SysrqMethod,
} from '../../host-reader/console/sysrq.js';
import type { QmpClient } from '../../host-reader/qmp/index.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Artifact, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, formatBytes, textArtifact, type QmpConnector, type QmpLease } from './common.js';

/**
 * The default keys (DESIGN fact 8): `w` blocked tasks, `t` all tasks, `l` a backtrace of every active CPU
 * (sent by NMI: it reaches a CPU spinning with interrupts off), `m` memory, `q` timers. Not `z` (dump the
 * ftrace buffer): it turns tracing off for good (tracing_off), prints nothing useful unless a tracer was
 * running, and then prints the whole per-CPU ring buffer (MiBs, minutes on a 115200 baud serial console,
 * with the console lock held); send it on purpose with `keys: 'z'` and `allowUnsafe`.
 */
export const DEFAULT_SYSRQ_KEYS = 'wtlmq';

export interface SysrqCollectorOptions {
  /** The keys, in order: `'wtlmq'` or `['w', 't']`. Default `DEFAULT_SYSRQ_KEYS`. Only safe keys unless `allowUnsafe`. */
  keys?: string | readonly string[];
  /**
   * `break`: a BREAK on the serial console then the key (Ctrl-A b on a mux console, QMP
   * `chardev-send-break` on a plain one); `send-key`: QMP alt+sysrq+key. `auto` (default): `break` when the
   * app has a console socket (mux, or plain with QMP), else `send-key`.
   */
  method?: SysrqMethod | 'auto';
  /** When another client holds the console socket and QMP is there, use `send-key` instead. Default true. */
  fallbackToSendKey?: boolean;
  /** Output has settled when the logfile did not grow for this long. Default 300 ms. */
  quietMs?: number;
  /** How long to wait for the kernel's `sysrq: ...` line after sending a key. Default 3000 ms. */
  headerTimeoutMs?: number;
  /** Longest time spent on one key (send, header, settle). Default 10 s; the step timeout bounds it too. */
  keyTimeoutMs?: number;
  /** Chardev id for `chardev-send-break` on a plain console (found by its socket path when absent). */
  chardevId?: string;
  allowUnsafe?: boolean;
  qmpConnector?: QmpConnector;
  clock?: Clock;
  /** Logfile poll interval. Default 50 ms. */
  pollMs?: number;
}

/** What happened to one key. */
export type SysrqKeyStatus = 'ok' | 'no-output' | 'disabled' | 'send-failed' | 'skipped';

/**
 * Magic SysRq dumps from a guest that may have no working userspace (DESIGN fact 8, seed: task states,
 * blocked tasks, backtraces, memory, timers). For each key: note the logfile's end, send the key, wait for
 * the kernel's `sysrq: ...` line and for the output to settle (bounded), then capture what the logfile
 * gained as `sysrq-KEY.txt` (sanitized; the budget `maxBytes` is shared fairly by the keys left).
 * `ok` only when every key printed its output.
 */
export class SysrqCollector implements Collector {
  readonly kind = 'sysrq';
  readonly keys: readonly string[];
  readonly #options: SysrqCollectorOptions;
  readonly #clock: Clock;
  readonly #connect: QmpConnector;

  constructor(options: SysrqCollectorOptions = {}) {
    const keys = options.keys ?? DEFAULT_SYSRQ_KEYS;
    this.keys = typeof keys === 'string' ? [...keys] : [...keys];
    if (this.keys.length === 0) throw new RangeError('SysrqCollector: keys must not be empty');
    for (const key of this.keys) checkSysrqKey(key, options.allowUnsafe ?? false);
    const method = options.method ?? 'auto';
    if (method !== 'auto' && method !== 'break' && method !== 'send-key') {
      throw new RangeError(`SysrqCollector: method must be auto, break or send-key, got ${String(method)}`);
    }
    this.#options = options;
    this.#clock = options.clock ?? realClock;
    this.#connect = options.qmpConnector ?? connectQmp;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    const o = this.#options;
    const log = target.consoleLog;
    if (log === undefined) return failed('sysrq: the app has no console logfile to capture the output from');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);

    let method: SysrqMethod;
    const wanted = o.method ?? 'auto';
    if (wanted === 'auto') {
      if (target.console !== undefined && (target.consoleMux === true || target.qmp !== undefined)) method = 'break';
      else if (target.qmp !== undefined) method = 'send-key';
      else return failed('sysrq: the app has neither a console socket nor QMP');
    } else {
      method = wanted;
    }
    if (method === 'break' && target.console === undefined) return failed('sysrq: method break needs a console socket');
    if (method === 'break' && target.consoleMux !== true && target.qmp === undefined) {
      return failed('sysrq: a plain (non-mux) console needs QMP chardev-send-break');
    }
    if (method === 'send-key' && target.qmp === undefined) return failed('sysrq: method send-key needs QMP');

    const notes: string[] = [];
    let qmp: QmpClient | undefined;
    let lease: QmpLease | undefined;
    try {
      if (target.qmp !== undefined) {
        try {
          lease = await this.#connect(target.qmp, { timeoutMs: deadline.cap(5000), signal: opts.signal });
          qmp = lease.qmp;
        } catch (error) {
          // On a mux console QMP only checks that the socket is free: go on without it.
          if (method !== 'break' || target.consoleMux !== true) return failed(`sysrq: QMP: ${describeError(error)}`);
          notes.push(`QMP unreachable (${describeError(error)}), console socket not checked`);
        }
      }
      let chardevId = o.chardevId;
      if (method === 'break' && qmp !== undefined) {
        const chardev = await findConsoleChardev(qmp, target.console as string, {
          timeoutMs: deadline.cap(5000),
          signal: opts.signal,
        }).catch((error: unknown) => {
          notes.push(`query-chardev failed (${describeError(error)})`);
          return undefined;
        });
        if (chardev?.connected === true) {
          if (o.fallbackToSendKey ?? true) {
            method = 'send-key';
            notes.push('console socket held by another client: used send-key');
          } else {
            return failed(`sysrq: ${new ConsoleBusyError(target.console as string).message}`);
          }
        }
        chardevId ??= chardev?.id;
        if (method === 'break' && target.consoleMux !== true && chardevId === undefined) {
          return failed(`sysrq: no chardev serves ${target.console as string} (query-chardev); set chardevId`);
        }
      }

      const artifacts: Artifact[] = [];
      const results: string[] = [];
      let allOk = true;
      let budget = opts.maxBytes;
      for (const [i, key] of this.keys.entries()) {
        if (opts.signal.aborted || deadline.expired) {
          allOk = false;
          results.push(`${this.keys.slice(i).join('')} skipped (time is up)`);
          break;
        }
        const cap = Math.floor(budget / (this.keys.length - i));
        const one = await this.#oneKey(key, method, { target, log, qmp, chardevId, deadline, signal: opts.signal, cap });
        if (one.artifact !== undefined) {
          artifacts.push(one.artifact);
          budget -= Buffer.byteLength(one.artifact.data as string, 'utf8');
        }
        if (one.status !== 'ok') allOk = false;
        results.push(`${key} ${one.detail}`);
      }
      const how = method === 'send-key' ? 'send-key' : target.consoleMux === true ? 'break (mux Ctrl-A b)' : 'break (chardev-send-break)';
      const summary = `sysrq ${this.keys.join(' ')} via ${how}: ${results.join(', ')}${notes.length > 0 ? `; ${notes.join('; ')}` : ''}`;
      return { ok: allOk, summary, artifacts };
    } catch (error) {
      return failed(`sysrq: ${describeError(error)}`);
    } finally {
      await lease?.release();
    }
  }

  async #oneKey(
    key: string,
    method: SysrqMethod,
    c: {
      target: AppTarget;
      log: string;
      qmp: QmpClient | undefined;
      chardevId: string | undefined;
      deadline: Deadline;
      signal: AbortSignal;
      cap: number;
    },
  ): Promise<{ status: SysrqKeyStatus; detail: string; artifact?: Artifact }> {
    const o = this.#options;
    const keyDeadline = new Deadline(Math.min(o.keyTimeoutMs ?? 10_000, c.deadline.remaining()), this.#clock);
    const start = await logfileSize(c.log);
    const tail = new LogfileTail(c.log, { from: start, clock: this.#clock, pollMs: o.pollMs ?? 50 });
    try {
      if (method === 'send-key') {
        await sysrqBySendKey(c.qmp as QmpClient, key, { timeoutMs: keyDeadline.cap(5000), signal: c.signal, allowUnsafe: true });
      } else {
        await sysrqByBreak(key, {
          consolePath: c.target.console as string,
          mux: c.target.consoleMux === true,
          // The socket was checked once above; a plain console needs QMP for the BREAK itself.
          ...(c.target.consoleMux === true ? {} : { qmp: c.qmp as QmpClient, chardevId: c.chardevId as string }),
          timeoutMs: keyDeadline.cap(5000),
          signal: c.signal,
          allowUnsafe: true,
        });
      }
    } catch (error) {
      return { status: 'send-failed', detail: `not sent (${describeError(error)})` };
    }

    let header = true;
    try {
      await tail.waitFor(SYSRQ_HEADER, { timeoutMs: keyDeadline.cap(o.headerTimeoutMs ?? 3000), signal: c.signal });
    } catch {
      header = false; // timed out or aborted: capture whatever came
    }
    let settled = false;
    if (header) {
      try {
        settled = (await tail.waitQuiet({ quietMs: o.quietMs ?? 300, timeoutMs: keyDeadline.cap(Infinity), signal: c.signal })).quiet;
      } catch {
        settled = false;
      }
    }

    // Read a little more than the cap: sanitizing drops \r and escapes.
    const read = await readLogfile(c.log, { from: start, maxBytes: c.cap * 2, keep: 'head' });
    const artifact = textArtifact(`sysrq-${key}.txt`, read.data, c.cap, 'head', read.remaining > 0);
    const text = artifact.data as string;
    const size = formatBytes(Buffer.byteLength(text, 'utf8'));
    const cut = artifact.truncated === true ? ', truncated' : '';
    const unsettled = header && !settled ? ', still printing' : '';
    if (SYSRQ_DISABLED.test(text)) return { status: 'disabled', detail: 'refused by kernel.sysrq (set kernel.sysrq=1)', artifact };
    if (!header) return { status: 'no-output', detail: `no sysrq output (${size})`, artifact };
    return { status: 'ok', detail: `${size}${cut}${unsettled}`, artifact };
  }
}
