import type { AmlTerm, SuperName, TermArg } from '../aml/types.js';
import type { FieldElement } from '../aml/region.js';
import { ObjectType } from '../aml/namespace.js';
import type { DefinitionBlock } from '../table.js';

/**
 * ASL (ACPI Source Language) emitter: prints a term tree as ASL that iasl compiles back to the same
 * AML. Uses the classic function syntax (Store (a, b)), which iasl and `iasl -d` both accept.
 */

const hex = (v: bigint | number, width = 2): string => '0x' + v.toString(16).toUpperCase().padStart(width, '0');

function intAsl(v: bigint): string {
  if (v === 0n) return 'Zero';
  if (v === 1n) return 'One';
  const w = v <= 0xffn ? 2 : v <= 0xffffn ? 4 : v <= 0xffff_ffffn ? 8 : 16;
  return hex(v, w);
}

function strAsl(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + '"';
}

const objectTypeNames: Record<number, string> = {
  [ObjectType.Unknown]: 'UnknownObj',
  [ObjectType.Int]: 'IntObj',
  [ObjectType.Str]: 'StrObj',
  [ObjectType.Buff]: 'BuffObj',
  [ObjectType.Pkg]: 'PkgObj',
  [ObjectType.FieldUnit]: 'FieldUnitObj',
  [ObjectType.Device]: 'DeviceObj',
  [ObjectType.Event]: 'EventObj',
  [ObjectType.Method]: 'MethodObj',
  [ObjectType.Mutex]: 'MutexObj',
  [ObjectType.OpRegion]: 'OpRegionObj',
  [ObjectType.PowerRes]: 'PowerResObj',
  [ObjectType.Processor]: 'ProcessorObj',
  [ObjectType.ThermalZone]: 'ThermalZoneObj',
  [ObjectType.BuffField]: 'BuffFieldObj',
  [ObjectType.DDBHandle]: 'DDBHandleObj',
};

/** An expression (TermArg / SuperName) on one line. */
export function exprAsl(t: TermArg | SuperName): string {
  const target = (x: SuperName | undefined) => (x ? exprAsl(x) : '');
  switch (t.kind) {
    case 'Integer':
      return intAsl(t.value);
    case 'Ones':
      return 'Ones';
    case 'String':
      return strAsl(t.value);
    case 'Buffer': {
      const lines: string[] = [];
      for (let i = 0; i < t.bytes.length; i += 16) {
        lines.push(Array.from(t.bytes.subarray(i, i + 16), (b) => hex(b)).join(', '));
      }
      return `Buffer (${exprAsl(t.size)})\n{\n${lines.map((l) => '    ' + l).join(',\n')}\n}`;
    }
    case 'Package':
      return `Package (${intAsl(BigInt(t.elements.length))})\n{\n${t.elements.map((e) => '    ' + exprAsl(e)).join(',\n')}\n}`;
    case 'Local':
      return `Local${t.index}`;
    case 'Arg':
      return `Arg${t.index}`;
    case 'NameRef':
      return t.path.toString();
    case 'MethodCall':
      return `${t.path.toString()} (${t.args.map(exprAsl).join(', ')})`;
    case 'Store':
      return `Store (${exprAsl(t.source)}, ${exprAsl(t.target)})`;
    case 'Binary':
      return `${t.op} (${exprAsl(t.left)}, ${exprAsl(t.right)}, ${target(t.target)})`;
    case 'Not':
      return `Not (${exprAsl(t.operand)}, ${target(t.target)})`;
    case 'IncDec':
      return `${t.op} (${exprAsl(t.target)})`;
    case 'Logical':
      return `${t.op} (${exprAsl(t.left)}, ${exprAsl(t.right)})`;
    case 'LNot':
      return `LNot (${exprAsl(t.operand)})`;
    case 'Timer':
      return 'Timer';
    case 'Index':
      return `Index (${exprAsl(t.source)}, ${exprAsl(t.index)}, ${target(t.target)})`;
    case 'DerefOf':
      return `DerefOf (${exprAsl(t.ref)})`;
    case 'SizeOf':
      return `SizeOf (${exprAsl(t.object)})`;
    case 'Acquire':
      return `Acquire (${exprAsl(t.mutex)}, ${hex(t.timeoutMs, 4)})`;
  }
}

function fieldElementsAsl(elements: readonly FieldElement[]): string[] {
  const out: string[] = [];
  let at = 0;
  for (const e of elements) {
    if (e.kind === 'named') out.push(`${e.name}, ${e.bits}`);
    else if ((at + e.bits) % 8 === 0 && e.bits > 0) out.push(`Offset (${hex((at + e.bits) / 8)})`);
    else out.push(`, ${e.bits}`);
    at += e.bits;
  }
  return out;
}

const INDENT = '    ';

function indentBlock(text: string, depth: number): string {
  const pad = INDENT.repeat(depth);
  return text
    .split('\n')
    .map((l) => (l === '' ? l : pad + l))
    .join('\n');
}

function blockAsl(head: string, body: readonly AmlTerm[], depth: number): string {
  const inner = body.map((b) => termAsl(b, depth + 1)).join('\n');
  const pad = INDENT.repeat(depth);
  return `${pad}${head}\n${pad}{\n${inner}${inner ? '\n' : ''}${pad}}`;
}

/** A statement or declaration at `depth`, possibly spanning lines. */
export function termAsl(t: AmlTerm, depth = 0): string {
  const pad = INDENT.repeat(depth);
  switch (t.kind) {
    case 'Scope':
      return blockAsl(`Scope (${t.name})`, t.body, depth);
    case 'Device':
      return blockAsl(`Device (${t.name})`, t.body, depth);
    case 'ThermalZone':
      return blockAsl(`ThermalZone (${t.name})`, t.body, depth);
    case 'Method':
      return blockAsl(
        `Method (${t.name}, ${t.args}, ${t.serialized ? 'Serialized' : 'NotSerialized'}${t.syncLevel ? `, ${t.syncLevel}` : ''})`,
        t.body,
        depth,
      );
    case 'Name':
      return indentBlock(`Name (${t.name}, ${exprAsl(t.value)})`, depth);
    case 'External':
      // A method External spells its argument count as a list of parameter types.
      return t.type === 'Method' && t.argCount > 0
        ? `${pad}External (${t.name}, MethodObj, UnknownObj, {${Array(t.argCount).fill('UnknownObj').join(', ')}})`
        : `${pad}External (${t.name}, ${objectTypeNames[ObjectType[t.type]]})`;
    case 'Mutex':
      return `${pad}Mutex (${t.name}, ${t.syncLevel})`;
    case 'OperationRegion': {
      const spaceName = typeof t.space === 'string' ? t.space : hex(t.space);
      return `${pad}OperationRegion (${t.name}, ${spaceName}, ${exprAsl(t.offset)}, ${exprAsl(t.length)})`;
    }
    case 'DataTableRegion':
      return `${pad}DataTableRegion (${t.name}, ${exprAsl(t.signature)}, ${exprAsl(t.oemId)}, ${exprAsl(t.oemTableId)})`;
    case 'Field': {
      const head = `${pad}Field (${t.region}, ${t.access}, ${t.lock ? 'Lock' : 'NoLock'}, ${t.update})`;
      const els = fieldElementsAsl(t.elements).map((l) => pad + INDENT + l);
      return `${head}\n${pad}{\n${els.join(',\n')}\n${pad}}`;
    }
    case 'CreateField':
      return `${pad}Create${t.width}Field (${exprAsl(t.source)}, ${exprAsl(t.byteIndex)}, ${t.name})`;
    case 'If': {
      const ifPart = blockAsl(`If (${exprAsl(t.predicate)})`, t.body, depth);
      return t.elseBody ? `${ifPart}\n${blockAsl('Else', t.elseBody, depth)}` : ifPart;
    }
    case 'While':
      return blockAsl(`While (${exprAsl(t.predicate)})`, t.body, depth);
    case 'Return':
      return indentBlock(`Return (${exprAsl(t.value)})`, depth);
    case 'Break':
      return `${pad}Break`;
    case 'Noop':
      return `${pad}Noop`;
    case 'Notify':
      return `${pad}Notify (${exprAsl(t.object)}, ${exprAsl(t.value)})`;
    case 'Release':
      return `${pad}Release (${exprAsl(t.mutex)})`;
    default:
      return indentBlock(exprAsl(t), depth);
  }
}

/** A whole DefinitionBlock as ASL source. `amlFileName` is the first DefinitionBlock argument. */
export function definitionBlockAsl(block: DefinitionBlock, amlFileName = ''): string {
  const h = block.header;
  const head =
    `DefinitionBlock (${strAsl(amlFileName)}, ${strAsl(h.signature)}, ${h.revision}, ${strAsl(h.oemId)}, ` +
    `${strAsl(h.oemTableId)}, ${hex(h.oemRevision, 8)})`;
  return blockAsl(head, block.body, 0) + '\n';
}
