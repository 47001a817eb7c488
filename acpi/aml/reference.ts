import { AmlValueError } from '../errors.js';
import { toPath, type NameLike, type NamePath } from './name.js';
import type { ByteSink } from './sink.js';
import type { TermArg } from './types.js';

/** A reference to a named object (a NameString in a TermArg or SuperName position). */
export class NameRef {
  readonly kind = 'NameRef';
  readonly path: NamePath;
  constructor(name: NameLike) {
    this.path = toPath(name);
  }
  encode(sink: ByteSink): void {
    this.path.encode(sink);
  }
}

/** MethodInvocation := NameString TermArgList (20.2.5.4); the arg count must match the method's. */
export class MethodCall {
  readonly kind = 'MethodCall';
  readonly path: NamePath;
  constructor(
    name: NameLike,
    readonly args: readonly TermArg[] = [],
  ) {
    this.path = toPath(name, 'method call');
    if (args.length > 7) throw new AmlValueError('method call', args.length, 'a method takes at most 7 arguments');
  }
  encode(sink: ByteSink): void {
    this.path.encode(sink);
    for (const a of this.args) a.encode(sink);
  }
}
