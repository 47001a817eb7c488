import { AmlValueError } from '../errors.js';
import { Op } from './opcodes.js';
import type { ByteSink } from './sink.js';

/**
 * Name strings (ACPI 6.5 section 20.2.2).
 * NameSeg := LeadNameChar NameChar NameChar NameChar, LeadNameChar is A-Z or '_', NameChar adds 0-9.
 * In ASL a segment may be written shorter; it is padded with '_' (iasl does the same).
 */
const SEG_RE = /^[A-Z_][A-Z0-9_]{0,3}$/;

export function normalizeSeg(seg: string, field = 'name'): string {
  if (!SEG_RE.test(seg)) {
    throw new AmlValueError(field, seg, 'a name segment is 1-4 characters of A-Z, 0-9, _ and does not start with a digit');
  }
  return seg.padEnd(4, '_');
}

/**
 * A parsed name path: `\` root prefix, `^` parent prefixes, then 0..255 segments.
 * `\` alone (root) and the null name (no segments, no prefix) are both representable.
 */
export class NamePath {
  readonly kind = 'NamePath';
  constructor(
    readonly root: boolean,
    readonly parents: number,
    readonly segs: readonly string[],
  ) {}

  /** Parse ASL spelling such as `\_TZ.EDGK`, `^^FOO`, `KCNT`. Throws AmlValueError naming `field`. */
  static parse(text: string, field = 'name'): NamePath {
    let i = 0;
    let root = false;
    let parents = 0;
    if (text.startsWith('\\')) {
      root = true;
      i = 1;
    } else {
      while (text[i] === '^') {
        parents++;
        i++;
      }
    }
    const rest = text.slice(i);
    if (rest === '') {
      if (!root) throw new AmlValueError(field, text, 'empty name');
      return new NamePath(true, 0, []);
    }
    const segs = rest.split('.').map((s) => normalizeSeg(s, field));
    if (segs.length > 255) throw new AmlValueError(field, text, 'more than 255 name segments');
    return new NamePath(root, parents, segs);
  }

  /** A single segment name (required for object declarations inside a field list, etc.). */
  get isSingleSeg(): boolean {
    return !this.root && this.parents === 0 && this.segs.length === 1;
  }

  /** ASL spelling with segments kept at 4 characters (what iasl -d prints). */
  toString(): string {
    return (this.root ? '\\' : '^'.repeat(this.parents)) + this.segs.join('.');
  }

  encode(sink: ByteSink): void {
    if (this.root) sink.byte(Op.RootChar);
    for (let i = 0; i < this.parents; i++) sink.byte(Op.ParentPrefix);
    const n = this.segs.length;
    if (n === 0) sink.byte(0x00); // NullName
    else if (n === 2) sink.byte(Op.DualNamePrefix);
    else if (n > 2) sink.byte(Op.MultiNamePrefix).byte(n);
    for (const s of this.segs) for (let k = 0; k < 4; k++) sink.byte(s.charCodeAt(k));
  }
}

/** Accept a string or a NamePath wherever a builder takes a name. */
export type NameLike = string | NamePath;

export function toPath(name: NameLike, field = 'name'): NamePath {
  return typeof name === 'string' ? NamePath.parse(name, field) : name;
}

/** A declaration's name: any path, but never the bare root or the null name. */
export function declName(name: NameLike, field = 'name'): NamePath {
  const p = toPath(name, field);
  if (p.segs.length === 0) throw new AmlValueError(field, p.toString(), 'a declaration needs a name segment');
  return p;
}

/** A single 4-character segment (field units, CreateXField names are paths too, but fields are segs). */
export function segName(name: string, field = 'name'): string {
  return normalizeSeg(name, field);
}
