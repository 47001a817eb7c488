/**
 * A QEMU launch-flag spec that cannot be rendered: `field` is the spec field (`console.logfile`,
 * `gdb.id`...), `value` what it held. Thrown at once, before anything is printed.
 */
export class QemuArgsError extends Error {
  override name = 'QemuArgsError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`${field}: ${reason} (got ${JSON.stringify(value)})`);
  }
}
