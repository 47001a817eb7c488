/** Root of every error the acpi/ modules throw on bad input. */
export class AcpiError extends Error {
  override name = 'AcpiError';
}

/** A name, path or value given to a builder is not valid ASL/AML. `field` names what was bad. */
export class AmlValueError extends AcpiError {
  override name = 'AmlValueError';
  constructor(
    readonly field: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(`${field}: ${reason} (got ${JSON.stringify(typeof value === 'bigint' ? value.toString() : value)})`);
  }
}

/** AML bytes could not be decoded. `offset` is the byte offset in the input where decoding failed. */
export class AmlDecodeError extends AcpiError {
  override name = 'AmlDecodeError';
  constructor(
    readonly offset: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`AML decode error at offset 0x${offset.toString(16)}: ${reason}`, options);
  }
}
