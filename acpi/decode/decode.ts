import { AmlDecodeError, AmlValueError } from '../errors.js';
import {
  AccessType,
  Acquire,
  Arg,
  Binary,
  BINARY_OPCODES,
  Break,
  BufferTerm,
  CREATE_FIELD_OPCODES,
  CreateField,
  DataTableRegion,
  DerefOf,
  Device,
  External,
  ExtOp,
  Field,
  FieldElem,
  If,
  IncDec,
  Index,
  Integer,
  Local,
  LNot,
  Logical,
  LOGICAL_OPCODES,
  Method,
  MethodCall,
  Mutex,
  Name,
  NamePath,
  NameRef,
  Noop,
  Not,
  Notify,
  ObjectType,
  Ones,
  Op,
  OperationRegion,
  Package,
  RegionSpace,
  Release,
  Return,
  Scope,
  SizeOf,
  Store,
  StringLit,
  ThermalZone,
  Timer,
  UpdateRule,
  While,
  type FieldElement,
  type NameLike,
  type SuperName,
  type TermArg,
  type TermObj,
} from '../aml/index.js';
import { byteSum, DefinitionBlock, HEADER_SIZE, parseHeader, validateHeaderFields, type TableHeader, type TableHeaderFields } from '../table.js';
import { AmlReader } from './reader.js';

/**
 * AML decoder: bytes back into the encoder's term classes, so that for every tree T the encoder
 * emits, decode(encode(T)) deep-equals T. The input is hostile (a guest may hand it to us): every
 * failure is an AmlDecodeError with the offset, nesting is capped, every loop consumes bytes, and
 * nothing is allocated beyond what the input holds.
 */

export const DEFAULT_MAX_DEPTH = 256;

/** Where a term list sits and what it can see outside itself. All fields are optional. */
export interface DecodeContext {
  /** Absolute scope of the term list (a table body is at the root, the default). */
  readonly scope?: NameLike;
  /**
   * Methods declared outside these bytes (e.g. in the DSDT): absolute path (`\_SB.PCI0.FOO`) to
   * argument count. Needed to tell a call from a name reference (20.2.5.4 MethodInvocation).
   */
  readonly methods?: ReadonlyMap<string, number>;
  /** Maximum nesting of terms (default 256); deeper input is an AmlDecodeError. */
  readonly maxDepth?: number;
}

export interface DecodedTable {
  /** The header as found, with its length and checksum fields. */
  header: TableHeader;
  /** Whether the `length` bytes of the table sum to zero (5.2.6). */
  checksumOk: boolean;
  block: DefinitionBlock;
}

const hex = (v: number): string => '0x' + v.toString(16).toUpperCase().padStart(2, '0');

function invert<K extends string>(rec: Readonly<Record<K, number>>): Map<number, K> {
  return new Map((Object.entries(rec) as Array<[K, number]>).map(([k, v]) => [v, k]));
}
const BINARY_BY_OP = invert(BINARY_OPCODES);
const LOGICAL_BY_OP = invert(LOGICAL_OPCODES);
const CREATE_FIELD_BY_OP = invert(CREATE_FIELD_OPCODES);
const OBJECT_TYPE_BY_ID = invert(ObjectType);
const SPACE_BY_ID = invert(RegionSpace);
const ACCESS_BY_ID = invert(AccessType);
const UPDATE_BY_ID = invert(UpdateRule);
const OP_NAMES = invert(Op);
const EXT_OP_NAMES = invert(ExtOp);

function opName(op: number, ext?: number): string {
  if (ext === undefined) {
    const n = OP_NAMES.get(op);
    return n ? `${hex(op)} (${n})` : hex(op);
  }
  const n = EXT_OP_NAMES.get(ext);
  return n ? `${hex(op)} ${hex(ext)} (${n})` : `${hex(op)} ${hex(ext)}`;
}

/** Term constructors validate too; their AmlValueError becomes an AmlDecodeError at `at`. */
function build<T>(at: number, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (e instanceof AmlValueError) throw new AmlDecodeError(at, e.message, { cause: e });
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Namespace model: just enough to know whether a NameString in a TermArg position is a method
// (and how many arguments it takes). ACPI 6.5 section 5.3: `\` is absolute, each `^` goes to the
// parent scope, and only a single bare NameSeg is searched upward through the parent scopes.

class NsNode {
  readonly children = new Map<string, NsNode>();
  /** The argument count when this object is a method (Method, or External of type MethodObj). */
  args: number | undefined;
  constructor(
    readonly parent: NsNode | undefined,
    /** Offset of the first name that created this node (-1: declared outside the input). */
    readonly seenAt: number,
  ) {}
  child(seg: string, at: number): NsNode {
    let c = this.children.get(seg);
    if (!c) {
      c = new NsNode(this, at);
      this.children.set(seg, c);
    }
    return c;
  }
}

interface State {
  readonly root: NsNode;
  /** Current scope; Scope, Device, ThermalZone and Method bodies open one (ACPICA AcpiNsOpensScope). */
  scope: NsNode;
  /** > 0 while decoding a method body. */
  inMethod: number;
  /** Pass 1 loads the namespace only: method bodies are skipped, as ACPICA defers them. */
  readonly skipMethodBodies: boolean;
  readonly maxDepth: number;
}

/**
 * Whether `node` is visible from a reference at `at`. Load-level code is parsed in order, so it
 * sees only what was declared before it; a method body runs after the whole table is loaded, so
 * it sees every load-level declaration (pass 1) and what its own body declared so far.
 */
function visible(st: State, node: NsNode, at: number): boolean {
  return st.inMethod > 0 || node.seenAt <= at;
}

function prefixNode(st: State, path: NamePath): NsNode | undefined {
  if (path.root) return st.root;
  let n: NsNode | undefined = st.scope;
  for (let i = 0; i < path.parents && n; i++) n = n.parent;
  return n;
}

function findNode(st: State, path: NamePath, at: number): NsNode | undefined {
  if (path.segs.length === 0) return undefined;
  if (!path.root && path.parents === 0 && path.segs.length === 1) {
    const seg = path.segs[0] as string;
    for (let s: NsNode | undefined = st.scope; s; s = s.parent) {
      const c = s.children.get(seg);
      if (c && visible(st, c, at)) return c;
    }
    return undefined;
  }
  let n = prefixNode(st, path);
  for (const seg of path.segs) {
    const c = n?.children.get(seg);
    if (!c || !visible(st, c, at)) return undefined;
    n = c;
  }
  return n;
}

/** The node a declaration creates: relative to the current scope, never searched upward. */
function declare(r: AmlReader, st: State, path: NamePath, at: number): NsNode {
  let n = prefixNode(st, path);
  if (!n) r.fail(`name ${path} has more parent prefixes (^) than the current scope is deep`, at);
  for (const seg of path.segs) n = n.child(seg, at);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Names (20.2.2).

const isLeadChar = (b: number): boolean => (b >= 0x41 && b <= 0x5a) || b === 0x5f;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const isNameStart = (b: number): boolean =>
  isLeadChar(b) || b === Op.RootChar || b === Op.ParentPrefix || b === Op.DualNamePrefix || b === Op.MultiNamePrefix;

function readSeg(r: AmlReader): string {
  const at = r.offset;
  r.need(4, 'NameSeg');
  let s = '';
  for (let k = 0; k < 4; k++) {
    const c = r.byte();
    if (!(isLeadChar(c) || (k > 0 && isDigit(c)))) {
      r.fail(`invalid NameSeg: character ${k} is ${hex(c)} (A-Z, _, and 0-9 after the first)`, at);
    }
    s += String.fromCharCode(c);
  }
  return s;
}

/** NameString := <RootChar NamePath> | <PrefixPath NamePath>; NamePath may be the NullName (0x00). */
function readNameString(r: AmlReader): NamePath {
  let root = false;
  let parents = 0;
  if (r.peek(0, 'NameString') === Op.RootChar) {
    r.byte();
    root = true;
  } else {
    while (r.peek(0, 'NameString') === Op.ParentPrefix) {
      r.byte();
      parents++;
    }
  }
  let count = 1;
  const lead = r.peek(0, 'NameString');
  if (lead === 0x00) {
    r.byte();
    count = 0;
  } else if (lead === Op.DualNamePrefix) {
    r.byte();
    count = 2;
  } else if (lead === Op.MultiNamePrefix) {
    r.byte();
    const at = r.offset;
    count = r.byte('SegCount');
    if (count === 0) r.fail('MultiNamePrefix with a SegCount of 0', at);
  }
  r.need(4 * count, 'NameString');
  const segs: string[] = [];
  for (let i = 0; i < count; i++) segs.push(readSeg(r));
  return new NamePath(root, parents, segs);
}

/** The name of a declaration: never the null name or a bare prefix. */
function readDeclName(r: AmlReader): NamePath {
  const at = r.offset;
  const path = readNameString(r);
  if (path.segs.length === 0) r.fail(`a declaration needs a name segment, got "${path}"`, at);
  return path;
}

// ---------------------------------------------------------------------------------------------
// Terms.

function checkDepth(r: AmlReader, st: State, depth: number): void {
  if (depth > st.maxDepth) r.fail(`terms nested deeper than ${st.maxDepth}`);
}

/** TermList: terms until the end of the window. Each term consumes at least one byte. */
function decodeList(r: AmlReader, st: State, depth: number): TermObj[] {
  checkDepth(r, st, depth);
  const out: TermObj[] = [];
  while (!r.atEnd) out.push(decodeTermObj(r, st, depth));
  return out;
}

/** A body opened as a new scope (Scope, Device, ThermalZone, Method). */
function decodeScoped(r: AmlReader, st: State, node: NsNode, depth: number): TermObj[] {
  const saved = st.scope;
  st.scope = node;
  const body = decodeList(r, st, depth);
  st.scope = saved;
  return body;
}

/** TermObj := Object | StatementOpcode | ExpressionOpcode (20.2.5). */
function decodeTermObj(r: AmlReader, st: State, depth: number): TermObj {
  checkDepth(r, st, depth);
  const at = r.offset;
  const op = r.peek();
  const d = depth + 1;
  switch (op) {
    case Op.Name: {
      r.byte();
      const nameAt = r.offset;
      const name = readDeclName(r);
      declare(r, st, name, nameAt);
      // DataRefObject: a NameString here is a reference, never a call.
      const value = decodeTermArg(r, st, d, false);
      return build(at, () => new Name(name, value));
    }
    case Op.Scope: {
      r.byte();
      const pkg = r.package();
      const nameAt = pkg.offset;
      const name = readNameString(pkg);
      // Scope names an existing object, found with the search rules; otherwise it is created.
      const node = findNode(st, name, nameAt) ?? declare(pkg, st, name, nameAt);
      const body = decodeScoped(pkg, st, node, d);
      return build(at, () => new Scope(name, body));
    }
    case Op.Method:
      return decodeMethod(r, st, d);
    case Op.External: {
      r.byte();
      const nameAt = r.offset;
      const name = readDeclName(r);
      const typeAt = r.offset;
      const typeId = r.byte('ObjectType');
      const type = OBJECT_TYPE_BY_ID.get(typeId);
      if (type === undefined) r.fail(`unknown External ObjectType ${hex(typeId)}`, typeAt);
      const argCount = r.byte('ArgumentCount');
      const ext = build(at, () => new External(name, type, argCount));
      const node = declare(r, st, name, nameAt);
      if (type === 'Method') node.args = argCount;
      return ext;
    }
    case Op.CreateByteField:
    case Op.CreateWordField:
    case Op.CreateDWordField:
    case Op.CreateQWordField: {
      r.byte();
      const width = CREATE_FIELD_BY_OP.get(op);
      if (width === undefined) return r.fail(`unknown opcode ${opName(op)}`, at);
      const source = decodeTermArg(r, st, d);
      const index = decodeTermArg(r, st, d);
      const nameAt = r.offset;
      const name = readDeclName(r);
      declare(r, st, name, nameAt).args = undefined;
      return build(at, () => new CreateField(width, source, index, name));
    }
    case Op.If: {
      r.byte();
      const pkg = r.package();
      const predicate = decodeTermArg(pkg, st, d);
      const body = decodeList(pkg, st, d);
      // DefElse is its own package; one directly after an If belongs to it (20.2.5.3).
      let elseBody: TermObj[] | undefined;
      if (!r.atEnd && r.peek() === Op.Else) {
        r.byte();
        elseBody = decodeList(r.package(), st, d);
      }
      return new If(predicate, body, elseBody);
    }
    case Op.Else:
      return r.fail('Else (0xA1) without an If right before it', at);
    case Op.While: {
      r.byte();
      const pkg = r.package();
      const predicate = decodeTermArg(pkg, st, d);
      return new While(predicate, decodeList(pkg, st, d));
    }
    case Op.Noop:
      r.byte();
      return new Noop();
    case Op.Break:
      r.byte();
      return new Break();
    case Op.Return:
      r.byte();
      return new Return(decodeTermArg(r, st, d));
    case Op.Notify: {
      r.byte();
      const object = decodeSuperName(r, st, d);
      return new Notify(object, decodeTermArg(r, st, d));
    }
    case Op.ExtOpPrefix:
      return decodeExtTermObj(r, st, depth);
    default:
      // Expressions (and data, names, calls) may stand alone in a TermList.
      return decodeTermArg(r, st, depth);
  }
}

function decodeMethod(r: AmlReader, st: State, depth: number): Method {
  const at = r.offset;
  r.byte();
  const pkg = r.package();
  const nameAt = pkg.offset;
  const name = readDeclName(pkg);
  // MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel (20.2.5.2).
  const flags = pkg.byte('MethodFlags');
  const args = flags & 0x07;
  const node = declare(pkg, st, name, nameAt);
  node.args = args;
  const opts = { args, serialized: (flags & 0x08) !== 0, syncLevel: flags >> 4 };
  if (st.skipMethodBodies) return build(at, () => new Method(name, opts, []));
  st.inMethod++;
  const body = decodeScoped(pkg, st, node, depth);
  st.inMethod--;
  return build(at, () => new Method(name, opts, body));
}

/** ExtOpPrefix objects and statements; ExtOp expressions (Acquire, Timer) go to decodeTermArg. */
function decodeExtTermObj(r: AmlReader, st: State, depth: number): TermObj {
  const at = r.offset;
  const ext = r.peek(1);
  const d = depth + 1;
  switch (ext) {
    case ExtOp.Mutex: {
      r.byte();
      r.byte();
      const nameAt = r.offset;
      const name = readDeclName(r);
      // SyncFlags: bits 0-3 SyncLevel, bits 4-7 reserved (the Mutex constructor rejects them).
      const sync = r.byte('SyncFlags');
      const m = build(at, () => new Mutex(name, sync));
      declare(r, st, name, nameAt).args = undefined;
      return m;
    }
    case ExtOp.Release:
      r.byte();
      r.byte();
      return new Release(decodeSuperName(r, st, d));
    case ExtOp.OpRegion: {
      r.byte();
      r.byte();
      const nameAt = r.offset;
      const name = readDeclName(r);
      const spaceId = r.byte('RegionSpace');
      const offset = decodeTermArg(r, st, d);
      const length = decodeTermArg(r, st, d);
      declare(r, st, name, nameAt).args = undefined;
      return build(at, () => new OperationRegion(name, SPACE_BY_ID.get(spaceId) ?? spaceId, offset, length));
    }
    case ExtOp.DataRegion: {
      r.byte();
      r.byte();
      const nameAt = r.offset;
      const name = readDeclName(r);
      const signature = decodeTermArg(r, st, d);
      const oemId = decodeTermArg(r, st, d);
      const oemTableId = decodeTermArg(r, st, d);
      declare(r, st, name, nameAt).args = undefined;
      return build(at, () => new DataTableRegion(name, signature, oemId, oemTableId));
    }
    case ExtOp.Field:
      r.byte();
      r.byte();
      return decodeField(r.package(), st, at);
    case ExtOp.Device:
    case ExtOp.ThermalZone: {
      r.byte();
      r.byte();
      const pkg = r.package();
      const nameAt = pkg.offset;
      const name = readDeclName(pkg);
      const node = declare(pkg, st, name, nameAt);
      node.args = undefined;
      const body = decodeScoped(pkg, st, node, d);
      return build(at, () => (ext === ExtOp.Device ? new Device(name, body) : new ThermalZone(name, body)));
    }
    default:
      return decodeTermArg(r, st, depth);
  }
}

/** DefField body: NameString FieldFlags FieldList (20.2.5.2); only named and reserved elements. */
function decodeField(pkg: AmlReader, st: State, at: number): Field {
  const region = readNameString(pkg);
  const flagsAt = pkg.offset;
  // FieldFlags: bits 0-3 AccessType, bit 4 LockRule, bits 5-6 UpdateRule, bit 7 reserved.
  const flags = pkg.byte('FieldFlags');
  const access = ACCESS_BY_ID.get(flags & 0x0f);
  const update = UPDATE_BY_ID.get((flags >> 5) & 0x03);
  if (access === undefined || update === undefined || (flags & 0x80) !== 0) {
    pkg.fail(`FieldFlags ${hex(flags)}: unknown access type, update rule or reserved bit 7 set`, flagsAt);
  }
  const elements: FieldElement[] = [];
  while (!pkg.atEnd) {
    const elAt = pkg.offset;
    const b = pkg.peek(0, 'FieldElement');
    if (b === FieldElem.Reserved) {
      pkg.byte();
      elements.push({ kind: 'reserved', bits: pkg.fieldLength() });
    } else if (isLeadChar(b)) {
      const name = readSeg(pkg);
      elements.push({ kind: 'named', name, bits: pkg.fieldLength() });
      // Field units are declared in the current scope, not the region's.
      st.scope.child(name, elAt).args = undefined;
    } else {
      pkg.fail(`unsupported FieldElement ${hex(b)} (only NamedField and ReservedField are decoded)`, elAt);
    }
  }
  return build(at, () => new Field(region, { access, lock: (flags & 0x10) !== 0, update }, elements));
}

/**
 * TermArg := ExpressionOpcode | DataObject | ArgObj | LocalObj (20.2.5.4). A NameString is a
 * MethodInvocation when it resolves to a method and `allowCall`; otherwise a name reference.
 */
function decodeTermArg(r: AmlReader, st: State, depth: number, allowCall = true): TermArg {
  checkDepth(r, st, depth);
  const at = r.offset;
  const op = r.peek();
  if (isNameStart(op)) return decodeNameOrCall(r, st, depth, allowCall);
  r.byte();
  const d = depth + 1;
  if (op >= Op.Local0 && op <= Op.Local0 + 7) return new Local(op - Op.Local0);
  if (op >= Op.Arg0 && op <= Op.Arg0 + 6) return new Arg(op - Op.Arg0);
  const binary = BINARY_BY_OP.get(op);
  if (binary !== undefined) {
    const left = decodeTermArg(r, st, d);
    const right = decodeTermArg(r, st, d);
    return new Binary(binary, left, right, decodeTarget(r, st, d));
  }
  const logical = LOGICAL_BY_OP.get(op);
  if (logical !== undefined) {
    const left = decodeTermArg(r, st, d);
    return new Logical(logical, left, decodeTermArg(r, st, d));
  }
  switch (op) {
    case Op.Zero:
      return new Integer(0n);
    case Op.One:
      return new Integer(1n);
    case Op.Ones:
      return new Ones();
    case Op.BytePrefix:
      return new Integer(r.byte('ByteData'));
    case Op.WordPrefix:
      return new Integer(r.u16());
    case Op.DWordPrefix:
      return new Integer(r.u32());
    case Op.QWordPrefix:
      return new Integer(r.u64());
    case Op.StringPrefix:
      return readString(r, at);
    case Op.Buffer: {
      // DefBuffer := BufferOp PkgLength BufferSize ByteList; a size above the byte count is kept.
      const pkg = r.package();
      const size = decodeTermArg(pkg, st, d);
      return new BufferTerm(pkg.take(pkg.remaining), size);
    }
    case Op.Package: {
      const pkg = r.package();
      const countAt = pkg.offset;
      const count = pkg.byte('NumElements');
      const elements: TermArg[] = [];
      // PackageElement := DataRefObject | NameString: names are references, never calls.
      while (!pkg.atEnd) elements.push(decodeTermArg(pkg, st, d, false));
      if (elements.length !== count) {
        pkg.fail(`Package NumElements is ${count} but the package holds ${elements.length} element(s)`, countAt);
      }
      return new Package(elements);
    }
    case Op.Store: {
      const source = decodeTermArg(r, st, d);
      return new Store(source, decodeSuperName(r, st, d));
    }
    case Op.Not: {
      const operand = decodeTermArg(r, st, d);
      return new Not(operand, decodeTarget(r, st, d));
    }
    case Op.Increment:
    case Op.Decrement:
      return new IncDec(op === Op.Increment ? 'Increment' : 'Decrement', decodeSuperName(r, st, d));
    case Op.LNot:
      return new LNot(decodeTermArg(r, st, d));
    case Op.Index:
      return decodeIndexRest(r, st, d);
    case Op.DerefOf:
      return new DerefOf(decodeTermArg(r, st, d));
    case Op.SizeOf:
      return new SizeOf(decodeSuperName(r, st, d));
    case Op.ExtOpPrefix: {
      const ext = r.byte('extended opcode');
      if (ext === ExtOp.Timer) return new Timer();
      if (ext === ExtOp.Acquire) {
        const mutex = decodeSuperName(r, st, d);
        return new Acquire(mutex, r.u16('Timeout'));
      }
      return r.fail(`unknown or unsupported opcode ${opName(op, ext)} where a TermArg is expected`, at);
    }
    default:
      return r.fail(`unknown or unsupported opcode ${opName(op)} where a TermArg is expected`, at);
  }
}

function decodeIndexRest(r: AmlReader, st: State, depth: number): Index {
  const source = decodeTermArg(r, st, depth);
  const index = decodeTermArg(r, st, depth);
  return new Index(source, index, decodeTarget(r, st, depth));
}

function decodeNameOrCall(r: AmlReader, st: State, depth: number, allowCall: boolean): NameRef | MethodCall {
  const at = r.offset;
  const path = readNameString(r);
  const args = allowCall ? findNode(st, path, at)?.args : undefined;
  if (args === undefined) return new NameRef(path);
  const list: TermArg[] = [];
  for (let i = 0; i < args; i++) list.push(decodeTermArg(r, st, depth + 1));
  return build(at, () => new MethodCall(path, list));
}

/** String := StringPrefix AsciiCharList NullChar; AsciiChar is 0x01-0x7F (20.2.3). */
function readString(r: AmlReader, at: number): StringLit {
  const nul = r.indexOf(0x00);
  if (nul < 0) r.fail('String has no NUL terminator before the end', at);
  const start = r.offset;
  const chars = r.take(nul - start, 'String');
  r.byte();
  let s = '';
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i] as number;
    if (c > 0x7f) r.fail(`String character ${hex(c)} is not ASCII`, start + i);
    s += String.fromCharCode(c);
  }
  return new StringLit(s);
}

/** SuperName := SimpleName | DebugObj | ReferenceTypeOpcode; the encoder's subset: names, Locals, Args, Index, DerefOf. */
function decodeSuperName(r: AmlReader, st: State, depth: number): SuperName {
  checkDepth(r, st, depth);
  const at = r.offset;
  const op = r.peek(0, 'SuperName');
  // A NameString here names an object (it is not invoked); 0x00 is the NullName.
  if (isNameStart(op) || op === 0x00) return new NameRef(readNameString(r));
  r.byte();
  if (op >= Op.Local0 && op <= Op.Local0 + 7) return new Local(op - Op.Local0);
  if (op >= Op.Arg0 && op <= Op.Arg0 + 6) return new Arg(op - Op.Arg0);
  if (op === Op.Index) return decodeIndexRest(r, st, depth + 1);
  if (op === Op.DerefOf) return new DerefOf(decodeTermArg(r, st, depth + 1));
  const ext = op === Op.ExtOpPrefix && !r.atEnd ? r.peek() : undefined;
  return r.fail(`opcode ${opName(op, ext)} is not a supported SuperName`, at);
}

/** Target := SuperName | NullName; the NullName (0x00) is "no target". */
function decodeTarget(r: AmlReader, st: State, depth: number): SuperName | undefined {
  if (r.peek(0, 'Target') === 0x00) {
    r.byte();
    return undefined;
  }
  return decodeSuperName(r, st, depth);
}

// ---------------------------------------------------------------------------------------------
// Entry points.

function absolutePath(name: NameLike, field: string): NamePath {
  const p = typeof name === 'string' ? NamePath.parse(name, field) : name;
  if (!p.root) throw new AmlValueError(field, p.toString(), 'must be an absolute path (\\...)');
  return p;
}

/**
 * Decode the TermList in `bytes[start, end)`. Names in TermArg positions become MethodCalls when
 * they resolve to a method: declared earlier in load-level code, anywhere in the input from a
 * method body (ACPICA parses method bodies after the table is loaded), an External MethodObj, or
 * `ctx.methods`. Throws AmlDecodeError for any malformed input; RangeError/AmlValueError only for
 * a bad window or context (programmer errors).
 */
export function decodeTermList(bytes: Uint8Array, start: number, end: number, ctx: DecodeContext = {}): TermObj[] {
  const maxDepth = ctx.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 1 || maxDepth > 4096) {
    throw new RangeError(`maxDepth must be an integer 1..4096, got ${maxDepth}`);
  }
  const root = new NsNode(undefined, -1);
  for (const [name, args] of ctx.methods ?? []) {
    if (!Number.isInteger(args) || args < 0 || args > 7) throw new AmlValueError(`methods[${name}]`, args, 'a method takes 0-7 arguments');
    let n = root;
    for (const seg of absolutePath(name, 'methods').segs) n = n.child(seg, -1);
    n.args = args;
  }
  let scope = root;
  for (const seg of ctx.scope === undefined ? [] : absolutePath(ctx.scope, 'scope').segs) scope = scope.child(seg, -1);

  // Pass 1 loads the namespace (method bodies skipped); pass 2 decodes everything against it.
  // Load-level terms parse the same way in both passes, so pass 1 fails only where pass 2 would.
  const pass = (skipMethodBodies: boolean): TermObj[] =>
    decodeList(new AmlReader(bytes, start, end), { root, scope, inMethod: 0, skipMethodBodies, maxDepth }, 0);
  pass(true);
  return pass(false);
}

/**
 * Decode a whole table (ACPI 6.5 section 5.2.6 header + TermList). The header's length must be at
 * least 36 and at most `bytes.length`; bytes past it are ignored. A bad checksum is reported, not
 * thrown. Every malformed input throws AmlDecodeError.
 */
export function decodeTable(bytes: Uint8Array, ctx: DecodeContext = {}): DecodedTable {
  if (bytes.length < HEADER_SIZE) {
    throw new AmlDecodeError(bytes.length, `table is ${bytes.length} bytes, shorter than the ${HEADER_SIZE}-byte header`);
  }
  const header = parseHeader(bytes);
  if (header.length < HEADER_SIZE || header.length > bytes.length) {
    throw new AmlDecodeError(4, `table length field is ${header.length}: must be ${HEADER_SIZE}..${bytes.length} (the bytes given)`);
  }
  const fields: TableHeaderFields = {
    signature: header.signature,
    revision: header.revision,
    oemId: header.oemId,
    oemTableId: header.oemTableId,
    oemRevision: header.oemRevision,
    creatorId: header.creatorId,
    creatorRevision: header.creatorRevision,
  };
  build(0, () => validateHeaderFields(fields));
  const checksumOk = byteSum(bytes.subarray(0, header.length)) === 0;
  const body = decodeTermList(bytes, HEADER_SIZE, header.length, ctx);
  return { header, checksumOk, block: build(0, () => new DefinitionBlock(fields, body)) };
}
