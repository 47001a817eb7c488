import type { DiagLayout } from '../acpi/diag/layout.js';
import type { GuestMemory } from './memory/guest-memory.js';
import type { QmpClient } from './qmp/index.js';
import { assessHeartbeat, type AssessOptions, type AssessState, type HeartbeatReport } from './region/assess.js';
import { decodeRegion, type DecodedRegion } from './region/decode.js';
import { discoverTable, parseMtreeLowRam, verifyAt, type Discovery } from './region/discover.js';

export interface Snapshot {
  /** Host monotonic ms of the read. */
  at: number;
  address: bigint;
  region: DecodedRegion;
  /** The table's bytes in guest memory sum to zero. */
  checksumOk: boolean;
  table: Uint8Array;
  /** Set when this read had to (re)discover the table; the discovery's cost. */
  discovery?: Discovery;
}

/** The table could be found, but its region does not decode (a guest scribbling over it). */
export class RegionDecodeError extends Error {
  override name = 'RegionDecodeError';
  constructor(
    readonly address: bigint,
    readonly field: string,
    reason: string,
  ) {
    super(`region at 0x${address.toString(16)}: ${field}: ${reason}`);
  }
}

/**
 * Finds our table in guest RAM and reads its region. The address is cached and re-checked on every
 * read (header, magic, nonce); a mismatch, or `invalidate()` after a RESET, triggers a new scan.
 * Low RAM comes from HMP `info mtree -f` (DESIGN fact 7).
 */
export class RegionReader {
  #address: bigint | undefined;
  constructor(
    private readonly qmp: QmpClient,
    private readonly memory: GuestMemory,
    readonly layout: DiagLayout,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get address(): bigint | undefined {
    return this.#address;
  }

  invalidate(): void {
    this.#address = undefined;
  }

  async locate(signal?: AbortSignal): Promise<Discovery> {
    const ram = parseMtreeLowRam(await this.qmp.hmp('info mtree -f', { signal }));
    const d = await discoverTable(this.memory, this.layout, { lowRamTop: ram.lowRamTop, ranges: ram.lowRanges, signal });
    this.#address = d.address;
    return d;
  }

  async read(signal?: AbortSignal): Promise<Snapshot> {
    let discovery: Discovery | undefined;
    if (this.#address === undefined) discovery = await this.locate(signal);
    let v = await verifyAt(this.memory, this.#address as bigint, this.layout, { signal });
    if (!v.ok && discovery === undefined) {
      discovery = await this.locate(signal);
      v = await verifyAt(this.memory, this.#address as bigint, this.layout, { signal });
    }
    const address = this.#address as bigint;
    if (!v.ok) throw new RegionDecodeError(address, 'table', v.reason);
    const r = decodeRegion(v.region, { nonce: this.layout.nonce, ringLength: this.layout.ring.length });
    if (!r.ok) throw new RegionDecodeError(address, r.field, r.reason);
    return { at: this.now(), address, region: r.region, checksumOk: v.checksumOk ?? false, table: v.table, ...(discovery ? { discovery } : {}) };
  }
}

export interface Poll {
  report: HeartbeatReport;
  snapshot?: Snapshot;
  error?: Error;
}

/**
 * One heartbeat poll: QEMU's run state (`query-status`), the region, the assessment. A paused VM is
 * reported as paused, never as hung; a RESET event since the last poll forces a rescan and a new
 * baseline.
 */
export class HeartbeatPoller {
  #state: AssessState | undefined;
  #resetSeen = false;
  #unsubscribe: () => void;

  constructor(
    private readonly qmp: QmpClient,
    readonly reader: RegionReader,
    private readonly options: AssessOptions = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#unsubscribe = qmp.on('RESET', () => {
      this.#resetSeen = true;
      reader.invalidate();
    });
  }

  async poll(signal?: AbortSignal): Promise<Poll> {
    const status = await this.qmp.queryStatus({ signal });
    const vm = { running: status.running, status: status.status };
    let snapshot: Snapshot | undefined;
    let error: Error | undefined;
    try {
      snapshot = await this.reader.read(signal);
    } catch (e) {
      if (signal?.aborted) throw e;
      error = e as Error;
    }
    const resetSeen = this.#resetSeen;
    // A failed read assesses nothing: keep the RESET for the next decoded sample, else the old boot's
    // table (still in RAM until the firmware rewrites it) would continue the old baseline.
    if (snapshot !== undefined) this.#resetSeen = false;
    const { report, state } = assessHeartbeat(
      {
        previous: this.#state,
        sample: snapshot?.region,
        sampleError: error?.message,
        now: this.now(),
        kernelPeriodMs: this.reader.layout.kernel.periodMs,
        vm,
        resetSeen,
      },
      this.options,
    );
    this.#state = state;
    return { report, ...(snapshot ? { snapshot } : {}), ...(error ? { error } : {}) };
  }

  close(): void {
    this.#unsubscribe();
  }
}
