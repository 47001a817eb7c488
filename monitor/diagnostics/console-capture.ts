import { readLogfile } from '../../host-reader/console/logfile-reader.js';
import type { AppTarget, Collector, CollectorResult } from '../types.js';
import { describeError, failed, formatBytes, textArtifact } from './common.js';

export interface ConsoleCaptureOptions {
  /** Artifact name. Default `console.txt`. */
  name?: string;
  /** Capture only what follows this byte offset of the logfile (e.g. where the failure was noticed). */
  from?: number;
}

/**
 * The console around the failure: the last `maxBytes` of the console logfile (DESIGN fact 8: the file,
 * never the socket), sanitized. A missing logfile is `ok: false`.
 */
export class ConsoleCaptureCollector implements Collector {
  readonly kind = 'console-capture';
  readonly #name: string;
  readonly #from: number;

  constructor(options: ConsoleCaptureOptions = {}) {
    this.#name = options.name ?? 'console.txt';
    this.#from = options.from ?? 0;
    if (!Number.isSafeInteger(this.#from) || this.#from < 0) {
      throw new RangeError(`ConsoleCaptureCollector: from must be an integer >= 0, got ${String(options.from)}`);
    }
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.consoleLog === undefined) return failed('console-capture: the app has no console logfile');
    if (opts.signal.aborted) return failed('console-capture: aborted before it started');
    try {
      const read = await readLogfile(target.consoleLog, { from: this.#from, maxBytes: opts.maxBytes, keep: 'tail' });
      const artifact = textArtifact(this.#name, read.data, opts.maxBytes, 'tail', read.skipped > 0);
      const lines = typeof artifact.data === 'string' ? artifact.data.split('\n').length - 1 : 0;
      const of = read.start > this.#from || read.skipped > 0 ? ` (the last ${formatBytes(read.data.length)} of ${formatBytes(read.size)})` : '';
      return {
        ok: true,
        summary: `console: ${formatBytes(read.data.length)}, ${lines} lines${of}${read.reset ? ', logfile was truncated' : ''}`,
        artifacts: [artifact],
      };
    } catch (error) {
      return failed(`console-capture: ${describeError(error)}`);
    }
  }
}
