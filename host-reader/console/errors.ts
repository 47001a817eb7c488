/**
 * Runtime failures of the console transport, under one root. Programmer errors (a bad argument) are plain
 * `TypeError`/`RangeError` thrown at once instead.
 */
export class ConsoleError extends Error {
  override name = 'ConsoleError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The console socket could not be connected (`cause`: the errno error). */
export class ConsoleConnectError extends ConsoleError {
  override name = 'ConsoleConnectError';

  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot connect to the console socket ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
  }
}

/** An operation on the console did not finish in time. */
export class ConsoleTimeoutError extends ConsoleError {
  override name = 'ConsoleTimeoutError';

  constructor(
    readonly operation: string,
    readonly timeoutMs: number,
  ) {
    super(`${operation} timed out after ${timeoutMs} ms`);
  }
}

/** The caller's signal aborted the operation (`cause`: the signal's reason). */
export class ConsoleAbortError extends ConsoleError {
  override name = 'ConsoleAbortError';

  constructor(
    readonly operation: string,
    reason: unknown,
  ) {
    super(`${operation} aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, { cause: reason });
  }
}

/** The console socket is held by another client (QEMU serves one at a time), so bytes sent would wait. */
export class ConsoleBusyError extends ConsoleError {
  override name = 'ConsoleBusyError';

  constructor(readonly path: string) {
    super(`the console socket ${path} already has a client (QEMU serves one at a time; is a console session open?)`);
  }
}

/** A SysRq could not be sent (`cause`: the QMP or console error). */
export class SysrqError extends ConsoleError {
  override name = 'SysrqError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
