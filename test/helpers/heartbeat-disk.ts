import { diskSlotOffset, DISK_SECTOR, encodeDiskRecord, type DiskRecord } from '../../protocol/heartbeat-disk.js';

/** A record with plausible fields for `seq`. */
export const rec = (seq: bigint, over: Partial<DiskRecord> = {}): DiskRecord => ({
  seq,
  uptimeMs: 1000n * seq,
  wallMs: 1_764_000_000_000n + 1000n * seq,
  instance: 0xfeedn,
  periodMs: 1000,
  slots: 8,
  ...over,
});

/** A ring image as the agent would leave it after writing `seqs`. */
export function ring(seqs: bigint[], slots = 8, over: Partial<DiskRecord> = {}): Uint8Array {
  const img = new Uint8Array(slots * DISK_SECTOR);
  for (const s of seqs) img.set(encodeDiskRecord(rec(s, { slots, ...over })), diskSlotOffset(s, slots));
  return img;
}
