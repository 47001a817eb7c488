/**
 * The diagnostic region: its binary layout, shared by the SSDT generator (acpi/diag/ssdt.ts) and the
 * host reader. The region is a run of bytes inside our own SSDT (a Buffer's explicit bytes) that AML
 * writes through a DataTableRegion (DESIGN fact 5). All integers are little-endian.
 *
 *   off size  field
 *   0   8     magic "EVEDIAGR"
 *   8   2     layout version (1)
 *   10  2     header size (64)
 *   12  4     region size (header + ring)
 *   16  8     nonce (random per build; the host matches it)
 *   24  2     kernel period in tenths of a second (_TZP)
 *   26  2     interval ring length (power of two)
 *   28  4     reserved (0)
 *   32  4     load count        (AML: incremented each time the table is loaded)
 *   36  4     load Timer        (AML: low 32 bits of Timer, 100 ns units, at the last load)
 *   40  4     kernel beats      (AML: _TMP of the polled zone)
 *   44  4     kernel last Timer
 *   48  4     agent beats       (AML: _TMP of the agent zone, read from userspace)
 *   52  4     agent last Timer
 *   56  4     armed bits        (bit 0: a kernel beat happened since the last load)
 *   60  1     checksum pad      (AML keeps the table's byte sum at zero, DESIGN fact 6)
 *   61  3     reserved
 *   64  4*N   ring of the last N kernel beat intervals (Timer deltas, 100 ns units); beat number b
 *             wrote slot b mod N
 */
export const REGION_MAGIC = 'EVEDIAGR';
export const LAYOUT_VERSION = 1;
export const HEADER_SIZE = 64;
export const TIMER_UNIT_NS = 100;

export const Off = {
  magic: 0,
  version: 8,
  headerSize: 10,
  regionSize: 12,
  nonce: 16,
  kernelPeriodDs: 24,
  ringLength: 26,
  loadCount: 32,
  loadTimer: 36,
  kernelBeats: 40,
  kernelLast: 44,
  agentBeats: 48,
  agentLast: 52,
  armed: 56,
  pad: 60,
  ring: 64,
} as const;

/**
 * Temperatures in tenths of a Kelvin: _TMP always returns TMP_DK; the only trip is _HOT at HOT_DK (DESIGN fact 3).
 *
 * Kernels since 6.6 (drivers/acpi/thermal_lib.c, `TEMP_MIN_DECIK`/`TEMP_MAX_DECIK`) treat a trip temperature
 * outside TRIP_MIN_DK..TRIP_MAX_DK (inclusive; -55..175 C, "full military grade") as bogus firmware data: a
 * zone whose only trip is out of range logs `[Firmware Bug]: No valid trip points!` and is never polled, so
 * there is no kernel heartbeat. Our former _HOT of 4732 dK (200 C) was exactly that on Debian's 6.12
 * (issue 8). 100 C sits in the middle of the range, 75 K from either bound and 75 K above the constant
 * _TMP, and is an ordinary _HOT for real hardware, so a future kernel that narrows the range still takes it.
 */
export const TMP_DK = 2982; // 25.0 C
export const HOT_DK = 3732; // 100.0 C
/** The trip temperatures every kernel accepts (thermal_lib.c), in dK. */
export const TRIP_MIN_DK = 2180;
export const TRIP_MAX_DK = 4480;

export const RING_MIN = 4; // below 3 DWORDs a field reads back as an Integer, not a Buffer
export const RING_MAX = 256;
export const PERIOD_MS_MIN = 100;
export const PERIOD_MS_MAX = 3_600_000;

export function regionSize(ringLength: number): number {
  return HEADER_SIZE + 4 * ringLength;
}

/** The static bytes the table carries for the region: header filled in, counters and ring zero. */
export function initialRegion(p: { nonce: bigint; kernelPeriodDs: number; ringLength: number }): Uint8Array {
  const size = regionSize(p.ringLength);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = REGION_MAGIC.charCodeAt(i);
  dv.setUint16(Off.version, LAYOUT_VERSION, true);
  dv.setUint16(Off.headerSize, HEADER_SIZE, true);
  dv.setUint32(Off.regionSize, size, true);
  dv.setBigUint64(Off.nonce, p.nonce, true);
  dv.setUint16(Off.kernelPeriodDs, p.kernelPeriodDs, true);
  dv.setUint16(Off.ringLength, p.ringLength, true);
  return out;
}

/**
 * What `ssdt build` writes beside the table (`<name>.json`) and what the host reader needs to find
 * and decode the region. Offsets are from the start of the table.
 */
export interface DiagLayout {
  format: 'eve-diag-ssdt-layout';
  layoutVersion: number;
  table: {
    signature: string;
    oemId: string;
    oemTableId: string;
    oemRevision: number;
    length: number;
    sha256: string;
  };
  region: { offset: number; size: number; magic: string; headerSize: number };
  /** Absolute offsets inside the table of each region field. */
  fields: Record<keyof typeof Off, number>;
  ring: { offset: number; length: number };
  nonce: string; // 16 hex digits
  kernel: { zone: string; periodDs: number; periodMs: number };
  agent: { zone: string };
  temperature: { tmpDk: number; hotDk: number };
  timerUnitNs: number;
}
