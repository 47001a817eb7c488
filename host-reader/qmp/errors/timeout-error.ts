import { QmpError } from './qmp-error.js';

/**
 * An operation did not finish in time. For a command, QEMU may still execute it later; its late reply
 * is then discarded.
 */
export class QmpTimeoutError extends QmpError {
  override name = 'QmpTimeoutError';
  /** What timed out: a command name, `greeting`, `socket`, or `event <NAME>`. */
  readonly operation: string;
  /** The QMP command that timed out, when `operation` is a command. */
  readonly command: string | undefined;
  readonly timeoutMs: number;

  constructor(init: { operation: string; command?: string; timeoutMs: number }) {
    super(`QMP ${init.operation} timed out after ${init.timeoutMs} ms`);
    this.operation = init.operation;
    this.command = init.command;
    this.timeoutMs = init.timeoutMs;
  }
}
