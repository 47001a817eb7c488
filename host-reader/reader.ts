import type { DiagLayout } from '../acpi/diag/layout.js';
import type { GuestMemory } from './memory/guest-memory.js';
import type { QmpClient, QmpEventListener, QmpStatus } from './qmp/index.js';
import { assessHeartbeat, type AssessOptions, type AssessState, type HeartbeatReport } from './region/assess.js';
import { decodeRegion, type DecodedRegion } from './region/decode.js';
import { byteSum } from '../acpi/table.js';
import { discoverTable, parseMtreeLowRam, verifyAt, verifyAtSync, type Discovery, type VerifyResult } from './region/discover.js';

export interface Snapshot {
  /** Host monotonic ms of the read. */
  at: number;
  address: bigint;
  region: DecodedRegion;
  /**
   * The table's bytes in guest memory sum to zero. RegionReader.read reads a table that does not sum
   * to zero once more (a torn read); readSync's snapshot sums its one read.
   */
  checksumOk: boolean;
  table: Uint8Array;
  /** Set when this read had to (re)discover the table; the discovery's cost. */
  discovery?: Discovery;
}

/** A Snapshot whose checksumOk is the table's byte sum, taken when read (RegionReader.readSync). */
class LazySumSnapshot implements Snapshot {
  #sum: boolean | undefined;
  constructor(
    readonly at: number,
    readonly address: bigint,
    readonly region: DecodedRegion,
    readonly table: Uint8Array,
  ) {}

  get checksumOk(): boolean {
    return (this.#sum ??= byteSum(this.table) === 0);
  }
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
    private qmp: QmpClient,
    private readonly memory: GuestMemory,
    readonly layout: DiagLayout,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get address(): bigint | undefined {
    return this.#address;
  }

  /** Use `qmp` for later HMP calls (a new connection to the same QEMU); the address is kept. */
  rebind(qmp: QmpClient): void {
    this.qmp = qmp;
  }

  /** Forget the address (a RESET): the next read scans again, and a memory that translates addresses (procmem) re-translates first. */
  invalidate(): void {
    this.#address = undefined;
    this.#retranslate = true;
  }

  #retranslate = false;

  async locate(signal?: AbortSignal): Promise<Discovery> {
    if (this.#retranslate) {
      this.#retranslate = false;
      await this.memory.reopen?.(signal);
    }
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
    // A running guest's AML stores a value and then the pad that keeps the sum at zero (DESIGN fact
    // 6): a read between the two is torn. Read once more before calling the checksum invalid.
    if (v.ok && v.checksumOk === false) {
      const again = await verifyAt(this.memory, this.#address as bigint, this.layout, { signal });
      if (again.ok) v = again;
    }
    return this.#snapshot(v, discovery);
  }

  /**
   * `read` answered at once: the table at the cached address, read synchronously (GuestMemory.readSync)
   * and verified. Undefined when that is not possible (no address yet, a memory that cannot read at
   * once, a failed read, a table that no longer matches): the caller awaits `read`, which rescans and
   * says why. Throws RegionDecodeError like `read` for a matching table whose region does not decode.
   */
  readSync(): Snapshot | undefined {
    if (this.#address === undefined) return undefined;
    const v = verifyAtSync(this.memory, this.#address, this.layout);
    if (v === undefined || !v.ok) return undefined;
    // verifyAtSync leaves the sum out: computed when somebody reads it (a poll does not).
    return new LazySumSnapshot(this.now(), this.#address, this.#decode(v), v.table);
  }

  #snapshot(v: VerifyResult, discovery: Discovery | undefined): Snapshot {
    const address = this.#address as bigint;
    if (!v.ok) throw new RegionDecodeError(address, 'table', v.reason);
    const snapshot: Snapshot = { at: this.now(), address, region: this.#decode(v), checksumOk: v.checksumOk ?? false, table: v.table };
    if (discovery) snapshot.discovery = discovery;
    return snapshot;
  }

  /** The verified table's region, decoded; RegionDecodeError when the region does not decode. */
  #decode(v: Extract<VerifyResult, { ok: true }>): DecodedRegion {
    const r = decodeRegion(v.region, { nonce: this.layout.nonce, ringLength: this.layout.ring.length });
    if (!r.ok) throw new RegionDecodeError(this.#address as bigint, r.field, r.reason);
    return r.region;
  }
}

export interface Poll {
  report: HeartbeatReport;
  snapshot?: Snapshot;
  error?: Error;
}

/** Events that change or tell QEMU's run state: the next poll asks `query-status` after one. */
export const RUN_STATE_EVENTS = ['STOP', 'RESUME', 'RESET', 'SHUTDOWN', 'POWERDOWN', 'SUSPEND', 'WAKEUP', 'GUEST_PANICKED', 'GUEST_CRASHLOADED'] as const;

/**
 * With no run-state event for this long, the poller asks `query-status` again: a lost event (an event
 * queue that overflowed) is noticed within it. A reading that looks like trouble does not wait for it
 * (CONFIRM_MS).
 */
export const STATUS_REFRESH_MS = 60_000;

/**
 * A late or stalled heartbeat is reported only with a run state QEMU gave at most this long ago:
 * pollSync sends such a poll to poll(), which asks `query-status` first. A pause whose STOP event was
 * lost, or a QEMU that stopped answering (SIGSTOP), is then `paused` or a failed poll, never a hung kernel.
 */
export const CONFIRM_MS = 1000;

/** A background status refresh (pollSync) out for longer than this: the next poll waits for QEMU itself. */
export const REFRESH_WAIT_MS = 1000;

export interface HeartbeatPollerOptions {
  /** Ask `query-status` when no event came for this long; default STATUS_REFRESH_MS. */
  statusRefreshMs?: number;
}

/** A report that says the heartbeat `signal` is late or stalled. */
function troubled(r: HeartbeatReport, signal: 'kernel' | 'agent'): boolean {
  const st = r[signal].status;
  return st === 'late' || st === 'stalled';
}

/**
 * One heartbeat poll: QEMU's run state, the region, the assessment. A paused VM is reported as paused,
 * never as hung; a RESET event since the last poll forces a rescan and a new baseline.
 *
 * The run state follows QMP events: `query-status` is asked at the first poll, at the poll after any
 * run-state event (STOP, RESUME, RESET, SHUTDOWN...; the event says that it changed, the query says
 * to what: `paused`, `debug`, `guest-panicked`...), and when no event was seen for
 * `statusRefreshMs` (60 s: a lost event is noticed within that), and before a late or stalled
 * heartbeat is reported (CONFIRM_MS: the trouble is told with a run state at most 1 s old, so a
 * pause whose event was lost or a QEMU that stopped answering is never a hung kernel). In between a
 * poll makes no QMP round trip of its own, so over `procmem` a steady poll costs QEMU nothing;
 * `pollSync` asks the refresh in the background. A lost QMP connection makes the next poll ask (and
 * fail).
 */
export class HeartbeatPoller {
  #state: AssessState | undefined;
  #resetSeen = false;
  #unsubscribe: () => void;
  #events: QmpEventListener;
  #status: QmpStatus | undefined;
  #statusAt = 0;
  readonly #refreshMs: number;
  #statusQueries = 0;
  /** A run-state event was taken and no query-status answered since. */
  #changed = false;
  /** pollSync's background `query-status` (the refresh) while it is out, since when, and how the last one failed. */
  #refreshing: Promise<void> | undefined;
  #refreshSince = 0;
  #refreshError: Error | undefined;

  constructor(
    private qmp: QmpClient,
    readonly reader: RegionReader,
    private readonly options: AssessOptions = {},
    private readonly now: () => number = () => performance.now(),
    pollerOptions: HeartbeatPollerOptions = {},
  ) {
    this.#refreshMs = pollerOptions.statusRefreshMs ?? STATUS_REFRESH_MS;
    if (!(this.#refreshMs >= 0)) throw new RangeError(`statusRefreshMs: >= 0 (got ${String(this.#refreshMs)})`);
    [this.#unsubscribe, this.#events] = this.#subscribe(qmp);
  }

  #subscribe(qmp: QmpClient): [() => void, QmpEventListener] {
    const off = qmp.on('RESET', () => {
      this.#resetSeen = true;
      this.reader.invalidate();
    });
    return [off, qmp.events(RUN_STATE_EVENTS, { maxQueue: 64 })];
  }

  /**
   * Go on over `qmp`, a new connection to the same QEMU (the monitor lets go of an EVE VM's `qmp`
   * between uses): the assessment's history and the table's address are kept; the run state is asked
   * again, since events sent while nobody was connected are lost. A RESET missed meanwhile still
   * shows in the region (its load count, its beats going back).
   */
  rebind(qmp: QmpClient): void {
    if (qmp === this.qmp) return;
    this.#unsubscribe();
    this.#events.close();
    this.qmp = qmp;
    this.reader.rebind(qmp);
    [this.#unsubscribe, this.#events] = this.#subscribe(qmp);
    this.#status = undefined;
    this.#changed = false;
  }

  /** `query-status` calls made so far (tests, benchmarks). */
  get statusQueries(): number {
    return this.#statusQueries;
  }

  async #runState(signal?: AbortSignal): Promise<QmpStatus> {
    // Queued events are taken synchronously: get() resolves at once while the queue is not empty.
    while (this.#events.queued > 0) {
      await this.#events.get();
      this.#changed = true;
    }
    const stale = this.now() - this.#statusAt >= this.#refreshMs;
    if (this.#status === undefined || this.#changed || stale || this.#events.ended) {
      this.#statusQueries++;
      const status = await this.qmp.queryStatus({ signal });
      // An event that arrived while the query was out is for the next poll (it stays queued).
      this.#changed = false;
      this.#status = status;
      this.#statusAt = this.now();
      this.#refreshError = undefined;
    }
    return this.#status;
  }

  /** The refresh pollSync asks for: query-status in the background; the poll goes on with the known state. */
  #refreshInBackground(): void {
    this.#statusQueries++;
    this.#refreshSince = this.now();
    const refresh: Promise<void> = this.qmp
      .queryStatus()
      .then(
        (status) => {
          this.#status = status;
          this.#statusAt = this.now();
        },
        (e: unknown) => {
          this.#refreshError = e as Error;
        },
      )
      .then(() => {
        if (this.#refreshing === refresh) this.#refreshing = undefined;
      });
    this.#refreshing = refresh;
  }

  async poll(signal?: AbortSignal): Promise<Poll> {
    const status = await this.#runState(signal);
    let snapshot: Snapshot | undefined;
    let error: Error | undefined;
    try {
      snapshot = await this.reader.read(signal);
    } catch (e) {
      if (signal?.aborted) throw e;
      error = e as Error;
    }
    return this.#assess(status, snapshot, error);
  }

  /**
   * `poll` answered at once, with no QMP round trip and no promise: when the run state is known and
   * current (no event queued, not stale) and the region reads synchronously (RegionReader.readSync).
   * Undefined otherwise: the caller awaits `poll`. This is the steady state over procmem. `signal`
   * is the heartbeat the caller judges: its late or stalled reading goes to `poll` unless the run
   * state is at most CONFIRM_MS old (the other signal's lateness is the other probe's business).
   */
  pollSync(signal: 'kernel' | 'agent' = 'kernel'): Poll | undefined {
    const status = this.#status;
    if (status === undefined || this.#changed || this.#events.queued > 0 || this.#events.ended || this.#refreshError !== undefined) return undefined;
    // The refresh (no event for refreshMs) is asked in the background: the state known until it
    // answers is the state the events said. One that fails, or is out for longer than REFRESH_WAIT_MS
    // (QEMU stopped answering), sends the next poll to poll(), which asks and reports it.
    if (this.#refreshing !== undefined) {
      if (this.now() - this.#refreshSince > REFRESH_WAIT_MS) return undefined;
    } else if (this.now() - this.#statusAt >= this.#refreshMs) {
      this.#refreshInBackground();
    }
    let snapshot: Snapshot | undefined;
    try {
      snapshot = this.reader.readSync();
    } catch {
      return undefined; // a region that does not decode: poll() reports it
    }
    if (snapshot === undefined) return undefined;
    const p = this.#assess(status, snapshot, undefined);
    if (troubled(p.report, signal) && this.now() - this.#statusAt > CONFIRM_MS) {
      // Trouble is told with a fresh run state: poll() asks QEMU, then reads again.
      this.#changed = true;
      return undefined;
    }
    return p;
  }

  #assess(status: QmpStatus, snapshot: Snapshot | undefined, error: Error | undefined): Poll {
    const vm = { running: status.running, status: status.status };
    const resetSeen = this.#resetSeen;
    // A failed read assesses nothing: keep the RESET for the next decoded sample, else the old boot's
    // table (still in RAM until the firmware rewrites it) would continue the old baseline.
    if (snapshot !== undefined) this.#resetSeen = false;
    const { report, state } = assessHeartbeat(
      {
        previous: this.#state,
        sample: snapshot?.region,
        ...(error !== undefined ? { sampleError: error.message } : {}),
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
    this.#events.close();
  }
}
