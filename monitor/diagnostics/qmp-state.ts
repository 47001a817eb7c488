import { QmpCommandError, QmpError } from '../../host-reader/qmp/index.js';
import { realClock, type Clock } from '../../util/clock.js';
import type { AppTarget, Artifact, Collector, CollectorResult } from '../types.js';
import { connectQmp, Deadline, describeError, failed, jsonArtifact, withQmp, type QmpConnector } from './common.js';

/** The QMP queries taken by default: run state, vCPUs (thread ids, halted...), block device counters. */
export const DEFAULT_QMP_STATE_COMMANDS: readonly string[] = ['query-status', 'query-cpus-fast', 'query-blockstats'];

export interface QmpStateOptions {
  /** Argument-less QMP queries, each saved as `qmp-COMMAND.json`. Default `DEFAULT_QMP_STATE_COMMANDS`. */
  commands?: readonly string[];
  qmpConnector?: QmpConnector;
  clock?: Clock;
}

/**
 * The VM as QEMU sees it: each query's reply as a JSON artifact (`{"command", "return"}` or
 * `{"command", "error"}`), within the step's size cap. `ok` when every query answered.
 */
export class QmpStateCollector implements Collector {
  readonly kind = 'qmp-state';
  readonly commands: readonly string[];
  readonly #connect: QmpConnector;
  readonly #clock: Clock;

  constructor(options: QmpStateOptions = {}) {
    this.commands = [...(options.commands ?? DEFAULT_QMP_STATE_COMMANDS)];
    for (const c of this.commands) {
      if (!/^query-[a-z0-9-]+$/.test(c)) throw new RangeError(`QmpStateCollector: not a QMP query: ${JSON.stringify(c)}`);
    }
    this.#connect = options.qmpConnector ?? connectQmp;
    this.#clock = options.clock ?? realClock;
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.qmp === undefined) return failed('qmp-state: the app has no QMP socket');
    const deadline = new Deadline(opts.timeoutMs, this.#clock);
    const artifacts: Artifact[] = [];
    const facts: string[] = [];
    const failures: string[] = [];
    try {
      await withQmp(this.#connect, target.qmp, { timeoutMs: deadline.cap(opts.timeoutMs), signal: opts.signal }, async (qmp) => {
        let budget = opts.maxBytes;
        for (const [i, command] of this.commands.entries()) {
          let record: Record<string, unknown>;
          try {
            const value = await qmp.execute(command, undefined, { timeoutMs: deadline.cap(opts.timeoutMs), signal: opts.signal });
            record = { command, return: value };
            const fact = describeReply(command, value);
            if (fact !== undefined) facts.push(fact);
          } catch (error) {
            if (!(error instanceof QmpError)) throw error;
            failures.push(`${command}: ${describeError(error)}`);
            record = { command, error: error instanceof QmpCommandError ? { class: error.errorClass, desc: error.desc } : describeError(error) };
            // Only a command error leaves the session usable.
            if (!(error instanceof QmpCommandError)) {
              artifacts.push(jsonArtifact(`qmp-${command}.json`, record, Math.floor(budget / (this.commands.length - i))));
              for (const rest of this.commands.slice(i + 1)) failures.push(`${rest}: not run`);
              return;
            }
          }
          const artifact = jsonArtifact(`qmp-${command}.json`, record, Math.floor(budget / (this.commands.length - i)));
          budget -= Buffer.byteLength(artifact.data as string, 'utf8');
          artifacts.push(artifact);
        }
      });
    } catch (error) {
      return failed(`qmp-state: ${describeError(error)}`, artifacts);
    }
    const parts = [...facts, ...(failures.length > 0 ? [`failed: ${failures.join('; ')}`] : [])];
    return { ok: failures.length === 0, summary: `qmp: ${parts.join(', ')}`, artifacts };
  }
}

/** A few words about a reply, for the summary. */
function describeReply(command: string, value: unknown): string | undefined {
  if (command === 'query-status' && typeof value === 'object' && value !== null) {
    const { status, running } = value as { status?: unknown; running?: unknown };
    return `status ${String(status)}${running === true ? '' : ' (not running)'}`;
  }
  if (command === 'query-cpus-fast' && Array.isArray(value)) return `${value.length} vCPU${value.length === 1 ? '' : 's'}`;
  if (command === 'query-blockstats' && Array.isArray(value)) return `${value.length} block device${value.length === 1 ? '' : 's'}`;
  return undefined;
}
