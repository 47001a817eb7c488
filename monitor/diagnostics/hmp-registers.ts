import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, formatBytes, textArtifact, withQmp, type QmpConnector } from './common.js';

export interface HmpRegistersOptions {
  /** The HMP command. Default `info registers -a` (every vCPU; QEMU 7.2 accepts `-a`). */
  command?: string;
  /** Artifact name. Default `registers.txt`. */
  name?: string;
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

/**
 * The vCPUs' registers through HMP (`human-monitor-command`): where each vCPU was (RIP, CR3, flags...),
 * readable even when the guest kernel is dead. A text artifact; `ok` when QEMU printed something.
 */
export class HmpRegistersCollector implements Collector {
  readonly kind = 'hmp-registers';
  readonly #command: string;
  readonly #name: string;
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: HmpRegistersOptions = {}) {
    this.#command = options.command ?? 'info registers -a';
    if (!/^info [a-z-]+( -a)?$/.test(this.#command)) {
      throw new RangeError(`HmpRegistersCollector: only read-only 'info ...' commands, got ${JSON.stringify(this.#command)}`);
    }
    this.#name = options.name ?? 'registers.txt';
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.qmp === undefined) return failed('hmp-registers: the app has no QMP socket');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    try {
      const output = await withQmp(this.#connect, target.qmp, { timeoutMs: deadline.cap(opts.timeoutMs), signal: opts.signal }, (qmp) =>
        qmp.hmp(this.#command, { timeoutMs: deadline.cap(opts.timeoutMs), signal: opts.signal }),
      );
      const artifact = textArtifact(this.#name, output, opts.maxBytes);
      const text = artifact.data as string;
      if (text.trim().length === 0) return failed(`hmp-registers: '${this.#command}' printed nothing`, [artifact]);
      const cpus = (text.match(/^CPU#\d+/gm) ?? []).length;
      return {
        ok: true,
        summary: `${this.#command}: ${cpus} CPU${cpus === 1 ? '' : 's'}, ${formatBytes(Buffer.byteLength(text, 'utf8'))}${artifact.truncated === true ? ', truncated' : ''}`,
        artifacts: [artifact],
      };
    } catch (error) {
      return failed(`hmp-registers: ${describeError(error)}`);
    }
  }
}
