import { byteSum } from '../../../acpi/table.js';
import { type DiagLayout } from '../../../acpi/diag/layout.js';

/**
 * What the SSDT's EDBT method does to the table's bytes, in TypeScript (acpi/diag/ssdt.ts), so that
 * host-side tests can produce realistic regions: beat counters, Timer stamps, the interval ring,
 * the armed bit and the pad byte that keeps the table's byte sum at zero (DESIGN fact 6).
 */
export type Beat = 'kernel' | 'agent' | 'load';

export function simulateBeat(table: Uint8Array, layout: DiagLayout, which: Beat, timer: number): void {
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const f = layout.fields;
  const get = (off: number) => dv.getUint32(off, true);
  const set = (off: number, v: number) => dv.setUint32(off, v >>> 0, true);
  const now = timer >>> 0;
  if (which === 'kernel') {
    const b = (get(f.kernelBeats) + 1) >>> 0;
    if (get(f.armed) & 1) {
      set(layout.ring.offset + 4 * (b & (layout.ring.length - 1)), (now - get(f.kernelLast)) >>> 0);
    } else {
      set(f.armed, get(f.armed) | 1);
    }
    set(f.kernelBeats, b);
    set(f.kernelLast, now);
  } else if (which === 'agent') {
    set(f.agentBeats, get(f.agentBeats) + 1);
    set(f.agentLast, now);
  } else {
    set(f.loadCount, get(f.loadCount) + 1);
    set(f.loadTimer, now);
    set(f.armed, 0);
  }
  table[f.pad] = ((table[f.pad] ?? 0) - byteSum(table)) & 0xff;
}

/** Set a u32 field of the region directly (for states the AML would take long to reach). */
export function setField(table: Uint8Array, layout: DiagLayout, field: keyof DiagLayout['fields'], value: number): void {
  new DataView(table.buffer, table.byteOffset, table.byteLength).setUint32(layout.fields[field], value >>> 0, true);
  table[layout.fields.pad] = ((table[layout.fields.pad] ?? 0) - byteSum(table)) & 0xff;
}

export function regionOf(table: Uint8Array, layout: DiagLayout): Uint8Array {
  return table.subarray(layout.region.offset, layout.region.offset + layout.region.size);
}

/** Timer units (100 ns) per ms. */
export const MS = 10_000;
