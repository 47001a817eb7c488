import { createHash, randomBytes } from 'node:crypto';
import { AmlValueError } from '../errors.js';
import { aml, fieldUnit, NamePath, normalizeSeg, offsetTo, type FieldElement, type TermObj } from '../aml/index.js';
import { DefinitionBlock, type TableHeaderFields } from '../table.js';
import {
  HEADER_SIZE,
  HOT_DK,
  initialRegion,
  LAYOUT_VERSION,
  Off,
  PERIOD_MS_MAX,
  PERIOD_MS_MIN,
  REGION_MAGIC,
  regionSize,
  RING_MAX,
  RING_MIN,
  TIMER_UNIT_NS,
  TMP_DK,
  type DiagLayout,
} from './layout.js';

/**
 * The diagnostic SSDT. Two thermal zones under `scope` (default \_TZ):
 *  - the kernel zone has _TZP, so the guest kernel's ACPI thermal driver evaluates its _TMP every
 *    period in kernel context with no userspace help (DESIGN fact 1): that is the kernel heartbeat;
 *  - the agent zone has no _TZP; its _TMP runs each time userspace reads its sysfs `temp` (fact 2).
 * Both _TMP return the same constant and the only trip point is _HOT far above it (fact 3).
 * All region writes go through one Serialized method (EDBT) that also adjusts a pad byte so the
 * table's checksum stays valid (fact 6). Arithmetic is masked to 32 bits: QEMU's DSDT is revision 1,
 * so ACPICA runs with 32-bit integers and Timer wraps at 2^32 (fact 4). No addresses are computed.
 */
export interface DiagSsdtOptions {
  oemId?: string;
  oemTableId?: string;
  oemRevision?: number;
  /** Kernel heartbeat period in ms: a multiple of 100 (the _TZP unit), 100..3600000. Default 1000. */
  kernelPeriodMs?: number;
  /** Interval ring length: a power of two, 4..256. Default 16. */
  ringLength?: number;
  /** 64-bit nonce; random by default. */
  nonce?: bigint;
  /** Scope holding the zones; must exist in the guest namespace (\_TZ always does). */
  scope?: string;
  kernelZone?: string;
  agentZone?: string;
}

export interface DiagSsdt {
  aml: Uint8Array;
  block: DefinitionBlock;
  layout: DiagLayout;
}

export const DEFAULTS = {
  oemId: 'EVEDIA',
  oemTableId: 'EVEDIAG',
  oemRevision: 1,
  kernelPeriodMs: 1000,
  ringLength: 16,
  scope: '\\_TZ',
  kernelZone: 'EDGK',
  agentZone: 'EDGA',
} as const;

/** Creator fields of tables we build (the ASL compiler's slot in the header). */
export const CREATOR_ID = 'EVED';
export const CREATOR_REVISION = LAYOUT_VERSION;

/** Signals EDBT records; its Arg0. */
const BEAT_KERNEL = 0;
const BEAT_AGENT = 1;
const BEAT_LOAD = 2;

export function randomNonce(): bigint {
  return randomBytes(8).readBigUInt64LE(0);
}

interface Resolved {
  oemId: string;
  oemTableId: string;
  oemRevision: number;
  kernelPeriodMs: number;
  ringLength: number;
  nonce: bigint;
  scope: NamePath;
  kernelZone: string;
  agentZone: string;
}

function resolve(o: DiagSsdtOptions): Resolved {
  const r = { ...DEFAULTS, ...o };
  const period = r.kernelPeriodMs;
  if (!Number.isInteger(period) || period < PERIOD_MS_MIN || period > PERIOD_MS_MAX || period % 100 !== 0) {
    throw new AmlValueError('kernelPeriodMs', period, `a multiple of 100 ms between ${PERIOD_MS_MIN} and ${PERIOD_MS_MAX}`);
  }
  const ring = r.ringLength;
  if (!Number.isInteger(ring) || ring < RING_MIN || ring > RING_MAX || (ring & (ring - 1)) !== 0) {
    throw new AmlValueError('ringLength', ring, `a power of two between ${RING_MIN} and ${RING_MAX}`);
  }
  const nonce = o.nonce ?? randomNonce();
  if (typeof nonce !== 'bigint' || nonce < 0n || nonce > 0xffff_ffff_ffff_ffffn) {
    throw new AmlValueError('nonce', nonce, 'a 64-bit unsigned integer');
  }
  // The table is found by these fields (DataTableRegion, host discovery): keep them plain.
  if (!/^[A-Z0-9_]{1,6}$/.test(r.oemId)) throw new AmlValueError('oemId', r.oemId, '1-6 characters of A-Z, 0-9, _');
  if (!/^[A-Z0-9_]{1,8}$/.test(r.oemTableId)) throw new AmlValueError('oemTableId', r.oemTableId, '1-8 characters of A-Z, 0-9, _');
  if (!Number.isInteger(r.oemRevision) || r.oemRevision < 0 || r.oemRevision > 0xffff_ffff) {
    throw new AmlValueError('oemRevision', r.oemRevision, '0..0xFFFFFFFF');
  }
  const scope = NamePath.parse(r.scope, 'scope');
  if (!scope.root) throw new AmlValueError('scope', r.scope, 'the scope must be an absolute path such as \\_TZ');
  const kernelZone = normalizeSeg(r.kernelZone, 'kernelZone');
  const agentZone = normalizeSeg(r.agentZone, 'agentZone');
  if (kernelZone === agentZone) throw new AmlValueError('agentZone', r.agentZone, 'must differ from kernelZone');
  return { ...r, nonce, scope, kernelZone, agentZone, kernelPeriodMs: period, ringLength: ring };
}

/** Statements that store `value` (a Local) into field `name`, adding the byte-sum change to Local7. */
function tracked(name: string, value: TermObj & { kind: 'Local' }): TermObj[] {
  const L7 = aml.local(7);
  return [aml.add(L7, aml.subtract(aml.call('EDBS', name), aml.call('EDBS', value)), L7), aml.store(value, name)];
}

function body(r: Resolved, regionOffset: number): TermObj[] {
  const L = aml.local;
  const now = L(0);
  const mask32 = 0xffff_ffff;
  const ringBytes = 4 * r.ringLength;
  const at = (off: number) => regionOffset + off;

  // Field units over the region's mutable part; offsets are from the start of the table.
  const els: FieldElement[] = [];
  const unit = (name: string, off: number, bits: number) => {
    const gap = offsetTo(els, at(off));
    if (gap.bits > 0) els.push(gap);
    els.push(fieldUnit(name, bits));
  };
  unit('LCNT', Off.loadCount, 32);
  unit('LTMR', Off.loadTimer, 32);
  unit('KCNT', Off.kernelBeats, 32);
  unit('KLST', Off.kernelLast, 32);
  unit('ACNT', Off.agentBeats, 32);
  unit('ALST', Off.agentLast, 32);
  unit('ARMD', Off.armed, 32);
  unit('PADB', Off.pad, 8);
  unit('RING', Off.ring, ringBytes * 8);

  const kernelPath = `${r.scope.toString()}.${r.kernelZone}`.replace('\\.', '\\');
  const beat = (which: number) => aml.call(`${kernelPath}.EDBT`, which);

  const edbt = aml.method('EDBT', { args: 1, serialized: true }, [
    aml.store(aml.and(aml.timer(), mask32), now),
    aml.store(0, L(7)),
    aml.if(aml.lEqual(aml.arg(0), BEAT_KERNEL), [
      aml.store(aml.and(aml.add('KCNT', 1), mask32), L(1)),
      aml.if(
        aml.and('ARMD', 1),
        [
          // Interval since the previous beat, modulo 2^32 like Timer itself.
          aml.store(aml.and(aml.subtract(now, 'KLST'), mask32), L(2)),
          aml.store('RING', L(3)),
          aml.createDWordField(L(3), aml.multiply(aml.and(L(1), r.ringLength - 1), 4), 'EDRS'),
          aml.add(L(7), aml.subtract(aml.call('EDBS', 'EDRS'), aml.call('EDBS', L(2))), L(7)),
          aml.store(L(2), 'EDRS'),
          aml.store(L(3), 'RING'),
        ],
        [aml.store(aml.or('ARMD', 1), L(4)), ...tracked('ARMD', L(4))],
      ),
      ...tracked('KCNT', L(1)),
      ...tracked('KLST', now),
    ]),
    aml.if(aml.lEqual(aml.arg(0), BEAT_AGENT), [
      aml.store(aml.and(aml.add('ACNT', 1), mask32), L(1)),
      ...tracked('ACNT', L(1)),
      ...tracked('ALST', now),
    ]),
    aml.if(aml.lEqual(aml.arg(0), BEAT_LOAD), [
      aml.store(aml.and(aml.add('LCNT', 1), mask32), L(1)),
      ...tracked('LCNT', L(1)),
      ...tracked('LTMR', now),
      // A new load (boot, kexec: the bytes survive) must not record an interval across it.
      aml.store(0, L(4)),
      ...tracked('ARMD', L(4)),
    ]),
    // The pad absorbs the byte-sum change of every write above: the table keeps summing to zero.
    aml.store(aml.and(aml.add('PADB', L(7)), 0xff), 'PADB'),
  ]);

  // Byte sum of a 32-bit value.
  const a0 = aml.arg(0);
  const edbs = aml.method('EDBS', { args: 1 }, [
    aml.return(
      aml.add(
        aml.add(aml.and(a0, 0xff), aml.and(aml.shiftRight(a0, 8), 0xff)),
        aml.add(aml.and(aml.shiftRight(a0, 16), 0xff), aml.and(aml.shiftRight(a0, 24), 0xff)),
      ),
    ),
  ]);

  const zoneCommon = (which: number): TermObj[] => [
    aml.name('_HOT', HOT_DK),
    aml.method('_TMP', {}, [beat(which), aml.return(TMP_DK)]),
  ];

  return [
    aml.scope(r.scope, [
      aml.thermalZone(r.kernelZone, [
        aml.name('EDGB', aml.buffer(initialRegion({ nonce: r.nonce, kernelPeriodDs: r.kernelPeriodMs / 100, ringLength: r.ringLength }))),
        aml.dataTableRegion('EDGR', 'SSDT', r.oemId, r.oemTableId),
        aml.field('EDGR', { access: 'AnyAcc', lock: false, update: 'Preserve' }, els),
        edbs,
        edbt,
        aml.name('_TZP', r.kernelPeriodMs / 100),
        ...zoneCommon(BEAT_KERNEL),
      ]),
      aml.thermalZone(r.agentZone, zoneCommon(BEAT_AGENT)),
    ]),
    // Module-level code: runs once when the table is loaded (the load marker).
    beat(BEAT_LOAD),
  ];
}

function findAll(hay: Uint8Array, needle: Uint8Array): number[] {
  const out: number[] = [];
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    out.push(i);
  }
  return out;
}

/** Build the diagnostic SSDT and its layout. Pure apart from the random nonce when none is given. */
export function buildDiagSsdt(options: DiagSsdtOptions = {}): DiagSsdt {
  const r = resolve(options);
  const header: TableHeaderFields = {
    signature: 'SSDT',
    revision: 2,
    oemId: r.oemId,
    oemTableId: r.oemTableId,
    oemRevision: r.oemRevision,
    creatorId: CREATOR_ID,
    creatorRevision: CREATOR_REVISION,
  };
  const marker = initialRegion({ nonce: r.nonce, kernelPeriodDs: r.kernelPeriodMs / 100, ringLength: r.ringLength }).subarray(0, 24);
  // The field offsets depend on where the region lands, which depends on the encoded size of the
  // fields before it (PkgLength sizes): iterate to the fixed point. It converges in a few rounds.
  let offset = 0;
  for (let round = 0; round < 8; round++) {
    const block = new DefinitionBlock(header, body(r, offset));
    const bytes = block.encode();
    const hits = findAll(bytes, marker);
    if (hits.length !== 1) throw new Error(`internal: region header found ${hits.length} times in the table`);
    const found = hits[0] as number;
    if (found === offset) return { aml: bytes, block, layout: layoutOf(r, bytes, offset) };
    offset = found;
  }
  throw new Error('internal: region offset did not converge');
}

function layoutOf(r: Resolved, table: Uint8Array, offset: number): DiagLayout {
  const fields = Object.fromEntries(Object.entries(Off).map(([k, v]) => [k, offset + v])) as Record<keyof typeof Off, number>;
  const zone = (seg: string) => `${r.scope.toString()}.${seg}`.replace('\\.', '\\');
  return {
    format: 'eve-diag-ssdt-layout',
    layoutVersion: LAYOUT_VERSION,
    table: {
      signature: 'SSDT',
      oemId: r.oemId,
      oemTableId: r.oemTableId,
      oemRevision: r.oemRevision,
      length: table.length,
      sha256: createHash('sha256').update(table).digest('hex'),
    },
    region: { offset, size: regionSize(r.ringLength), magic: REGION_MAGIC, headerSize: HEADER_SIZE },
    fields,
    ring: { offset: offset + Off.ring, length: r.ringLength },
    nonce: r.nonce.toString(16).padStart(16, '0'),
    kernel: { zone: zone(r.kernelZone), periodDs: r.kernelPeriodMs / 100, periodMs: r.kernelPeriodMs },
    agent: { zone: zone(r.agentZone) },
    temperature: { tmpDk: TMP_DK, hotDk: HOT_DK },
    timerUnitNs: TIMER_UNIT_NS,
  };
}
