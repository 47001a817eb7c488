import { Op } from './opcodes.js';
import { writePackage } from './pkglength.js';
import { encodeToBytes, type ByteSink } from './sink.js';
import type { TermArg, TermObj } from './types.js';

function encodeList(terms: readonly TermObj[]): Uint8Array {
  return encodeToBytes((s) => {
    for (const t of terms) t.encode(s);
  });
}

/** If (Predicate) {...} [Else {...}]; in AML the Else is a separate ElseOp package right after the If. */
export class If {
  readonly kind = 'If';
  constructor(
    readonly predicate: TermArg,
    readonly body: readonly TermObj[],
    readonly elseBody?: readonly TermObj[],
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.If);
    writePackage(
      sink,
      encodeToBytes((s) => {
        this.predicate.encode(s);
        s.bytes(encodeList(this.body));
      }),
    );
    if (this.elseBody) {
      sink.byte(Op.Else);
      writePackage(sink, encodeList(this.elseBody));
    }
  }
}

/** While (Predicate) {...}. */
export class While {
  readonly kind = 'While';
  constructor(
    readonly predicate: TermArg,
    readonly body: readonly TermObj[],
  ) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.While);
    writePackage(
      sink,
      encodeToBytes((s) => {
        this.predicate.encode(s);
        s.bytes(encodeList(this.body));
      }),
    );
  }
}

/** Return (Value). */
export class Return {
  readonly kind = 'Return';
  constructor(readonly value: TermArg) {}
  encode(sink: ByteSink): void {
    sink.byte(Op.Return);
    this.value.encode(sink);
  }
}

/** Break. */
export class Break {
  readonly kind = 'Break';
  encode(sink: ByteSink): void {
    sink.byte(Op.Break);
  }
}

/** Noop. */
export class Noop {
  readonly kind = 'Noop';
  encode(sink: ByteSink): void {
    sink.byte(Op.Noop);
  }
}

export { encodeList };
