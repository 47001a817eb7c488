import type { Arg, Local } from './args.js';
import type { Break, If, Noop, Return, While } from './control.js';
import type { BufferTerm, Integer, Ones, Package, StringLit } from './data.js';
import type {
  Acquire,
  Binary,
  CreateField,
  DerefOf,
  IncDec,
  Index,
  LNot,
  Logical,
  Not,
  Notify,
  Release,
  SizeOf,
  Store,
  Timer,
} from './expression.js';
import type { Device, External, Method, Mutex, Name, Scope, ThermalZone } from './namespace.js';
import type { MethodCall, NameRef } from './reference.js';
import type { DataTableRegion, Field, OperationRegion } from './region.js';

/** Data objects and expressions: anything that yields a value (TermArg, 20.2.5.4). */
export type TermArg =
  | Integer
  | Ones
  | StringLit
  | BufferTerm
  | Package
  | Local
  | Arg
  | NameRef
  | MethodCall
  | Store
  | Binary
  | Not
  | IncDec
  | Logical
  | LNot
  | Timer
  | Index
  | DerefOf
  | SizeOf
  | Acquire;

/** Where a result can be stored: SuperName / Target. */
export type SuperName = Local | Arg | NameRef | Index | DerefOf;

/** Namespace modifiers and named objects. */
export type NamedObj = Scope | Device | ThermalZone | Name | Method | External | Mutex | OperationRegion | DataTableRegion | Field | CreateField;

/** Statements. */
export type Statement = If | While | Return | Break | Noop | Notify | Release;

/** Anything in a TermList. */
export type TermObj = NamedObj | Statement | TermArg;

/** Every term kind; the ASL emitter and decoder switch over it. */
export type AmlTerm = TermObj;
