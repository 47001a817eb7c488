import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ERST_SIZE } from '../../host-reader/qemu-args/index.js';
import { hex64, readErst, summarizeRecord, type DecodeErstOptions, type ErstReading, type PstoreDump } from '../../host-reader/erst/index.js';
import type { AppTarget, Artifact, Collector, CollectorResult } from '../types.js';
import { describeError, failed, formatBytes, jsonArtifact, textArtifact } from './common.js';

/**
 * The guest's panic log without its console: Linux's pstore writes the kernel log of an oops or a panic
 * to the ACPI ERST that `qemu-args --erst FILE` gives the VM, and QEMU keeps that store in FILE
 * (DESIGN fact 9). This collector reads FILE (the AppTarget's `erst`), decodes it (host-reader/erst) and
 * writes:
 *   - `pstore-dmesg.txt`: the kernel log of each dump (oops, panic...), oldest dump first, each under a
 *     `=== pstore Panic#1 ... ===` line, sanitized; cut at the head when too large (the newest survives);
 *   - `erst-records.json`: the store header, one summary per record (id, slot, time, type, part,
 *     compressed, bytes), the dumps, and the decode errors.
 * No record is `ok: true`; a store that does not decode is `ok: false` with the error, and what did decode.
 */

/** The largest backing file read: eve-diag's stores are ERST_SIZE (64 KiB); QEMU allows other sizes. */
export const ERST_LOG_MAX_FILE_BYTES = 16 * ERST_SIZE;
/** What erst-records.json may take of the collector's budget at most. */
const JSON_MAX_BYTES = 64 * 1024;

export interface ErstLogOptions {
  /** Refuse a backing file larger than this. Default ERST_LOG_MAX_FILE_BYTES (1 MiB). */
  maxFileBytes?: number;
  /** The decoder's limits (per-record and total inflated text). */
  decode?: Pick<DecodeErstOptions, 'maxInflatedBytes' | 'maxTotalTextBytes'>;
  /** Artifact names. Defaults `pstore-dmesg.txt` and `erst-records.json`. */
  textName?: string;
  jsonName?: string;
}

/** Reads a regular file of at most `max` bytes, not through a symbolic link, never blocking on a FIFO. */
async function readStoreFile(path: string, max: number, signal: AbortSignal): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new Error(`${path} is a symbolic link (not followed)`, { cause: e });
    if (code === 'ENOENT') throw new Error(`${path} does not exist (has QEMU started with --erst?)`, { cause: e });
    throw e;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    if (st.size > max) throw new Error(`${path} has ${st.size} bytes, more than the ${max} read`);
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < buf.length) {
      if (signal.aborted) throw new Error('aborted while reading the store');
      const { bytesRead } = await handle.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break; // shrunk meanwhile: decode what is there
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } finally {
    await handle.close();
  }
}

function dumpName(d: PstoreDump): string {
  return d.reason === undefined ? 'dmesg' : `${d.reason}#${d.dumpCount ?? '?'}`;
}

function isoTime(t: number | undefined): string | undefined {
  return t !== undefined && t <= 8.64e12 ? new Date(t * 1000).toISOString() : undefined;
}

function dumpHeading(d: PstoreDump): string {
  const parts = d.complete ? `${d.parts.length} part(s)` : `parts ${d.parts.join(',')} (incomplete)`;
  const time = isoTime(d.timestamp);
  return `=== pstore ${dumpName(d)}: ${parts}, record(s) ${d.recordIds.map(hex64).join(',')}${time === undefined ? '' : `, ${time}`} ===\n`;
}

/** The JSON written as erst-records.json. */
function recordsJson(file: string, bytes: number, reading: ErstReading): unknown {
  return {
    file,
    bytes,
    initialized: reading.initialized,
    header: reading.header ?? null,
    records: reading.records.map(summarizeRecord),
    dumps: reading.dumps.map((d) => ({
      reason: d.reason ?? null,
      dumpCount: d.dumpCount ?? null,
      parts: d.parts,
      complete: d.complete,
      recordIds: d.recordIds.map(hex64),
      timestamp: d.timestamp ?? null,
      time: isoTime(d.timestamp) ?? null,
      textBytes: Buffer.byteLength(d.text, 'utf8'),
    })),
    errors: reading.errors.map((e) => ({ field: e.field, message: e.message, offset: e.offset ?? null })),
  };
}

export class ErstLogCollector implements Collector {
  readonly kind = 'erst-log';
  readonly #maxFileBytes: number;
  readonly #decode: DecodeErstOptions;
  readonly #textName: string;
  readonly #jsonName: string;

  constructor(options: ErstLogOptions = {}) {
    this.#maxFileBytes = options.maxFileBytes ?? ERST_LOG_MAX_FILE_BYTES;
    if (!Number.isSafeInteger(this.#maxFileBytes) || this.#maxFileBytes < 1) {
      throw new RangeError(`ErstLogCollector: maxFileBytes must be an integer >= 1, got ${String(options.maxFileBytes)}`);
    }
    this.#decode = { ...options.decode, maxStoreBytes: this.#maxFileBytes };
    this.#textName = options.textName ?? 'pstore-dmesg.txt';
    this.#jsonName = options.jsonName ?? 'erst-records.json';
  }

  async collect(target: AppTarget, opts: { timeoutMs: number; signal: AbortSignal; maxBytes: number }): Promise<CollectorResult> {
    if (target.erst === undefined) return failed('erst-log: no ERST file configured');
    if (opts.signal.aborted) return failed('erst-log: aborted before it started');
    let bytes: Buffer;
    try {
      bytes = await readStoreFile(target.erst, this.#maxFileBytes, opts.signal);
    } catch (error) {
      return failed(`erst-log: ${describeError(error)}`);
    }
    const reading = readErst(bytes, this.#decode);

    const json = jsonArtifact(this.#jsonName, recordsJson(target.erst, bytes.length, reading), Math.min(opts.maxBytes, JSON_MAX_BYTES));
    const artifacts: Artifact[] = [];
    const dumps = reading.dumps;
    if (dumps.length > 0) {
      const jsonBytes = typeof json.data === 'string' ? Buffer.byteLength(json.data, 'utf8') : json.data.length;
      const text = dumps.map((d) => dumpHeading(d) + (d.text.endsWith('\n') || d.text === '' ? d.text : `${d.text}\n`)).join('');
      artifacts.push(textArtifact(this.#textName, text, Math.max(0, opts.maxBytes - jsonBytes), 'tail'));
    }
    artifacts.push(json);

    const what = dumps.length === 0 ? '' : `: ${dumps.map((d) => `${dumpName(d)} (${d.parts.length} part(s), ${formatBytes(Buffer.byteLength(d.text, 'utf8'))} of log${isoTime(d.timestamp) === undefined ? '' : `, ${isoTime(d.timestamp)}`})`).join(', ')}`;
    const records = `${reading.records.length} record(s)`;
    const first = reading.errors[0];
    if (first !== undefined) {
      const more = reading.errors.length > 1 ? ` and ${reading.errors.length - 1} more error(s)` : '';
      return failed(`erst-log: corrupt ERST store: ${describeError(first)}${more}; read ${records}${what}`, artifacts);
    }
    if (!reading.initialized) return { ok: true, summary: 'erst-log: no record (QEMU has not initialized the ERST store yet)', artifacts };
    if (reading.records.length === 0) return { ok: true, summary: `erst-log: no record in the ERST store (${formatBytes(bytes.length)})`, artifacts };
    return { ok: true, summary: `erst-log: ${records}${what}`, artifacts };
  }
}
