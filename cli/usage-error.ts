/** Bad input from the user (flag, config, file): printed as `eve-diag: <field>: <reason>` with exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${field}: ${reason}${value === undefined ? '' : ` (got ${JSON.stringify(value)})`}`, options);
  }
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Thrown by a command that has already printed its output and only needs a non-zero exit code. */
export class ExitStatus extends Error {
  override name = 'ExitStatus';
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
