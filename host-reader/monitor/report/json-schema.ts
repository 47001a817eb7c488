/**
 * A small JSON Schema (draft 2020-12) validator for the keywords our own schemas use, so that a manifest
 * is checked against the very schema published in docs/ and not against a second, hand-kept copy.
 * Supported: type, const, enum, not, $ref (local `#/$defs/NAME`), properties, required,
 * additionalProperties, maxProperties, items, minItems, maxItems, minLength, maxLength, pattern,
 * minimum, maximum, format `date-time`. Anything else in a schema is an error (a typo would otherwise
 * silently accept everything).
 */

export type JsonSchema = { readonly [keyword: string]: unknown };

const KNOWN = new Set([
  '$schema', '$id', '$defs', '$comment', 'title', 'description', 'examples', 'default',
  'type', 'const', 'enum', 'not', '$ref', 'properties', 'required', 'additionalProperties', 'maxProperties',
  'items', 'minItems', 'maxItems', 'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'format',
]);

// RFC 3339 `date-time` (JSON Schema's format): full date, `T`, full time, `Z` or an offset.
const DATE_TIME = /^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[Tt](?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)$/;

/** Errors found, as `"/steps/0/ok: must be boolean"`; empty when `value` is valid. At most `maxErrors`. */
export function validateJsonSchema(schema: JsonSchema, value: unknown, maxErrors = 20): string[] {
  const errors: string[] = [];
  const regexCache = new Map<string, RegExp>();
  const resolve = (ref: string): JsonSchema => {
    const m = /^#\/\$defs\/([A-Za-z0-9_-]+)$/.exec(ref);
    const defs = schema.$defs as Record<string, JsonSchema> | undefined;
    const target = m?.[1] === undefined ? undefined : defs?.[m[1]];
    if (target === undefined) throw new Error(`schema: unresolvable $ref ${ref}`);
    return target;
  };
  const visit = (s: JsonSchema, v: unknown, path: string, depth: number): void => {
    if (errors.length >= maxErrors) return;
    if (depth > 64) {
      errors.push(`${path || '/'}: nested too deeply`);
      return;
    }
    for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`schema: unsupported keyword ${k} at ${path || '/'}`);
    const fail = (message: string): void => {
      if (errors.length < maxErrors) errors.push(`${path || '/'}: ${message}`);
    };
    if (typeof s.$ref === 'string') visit(resolve(s.$ref), v, path, depth + 1);
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string];
      if (!types.some((t) => hasType(v, t))) {
        fail(`must be ${types.join(' or ')}`);
        return;
      }
    }
    if ('const' in s && !jsonEqual(v, s.const)) fail(`must be ${JSON.stringify(s.const)}`);
    if (Array.isArray(s.enum) && !s.enum.some((e) => jsonEqual(v, e))) fail(`must be one of ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
    if (s.not !== undefined) {
      const inner = validateJsonSchema({ ...(s.not as JsonSchema), $defs: schema.$defs }, v, 1);
      if (inner.length === 0) fail('must not match the "not" schema');
    }
    if (typeof v === 'string') {
      // Lengths count code points; a code point is 1 or 2 UTF-16 units, so huge strings are never spread.
      if (typeof s.minLength === 'number' && v.length < s.minLength * 2 && [...v].length < s.minLength) {
        fail(`must have at least ${s.minLength} characters`);
      }
      if (typeof s.maxLength === 'number' && v.length > s.maxLength && (v.length > s.maxLength * 2 || [...v].length > s.maxLength)) {
        fail(`must have at most ${s.maxLength} characters`);
      }
      if (typeof s.pattern === 'string') {
        let re = regexCache.get(s.pattern);
        if (re === undefined) regexCache.set(s.pattern, (re = new RegExp(s.pattern, 'u')));
        if (!re.test(v)) fail(`must match ${s.pattern}`);
      }
      if (s.format === 'date-time' && !DATE_TIME.test(v)) fail('must be an RFC 3339 date-time');
    }
    if (typeof v === 'number') {
      if (typeof s.minimum === 'number' && v < s.minimum) fail(`must be >= ${s.minimum}`);
      if (typeof s.maximum === 'number' && v > s.maximum) fail(`must be <= ${s.maximum}`);
    }
    if (Array.isArray(v)) {
      if (typeof s.minItems === 'number' && v.length < s.minItems) fail(`must have at least ${s.minItems} items`);
      if (typeof s.maxItems === 'number' && v.length > s.maxItems) {
        fail(`must have at most ${s.maxItems} items`);
        return;
      }
      if (s.items !== undefined) v.forEach((item, i) => visit(s.items as JsonSchema, item, `${path}/${i}`, depth + 1));
    }
    if (isPlainObject(v)) {
      const keys = Object.keys(v);
      if (typeof s.maxProperties === 'number' && keys.length > s.maxProperties) {
        fail(`must have at most ${s.maxProperties} properties`);
        return;
      }
      for (const r of (s.required as string[] | undefined) ?? []) if (!(r in v)) fail(`must have property ${JSON.stringify(r)}`);
      const props = (s.properties as Record<string, JsonSchema> | undefined) ?? {};
      for (const k of keys) {
        const child = `${path}/${escapePointer(k)}`;
        if (Object.hasOwn(props, k)) visit(props[k] as JsonSchema, v[k], child, depth + 1);
        else if (s.additionalProperties === false) fail(`unexpected property ${JSON.stringify(k)}`);
        else if (typeof s.additionalProperties === 'object' && s.additionalProperties !== null) {
          visit(s.additionalProperties as JsonSchema, v[k], child, depth + 1);
        }
      }
    }
  };
  visit(schema, value, '', 0);
  return errors;
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case 'null':
      return v === null;
    case 'boolean':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'array':
      return Array.isArray(v);
    case 'object':
      return isPlainObject(v);
    default:
      throw new Error(`schema: unknown type ${t}`);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}
