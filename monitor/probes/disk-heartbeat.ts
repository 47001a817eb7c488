import { open } from 'node:fs/promises';
import type { AppTarget, Probe, ProbeResult } from '../types.js';
import { errnoCode, errorText, failure, success, unknown } from './common.js';
import { DISK_SECTOR, DISK_SLOTS_DEFAULT, DISK_SLOTS_MAX, ringSlotsOf, scanDiskRing, type DiskRecord } from '../../protocol/heartbeat-disk.js';

/**
 * `disk-heartbeat`: the agent's records in the heartbeat disk image (format in protocol/heartbeat-disk.ts), read
 * as a plain file on the host. Success when the newest valid record's seq advanced within `maxAgeMs`
 * (host time of the run that saw it advance, so the resolution is the probe period). The first run
 * is a baseline (`unknown`), unless the image was not written for longer than `maxAgeMs`. Reads at
 * most `slots` sectors; a missing image is `unknown` (no transport), an unreadable one a failure.
 */

export interface DiskHeartbeatParams {
  /**
   * Sectors of the ring to read, at most 4096. Default: the ring size the agent wrote into its records
   * (read from the first 8 sectors, where its first records land), else 8.
   */
  slots?: number;
  /** How long the seq may stand still. Default: the scenario period. */
  maxAgeMs?: number;
}

export interface DiskHeartbeatContext {
  periodMs: number;
  now?: () => number;
  wallNow?: () => number;
}

interface State {
  path: string;
  since: number;
  seq?: bigint;
  instance?: bigint;
  changedAt?: number;
}

export class DiskHeartbeatProbe implements Probe {
  readonly kind = 'disk-heartbeat';
  readonly #slots: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #wallNow: () => number;
  #state: State | undefined;

  constructor(params: DiskHeartbeatParams, ctx: DiskHeartbeatContext) {
    this.#slots = params.slots ?? 0; // 0: the agent's geometry
    this.#maxAgeMs = params.maxAgeMs ?? ctx.periodMs;
    this.#now = ctx.now ?? (() => performance.now());
    this.#wallNow = ctx.wallNow ?? (() => Date.now());
    if (params.slots !== undefined && (!Number.isSafeInteger(this.#slots) || this.#slots < 1 || this.#slots > DISK_SLOTS_MAX)) {
      throw new RangeError(`slots: an integer 1..${DISK_SLOTS_MAX} (got ${this.#slots})`);
    }
    if (!(this.#maxAgeMs > 0)) throw new RangeError(`maxAgeMs: a positive number (got ${this.#maxAgeMs})`);
  }

  async run(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ProbeResult> {
    const path = target.heartbeatDisk;
    if (path === undefined) return unknown('no heartbeat disk configured');
    if (opts.signal.aborted) return unknown('aborted');
    const now = this.#now();
    let image: Uint8Array;
    let mtimeMs: number;
    let slots = this.#slots;
    let slotsFrom: 'config' | 'records' | 'default' = 'config';
    try {
      ({ image, mtimeMs } = await readHead(path, (slots || DISK_SLOTS_DEFAULT) * DISK_SECTOR));
      if (slots === 0) {
        // The agent's records say how big its ring is (it may not be our default of 8).
        const declared = ringSlotsOf(image, DISK_SLOTS_DEFAULT);
        slots = declared ?? DISK_SLOTS_DEFAULT;
        slotsFrom = declared === undefined ? 'default' : 'records';
        if (slots > DISK_SLOTS_DEFAULT) ({ image, mtimeMs } = await readHead(path, slots * DISK_SECTOR));
      }
    } catch (e) {
      const code = errnoCode(e);
      const ev = { heartbeatDisk: path, error: errorText(e), ...(code ? { errno: code } : {}) };
      return code === 'ENOENT' ? unknown(`heartbeat disk ${path}: not found`, ev) : failure(`heartbeat disk ${path}: ${errorText(e)}`, ev);
    }
    const scan = scanDiskRing(image, slots);
    let s = this.#state;
    const baseline = s === undefined || s.path !== path;
    if (s === undefined || s.path !== path) s = { path, since: now };
    this.#state = s;
    const r = scan.newest;
    const evidence: Record<string, unknown> = {
      heartbeatDisk: path,
      slots,
      slotsFrom,
      validRecords: scan.valid,
      invalidRecords: scan.invalid,
      maxAgeMs: this.#maxAgeMs,
      ...(r !== undefined ? recordEvidence(r, this.#wallNow()) : {}),
    };
    let advanced = false;
    if (r !== undefined) {
      if (s.seq !== undefined && r.seq !== s.seq) {
        advanced = true;
        if (r.seq < s.seq) evidence.seqWentBack = true; // the ring was rewritten (a new image?)
      }
      if (s.instance !== undefined && r.instance !== s.instance) evidence.agentRestarted = true;
      s.seq = r.seq;
      s.instance = r.instance;
      if (advanced) s.changedAt = now;
    }
    const ageMs = s.changedAt !== undefined ? now - s.changedAt : undefined;
    if (ageMs !== undefined) evidence.ageMs = Math.round(ageMs);
    const writtenAgoMs = this.#wallNow() - mtimeMs;
    if (baseline) {
      if (writtenAgoMs > this.#maxAgeMs) {
        return failure(`heartbeat disk not written for ${Math.round(writtenAgoMs / 1000)} s`, { ...evidence, writtenAgoMs: Math.round(writtenAgoMs) });
      }
      return unknown(r === undefined ? 'baseline: no valid record yet' : `baseline: seq ${r.seq}`, evidence);
    }
    if (advanced) return success(`seq advanced to ${String(r?.seq)}`, evidence);
    if (ageMs !== undefined && ageMs <= this.#maxAgeMs) return success(`seq ${String(s.seq)} advanced ${Math.round(ageMs)} ms ago`, evidence);
    const still = ageMs ?? now - s.since;
    if (still > this.#maxAgeMs) {
      return failure(r === undefined ? `no valid record in ${Math.round(still)} ms` : `seq stuck at ${r.seq} for ${Math.round(still)} ms`, evidence);
    }
    return unknown(`seq ${String(s.seq ?? 'none')} not advanced yet (${Math.round(still)} ms)`, evidence);
  }
}

function recordEvidence(r: DiskRecord, hostWallMs: number): Record<string, unknown> {
  return {
    seq: r.seq.toString(),
    uptimeMs: r.uptimeMs.toString(),
    wallMs: r.wallMs.toString(),
    instance: r.instance.toString(16).padStart(16, '0'),
    writerPeriodMs: r.periodMs,
    // Host wall minus the guest's wall at its last write: age plus clock skew (an indication only).
    wallLagMs: hostWallMs - Number(r.wallMs),
  };
}

async function readHead(path: string, max: number): Promise<{ image: Uint8Array; mtimeMs: number }> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    const n = Math.min(max, st.size);
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await fh.read(buf, got, n - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { image: new Uint8Array(buf.buffer, buf.byteOffset, got), mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}
