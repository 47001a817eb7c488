import { AmlValueError } from '../errors.js';
import { declName, normalizeSeg, toPath, type NameLike, type NamePath } from './name.js';
import { ExtOp, FieldElem, Op } from './opcodes.js';
import { writePackage, writeRawPkgLength } from './pkglength.js';
import { encodeToBytes, type ByteSink } from './sink.js';
import type { TermArg } from './types.js';
import { StringLit } from './data.js';

/** RegionSpace values (ACPI 6.5 section 19.6.100, table 5.x Address Space IDs). */
export const RegionSpace = {
  SystemMemory: 0x00,
  SystemIO: 0x01,
  PCI_Config: 0x02,
  EmbeddedControl: 0x03,
  SMBus: 0x04,
  SystemCMOS: 0x05,
  PciBarTarget: 0x06,
  IPMI: 0x07,
  GeneralPurposeIO: 0x08,
  GenericSerialBus: 0x09,
  PCC: 0x0a,
  PlatformRtMechanism: 0x0b,
  FFixedHW: 0x7f,
} as const;
export type RegionSpaceName = keyof typeof RegionSpace;

/** OperationRegion (Name, Space, Offset, Length). */
export class OperationRegion {
  readonly kind = 'OperationRegion';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly space: RegionSpaceName | number,
    readonly offset: TermArg,
    readonly length: TermArg,
  ) {
    this.name = declName(name, 'OperationRegion');
    const id = this.spaceId;
    if (!Number.isInteger(id) || id < 0 || id > 0xff) {
      throw new AmlValueError(`OperationRegion ${this.name} space`, space, 'space is a name or a byte');
    }
  }
  get spaceId(): number {
    return typeof this.space === 'number' ? this.space : RegionSpace[this.space];
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.OpRegion);
    this.name.encode(sink);
    sink.byte(this.spaceId);
    this.offset.encode(sink);
    this.length.encode(sink);
  }
}

/**
 * DataTableRegion (Name, Signature, OemId, OemTableId): a region over a whole ACPI table
 * found by its header fields. We lay it over our own SSDT (DESIGN fact 5).
 */
export class DataTableRegion {
  readonly kind = 'DataTableRegion';
  readonly name: NamePath;
  constructor(
    name: NameLike,
    readonly signature: TermArg,
    readonly oemId: TermArg,
    readonly oemTableId: TermArg,
  ) {
    this.name = declName(name, 'DataTableRegion');
  }
  static of(name: NameLike, signature: string, oemId: string, oemTableId: string): DataTableRegion {
    if (signature.length !== 4) throw new AmlValueError('DataTableRegion signature', signature, 'a signature is 4 characters');
    if (oemId.length > 6) throw new AmlValueError('DataTableRegion oemId', oemId, 'an OEM ID is at most 6 characters');
    if (oemTableId.length > 8) throw new AmlValueError('DataTableRegion oemTableId', oemTableId, 'an OEM table ID is at most 8 characters');
    return new DataTableRegion(name, new StringLit(signature), new StringLit(oemId), new StringLit(oemTableId));
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.DataRegion);
    this.name.encode(sink);
    this.signature.encode(sink);
    this.oemId.encode(sink);
    this.oemTableId.encode(sink);
  }
}

export const AccessType = { AnyAcc: 0, ByteAcc: 1, WordAcc: 2, DWordAcc: 3, QWordAcc: 4, BufferAcc: 5 } as const;
export type AccessTypeName = keyof typeof AccessType;
export const UpdateRule = { Preserve: 0, WriteAsOnes: 1, WriteAsZeros: 2 } as const;
export type UpdateRuleName = keyof typeof UpdateRule;

/** A named field unit of `bits` bits. */
export interface NamedField {
  readonly kind: 'named';
  readonly name: string;
  readonly bits: number;
}
/** Unnamed bits (ASL `, N` or `Offset (n)`): ReservedField := 0x00 PkgLength. */
export interface ReservedField {
  readonly kind: 'reserved';
  readonly bits: number;
}
export type FieldElement = NamedField | ReservedField;

/** Helpers to spell a field list the way ASL reads. */
export const fieldUnit = (name: string, bits: number): NamedField => ({ kind: 'named', name: normalizeSeg(name, 'Field unit'), bits });
export const reserved = (bits: number): ReservedField => ({ kind: 'reserved', bits });
/** `Offset (byte)` in a field list: reserved bits up to that byte, given the elements so far. */
export function offsetTo(elements: readonly FieldElement[], byteOffset: number): ReservedField {
  const at = elements.reduce((n, e) => n + e.bits, 0);
  const bits = byteOffset * 8 - at;
  if (!Number.isInteger(byteOffset) || bits < 0) {
    throw new AmlValueError('Field Offset', byteOffset, `Offset goes backwards from bit ${at}`);
  }
  return reserved(bits);
}

export interface FieldFlags {
  access?: AccessTypeName;
  lock?: boolean;
  update?: UpdateRuleName;
}

/**
 * Field (RegionName, AccessType, LockRule, UpdateRule) {...}.
 * FieldFlags: bits 0-3 access type, bit 4 lock rule, bits 5-6 update rule.
 */
export class Field {
  readonly kind = 'Field';
  readonly region: NamePath;
  readonly access: AccessTypeName;
  readonly lock: boolean;
  readonly update: UpdateRuleName;
  constructor(
    region: NameLike,
    flags: FieldFlags,
    readonly elements: readonly FieldElement[],
  ) {
    this.region = toPath(region, 'Field region');
    this.access = flags.access ?? 'AnyAcc';
    this.lock = flags.lock ?? false;
    this.update = flags.update ?? 'Preserve';
    for (const e of elements) {
      if (!Number.isInteger(e.bits) || e.bits < 0 || e.bits > 0x0fff_ffff) {
        throw new AmlValueError(`Field ${this.region} element ${e.kind === 'named' ? e.name : '(reserved)'}`, e.bits, 'bit length out of range');
      }
      if (e.kind === 'named') normalizeSeg(e.name, 'Field unit');
    }
  }
  get flags(): number {
    return AccessType[this.access] | (this.lock ? 0x10 : 0) | (UpdateRule[this.update] << 5);
  }
  /** Byte offset of each named unit (bit offset / 8, and its bit offset), for layout checks. */
  unitOffsets(): Map<string, { bit: number; bits: number }> {
    const out = new Map<string, { bit: number; bits: number }>();
    let at = 0;
    for (const e of this.elements) {
      if (e.kind === 'named') out.set(e.name, { bit: at, bits: e.bits });
      at += e.bits;
    }
    return out;
  }
  encode(sink: ByteSink): void {
    sink.byte(Op.ExtOpPrefix).byte(ExtOp.Field);
    writePackage(
      sink,
      encodeToBytes((s) => {
        this.region.encode(s);
        s.byte(this.flags);
        for (const e of this.elements) {
          if (e.kind === 'named') {
            for (let k = 0; k < 4; k++) s.byte(e.name.charCodeAt(k));
          } else {
            s.byte(FieldElem.Reserved);
          }
          // FieldLength uses the PkgLength encoding but counts bits, not itself (20.2.5.2).
          writeRawPkgLength(s, e.bits);
        }
      }),
    );
  }
}

