import { AmlValueError } from '../errors.js';
import { Op } from './opcodes.js';
import type { ByteSink } from './sink.js';

/** LocalN, N = 0..7 (20.2.6.2). */
export class Local {
  readonly kind = 'Local';
  constructor(readonly index: number) {
    if (!Number.isInteger(index) || index < 0 || index > 7) throw new AmlValueError('Local', index, 'Local index is 0-7');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Local0 + this.index);
  }
}

/** ArgN, N = 0..6 (20.2.6.1). */
export class Arg {
  readonly kind = 'Arg';
  constructor(readonly index: number) {
    if (!Number.isInteger(index) || index < 0 || index > 6) throw new AmlValueError('Arg', index, 'Arg index is 0-6');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Arg0 + this.index);
  }
}
