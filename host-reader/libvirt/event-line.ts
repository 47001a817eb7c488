/**
 * The lines virsh prints for a domain's events, decoded (pure). Two streams:
 * - `virsh qemu-monitor-event --domain D --loop`: QEMU's own QMP events, passed through by libvirt:
 *   `event STOP at 1796418731.031861 for domain 'D': <null>` or `...: {"guest":false,"reason":"host-signal"}`.
 * - `virsh event --domain D --event lifecycle --loop`: libvirt's lifecycle:
 *   `event 'lifecycle' for domain 'D': Stopped Destroyed`.
 * The data is QEMU's (and so partly the guest's): bounded, depth-checked, and an object or nothing.
 */
import type { QmpEvent } from '../qmp/events.js';
import { isObject, jsonNestsDeeper } from '../qmp/messages.js';

/** Longest event line taken (QEMU's event data is small; a longer line is refused, not parsed). */
export const MAX_EVENT_LINE_BYTES = 64 * 1024;

const QEMU_EVENT = /^event ([A-Z0-9_]{1,64}) at (\d{1,12})\.(\d{6}) for domain '(.*)': (.*)$/s;
const LIFECYCLE = /^event 'lifecycle' for domain '(.*)': ([A-Za-z]{1,32})(?: ([A-Za-z ]{0,64}))?$/s;

export type LifecycleKind = 'Defined' | 'Undefined' | 'Started' | 'Suspended' | 'Resumed' | 'Stopped' | 'Shutdown' | 'PMSuspended' | 'Crashed';
const LIFECYCLE_KINDS: readonly string[] = ['Defined', 'Undefined', 'Started', 'Suspended', 'Resumed', 'Stopped', 'Shutdown', 'PMSuspended', 'Crashed'];

export interface LifecycleEvent {
  kind: LifecycleKind;
  /** libvirt's detail words (`Destroyed`, `Finished after host request`), as printed. */
  detail: string;
}

/** One line of `qemu-monitor-event` for `domain`, as the QMP event QEMU sent; undefined for any other line. */
export function parseQemuEventLine(line: string, domain: string): QmpEvent | undefined {
  if (line.length > MAX_EVENT_LINE_BYTES) return undefined;
  const m = QEMU_EVENT.exec(line);
  if (m === null || m[4] !== domain) return undefined;
  const [, event, seconds, micros, , dataText] = m as unknown as [string, string, string, string, string, string];
  let data: Record<string, unknown> = {};
  if (dataText !== '<null>') {
    if (jsonNestsDeeper(dataText)) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(dataText);
    } catch {
      return undefined;
    }
    if (!isObject(parsed)) return undefined;
    data = parsed;
  }
  return { event, data, timestamp: { seconds: Number(seconds), microseconds: Number(micros) } };
}

/** One line of `virsh event --event lifecycle` for `domain`; undefined for any other line. */
export function parseLifecycleLine(line: string, domain: string): LifecycleEvent | undefined {
  if (line.length > MAX_EVENT_LINE_BYTES) return undefined;
  const m = LIFECYCLE.exec(line);
  if (m === null || m[1] !== domain || !LIFECYCLE_KINDS.includes(m[2] as string)) return undefined;
  return { kind: m[2] as LifecycleKind, detail: m[3] ?? '' };
}
