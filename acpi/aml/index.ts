/**
 * The AML encoder's public surface: immutable term classes (one per ASL term) and short factories
 * so a tree reads like the ASL it emits.
 */
import { Arg as ArgT, Local as LocalT } from './args.js';
import { Break as BreakT, If as IfT, Noop as NoopT, Return as ReturnT, While as WhileT } from './control.js';
import { BufferTerm, Integer, Ones as OnesT, Package as PackageT, StringLit } from './data.js';
import {
  Acquire as AcquireT,
  Binary,
  CreateField,
  DerefOf as DerefOfT,
  IncDec,
  Index as IndexT,
  LNot as LNotT,
  Logical,
  Not as NotT,
  Notify as NotifyT,
  Release as ReleaseT,
  SizeOf as SizeOfT,
  Store as StoreT,
  Timer as TimerT,
} from './expression.js';
import type { NameLike } from './name.js';
import {
  Device as DeviceT,
  External as ExternalT,
  Method as MethodT,
  Mutex as MutexT,
  Name as NameT,
  Scope as ScopeT,
  ThermalZone as ThermalZoneT,
  type MethodOptions,
  type ObjectTypeName,
} from './namespace.js';
import { MethodCall, NameRef } from './reference.js';
import { DataTableRegion as DataTableRegionT, Field as FieldT, OperationRegion as OperationRegionT, type FieldElement, type FieldFlags, type RegionSpaceName } from './region.js';
import type { SuperName, TermArg, TermObj } from './types.js';

export * from './args.js';
export * from './control.js';
export * from './data.js';
export * from './expression.js';
export * from './name.js';
export * from './namespace.js';
export * from './opcodes.js';
export * from './pkglength.js';
export * from './reference.js';
export * from './region.js';
export * from './sink.js';
export type * from './types.js';

type Arglike = TermArg | number | bigint | string;
/** Numbers become Integers, strings become name references (use `str()` for a String literal). */
function arg(a: Arglike): TermArg {
  if (typeof a === 'number' || typeof a === 'bigint') return new Integer(a);
  if (typeof a === 'string') return new NameRef(a);
  return a;
}
function sup(a: SuperName | string): SuperName {
  return typeof a === 'string' ? new NameRef(a) : a;
}

export const aml = {
  int: (v: number | bigint) => new Integer(v),
  ones: () => new OnesT(),
  str: (s: string) => new StringLit(s),
  buffer: (bytes: Uint8Array) => new BufferTerm(bytes),
  pkg: (...elements: Arglike[]) => new PackageT(elements.map(arg)),
  local: (n: number) => new LocalT(n),
  arg: (n: number) => new ArgT(n),
  ref: (name: NameLike) => new NameRef(name),
  call: (name: NameLike, ...args: Arglike[]) => new MethodCall(name, args.map(arg)),

  scope: (name: NameLike, body: TermObj[]) => new ScopeT(name, body),
  device: (name: NameLike, body: TermObj[]) => new DeviceT(name, body),
  thermalZone: (name: NameLike, body: TermObj[]) => new ThermalZoneT(name, body),
  name: (name: NameLike, value: Arglike) => new NameT(name, arg(value)),
  method: (name: NameLike, opts: MethodOptions, body: TermObj[]) => new MethodT(name, opts, body),
  external: (name: NameLike, type?: ObjectTypeName, argCount?: number) => new ExternalT(name, type, argCount),
  mutex: (name: NameLike, syncLevel?: number) => new MutexT(name, syncLevel),
  opRegion: (name: NameLike, space: RegionSpaceName | number, offset: Arglike, length: Arglike) =>
    new OperationRegionT(name, space, arg(offset), arg(length)),
  dataTableRegion: (name: NameLike, signature: string, oemId: string, oemTableId: string) =>
    DataTableRegionT.of(name, signature, oemId, oemTableId),
  field: (region: NameLike, flags: FieldFlags, elements: FieldElement[]) => new FieldT(region, flags, elements),

  store: (src: Arglike, dst: SuperName | string) => new StoreT(arg(src), sup(dst)),
  add: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('Add', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  subtract: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('Subtract', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  multiply: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('Multiply', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  and: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('And', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  or: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('Or', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  xor: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('Xor', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  shiftLeft: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('ShiftLeft', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  shiftRight: (a: Arglike, b: Arglike, t?: SuperName | string) => new Binary('ShiftRight', arg(a), arg(b), t === undefined ? undefined : sup(t)),
  not: (a: Arglike, t?: SuperName | string) => new NotT(arg(a), t === undefined ? undefined : sup(t)),
  increment: (t: SuperName | string) => new IncDec('Increment', sup(t)),
  decrement: (t: SuperName | string) => new IncDec('Decrement', sup(t)),
  lEqual: (a: Arglike, b: Arglike) => new Logical('LEqual', arg(a), arg(b)),
  lLess: (a: Arglike, b: Arglike) => new Logical('LLess', arg(a), arg(b)),
  lGreater: (a: Arglike, b: Arglike) => new Logical('LGreater', arg(a), arg(b)),
  lAnd: (a: Arglike, b: Arglike) => new Logical('LAnd', arg(a), arg(b)),
  lOr: (a: Arglike, b: Arglike) => new Logical('LOr', arg(a), arg(b)),
  lNot: (a: Arglike) => new LNotT(arg(a)),
  timer: () => new TimerT(),
  index: (src: Arglike, idx: Arglike, t?: SuperName | string) => new IndexT(arg(src), arg(idx), t === undefined ? undefined : sup(t)),
  derefOf: (r: Arglike) => new DerefOfT(arg(r)),
  sizeOf: (o: SuperName | string) => new SizeOfT(sup(o)),
  notify: (o: SuperName | string, v: Arglike) => new NotifyT(sup(o), arg(v)),
  createByteField: (src: Arglike, idx: Arglike, name: NameLike) => new CreateField('Byte', arg(src), arg(idx), name),
  createWordField: (src: Arglike, idx: Arglike, name: NameLike) => new CreateField('Word', arg(src), arg(idx), name),
  createDWordField: (src: Arglike, idx: Arglike, name: NameLike) => new CreateField('DWord', arg(src), arg(idx), name),
  createQWordField: (src: Arglike, idx: Arglike, name: NameLike) => new CreateField('QWord', arg(src), arg(idx), name),
  acquire: (m: SuperName | string, timeoutMs: number) => new AcquireT(sup(m), timeoutMs),
  release: (m: SuperName | string) => new ReleaseT(sup(m)),

  if: (pred: Arglike, body: TermObj[], elseBody?: TermObj[]) => new IfT(arg(pred), body, elseBody),
  while: (pred: Arglike, body: TermObj[]) => new WhileT(arg(pred), body),
  return: (v: Arglike) => new ReturnT(arg(v)),
  break: () => new BreakT(),
  noop: () => new NoopT(),
};
