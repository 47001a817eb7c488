import { AmlValueError } from '../errors.js';
import { encodeList } from './control.js';
import { declName, toPath, type NameLike, type NamePath } from './name.js';
import { ExtOp, Op } from './opcodes.js';
import { writePackage } from './pkglength.js';
import { encodeToBytes, type ByteSink } from './sink.js';
import type { TermArg, TermObj } from './types.js';

function encodeNamedContainer(sink: ByteSink, name: NamePath, body: readonly TermObj[]): void {
  writePackage(
    sink,
    encodeToBytes((s) => {
      name.encode(s);
      s.bytes(encodeList(body));
    }),
  );
}

/** Scope (Location) {...}. The scope must already exist (or be declared External). */
export class Scope {
  readonly kind = 'Scope';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly body: readonly TermObj[],
  ) {
    this.name = toPath(name, 'Scope');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Scope);
    encodeNamedContainer(sink, this.name, this.body);
  }
}

/** Device (Name) {...}. */
export class Device {
  readonly kind = 'Device';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly body: readonly TermObj[],
  ) {
    this.name = declName(name, 'Device');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Device);
    encodeNamedContainer(sink, this.name, this.body);
  }
}

/** ThermalZone (Name) {...}. */
export class ThermalZone {
  readonly kind = 'ThermalZone';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly body: readonly TermObj[],
  ) {
    this.name = declName(name, 'ThermalZone');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.ThermalZone);
    encodeNamedContainer(sink, this.name, this.body);
  }
}

/** Name (Name, Object). */
export class Name {
  readonly kind = 'Name';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly value: TermArg,
  ) {
    this.name = declName(name, 'Name');
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Name);
    this.name.encode(sink);
    this.value.encode(sink);
  }
}

export interface MethodOptions {
  /** 0-7 arguments. */
  args?: number;
  /** Serialized methods run one at a time (an implicit mutex at `syncLevel`). */
  serialized?: boolean;
  /** 0-15. */
  syncLevel?: number;
}

/** Method (Name, NumArgs, SerializeRule, SyncLevel) {...}. MethodFlags: bits 0-2 args, bit 3 serialized, bits 4-7 sync level. */
export class Method {
  readonly kind = 'Method';
  readonly name: NamePath;
  readonly args: number;
  readonly serialized: boolean;
  readonly syncLevel: number;
  constructor(name: NameLike, opts: MethodOptions, readonly body: readonly TermObj[]) {
    this.name = declName(name, 'Method');
    this.args = opts.args ?? 0;
    this.serialized = opts.serialized ?? false;
    this.syncLevel = opts.syncLevel ?? 0;
    if (!Number.isInteger(this.args) || this.args < 0 || this.args > 7) {
      throw new AmlValueError(`Method ${this.name} args`, this.args, 'a method takes 0-7 arguments');
    }
    if (!Number.isInteger(this.syncLevel) || this.syncLevel < 0 || this.syncLevel > 15) {
      throw new AmlValueError(`Method ${this.name} syncLevel`, this.syncLevel, 'sync level is 0-15');
    }
  }
  get flags(): number {
    return this.args | (this.serialized ? 0x08 : 0) | (this.syncLevel << 4);
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.Method);
    writePackage(
      sink,
      encodeToBytes((s) => {
        this.name.encode(s);
        s.byte(this.flags);
        s.bytes(encodeList(this.body));
      }),
    );
  }
}

/** ObjectType values of External (ACPI 6.5 table 19.32 / 20.2.5.2). */
export const ObjectType = {
  Unknown: 0,
  Int: 1,
  Str: 2,
  Buff: 3,
  Pkg: 4,
  FieldUnit: 5,
  Device: 6,
  Event: 7,
  Method: 8,
  Mutex: 9,
  OpRegion: 10,
  PowerRes: 11,
  Processor: 12,
  ThermalZone: 13,
  BuffField: 14,
  DDBHandle: 15,
} as const;
export type ObjectTypeName = keyof typeof ObjectType;

/** External (Name, ObjectType, ...); encoded as ExternalOp NameString ObjectType ArgumentCount. */
export class External {
  readonly kind = 'External';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly type: ObjectTypeName = 'Unknown',
    readonly argCount = 0,
  ) {
    this.name = declName(name, 'External');
    if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) {
      throw new AmlValueError(`External ${this.name} argCount`, argCount, 'a method takes 0-7 arguments');
    }
    if (argCount > 0 && type !== 'Method') {
      throw new AmlValueError(`External ${this.name} argCount`, argCount, 'only a Method External has arguments');
    }
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.External);
    this.name.encode(sink);
    sink.byte(ObjectType[this.type]).byte(this.argCount);
  }
}

/** Mutex (Name, SyncLevel). */
export class Mutex {
  readonly kind = 'Mutex';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly syncLevel = 0,
  ) {
    this.name = declName(name, 'Mutex');
    if (!Number.isInteger(syncLevel) || syncLevel < 0 || syncLevel > 15) {
      throw new AmlValueError(`Mutex ${this.name} syncLevel`, syncLevel, 'sync level is 0-15');
    }
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Mutex);
    this.name.encode(sink);
    sink.byte(this.syncLevel);
  }
}
