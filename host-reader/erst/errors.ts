/**
 * The one error the ERST decoders throw. The store is written by the guest (through QEMU's acpi-erst
 * device) and is hostile: anything that does not hold together is this error, naming the field that was
 * wrong, never a RangeError from a read past the end or an exception of zlib.
 */
export class ErstDecodeError extends Error {
  override name = 'ErstDecodeError';

  constructor(
    /** The field that did not decode, dotted: `header.recordSize`, `slot[2].cper.recordLength`. */
    readonly field: string,
    /** What was wrong with it. */
    readonly detail: string,
    /** Byte offset in the decoded buffer (the store file, or the record) where the field is, when known. */
    readonly offset?: number,
    options?: { cause?: unknown },
  ) {
    super(`${field}: ${detail}${offset === undefined ? '' : ` (at byte ${offset})`}`, options);
  }

  /** The same error with `prefix.` before its field and `base` added to its offset (a record inside a store). */
  within(prefix: string, base: number): ErstDecodeError {
    return new ErstDecodeError(`${prefix}.${this.field}`, this.detail, this.offset === undefined ? undefined : base + this.offset, { cause: this.cause });
  }
}
