import { AmlValueError } from '../errors.js';
import { Op } from './opcodes.js';
import { writePackage } from './pkglength.js';
import { encodeToBytes, type ByteSink } from './sink.js';
import type { TermArg } from './types.js';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/**
 * Integer constant (ACPI 6.5 section 20.2.3 ComputationalData). Encoded in its smallest form:
 * ZeroOp, OneOp, BytePrefix, WordPrefix, DWordPrefix or QWordPrefix. (OnesOp is its own term:
 * its value depends on the interpreter's integer width.)
 */
export class Integer {
  readonly kind = 'Integer';
  readonly value: bigint;
  constructor(value: number | bigint) {
    const v = typeof value === 'bigint' ? value : Number.isSafeInteger(value) ? BigInt(value) : NaN;
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
      throw new AmlValueError('integer', value, 'an AML integer is 0..2^64-1');
    }
    this.value = v;
  }

  encode(sink: ByteSink): void {
    const v = this.value;
    if (v === 0n) sink.byte(Op.Zero);
    else if (v === 1n) sink.byte(Op.One);
    else if (v <= 0xffn) sink.byte(Op.BytePrefix).uint(v, 1);
    else if (v <= 0xffffn) sink.byte(Op.WordPrefix).uint(v, 2);
    else if (v <= 0xffff_ffffn) sink.byte(Op.DWordPrefix).uint(v, 4);
    else sink.byte(Op.QWordPrefix).uint(v, 8);
  }
}

/** `Ones`: all bits set at the interpreter's integer width (0xFFFFFFFF in a revision 1 table). */
export class Ones {
  readonly kind = 'Ones';
  encode(sink: ByteSink): void {
    sink.byte(Op.Ones);
  }
}

/** String literal: StringPrefix AsciiCharList NullChar; ASCII 0x01-0x7F only. */
export class StringLit {
  readonly kind = 'String';
  constructor(readonly value: string) {
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      if (c < 0x01 || c > 0x7f) throw new AmlValueError('string', value, `character ${i} is not ASCII 0x01-0x7F`);
    }
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.StringPrefix);
    for (let i = 0; i < this.value.length; i++) sink.byte(this.value.charCodeAt(i));
    sink.byte(0);
  }
}

/**
 * Buffer (20.2.5.4 DefBuffer := BufferOp PkgLength BufferSize ByteList). Every byte is emitted
 * explicitly: a region laid over the buffer must sit on bytes that exist in the table (DESIGN fact 5).
 * `size` defaults to the byte count; a larger size is legal AML (the rest is zero-filled at run time)
 * but then the table does not hold those bytes.
 */
export class BufferTerm {
  readonly kind = 'Buffer';
  readonly size: TermArg;
  constructor(
    readonly bytes: Uint8Array,
    size?: TermArg,
  ) {
    this.size = size ?? new Integer(bytes.length);
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Buffer);
    writePackage(
      sink,
      encodeToBytes((s) => {
        this.size.encode(s);
        s.bytes(this.bytes);
      }),
    );
  }
}

/** Package with a fixed element count (20.2.5.4 DefPackage; NumElements is one byte). */
export class Package {
  readonly kind = 'Package';
  constructor(readonly elements: readonly TermArg[]) {
    if (elements.length > 255) throw new AmlValueError('package', elements.length, 'a Package holds at most 255 elements');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Package);
    writePackage(
      sink,
      encodeToBytes((s) => {
        s.byte(this.elements.length);
        for (const e of this.elements) e.encode(s);
      }),
    );
  }
}
