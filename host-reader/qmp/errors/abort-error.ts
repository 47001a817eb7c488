import { QmpError } from './qmp-error.js';

/**
 * The caller's `AbortSignal` fired (or an event listener was closed) before the operation finished.
 * `cause` is the signal's `reason`. An aborted command may still run in QEMU; its reply is discarded.
 */
export class QmpAbortError extends QmpError {
  override name = 'QmpAbortError';
  /** What was aborted: a command name, `connect`, or `event <NAME>`. */
  readonly operation: string;

  constructor(operation: string, cause?: unknown) {
    super(`QMP ${operation} aborted`, { cause });
    this.operation = operation;
  }
}
