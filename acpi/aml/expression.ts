import { AmlValueError } from '../errors.js';
import { declName, type NameLike, type NamePath } from './name.js';
import { ExtOp, Op } from './opcodes.js';
import type { ByteSink } from './sink.js';
import type { SuperName, TermArg } from './types.js';

/** Target := SuperName | NullName (20.2.5.4). An absent target encodes as NullName (0x00). */
function encodeTarget(sink: ByteSink, target: SuperName | undefined): void {
  if (target) target.encode(sink);
  else sink.byte(0x00);
}

/** Store (TermArg, SuperName). */
export class Store {
  readonly kind = 'Store';
  constructor(
    readonly source: TermArg,
    readonly target: SuperName,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.Store);
    this.source.encode(sink);
    this.target.encode(sink);
  }
}

export type BinaryOpName = 'Add' | 'Subtract' | 'Multiply' | 'And' | 'Or' | 'Xor' | 'ShiftLeft' | 'ShiftRight';
export const BINARY_OPCODES: Record<BinaryOpName, number> = {
  Add: Op.Add,
  Subtract: Op.Subtract,
  Multiply: Op.Multiply,
  And: Op.And,
  Or: Op.Or,
  Xor: Op.Xor,
  ShiftLeft: Op.ShiftLeft,
  ShiftRight: Op.ShiftRight,
};

/** Integer operators of the form Op (Operand, Operand, Target): Add, Subtract, Multiply, And, Or, Xor, ShiftLeft, ShiftRight. */
export class Binary {
  readonly kind = 'Binary';
  constructor(
    readonly op: BinaryOpName,
    readonly left: TermArg,
    readonly right: TermArg,
    readonly target?: SuperName,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(BINARY_OPCODES[this.op]);
    this.left.encode(sink);
    this.right.encode(sink);
    encodeTarget(sink, this.target);
  }
}

/** Not (Operand, Target). */
export class Not {
  readonly kind = 'Not';
  constructor(
    readonly operand: TermArg,
    readonly target?: SuperName,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.Not);
    this.operand.encode(sink);
    encodeTarget(sink, this.target);
  }
}

/** Increment (SuperName) / Decrement (SuperName),. */
export class IncDec {
  readonly kind = 'IncDec';
  constructor(
    readonly op: 'Increment' | 'Decrement',
    readonly target: SuperName,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(this.op === 'Increment' ? Op.Increment : Op.Decrement);
    this.target.encode(sink);
  }
}

export type LogicalOpName = 'LEqual' | 'LLess' | 'LGreater' | 'LAnd' | 'LOr';
export const LOGICAL_OPCODES: Record<LogicalOpName, number> = {
  LEqual: Op.LEqual,
  LLess: Op.LLess,
  LGreater: Op.LGreater,
  LAnd: Op.LAnd,
  LOr: Op.LOr,
};

/** Two-operand logical operators (no target). */
export class Logical {
  readonly kind = 'Logical';
  constructor(
    readonly op: LogicalOpName,
    readonly left: TermArg,
    readonly right: TermArg,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(LOGICAL_OPCODES[this.op]);
    this.left.encode(sink);
    this.right.encode(sink);
  }
}

/** LNot (Operand). */
export class LNot {
  readonly kind = 'LNot';
  constructor(readonly operand: TermArg) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.LNot);
    this.operand.encode(sink);
  }
}

/** Timer: the 64-bit 100 ns monotonic counter, 19.6.139 (truncated to 32 bits in a revision 1 DSDT, DESIGN fact 4). */
export class Timer {
  readonly kind = 'Timer';
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Timer);
  }
}

/** Index (Source, Index, Target). */
export class Index {
  readonly kind = 'Index';
  constructor(
    readonly source: TermArg,
    readonly index: TermArg,
    readonly target?: SuperName,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.Index);
    this.source.encode(sink);
    this.index.encode(sink);
    encodeTarget(sink, this.target);
  }
}

/** DerefOf (ObjectReference). */
export class DerefOf {
  readonly kind = 'DerefOf';
  constructor(readonly ref: TermArg) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.DerefOf);
    this.ref.encode(sink);
  }
}

/** SizeOf (SuperName). */
export class SizeOf {
  readonly kind = 'SizeOf';
  constructor(readonly object: SuperName) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.SizeOf);
    this.object.encode(sink);
  }
}

/** Notify (Object, Value). */
export class Notify {
  readonly kind = 'Notify';
  constructor(
    readonly object: SuperName,
    readonly value: TermArg,
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.Notify);
    this.object.encode(sink);
    this.value.encode(sink);
  }
}

export type CreateFieldWidth = 'Byte' | 'Word' | 'DWord' | 'QWord';
export const CREATE_FIELD_OPCODES: Record<CreateFieldWidth, number> = {
  Byte: Op.CreateByteField,
  Word: Op.CreateWordField,
  DWord: Op.CreateDWordField,
  QWord: Op.CreateQWordField,
};

/** CreateByteField / CreateWordField / CreateDWordField / CreateQWordField (Source, ByteIndex, Name). */
export class CreateField {
  readonly kind = 'CreateField';
  readonly name: NamePath;
  constructor(
    readonly width: CreateFieldWidth,
    readonly source: TermArg,
    readonly byteIndex: TermArg,
    name: NameLike,
  ) {
    this.name = declName(name, `Create${width}Field`);
  }
  encode(sink: ByteSink): void {
    sink.byte(CREATE_FIELD_OPCODES[this.width]);
    this.source.encode(sink);
    this.byteIndex.encode(sink);
    this.name.encode(sink);
  }
}

/** Acquire (Mutex, Timeout); Timeout is a raw WordData in milliseconds, 0xFFFF waits forever. */
export class Acquire {
  readonly kind = 'Acquire';
  constructor(
    readonly mutex: SuperName,
    readonly timeoutMs: number,
  ) {
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 0xffff) {
      throw new AmlValueError('Acquire timeout', timeoutMs, 'timeout is 0..0xFFFF ms');
    }
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Acquire);
    this.mutex.encode(sink);
    sink.uint(BigInt(this.timeoutMs), 2);
  }
}

/** Release (Mutex). */
export class Release {
  readonly kind = 'Release';
  constructor(readonly mutex: SuperName) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Release);
    this.mutex.encode(sink);
  }
}
