import { hex64 } from './bytes.js';
import { CPER_SEVERITIES, decodeCperRecord, type CperRecordHeader } from './cper.js';
import { ErstDecodeError } from './errors.js';
import { decodePstoreRecord, isPstoreRecord, parseDumpLine, PSTORE_MAX_INFLATED_BYTES, type PstoreRecord } from './pstore.js';
import { decodeStore, type DecodeStoreOptions, type ErstStoreHeader } from './store.js';

/**
 * A whole ERST store decoded: QEMU's slots (store.ts), each slot's CPER record (cper.ts), pstore's view
 * of it (pstore.ts), and the kmsg dumps the pstore dmesg records make, their parts joined.
 */

export interface ErstRecord {
  /** Slot index in the store file. */
  slot: number;
  /** The record id (the store's map and the CPER header agree on it). */
  recordId: bigint;
  /** The CPER record header. */
  cper: CperRecordHeader;
  /** `pstore` for Linux's pstore records, else the creator GUID. */
  creator: string;
  /** Present for pstore records. */
  pstore?: PstoreRecord;
}

/** One kmsg dump (an oops, a panic...): its pstore dmesg parts joined, oldest lines first. */
export interface PstoreDump {
  /** `Panic`, `Oops`...; undefined when the parts had no `Reason#N PartM` line. */
  reason?: string;
  dumpCount?: number;
  /** The record ids of its parts, part 1 (the newest lines) first. */
  recordIds: bigint[];
  /** Part numbers present, ascending. */
  parts: number[];
  /** Parts 1..n are all there. */
  complete: boolean;
  /** Newest record timestamp (Unix seconds), when the records have one. */
  timestamp?: number;
  /** The log, oldest part first, without the parts' `Reason#N PartM` lines. */
  text: string;
}

export interface ErstContents {
  initialized: boolean;
  header?: ErstStoreHeader;
  /** Records in record id order (Linux's ids count up from the boot's time: oldest first). */
  records: ErstRecord[];
  /** Dumps, oldest first. */
  dumps: PstoreDump[];
}

export interface DecodeErstOptions extends DecodeStoreOptions {
  /** Most bytes one record may inflate to (default PSTORE_MAX_INFLATED_BYTES). */
  maxInflatedBytes?: number;
  /** Most text all records together may inflate to (default 8 MiB); past it a record is an error. */
  maxTotalTextBytes?: number;
}

export const ERST_MAX_TOTAL_TEXT_BYTES = 8 * 1024 * 1024;

/** What could be read from a store: what decoded, and the errors of what did not. */
export interface ErstReading extends ErstContents {
  /** The first is the store's own error when nothing could be read; otherwise one per bad record. */
  errors: ErstDecodeError[];
}

const byId = (a: { recordId: bigint }, b: { recordId: bigint }) => (a.recordId < b.recordId ? -1 : a.recordId > b.recordId ? 1 : 0);

/**
 * Reads what it can: a store whose header does not decode gives no record and that error; a record that
 * does not decode is left out and its error listed. Never throws for any input.
 */
export function readErst(bytes: Uint8Array, options: DecodeErstOptions = {}): ErstReading {
  let store;
  try {
    store = decodeStore(bytes, options);
  } catch (e) {
    if (e instanceof ErstDecodeError) return { initialized: true, records: [], dumps: [], errors: [e] };
    throw e;
  }
  const errors: ErstDecodeError[] = [];
  const records: ErstRecord[] = [];
  const perRecord = options.maxInflatedBytes ?? PSTORE_MAX_INFLATED_BYTES;
  let textLeft = options.maxTotalTextBytes ?? ERST_MAX_TOTAL_TEXT_BYTES;
  for (const slot of store.slots) {
    try {
      let cper;
      try {
        cper = decodeCperRecord(slot.data);
      } catch (e) {
        throw e instanceof ErstDecodeError ? e.within(`slot[${slot.index}]`, slot.offset) : e;
      }
      if (cper.header.recordId !== slot.recordId) {
        throw new ErstDecodeError(`slot[${slot.index}].cper.recordId`, `0x${hex64(cper.header.recordId)}, the map says 0x${hex64(slot.recordId)}`, slot.offset + 96);
      }
      const record: ErstRecord = { slot: slot.index, recordId: slot.recordId, cper: cper.header, creator: cper.header.creatorId };
      if (isPstoreRecord(cper)) {
        record.creator = 'pstore';
        try {
          record.pstore = decodePstoreRecord(cper, { maxInflatedBytes: Math.min(perRecord, textLeft) });
        } catch (e) {
          throw e instanceof ErstDecodeError ? e.within(`slot[${slot.index}]`, slot.offset) : e;
        }
        textLeft -= Buffer.byteLength(record.pstore.text ?? '', 'utf8');
      }
      records.push(record);
    } catch (e) {
      if (!(e instanceof ErstDecodeError)) throw e;
      errors.push(e);
    }
  }
  records.sort(byId);
  const out: ErstReading = { initialized: store.initialized, records, dumps: joinDumps(records), errors };
  if (store.header !== undefined) out.header = store.header;
  return out;
}

/** The store decoded, or the ErstDecodeError of the first thing in it that does not decode. */
export function decodeErst(bytes: Uint8Array, options: DecodeErstOptions = {}): ErstContents {
  const { errors, ...contents } = readErst(bytes, options);
  if (errors[0] !== undefined) throw errors[0];
  return contents;
}

/**
 * Groups pstore dmesg records (in id order) into dumps: consecutive records of one `Reason#N` whose part
 * numbers go up are one dump; the same `Reason#N` at part 1 again is a later dump (a later boot).
 */
export function joinDumps(records: readonly ErstRecord[]): PstoreDump[] {
  interface Group {
    key: string | undefined;
    lastPart: number;
    members: ErstRecord[];
  }
  const groups: Group[] = [];
  for (const r of records) {
    const p = r.pstore;
    if (p?.type !== 'dmesg' || p.text === undefined) continue;
    const key = p.reason === undefined ? undefined : `${p.reason}#${p.dumpCount}`;
    const last = groups.at(-1);
    if (last !== undefined && key !== undefined && last.key === key && p.part !== undefined && p.part > last.lastPart) {
      last.members.push(r);
      last.lastPart = p.part;
    } else {
      groups.push({ key, lastPart: p.part ?? 0, members: [r] });
    }
  }
  return groups.map((g) => {
    const members = [...g.members].sort((a, b) => (a.pstore?.part ?? 0) - (b.pstore?.part ?? 0));
    const first = members[0]?.pstore;
    const parts = members.map((m) => m.pstore?.part ?? 0);
    const text = [...members]
      .reverse()
      .map((m) => {
        const t = m.pstore?.text ?? '';
        const line = parseDumpLine(t);
        return line === undefined ? t : t.slice(line.length);
      })
      .join('');
    const times = members.map((m) => m.cper.timestamp).filter((t): t is number => t !== undefined);
    const dump: PstoreDump = {
      recordIds: members.map((m) => m.recordId),
      parts,
      complete: parts.every((p, i) => p === i + 1),
      text,
    };
    if (first?.reason !== undefined) dump.reason = first.reason;
    if (first?.dumpCount !== undefined) dump.dumpCount = first.dumpCount;
    if (times.length > 0) dump.timestamp = Math.max(...times);
    return dump;
  });
}

/** A record for humans and JSON: ids as hex, the severity by name, the time as ISO 8601. */
export function summarizeRecord(r: ErstRecord): Record<string, string | number | boolean | null> {
  const t = r.cper.timestamp;
  return {
    id: hex64(r.recordId),
    slot: r.slot,
    creator: r.creator,
    timestamp: t ?? null,
    time: t !== undefined && t <= 8.64e12 ? new Date(t * 1000).toISOString() : null,
    severity: CPER_SEVERITIES[r.cper.errorSeverity] ?? r.cper.errorSeverity,
    type: r.pstore?.type ?? 'cper',
    reason: r.pstore?.reason ?? null,
    dumpCount: r.pstore?.dumpCount ?? null,
    part: r.pstore?.part ?? null,
    compressed: r.pstore?.compressed ?? false,
    compression: r.pstore?.compression ?? null,
    recordBytes: r.cper.recordLength,
    bytes: r.pstore?.storedBytes ?? r.cper.recordLength,
    textBytes: r.pstore?.text === undefined ? null : Buffer.byteLength(r.pstore.text, 'utf8'),
  };
}
