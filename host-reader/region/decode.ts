import {
  HEADER_SIZE,
  LAYOUT_VERSION,
  Off,
  PERIOD_MS_MAX,
  PERIOD_MS_MIN,
  REGION_MAGIC,
  regionSize,
  RING_MAX,
  RING_MIN,
} from '../../acpi/diag/layout.js';

/**
 * Decoder of the diagnostic region (layout in acpi/diag/layout.ts) as read from guest memory.
 * The bytes come from the guest and are hostile: every field is checked before use, the ring length
 * is bounded by RING_MAX before anything is allocated from it, and no input makes it throw.
 */

export interface RegionCounter {
  /** Beat count (u32, wraps at 2^32). */
  beats: number;
  /** Low 32 bits of the AML Timer (100 ns units) at the last beat; wraps about every 429 s. */
  last: number;
}

export interface DecodedRegion {
  version: number;
  headerSize: number;
  regionSize: number;
  /** 16 lower-case hex digits, the same spelling as DiagLayout.nonce. */
  nonce: string;
  kernelPeriodDs: number;
  ringLength: number;
  loadCount: number;
  loadTimer: number;
  kernel: RegionCounter;
  agent: RegionCounter;
  armed: number;
  pad: number;
  /** Kernel beat intervals in Timer units (100 ns), in slot order: beat b wrote slot b mod N. */
  ring: number[];
}

/** Which part of the input made decoding fail. */
export type DecodeField =
  | 'bytes'
  | 'magic'
  | 'version'
  | 'headerSize'
  | 'regionSize'
  | 'ringLength'
  | 'kernelPeriodDs'
  | 'nonce';

export type DecodeResult = { ok: true; region: DecodedRegion } | { ok: false; reason: string; field: DecodeField };

export interface DecodeExpect {
  /** 16 hex digits (DiagLayout.nonce); the region must carry this nonce. */
  nonce?: string;
  /** The ring length the layout promised. */
  ringLength?: number;
}

const MAGIC_BYTES = Array.from(REGION_MAGIC, (c) => c.charCodeAt(0));
const PERIOD_DS_MIN = PERIOD_MS_MIN / 100;
const PERIOD_DS_MAX = PERIOD_MS_MAX / 100;

function fail(field: DecodeField, reason: string): DecodeResult {
  return { ok: false, field, reason };
}

function printable(bytes: Uint8Array, at: number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) {
    const c = bytes[at + i] ?? 0;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return s;
}

/**
 * Decode a region from `bytes` (which may be longer than the region: the rest is ignored).
 * Checks magic, version, header size, ring length (power of two, RING_MIN..RING_MAX), region size
 * (= header + 4 * ring length, and present in `bytes`), the kernel period, and `expect`.
 * Never throws; never allocates more than RING_MAX ring entries.
 */
function readU16(b: Uint8Array, off: number): number {
  return (b[off] as number) | ((b[off + 1] as number) << 8);
}

function readU32(b: Uint8Array, off: number): number {
  return ((b[off] as number) | ((b[off + 1] as number) << 8) | ((b[off + 2] as number) << 16) | ((b[off + 3] as number) << 24)) >>> 0;
}

const HEX = '0123456789abcdef';

/** The little-endian u64 at `off` as 16 lowercase hex digits (the nonce's text). */
function nonceText(b: Uint8Array, off: number): string {
  let out = '';
  for (let i = 7; i >= 0; i--) {
    const v = b[off + i] as number;
    out += HEX[v >> 4] + (HEX[v & 15] as string);
  }
  return out;
}

/** The u64 at `off` is `hex` (16 lowercase hex digits). */
function nonceIs(b: Uint8Array, off: number, hex: string): boolean {
  for (let i = 0; i < 8; i++) {
    const v = b[off + 7 - i] as number;
    if (hex.charCodeAt(2 * i) !== HEX.charCodeAt(v >> 4) || hex.charCodeAt(2 * i + 1) !== HEX.charCodeAt(v & 15)) return false;
  }
  return true;
}

export function decodeRegion(bytes: Uint8Array, expect: DecodeExpect = {}): DecodeResult {
  try {
    return decode(bytes, expect);
  } catch (e) {
    // Unreachable with a Uint8Array; a caller passing something else still gets a result.
    return fail('bytes', `cannot decode: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function decode(bytes: Uint8Array, expect: DecodeExpect): DecodeResult {
  if (!(bytes instanceof Uint8Array)) return fail('bytes', 'not a Uint8Array');
  if (bytes.length < HEADER_SIZE) return fail('bytes', `truncated: ${bytes.length} bytes, the header needs ${HEADER_SIZE}`);
  for (let i = 0; i < MAGIC_BYTES.length; i++) {
    if (bytes[Off.magic + i] !== MAGIC_BYTES[i]) {
      return fail('magic', `magic is "${printable(bytes, Off.magic, 8)}", not "${REGION_MAGIC}"`);
    }
  }
  // Little-endian reads straight from the bytes (no DataView per decode: it runs per VM per poll,
  // bench/fleet).

  const version = readU16(bytes, Off.version);
  if (version !== LAYOUT_VERSION) return fail('version', `layout version ${version}, this reader knows ${LAYOUT_VERSION}`);
  const headerSize = readU16(bytes, Off.headerSize);
  if (headerSize !== HEADER_SIZE) return fail('headerSize', `header size ${headerSize}, expected ${HEADER_SIZE}`);
  const ringLength = readU16(bytes, Off.ringLength);
  if (ringLength < RING_MIN || ringLength > RING_MAX || (ringLength & (ringLength - 1)) !== 0) {
    return fail('ringLength', `ring length ${ringLength} is not a power of two in ${RING_MIN}..${RING_MAX}`);
  }
  if (expect.ringLength !== undefined && ringLength !== expect.ringLength) {
    return fail('ringLength', `ring length ${ringLength}, the layout says ${expect.ringLength}`);
  }
  const size = readU32(bytes, Off.regionSize);
  const want = regionSize(ringLength);
  if (size !== want) return fail('regionSize', `region size ${size}, expected ${want} for a ring of ${ringLength}`);
  if (bytes.length < size) return fail('bytes', `truncated: ${bytes.length} bytes, the region needs ${size}`);
  const kernelPeriodDs = readU16(bytes, Off.kernelPeriodDs);
  if (kernelPeriodDs < PERIOD_DS_MIN || kernelPeriodDs > PERIOD_DS_MAX) {
    return fail('kernelPeriodDs', `kernel period ${kernelPeriodDs} ds is outside ${PERIOD_DS_MIN}..${PERIOD_DS_MAX}`);
  }
  let nonce: string;
  if (expect.nonce !== undefined) {
    const wanted = expect.nonce.toLowerCase();
    if (!/^[0-9a-f]{16}$/.test(wanted)) return fail('nonce', `the expected nonce "${expect.nonce}" is not 16 hex digits`);
    // Compared as hex digits: the expected string is the nonce when they match (no string per decode).
    if (!nonceIs(bytes, Off.nonce, wanted)) return fail('nonce', `nonce ${nonceText(bytes, Off.nonce)}, expected ${wanted}`);
    nonce = wanted;
  } else {
    nonce = nonceText(bytes, Off.nonce);
  }
  const ring = new Array<number>(ringLength);
  for (let i = 0; i < ringLength; i++) ring[i] = readU32(bytes, Off.ring + 4 * i);
  return {
    ok: true,
    region: {
      version,
      headerSize,
      regionSize: size,
      nonce,
      kernelPeriodDs,
      ringLength,
      loadCount: readU32(bytes, Off.loadCount),
      loadTimer: readU32(bytes, Off.loadTimer),
      kernel: { beats: readU32(bytes, Off.kernelBeats), last: readU32(bytes, Off.kernelLast) },
      agent: { beats: readU32(bytes, Off.agentBeats), last: readU32(bytes, Off.agentLast) },
      armed: readU32(bytes, Off.armed),
      pad: bytes[Off.pad] ?? 0,
      ring,
    },
  };
}

/**
 * The recorded kernel intervals (Timer units, 100 ns), newest first: slot `beats mod N`, then
 * backwards, at most min(N, beats - 1) of them (the first beat after a load records none), skipping
 * zero slots (never written). Counts beyond what the ring holds are never trusted.
 */
export function intervalsNewestFirst(region: Pick<DecodedRegion, 'ring' | 'kernel'>): number[] {
  const n = region.ring.length;
  if (n === 0 || (n & (n - 1)) !== 0 || n > RING_MAX) return [];
  const beats = region.kernel.beats >>> 0;
  const count = Math.min(n, Math.max(0, beats - 1));
  const out: number[] = [];
  for (let k = 0; k < count; k++) {
    const slot = (beats - k) & (n - 1);
    const v = region.ring[slot] ?? 0;
    if (v !== 0) out.push(v);
  }
  return out;
}

/**
 * The first eve-diag region in `table` (a table file or a dump of one), found by its magic: its offset
 * and decoded values; the reason the first candidate did not decode when none does; null when the
 * magic is nowhere. Each candidate is decoded with every bound of decodeRegion.
 */
export function findRegion(table: Uint8Array): { offset: number; region: DecodedRegion } | { error: string } | null {
  const magic = Buffer.from(REGION_MAGIC, 'latin1');
  const buf = Buffer.from(table.buffer, table.byteOffset, table.byteLength);
  let firstError: string | null = null;
  for (let at = buf.indexOf(magic); at >= 0; at = buf.indexOf(magic, at + 1)) {
    const r = decodeRegion(table.subarray(at));
    if (r.ok) return { offset: at, region: r.region };
    firstError ??= `at offset ${at}: ${r.field}: ${r.reason}`;
  }
  return firstError ? { error: firstError } : null;
}
